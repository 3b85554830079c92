// Package testclock is the clock a test injects where certsync asks for
// the time (publisher.Config.Now, subscriber.Config.Now) and moves by hand,
// instead of sleeping.
package testclock

import (
	"sync"
	"time"
)

// Clock is a clock a test moves, safe for concurrent use. The zero Clock
// runs with the real one (Offset sets it off by some time: a node whose
// clock is wrong, a day that passes without waiting for it); At gives one
// stopped at an instant, which only Set and Advance move.
type Clock struct {
	mu      sync.Mutex
	stopped bool
	at      time.Time     // the time it shows, when stopped
	offset  time.Duration // how far off the real clock it runs, when not
}

// At returns a Clock stopped at t.
func At(t time.Time) *Clock { return &Clock{stopped: true, at: t} }

// Now is the time the clock shows; pass it as a Config's Now.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return c.at
	}
	return time.Now().Add(c.offset)
}

// Set stops the clock at t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.stopped, c.at = true, t
	c.mu.Unlock()
}

// Advance moves the clock on by d, stopped or running.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		c.at = c.at.Add(d)
		return
	}
	c.offset += d
}

// Offset makes the clock run with the real one, off by d (0: the real
// time).
func (c *Clock) Offset(d time.Duration) {
	c.mu.Lock()
	c.stopped, c.offset = false, d
	c.mu.Unlock()
}
