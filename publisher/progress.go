package publisher

import "time"

// ProgressInterval is the least time between two reports of one phase run
// to Config.Progress, besides its first and its last.
const ProgressInterval = 100 * time.Millisecond

// Phase names a step of Publish, Republish or Rollback whose length grows
// with the fleet: the work on the nodes' consumers, one request to the
// server per consumer, which takes a while with thousands of nodes.
type Phase string

// The phases Config.Progress is told about. One call may run a phase more
// than once: a certificate in recipient groups checks its nodes' consumers
// again before its envelopes are stored.
const (
	// PhaseListing reads the stream's consumers from the server to check
	// them against the configuration; Total is the number the stream held
	// when the call began.
	PhaseListing Phase = "listing"
	// PhaseUpdating updates the consumers whose subjects differ from the
	// configuration: a certificate added or removed, or the node moved to
	// another recipient group.
	PhaseUpdating Phase = "updating"
	// PhaseCreating creates the consumers of nodes that have none.
	PhaseCreating Phase = "creating"
	// PhaseDeleting deletes the consumers of nodes that left the
	// configuration (Republish).
	PhaseDeleting Phase = "deleting"
)

// Progress is one report to Config.Progress: how far one run of a phase
// is. It holds names of nothing, only counts.
type Progress struct {
	// Phase is what is being done.
	Phase Phase
	// Done is how many consumers this run has handled so far. It never
	// decreases, except when a listing the server broke off starts over.
	Done int
	// Total is how many the run has to handle; 0 when not known (Done may
	// then pass it, and may pass a listing's Total when consumers were
	// added since).
	Total int
	// Final marks the run's last report: Done is what it handled.
	Final bool
}

// progressRun reports one run of a phase to report (Config.Progress, which
// may be nil: then it does nothing): its first report (Done 0) at once
// when the run has anything to do (total > 0), else on the first
// consumer handled; then at most every ProgressInterval; then the Final
// one, when the run was reported at all. It holds no lock and is used by
// one goroutine, the call's: report is called on it.
type progressRun struct {
	report  func(Progress)
	p       Progress
	started bool
	last    time.Time
}

// progress starts a run of phase with total consumers to handle.
func (s *session) progress(phase Phase, total int) *progressRun {
	r := &progressRun{report: s.p.cfg.Progress, p: Progress{Phase: phase, Total: total}}
	if total > 0 {
		r.emit(time.Now())
	}
	return r
}

// set says done consumers were handled.
func (r *progressRun) set(done int) {
	if r.report == nil {
		return
	}
	r.p.Done = done
	now := time.Now()
	if !r.started || now.Sub(r.last) >= ProgressInterval {
		r.emit(now)
	}
}

// end reports the run's last count, once.
func (r *progressRun) end() {
	if r.report == nil || !r.started || r.p.Final {
		return
	}
	r.p.Final = true
	r.report(r.p)
}

func (r *progressRun) emit(now time.Time) {
	if r.report == nil {
		return
	}
	r.started, r.last = true, now
	r.report(r.p)
}
