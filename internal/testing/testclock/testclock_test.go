package testclock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/testclock"
)

func TestRunning(t *testing.T) {
	t.Parallel()
	var c testclock.Clock
	within := func(what string, off time.Duration) {
		t.Helper()
		before := time.Now().Add(off)
		got := c.Now()
		if after := time.Now().Add(off); got.Before(before) || got.After(after) {
			t.Errorf("%s: %v, want between %v and %v", what, got, before, after)
		}
	}
	within("zero Clock", 0)
	c.Offset(-72 * time.Hour)
	within("Offset", -72*time.Hour)
	c.Advance(time.Hour)
	within("Offset then Advance", -71*time.Hour)
	c.Set(time.Unix(0, 0))
	c.Offset(0)
	within("Set then Offset", 0)
}

func TestStopped(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	c := testclock.At(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("At: %v, want %v", got, start)
	}
	c.Advance(time.Hour)
	if got := c.Now(); !got.Equal(start.Add(time.Hour)) {
		t.Errorf("after Advance: %v, want %v", got, start.Add(time.Hour))
	}
	c.Set(start)
	if got := c.Now(); !got.Equal(start) {
		t.Errorf("after Set: %v, want %v", got, start)
	}
}

// TestConcurrent is for -race: a test moves the clock while the code under
// test reads it.
func TestConcurrent(t *testing.T) {
	t.Parallel()
	c := testclock.At(time.Unix(0, 0))
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 100 {
			c.Advance(time.Second)
		}
	})
	for range 100 {
		c.Now()
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(time.Unix(100, 0)) {
		t.Errorf("after 100 Advances of a second: %v", got)
	}
}
