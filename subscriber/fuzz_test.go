package subscriber

import (
	"strings"
	"testing"
	"time"
)

// FuzzParseCommand: a check or reload line either parses or is refused
// with ErrBadCommand, never panics; what parses keeps its text, and its
// arguments, each put in single quotes as a shell script would (an inner
// quote ends them, is escaped, and opens them again), parse back to the
// same arguments.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"nginx -t", `sh -c 'nginx -t && systemctl reload nginx'`, `a "b c" d\ e`, `"a\$b" '\x' ""`,
		"a\\\nb", "a | b", `'unbalanced`, `trailing\`, "", "\t", "\"\\\"$\\`\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		c, err := ParseCommand(line)
		if err != nil {
			if !strings.Contains(err.Error(), ErrBadCommand.Error()) {
				t.Fatalf("ParseCommand(%q) = %v, want it to wrap ErrBadCommand", line, err)
			}
			return
		}
		if c.String() != line || c.IsZero() {
			t.Fatalf("ParseCommand(%q) = %q with %d arguments", line, c.String(), len(c.Args()))
		}
		quoted := make([]string, 0, len(c.Args()))
		for _, a := range c.Args() {
			quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
		}
		again, err := ParseCommand(strings.Join(quoted, " "))
		if err != nil || !equalArgs(again.Args(), c.Args()) {
			t.Fatalf("ParseCommand(%q) = %q; quoted again: %q, %v", line, c.Args(), again.Args(), err)
		}
	})
}

func equalArgs(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

// FuzzParseSchedule: a schedule either parses or is refused, never
// panics; what parses reads back as itself, and a cron one names a next
// window after any time.
func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "immediate", "manual", "0 3 * * *", "*/15 2-4 * * 1-5", "0 0 30 2 *", "@daily", "TZ=UTC 0 3 * * *", "0 3 * * * *"} {
		f.Add(s)
	}
	at := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		sch, err := ParseSchedule(s)
		if err != nil {
			return
		}
		again, err := ParseSchedule(sch.String())
		if err != nil || again.String() != sch.String() || again.Manual() != sch.Manual() {
			t.Fatalf("ParseSchedule(%q) = %q; read again: %q, %v", s, sch.String(), again.String(), err)
		}
		if sch.cron != nil && !sch.next(at).After(at) {
			t.Fatalf("ParseSchedule(%q): next window after %v is %v", s, at, sch.next(at))
		}
	})
}
