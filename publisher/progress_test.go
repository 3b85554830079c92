package publisher

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// progressLog records the reports to Config.Progress of one call.
type progressLog struct {
	reports []Progress
}

// call runs fn with the hook recording, and checks what every hook must
// hold: each run starts at Done 0 when it has a total, Done never
// decreases within it, it ends with exactly one Final report, and
// between its first and last reports they are at least ProgressInterval
// apart, so their number is bounded by the call's duration. It returns
// the runs' Final reports, in order.
func (l *progressLog) call(t *testing.T, what string, fn func()) []Progress {
	t.Helper()
	l.reports = nil
	start := time.Now()
	fn()
	elapsed := time.Since(start)
	var finals []Progress
	inRun, throttled := false, 0
	var cur Progress
	for i, p := range l.reports {
		switch {
		case !inRun:
			if p.Total > 0 && p.Done != 0 {
				t.Errorf("%s: report %d %+v starts a run of %d at %d, want 0", what, i, p, p.Total, p.Done)
			}
			inRun = true
		case p.Phase != cur.Phase:
			t.Errorf("%s: report %d %+v in a run of %s", what, i, p, cur.Phase)
		case p.Done < cur.Done:
			t.Errorf("%s: report %d %+v: Done went down from %d", what, i, p, cur.Done)
		case !p.Final:
			throttled++
		}
		cur = p
		if p.Final {
			finals = append(finals, p)
			inRun = false
		}
	}
	if inRun {
		t.Errorf("%s: the last run (%+v) has no Final report", what, cur)
	}
	// Reports of different runs are apart in time too: at most one per
	// interval, plus one for the start of each run.
	if bound := int(elapsed/ProgressInterval) + len(finals); throttled > bound {
		t.Errorf("%s: %d reports within runs in %v, want at most %d (one per %v)", what, throttled, elapsed, bound, ProgressInterval)
	}
	return finals
}

// TestProgressReports: Config.Progress hears of every phase of consumer
// work: creating the consumers of a new fleet, listing them again, updating
// those of nodes given a new certificate, and deleting those of nodes
// that left, each run from 0 to its Final count, at a bounded rate.
func TestProgressReports(t *testing.T) {
	t.Parallel()
	const n = 150
	f := newFixture(t, runServer(t), nil)
	nodes, _ := kindNodes(f, "node", n, "x25519")
	f.cfg.Certificates["a.example"] = nodes
	log := &progressLog{}
	f.cfg.Progress = func(p Progress) { log.reports = append(log.reports, p) }
	ctx := context.Background()
	a := f.lineage("a.example", f.issue("a.example", time.Time{}))
	b := f.lineage("b.example", f.issue("b.example", time.Time{}))

	check := func(what string, got []Progress, want ...Progress) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: runs ended\n  %+v\nwant\n  %+v", what, got, want)
		}
	}
	check("first publish", log.call(t, "first publish", func() {
		if _, err := f.publisher().Publish(ctx, a); err != nil {
			t.Fatal(err)
		}
	}), Progress{Phase: PhaseCreating, Done: n, Total: n, Final: true})

	// b.example goes to 20 nodes that have a consumer: those are updated.
	f.cfg.Certificates["b.example"] = nodes[:20]
	check("publish to existing consumers", log.call(t, "publish to existing consumers", func() {
		if _, err := f.publisher().Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}),
		Progress{Phase: PhaseListing, Done: n, Total: n, Final: true},
		Progress{Phase: PhaseUpdating, Done: 20, Total: 20, Final: true})

	// 30 nodes leave.
	for _, node := range nodes[n-30:] {
		delete(f.cfg.Nodes, node)
	}
	f.cfg.Certificates["a.example"] = nodes[:n-30]
	check("republish", log.call(t, "republish", func() {
		if _, err := f.publisher().Republish(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}),
		Progress{Phase: PhaseListing, Done: n, Total: n, Final: true},
		Progress{Phase: PhaseDeleting, Done: 30, Total: 30, Final: true})
}
