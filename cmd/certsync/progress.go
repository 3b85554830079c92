package main

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certsync/certsync/publisher"
)

// Progress of long work: publish and republish create, check, update and
// delete one consumer per node, one request to the server each, which
// takes a while with thousands of nodes (publisher.Config.Progress).
//
// When stderr is a terminal, one line there says how far it is, rewritten
// in place ("\r", the line, then erase to its end):
//
//	consumers: created 3,200 of 10,000 (1,450/s), waiting for the server's replies
//
// It appears once a phase has gone on for progressDelay (a publish to a
// few nodes never shows it), changes at most every progressInterval, and
// is erased when the phase ends, before anything else is written to
// stderr (a log line, the summary lines, the error) and at the end.
//
// Elsewhere (stderr a pipe, a file, the journal; or TERM=dumb, a terminal
// that cannot erase a line) nothing is written while it runs, and long
// work (at least longWorkConsumers consumers, or longWorkTime spent on
// them) ends with one log line on success: consumers_ready, with created,
// updated, deleted, checked (read from the server and compared with the
// configuration) and seconds (spent on them). It is logged at info and
// shown without --verbose: the one line such a run leaves. Smaller work
// stays quiet, as every one-shot command does on success. NO_COLOR changes
// nothing: the line has no colour.
const (
	progressDelay     = 250 * time.Millisecond
	progressInterval  = 100 * time.Millisecond
	longWorkConsumers = 100
	longWorkTime      = 2 * time.Second
	// eraseLine moves to the line's start and erases it (ECMA-48 EL).
	eraseLine = "\r\x1b[K"
)

// progressView renders publisher.Progress reports on stderr. It is an
// io.Writer too: the command's logger writes through it, so that a log
// line never lands on the progress line. It is safe for concurrent use
// (nats.go logs from its own goroutines).
type progressView struct {
	mu   sync.Mutex
	w    io.Writer
	term bool
	// width is the terminal's, in columns: a longer line would wrap and
	// could not be rewritten in place.
	width int
	log   *slog.Logger // for the summary, at info
	now   func() time.Time

	inRun    bool
	runStart time.Time
	lastDraw time.Time
	drawn    bool // the progress line is on the terminal

	counts map[publisher.Phase]int
	busy   time.Duration
}

// newProgressView is the view for a command writing to stderr; verbose
// is --verbose, for the summary's logger.
func newProgressView(stderr io.Writer, verbose bool) *progressView {
	v := &progressView{w: stderr, log: makeLogger(stderr, true, verbose), now: time.Now, width: 80}
	if isTerminal(stderr) && os.Getenv("TERM") != "dumb" {
		v.term = true
		if f, ok := stderr.(*os.File); ok {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
				v.width = int(ws.Col)
			}
		}
	}
	return v
}

// report takes one report (publisher.Config.Progress).
func (v *progressView) report(p publisher.Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	if !v.inRun {
		v.inRun, v.runStart = true, now
	}
	if p.Final {
		v.erase() // the line says what is under way
		v.inRun = false
		if v.counts == nil {
			v.counts = map[publisher.Phase]int{}
		}
		v.counts[p.Phase] += p.Done
		v.busy += now.Sub(v.runStart)
		return
	}
	if v.term && now.Sub(v.runStart) >= progressDelay && now.Sub(v.lastDraw) >= progressInterval {
		io.WriteString(v.w, "\r"+progressLine(p, now.Sub(v.runStart), v.width)+"\x1b[K")
		v.drawn, v.lastDraw = true, now
	}
}

// Write writes b to stderr, erasing the progress line first; the next
// report draws it again.
func (v *progressView) Write(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.erase()
	return v.w.Write(b)
}

func (v *progressView) erase() {
	if v.drawn {
		io.WriteString(v.w, eraseLine)
		v.drawn = false
	}
}

// finish ends the work: the progress line is erased; away from a
// terminal, long work that succeeded (err nil) logs its summary.
func (v *progressView) finish(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.erase()
	if v.term || err != nil {
		return
	}
	c := v.counts
	created, updated, deleted, checked := c[publisher.PhaseCreating], c[publisher.PhaseUpdating], c[publisher.PhaseDeleting], c[publisher.PhaseListing]
	if created+updated+deleted+checked < longWorkConsumers && v.busy < longWorkTime {
		return
	}
	v.log.Info("consumers_ready", "created", created, "updated", updated, "deleted", deleted, "checked", checked,
		"seconds", math.Round(v.busy.Seconds()*1000)/1000)
}

// progressLine is the progress line of p after elapsed in its run, at
// most width-1 columns (the last column would make some terminals wrap).
func progressLine(p publisher.Progress, elapsed time.Duration, width int) string {
	verb, waiting := "", "the server's replies"
	switch p.Phase {
	case publisher.PhaseListing:
		verb, waiting = "checked", "the server's list"
	case publisher.PhaseUpdating:
		verb = "updated"
	case publisher.PhaseCreating:
		verb = "created"
	case publisher.PhaseDeleting:
		verb = "deleted"
	default:
		verb = string(p.Phase)
	}
	count := thousands(p.Done)
	if p.Total > 0 {
		count += " of " + thousands(max(p.Total, p.Done))
	}
	rate := ""
	if elapsed > 0 {
		rate = fmt.Sprintf(" (%s/s)", thousands(int(float64(p.Done)/elapsed.Seconds())))
	}
	line := fmt.Sprintf("consumers: %s %s%s, waiting for %s", verb, count, rate, waiting)
	if width > 1 && len(line) > width-1 {
		line = line[:width-1]
	}
	return line
}

// thousands writes n with a comma between groups of three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	start := 0
	if n < 0 {
		start = 1
	}
	for i := len(s) - 3; i > start; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
