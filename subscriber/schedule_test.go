package subscriber

import (
	"strings"
	"testing"
	"time"
)

func mustSchedule(t testing.TB, s string) Schedule {
	t.Helper()
	sch, err := ParseSchedule(s)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// TestParseScheduleRefuses: the library itself refuses what the node.yaml
// schema refuses (descriptors, time zones, a seconds field, an expression
// that never fires), with the reason.
func TestParseScheduleRefuses(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]string{
		"daily":                  "want immediate, manual or five cron fields",
		"Manual":                 "want immediate, manual or five cron fields",
		"0 3 * *":                "want immediate, manual or five cron fields",
		"61 * * * *":             `invalid cron expression "61 * * * *"`,
		"* * * * * *":            "(6 fields)",
		"0 0 3 * * *":            "(6 fields)",
		"@daily":                 `descriptor "@daily" not supported`,
		" @every 1h":             "descriptor",
		"TZ=UTC 0 3 * * *":       "time zone",
		"CRON_TZ=UTC 0 3 * * *":  "time zone",
		"CRON_TZ=Europe/Paris 0": "time zone",
		"0 0 30 2 *":             `cron expression "0 0 30 2 *" never fires`,
	} {
		_, err := ParseSchedule(s)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSchedule(%q) = %v, want an error with %q", s, err, want)
		}
	}
}

// TestParseScheduleString: a schedule gives back its text; the zero value
// and the empty text are immediate.
func TestParseScheduleString(t *testing.T) {
	t.Parallel()
	if got := (Schedule{}).String(); got != ScheduleImmediate {
		t.Errorf("zero Schedule = %q, want immediate", got)
	}
	for s, want := range map[string]string{"": "immediate", "immediate": "immediate", "manual": "manual", "*/15 * * * *": "*/15 * * * *", "0 3 * * sun": "0 3 * * sun"} {
		sch := mustSchedule(t, s)
		if sch.String() != want || sch.Manual() != (want == "manual") {
			t.Errorf("ParseSchedule(%q) = %q (manual %v), want %q", s, sch, sch.Manual(), want)
		}
	}
}

// TestScheduleLocalTime: the cron fields are the node's local time,
// whatever the location of the time asked about (records hold UTC).
func TestScheduleLocalTime(t *testing.T) {
	t.Parallel()
	s, err := ParseSchedule("0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	s.loc = time.FixedZone("UTC+5", 5*3600)
	from := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC) // 17:00 at UTC+5
	want := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC) // 03:00 the next day at UTC+5
	if got := s.next(from); !got.Equal(want) {
		t.Errorf("next(%v) = %v, want %v", from, got.UTC(), want)
	}
}
