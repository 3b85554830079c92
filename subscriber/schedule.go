// The Schedule type of a certificate and its parsing (ParseSchedule). What a
// schedule decides, and when, is in scheduler.go.

package subscriber

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
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
	text   string         // as parsed; empty for immediate
	manual bool           // only `node install` installs
	cron   cron.Schedule  // nil for immediate and manual
	loc    *time.Location // where the cron fields are read; nil is time.Local
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

// next is the first time after t that a cron schedule lets the node
// install; zero for immediate and manual. The scheduler and the status
// record's next_window both ask it.
func (s Schedule) next(t time.Time) time.Time {
	if s.cron == nil {
		return time.Time{}
	}
	// robfig/cron reads the fields in the location of the time it is
	// given; the times here are often UTC (records store UTC), and the
	// schedule is the node's local time.
	return s.cron.Next(t.In(cmp.Or(s.loc, time.Local)))
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
