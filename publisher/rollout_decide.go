// The rollout's pure decisions: how each released node stands, and what
// one pass of the controller writes. Functions of what was read and the
// time, tested with any clock.

package publisher

import (
	"fmt"
	"slices"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// rolloutClockSkew is how far before a release a node's error_time may lie
// and still be a failure under that release. A failure older than that is
// the previous attempt's: the node tries again once a later generation
// releases it, in its own window, so until then it is in flight. The
// allowance covers a node clock running behind the controller's.
const rolloutClockSkew = time.Minute

// maxReasonNodes is how many failed nodes a halt's reason names.
const maxReasonNodes = 3

// heldBundle is what the rollout needs of the newest bundle, from under
// its signature.
type heldBundle struct {
	Version     uint64
	Fingerprint crypto.Fingerprint
	Hold        bool
	// Serial is the Certsync-Serial header: for showing only.
	Serial string
}

// exists tells whether a bundle was read.
func (b heldBundle) exists() bool { return b.Version != 0 }

// outcome is how a released node stands to the version rolled out.
type outcome int

const (
	inFlight outcome = iota
	succeeded
	failed
)

// nodeResult is one node, classified.
type nodeResult struct {
	node    string
	outcome outcome
	// why says why it failed: one line of certsync's own words (a node's
	// error text never goes into a record other nodes read).
	why         string
	installedAt time.Time
	verified    bool
}

// installedIt tells whether st reports version v of the certificate fp
// installed, with no failed install standing.
func installedIt(st *wire.Status, v uint64, fp crypto.Fingerprint) bool {
	return st != nil && st.InstalledVersion == v && st.InstalledFingerprint == fp.String() &&
		!(st.State == wire.StateFailed && st.ErrorKind == wire.ErrorKindInstall)
}

// failedIt tells whether st reports a failed install of version v of the
// certificate fp.
func failedIt(st *wire.Status, v uint64, fp crypto.Fingerprint) bool {
	if st == nil {
		return false
	}
	if st.FailedVersion == v && (st.FailedFingerprint == "" || st.FailedFingerprint == fp.String()) {
		return true
	}
	return st.State == wire.StateFailed && st.ErrorKind == wire.ErrorKindInstall &&
		st.StagedVersion == v && st.StagedFingerprint == fp.String()
}

// classify judges a released node from its status record st (nil: none)
// against the rollout record rec at now:
//
//   - succeeded: it reports rec's version and fingerprint installed, with
//     no failed install standing;
//   - failed: it reports the install of that version failed, under rec's
//     generation or a later one and not before rec's release (an older
//     failure is the previous attempt's, retried once the node acts on
//     this release); or it has not succeeded within deadline of
//     rec.WaveStarted (no report is a failure);
//   - in flight otherwise.
func classify(node string, st *wire.Status, rec *crypto.RolloutRecord, deadline time.Duration, now time.Time) nodeResult {
	r := nodeResult{node: node}
	if installedIt(st, rec.Version, rec.Fingerprint) {
		r.outcome, r.installedAt, r.verified = succeeded, st.InstalledAt, st.Verified
		return r
	}
	if failedIt(st, rec.Version, rec.Fingerprint) && failedUnder(st, rec) {
		r.outcome, r.why = failed, "install failed"
		return r
	}
	if now.Sub(rec.WaveStarted) > deadline {
		r.outcome = failed
		if st == nil {
			r.why = fmt.Sprintf("no report within the %v wave deadline", deadline)
		} else {
			r.why = fmt.Sprintf("not installed within the %v wave deadline", deadline)
		}
	}
	return r
}

// failedUnder tells whether st's failed install happened under rec's
// release, not an earlier one: by the generation the node failed under
// when it reports one (failed_generation), else by the generation it holds
// and the error's time.
func failedUnder(st *wire.Status, rec *crypto.RolloutRecord) bool {
	if st.FailedGeneration != 0 {
		return st.FailedGeneration >= rec.Generation
	}
	return (st.RolloutGeneration == 0 || st.RolloutGeneration >= rec.Generation) &&
		(st.ErrorTime.IsZero() || !st.ErrorTime.Before(rec.WaveStarted.Add(-rolloutClockSkew)))
}

// stepInput is what one step of one certificate's rollout decides on.
type stepInput struct {
	Name string
	// Bundle is the newest bundle (zero: none).
	Bundle heldBundle
	// Record is the newest rollout record signed by the publisher, for
	// any version (nil: none).
	Record *crypto.RolloutRecord
	Policy *RolloutPolicy
	// Nodes are the certificate's configured nodes.
	Nodes []string
	// Status holds the certificate's status records by node.
	Status map[string]*wire.Status
	Now    time.Time
}

// current is the record when it is about the newest bundle, else nil (a
// record for another version is superseded).
func (in *stepInput) current() *crypto.RolloutRecord {
	if in.Record == nil || !in.Bundle.exists() || !in.Record.For(in.Bundle.Version, in.Bundle.Fingerprint) {
		return nil
	}
	return in.Record
}

// evaluation is a running rollout judged at one moment.
type evaluation struct {
	waves    rolloutWaves
	released []string // configured nodes rec releases, sorted
	results  []nodeResult
	failed   []nodeResult
	inFlight int
	// allowed is how many failed nodes the policy tolerates now.
	allowed int
	// soakedAt is when the released nodes will have soaked: the last
	// install among them (or the wave's release, if later) plus the soak.
	soakedAt time.Time
}

// evaluate judges every configured node rec releases.
func evaluate(in *stepInput, rec *crypto.RolloutRecord) evaluation {
	e := evaluation{waves: planWaves(in.Policy, in.Nodes)}
	for _, n := range slices.Sorted(slices.Values(in.Nodes)) {
		if rec.Releases(n) {
			e.released = append(e.released, n)
		}
	}
	last := rec.WaveStarted
	for _, n := range e.released {
		r := classify(n, in.Status[n], rec, in.Policy.WaveDeadline, in.Now)
		e.results = append(e.results, r)
		switch r.outcome {
		case failed:
			e.failed = append(e.failed, r)
		case inFlight:
			e.inFlight++
		case succeeded:
			if r.installedAt.After(last) {
				last = r.installedAt
			}
		}
	}
	e.allowed = in.Policy.MaxFailures
	if in.Policy.MaxFailuresPercent > 0 {
		e.allowed = in.Policy.MaxFailuresPercent * len(e.released) / 100
	}
	e.soakedAt = last.Add(in.Policy.SoakTime())
	return e
}

// haltReason says why a rollout halts, in one line naming the first few
// failed nodes.
func haltReason(e evaluation, pol *RolloutPolicy) string {
	limit := fmt.Sprintf("max_failures %d", pol.MaxFailures)
	if pol.MaxFailuresPercent > 0 {
		limit = fmt.Sprintf("max_failures %d%% (%d of %d released)", pol.MaxFailuresPercent, e.allowed, len(e.released))
	}
	var names []string
	for _, r := range e.failed {
		names = append(names, r.node+" ("+r.why+")")
	}
	return fmt.Sprintf("%d of %d released nodes failed, over %s: %s", len(e.failed), len(e.released), limit, FirstNames(names, maxReasonNodes, ", "))
}

// stepKind is what a step does.
type stepKind string

const (
	stepNothing  stepKind = ""
	stepStart    stepKind = "started"
	stepHalt     stepKind = "halted"
	stepRelease  stepKind = "wave_released"
	stepComplete stepKind = "complete"
)

// decideStep is one pass of the controller over one certificate: the
// record to write (nil: nothing to do) and what it does.
//
//   - No held bundle: nothing (it goes into service at once).
//   - No record for the newest bundle: start it, generation 1, releasing
//     the canaries (wave 0), or the first wave when there are none.
//   - Running: more failed nodes than the policy allows halts it; once
//     none is in flight and they have soaked, the next wave is released
//     (generation+1), or, after the last, the rollout is complete (All).
//   - Paused, halted, complete, aborted: nothing until a command.
func decideStep(in stepInput) (*crypto.RolloutRecord, stepKind) {
	if !in.Bundle.exists() || !in.Bundle.Hold || in.Policy == nil {
		return nil, stepNothing
	}
	rec := in.current()
	if rec == nil {
		return startRecord(&in), stepStart
	}
	if rec.State != crypto.RolloutRunning {
		return nil, stepNothing
	}
	e := evaluate(&in, rec)
	if len(e.failed) > e.allowed {
		next := in.successor(rec, crypto.RolloutHalted, false)
		next.Reason = haltReason(e, in.Policy)
		return next, stepHalt
	}
	if e.inFlight > 0 || in.Now.Before(e.soakedAt) {
		return nil, stepNothing
	}
	return in.advance(rec, e.waves)
}

// startRecord is the first record of the newest bundle's rollout.
func startRecord(in *stepInput) *crypto.RolloutRecord {
	w := planWaves(in.Policy, in.Nodes)
	k, _ := w.next(-1) // a certificate has a node, so some wave has one
	return &crypto.RolloutRecord{
		Name: in.Name, Version: in.Bundle.Version, Fingerprint: in.Bundle.Fingerprint,
		Generation: 1, State: crypto.RolloutRunning, Wave: k, Released: w.through(k),
		Time: in.Now, WaveStarted: in.Now,
	}
}

// advance releases the wave after rec's (keeping rec's state), or
// completes the rollout when none is left.
func (in *stepInput) advance(rec *crypto.RolloutRecord, w rolloutWaves) (*crypto.RolloutRecord, stepKind) {
	k, ok := w.next(rec.Wave)
	if !ok {
		next := in.successor(rec, crypto.RolloutComplete, true)
		next.All = true
		return next, stepComplete
	}
	next := in.successor(rec, rec.State, true)
	next.Wave = k
	next.Released = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(rec.Released), w.through(k)...))))
	next.WaveStarted = in.Now
	return next, stepRelease
}

// successor is a copy of rec in state, written now; release counts it as
// a release action (generation+1).
func (in *stepInput) successor(rec *crypto.RolloutRecord, state string, release bool) *crypto.RolloutRecord {
	next := *rec
	next.Released = slices.Clone(rec.Released)
	next.State, next.Reason, next.Time = state, "", in.Now
	if release {
		next.Generation++
	}
	return &next
}
