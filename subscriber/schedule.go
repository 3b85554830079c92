package subscriber

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedules of a certificate, besides five cron fields.
const (
	ScheduleImmediate = "immediate"
	ScheduleManual    = "manual"
)

// schedule is a parsed Certificate.Schedule.
type schedule struct {
	manual bool
	cron   cron.Schedule // nil for immediate and manual
}

// parseSchedule parses "immediate" (or empty), "manual" or five cron fields
// (minute hour day-of-month month day-of-week, local time).
func parseSchedule(s string) (schedule, error) {
	switch s {
	case "", ScheduleImmediate:
		return schedule{}, nil
	case ScheduleManual:
		return schedule{manual: true}, nil
	}
	c, err := cron.ParseStandard(s)
	if err != nil {
		return schedule{}, fmt.Errorf("parsing schedule %q: %w", s, err)
	}
	return schedule{cron: c}, nil
}

// plan is what the schedule says about a staged bundle.
type plan struct {
	// at is when to install; at or before now means now. Zero with ok
	// false: not until someone runs `node install` (or never, when there is
	// nothing to install).
	at time.Time
	ok bool
	// why says what decided at, for the log: "first", "immediate",
	// "window", "expiry".
	why string
}

// due decides when the staged bundle should be installed, given what is
// installed (nil when nothing certsync installed is in place):
//
//   - nothing staged, or the staged bundle is what is installed: never;
//   - nothing installed: now, whatever the schedule;
//   - immediate: now;
//   - a cron schedule: at the first time the expression matches at or after
//     the bundle was staged, plus the splay offset (a node that was down
//     then, or a `node sync` that runs later, installs at its first chance
//     after that);
//   - manual: not until `node install`;
//   - in every case, no later than when the installed certificate comes
//     within deadline of its expiry (a deadline of 0 turns this off).
//
// It is a pure function of its arguments, so tests give it any clock.
func due(now time.Time, sch schedule, staged, installed *Staged, splay, deadline time.Duration) plan {
	switch {
	case staged == nil:
		return plan{}
	case installed == nil:
		return plan{at: now, ok: true, why: "first"}
	case installed.Version == staged.Version && installed.Fingerprint == staged.Fingerprint:
		return plan{}
	}
	var p plan
	switch {
	case sch.manual:
	case sch.cron == nil:
		return plan{at: now, ok: true, why: "immediate"}
	default:
		// Next returns the first match strictly after its argument.
		// Matches are on whole minutes: a bundle staged at 03:00:20 with
		// "0 3 * * *" waits for the next day.
		if next := sch.cron.Next(staged.StagedAt.Add(-time.Nanosecond)); !next.IsZero() {
			p = plan{at: next.Add(splay), ok: true, why: "window"}
		}
	}
	if deadline > 0 && !installed.NotAfter.IsZero() {
		if at := installed.NotAfter.Add(-deadline); !p.ok || at.Before(p.at) {
			p = plan{at: at, ok: true, why: "expiry"}
		}
	}
	return p
}

// splayOffset is the random delay in [0, splay) of the bundle s on node:
// derived from a hash of the node, the certificate, its version and
// fingerprint, so each node has its own, and it stays the same across
// restarts for one bundle while each renewal gets a new one.
func splayOffset(node string, s *Staged, splay time.Duration) time.Duration {
	if splay <= 0 || s == nil {
		return 0
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%s", node, s.Name, s.Version, s.Fingerprint)
	v := binary.BigEndian.Uint64(h.Sum(nil))
	return time.Duration(v % uint64(splay))
}
