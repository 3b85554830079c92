package main

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/publisher"
)

// testView is a progressView writing to a buffer, on a terminal of 80
// columns or not, with a clock the test moves.
type testView struct {
	*progressView
	out   *bytes.Buffer
	clock time.Time
}

func newTestView(term bool) *testView {
	tv := &testView{out: &bytes.Buffer{}, clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	tv.progressView = &progressView{
		w: tv.out, term: term, width: 80,
		log: slog.New(slog.NewJSONHandler(tv.out, nil)),
		now: func() time.Time { return tv.clock },
	}
	return tv
}

// at reports p at d after the clock's start.
func (tv *testView) at(d time.Duration, p publisher.Progress) {
	tv.clock = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Add(d)
	tv.report(p)
}

// screen is what a terminal shows after out: "\r" returns to the line's
// start, ESC[K erases from the cursor to the line's end, "\n" starts a new
// line, anything else is written over what is there.
func screen(out string) string {
	var lines []string
	line, col := []byte{}, 0
	for i := 0; i < len(out); i++ {
		switch {
		case out[i] == '\r':
			col = 0
		case strings.HasPrefix(out[i:], "\x1b[K"):
			line = line[:col]
			i += len("\x1b[K") - 1
		case out[i] == '\n':
			lines = append(lines, string(line))
			line, col = []byte{}, 0
		default:
			if col < len(line) {
				line[col] = out[i]
			} else {
				line = append(line, out[i])
			}
			col++
		}
	}
	if len(line) > 0 {
		lines = append(lines, string(line))
	}
	return strings.Join(lines, "\n")
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p       publisher.Progress
		elapsed time.Duration
		width   int
		want    string
	}{
		{publisher.Progress{Phase: publisher.PhaseCreating, Done: 2900, Total: 10000}, 2 * time.Second, 80,
			"consumers: created 2,900 of 10,000 (1,450/s), waiting for the server's replies"},
		{publisher.Progress{Phase: publisher.PhaseListing, Done: 1500}, time.Second, 80,
			"consumers: checked 1,500 (1,500/s), waiting for the server's list"},
		{publisher.Progress{Phase: publisher.PhaseUpdating, Done: 0, Total: 7}, time.Second, 80,
			"consumers: updated 0 of 7 (0/s), waiting for the server's replies"},
		// More listed than the stream held when the call began.
		{publisher.Progress{Phase: publisher.PhaseListing, Done: 1200, Total: 1000}, 2 * time.Second, 80,
			"consumers: checked 1,200 of 1,200 (600/s), waiting for the server's list"},
		{publisher.Progress{Phase: publisher.PhaseDeleting, Done: 3, Total: 4}, time.Second, 80,
			"consumers: deleted 3 of 4 (3/s), waiting for the server's replies"},
		// Never as wide as the terminal: it would wrap.
		{publisher.Progress{Phase: publisher.PhaseCreating, Done: 1000000, Total: 1000000}, 500 * time.Millisecond, 40,
			"consumers: created 1,000,000 of 1,000,0"},
	} {
		if got := progressLine(tt.p, tt.elapsed, tt.width); got != tt.want {
			t.Errorf("progressLine(%+v, %v, %d)\n  = %q\nwant %q", tt.p, tt.elapsed, tt.width, got, tt.want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234", -123: "-123"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestProgressRateLimit: on a terminal the line appears only once a phase
// has gone on for progressDelay, then changes at most every
// progressInterval, however often the publisher reports.
func TestProgressRateLimit(t *testing.T) {
	t.Parallel()
	tv := newTestView(true)
	creating := func(done int) publisher.Progress {
		return publisher.Progress{Phase: publisher.PhaseCreating, Done: done, Total: 1000}
	}
	// A short phase (a publish to a few nodes) shows nothing.
	tv.at(0, publisher.Progress{Phase: publisher.PhaseCreating, Total: 2})
	tv.at(40*time.Millisecond, publisher.Progress{Phase: publisher.PhaseCreating, Done: 1, Total: 2})
	tv.at(80*time.Millisecond, publisher.Progress{Phase: publisher.PhaseCreating, Done: 2, Total: 2, Final: true})
	if tv.out.Len() != 0 {
		t.Fatalf("a phase of 80ms wrote %q, want nothing", tv.out.String())
	}
	// A long one, reported every 10ms for 3s, from 1s on.
	base := time.Second
	step := 10 * time.Millisecond
	for d := time.Duration(0); d < progressDelay; d += step {
		tv.at(base+d, creating(int(d/step)))
	}
	if tv.out.Len() != 0 {
		t.Fatalf("within progressDelay of the phase's start wrote %q, want nothing", tv.out.String())
	}
	for d := progressDelay; d <= 3*time.Second; d += step {
		tv.at(base+d, creating(int(d/step)))
	}
	// Drawn at progressDelay, then every progressInterval until 3s.
	want := int((3*time.Second-progressDelay)/progressInterval) + 1
	if got := strings.Count(tv.out.String(), "\rconsumers: "); got != want {
		t.Errorf("drew the line %d times in %v, want %d (every %v)\n%q", got, 3*time.Second-progressDelay, want, progressInterval, tv.out.String())
	}
	// What the last draw said stays: nothing is drawn in between.
	last := progressDelay + time.Duration(want-1)*progressInterval
	if got, want := screen(tv.out.String()), progressLine(creating(int(last/step)), last, 80); got != want {
		t.Errorf("the terminal shows\n  %q\nwant\n  %q", got, want)
	}
}

// TestProgressErase: the line is erased before a log line is written, at
// the end of its phase and when the work ends, so that nothing is left of
// it on the terminal; finish erases nothing that was not drawn.
func TestProgressErase(t *testing.T) {
	t.Parallel()
	tv := newTestView(true)
	listing := func(done int, final bool) publisher.Progress {
		return publisher.Progress{Phase: publisher.PhaseListing, Done: done, Total: 500, Final: final}
	}
	tv.at(0, listing(0, false))
	tv.at(time.Second, listing(250, false))
	if got, want := screen(tv.out.String()), "consumers: checked 250 of 500 (250/s), waiting for the server's list"; got != want {
		t.Fatalf("the terminal shows %q, want %q", got, want)
	}
	logger := makeLogger(tv, false, false)
	logger.Warn("consumer_deleted", "consumer", "node-web9")
	if got := screen(tv.out.String()); !strings.HasPrefix(got, "time=") || strings.Contains(got, "consumers:") {
		t.Fatalf("after a log line the terminal shows\n%s\nwant the log line alone", got)
	}
	// The next report draws it again below the log line, the end of the
	// phase erases it.
	tv.at(1200*time.Millisecond, listing(400, false))
	if got := screen(tv.out.String()); !strings.HasSuffix(got, "\nconsumers: checked 400 of 500 (333/s), waiting for the server's list") {
		t.Fatalf("the terminal shows\n%s\nwant the line again under the log line", got)
	}
	tv.at(1300*time.Millisecond, listing(500, true))
	if got := screen(tv.out.String()); strings.Contains(got, "consumers:") {
		t.Fatalf("after the phase's end the terminal shows\n%s", got)
	}
	// A new phase, drawn, then the work ends.
	tv.at(2*time.Second, publisher.Progress{Phase: publisher.PhaseCreating, Total: 100})
	tv.at(3*time.Second, publisher.Progress{Phase: publisher.PhaseCreating, Done: 50, Total: 100})
	if got := screen(tv.out.String()); !strings.HasSuffix(got, "consumers: created 50 of 100 (50/s), waiting for the server's replies") {
		t.Fatalf("the terminal shows\n%s", got)
	}
	tv.finish(errors.New("creating consumer: no"))
	if got := screen(tv.out.String()); strings.Contains(got, "consumers:") || strings.Count(got, "\n") != 0 {
		t.Fatalf("after finish the terminal shows\n%s\nwant the log line alone", got)
	}
	if !strings.HasSuffix(tv.out.String(), eraseLine) {
		t.Errorf("finish did not erase the line: %q", tv.out.String())
	}
	// Nothing drawn: finish writes nothing, and on a terminal logs no
	// summary.
	quiet := newTestView(true)
	quiet.at(0, publisher.Progress{Phase: publisher.PhaseCreating, Total: 300})
	quiet.at(100*time.Millisecond, publisher.Progress{Phase: publisher.PhaseCreating, Done: 300, Total: 300, Final: true})
	quiet.finish(nil)
	if quiet.out.Len() != 0 {
		t.Errorf("finish after nothing drawn wrote %q", quiet.out.String())
	}
}

// TestProgressSummary: away from a terminal nothing is written while the
// work runs, and long work that succeeded ends with one consumers_ready
// line; short work, and failed work, log none.
func TestProgressSummary(t *testing.T) {
	t.Parallel()
	run := func(tv *testView, start time.Duration, phase publisher.Phase, n int, took time.Duration) {
		tv.at(start, publisher.Progress{Phase: phase, Total: n})
		for i := 1; i <= n; i++ {
			tv.at(start+took*time.Duration(i)/time.Duration(n), publisher.Progress{Phase: phase, Done: i, Total: n})
		}
		tv.at(start+took, publisher.Progress{Phase: phase, Done: n, Total: n, Final: true})
	}
	long := newTestView(false)
	run(long, 0, publisher.PhaseListing, 250, 300*time.Millisecond)
	run(long, time.Second, publisher.PhaseUpdating, 20, 900*time.Millisecond)
	run(long, 3*time.Second, publisher.PhaseCreating, 50, 1250*time.Millisecond)
	run(long, 5*time.Second, publisher.PhaseDeleting, 30, 50*time.Millisecond)
	if long.out.Len() != 0 {
		t.Fatalf("wrote %q while running, want nothing", long.out.String())
	}
	long.finish(nil)
	events := logtest.Events(long.out.String(), "consumers_ready")
	if len(events) != 1 || strings.Count(long.out.String(), "\n") != 1 {
		t.Fatalf("finish wrote\n%s\nwant one consumers_ready line", long.out.String())
	}
	want := map[string]any{"created": 50.0, "updated": 20.0, "deleted": 30.0, "checked": 250.0, "seconds": 2.5, "level": "INFO"}
	for k, v := range want {
		if events[0][k] != v {
			t.Errorf("consumers_ready %s = %v, want %v", k, events[0][k], v)
		}
	}

	// Few consumers, quickly: quiet. Few, slowly: long work too.
	short := newTestView(false)
	run(short, 0, publisher.PhaseCreating, 3, 100*time.Millisecond)
	short.finish(nil)
	if short.out.Len() != 0 {
		t.Errorf("3 consumers in 100ms logged %q, want nothing", short.out.String())
	}
	slow := newTestView(false)
	run(slow, 0, publisher.PhaseCreating, 3, 3*time.Second)
	slow.finish(nil)
	if got := logtest.Events(slow.out.String(), "consumers_ready"); len(got) != 1 || got[0]["created"] != 3.0 || got[0]["seconds"] != 3.0 {
		t.Errorf("3 consumers in 3s logged\n%s\nwant consumers_ready with created 3, seconds 3", slow.out.String())
	}
	// Failed: the error line says what is left; no summary.
	failed := newTestView(false)
	run(failed, 0, publisher.PhaseCreating, 500, time.Second)
	failed.finish(errors.New("500 nodes have no consumer"))
	if failed.out.Len() != 0 {
		t.Errorf("failed work logged %q, want nothing", failed.out.String())
	}
	// On a terminal, where the line showed it: no summary either.
	term := newTestView(true)
	run(term, 0, publisher.PhaseCreating, 500, 100*time.Millisecond)
	term.finish(nil)
	if term.out.Len() != 0 {
		t.Errorf("on a terminal, finish logged %q, want nothing", term.out.String())
	}
}
