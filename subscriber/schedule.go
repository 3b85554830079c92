package subscriber

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/certsync/certsync/crypto"
)

// Schedules of a certificate, besides five cron fields.
const (
	ScheduleImmediate = "immediate"
	ScheduleManual    = "manual"
)

// Schedule says when a certificate's staged bundle is installed: at once
// (immediate, the zero value), only by `certsync node install` (manual), or
// in the windows of a five-field cron expression in the node's local time.
// Make one with ParseSchedule; String gives back its text.
type Schedule struct {
	text   string        // as parsed; empty for immediate
	manual bool          // only `node install` installs
	cron   cron.Schedule // nil for immediate and manual
}

// ParseSchedule parses "immediate" (or empty), "manual" or five cron fields
// (minute hour day-of-month month day-of-week), in the node's local time.
// It refuses what would mean something else than it reads: @descriptors
// (@daily, @every 1h), a time zone (TZ=, CRON_TZ=; schedules use the node's
// clock), a seconds field, a word other than the two, and an expression
// that never fires (February 30th).
func ParseSchedule(s string) (Schedule, error) {
	switch s {
	case "", ScheduleImmediate:
		return Schedule{}, nil
	case ScheduleManual:
		return Schedule{text: s, manual: true}, nil
	}
	switch {
	case strings.HasPrefix(strings.TrimSpace(s), "@"):
		return Schedule{}, fmt.Errorf("descriptor %q not supported: write five cron fields, such as \"0 3 * * *\"", s)
	case strings.Contains(s, "TZ="):
		return Schedule{}, fmt.Errorf("time zone in %q not supported: schedules use the node's local time", s)
	}
	if n := len(strings.Fields(s)); n != 5 {
		count := ""
		if n > 1 {
			count = fmt.Sprintf(" (%d fields)", n)
		}
		return Schedule{}, fmt.Errorf("want immediate, manual or five cron fields (minute hour day-of-month month day-of-week), got %q%s", s, count)
	}
	c, err := cron.ParseStandard(s)
	if err != nil {
		return Schedule{}, fmt.Errorf("invalid cron expression %q: %v", s, err)
	}
	if c.Next(time.Now()).IsZero() {
		return Schedule{}, fmt.Errorf("cron expression %q never fires", s)
	}
	return Schedule{text: s, cron: c}, nil
}

// String returns the schedule as ParseSchedule read it: "immediate",
// "manual" or the cron expression.
func (s Schedule) String() string {
	if s.text == "" {
		return ScheduleImmediate
	}
	return s.text
}

// Manual reports whether only `certsync node install` installs.
func (s Schedule) Manual() bool { return s.manual }

// MarshalText returns String.
func (s Schedule) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a schedule with ParseSchedule.
func (s *Schedule) UnmarshalText(text []byte) error {
	parsed, err := ParseSchedule(string(text))
	if err != nil {
		return err
	}
	*s = parsed
	return nil
}

// plan is what the schedule says about a staged bundle.
type plan struct {
	// at is when to install; at or before now means now. Zero with ok
	// false: not until someone runs `node install` (or never, when there is
	// nothing to install).
	at time.Time
	ok bool
	// why says what decided at, for the log and the status: "first",
	// "immediate", "window", "expiry", "not_before" (the new certificate's
	// NotBefore), "installed_expires" (the expiry of the one in service,
	// before that NotBefore), "retry" (a failed install tried again),
	// "interrupted".
	why string
}

// due decides when the staged bundle should be installed, given what is
// installed (nil when nothing certsync installed is in place) and whether
// anything at all is at install_dir (occupied: certsync's version, or a
// real folder of the old cron's, or the link to it certsync made):
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
//     within deadline of its expiry (a deadline of 0 turns this off);
//   - and never before the staged certificate's NotBefore while install_dir
//     holds something: a certificate that is not valid yet would replace
//     one clients accept by one they reject. It waits for its NotBefore, or
//     for the installed certificate to expire if that comes first (an
//     expired one is no better). With install_dir empty it installs at once
//     all the same: clients reject it either way, and the service gets
//     files it can start with, which turn valid at NotBefore without a
//     reload.
//
// It is a pure function of its arguments, so tests give it any clock.
func due(now time.Time, sch Schedule, staged, installed *Staged, occupied bool, splay, deadline time.Duration) plan {
	switch {
	case staged == nil:
		return plan{}
	case installed == nil:
		return notBefore(plan{at: now, ok: true, why: "first"}, staged, nil, occupied)
	case crypto.Compare(installed.Release, staged.Release) == crypto.Same:
		return plan{}
	}
	var p plan
	switch {
	case sch.manual:
	case sch.cron == nil:
		return notBefore(plan{at: now, ok: true, why: "immediate"}, staged, installed, true)
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
	return notBefore(p, staged, installed, true)
}

// notBefore moves p to the staged certificate's NotBefore when it is
// later and install_dir is occupied, or to the installed certificate's
// expiry if that comes first. See due.
func notBefore(p plan, staged, installed *Staged, occupied bool) plan {
	if !p.ok || !occupied || !staged.NotBefore.After(p.at) {
		return p
	}
	at, why := staged.NotBefore, "not_before"
	if installed != nil && !installed.NotAfter.IsZero() && installed.NotAfter.Before(at) {
		at, why = installed.NotAfter, "installed_expires"
	}
	if at.After(p.at) {
		p.at, p.why = at, why
	}
	return p
}

// Install retries: the delay after a failed install of a version grows
// with its failures, 1m, 2m, 4m … up to 1h.
const (
	installRetryBase = time.Minute
	installRetryMax  = time.Hour
)

// retryDue decides when a version whose install failed (f) is tried again
// on its own: only under the expiry deadline, when the installed
// certificate expires within deadline (or has expired), or nothing
// certsync installed is in service; then installRetryBase after the last
// failure, doubling with each failure up to installRetryMax, and not
// before the installed certificate comes within deadline. A failure that
// retrying cannot cure (f.Permanent), or a deadline of 0, is never retried:
// a newer bundle or `node install` tries again. A newer bundle replaces f
// anyway, since f names its version.
func retryDue(f *failedInstall, installed *Staged, deadline time.Duration) plan {
	if f == nil || f.Permanent || deadline <= 0 {
		return plan{}
	}
	at := f.At.Add(backoff(uint64(max(f.Attempts, 1)), installRetryBase, installRetryMax))
	if installed != nil {
		if installed.NotAfter.IsZero() {
			return plan{}
		}
		at = maxTime(at, installed.NotAfter.Add(-deadline))
	}
	return plan{at: at, ok: true, why: "retry"}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
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
