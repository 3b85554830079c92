// The rollout controller: from the newest bundle of a certificate, its
// newest rollout record and the nodes' status records, it decides what to
// release next and writes a new signed rollout record (RolloutStep,
// RolloutRun); the operator's commands (Promote, Pause, Resume, Abort)
// write one too, and Rollouts shows where each rollout stands.
//
// The decisions are pure functions (rolloutWaves, classify, decideStep)
// of what was read and the time, so they are tested with any clock; the
// I/O around them reads and writes through one session.
//
// How the controller decides is docs/OPERATIONS.md, "Rollouts".

package publisher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// States a RolloutView shows beside crypto's rollout states
// (crypto.RolloutRunning, RolloutPaused, RolloutHalted, RolloutComplete,
// RolloutAborted).
const (
	// RolloutPending: the newest bundle is held, and no rollout record is
	// about it yet; the controller's next pass starts it.
	RolloutPending = "pending"
	// RolloutNone: no bundle is published, or the newest one is not held
	// (published without a policy, or by an abort): it goes into service
	// at once on every node, with no rollout.
	RolloutNone = "none"
)

// Node outcomes in a RolloutView.
const (
	// NodeInstalled: the node reported the new certificate installed (and,
	// where it verifies, served: a node reports an install only once its
	// served-certificate check passed).
	NodeInstalled = "installed"
	// NodeFailed: its install of the new certificate failed, or it has not
	// reported it installed within the wave deadline.
	NodeFailed = "failed"
	// NodeInFlight: released, neither installed nor failed yet.
	NodeInFlight = "in_flight"
	// NodeWaiting: not released yet.
	NodeWaiting = "waiting"
)

// rolloutClockSkew is how far before a release a node's error_time may lie
// and still be a failure under that release. A failure older than that is
// the previous attempt's: the node tries again once a later generation
// releases it, in its own window, so until then it is in flight. The
// allowance covers a node clock running behind the controller's.
const rolloutClockSkew = time.Minute

// maxReasonNodes is how many failed nodes a halt's reason names.
const maxReasonNodes = 3

// rolloutWaves are the waves of one certificate: nodes[0] the canaries
// (maybe none), nodes[k] the nodes wave k adds. Together they hold every
// node of the certificate once.
type rolloutWaves struct {
	nodes [][]string
}

// planWaves splits the nodes of a certificate into its waves: the
// canaries (the policy's listed nodes that receive it, or the first
// ceil(CanaryPercent% of them) in name order), then, of the M other nodes
// in name order, wave k adds up to the first ceil(Waves[k-1]% × M).
func planWaves(pol *RolloutPolicy, certNodes []string) rolloutWaves {
	all := slices.Compact(slices.Sorted(slices.Values(certNodes)))
	var canary []string
	switch {
	case len(pol.Canary) > 0:
		for _, n := range all {
			if slices.Contains(pol.Canary, n) {
				canary = append(canary, n)
			}
		}
	case pol.CanaryPercent > 0:
		canary = slices.Clone(all[:ceilPercent(pol.CanaryPercent, len(all))])
	}
	var others []string
	for _, n := range all {
		if !slices.Contains(canary, n) {
			others = append(others, n)
		}
	}
	w := rolloutWaves{nodes: [][]string{canary}}
	prev := 0
	for _, pct := range pol.Waves {
		n := max(ceilPercent(pct, len(others)), prev)
		w.nodes = append(w.nodes, others[prev:n])
		prev = n
	}
	if prev < len(others) { // a policy that passed validate ends at 100%
		w.nodes[len(w.nodes)-1] = append(w.nodes[len(w.nodes)-1], others[prev:]...)
	}
	return w
}

// ceilPercent is ceil(pct% of n).
func ceilPercent(pct, n int) int { return (pct*n + 99) / 100 }

// waveOf is the wave that releases node; -1 when none does (not a node of
// the certificate).
func (w rolloutWaves) waveOf(node string) int {
	for k, nodes := range w.nodes {
		if slices.Contains(nodes, node) {
			return k
		}
	}
	return -1
}

// through lists the nodes waves 0 to k release, sorted.
func (w rolloutWaves) through(k int) []string {
	var out []string
	for i := 0; i <= k && i < len(w.nodes); i++ {
		out = append(out, w.nodes[i]...)
	}
	slices.Sort(out)
	return out
}

// next is the first wave after wave after that has nodes; false when none
// is left. after -1 gives the first wave to release.
func (w rolloutWaves) next(after int) (int, bool) {
	for k := after + 1; k < len(w.nodes); k++ {
		if len(w.nodes[k]) > 0 {
			return k, true
		}
	}
	return 0, false
}

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

// The I/O around the decisions.

// rolloutRead is what one certificate's rollout reads as.
type rolloutRead struct {
	bundle heldBundle
	// record is the newest rollout record signed with the publisher's
	// key (nil: none), and lastSeq the rollout subject's last sequence,
	// whatever it holds: the next record is written only if it still is.
	record  *crypto.RolloutRecord
	lastSeq uint64
	// recipients is the newest bundle's signed recipients digest; when it
	// is sealed in recipient groups (count of them, from its group
	// record; 0 when ungrouped), groups holds each group's digest by
	// group index, from the newest message of each group subject that is
	// of the newest version and certificate.
	recipients string
	count      int
	groups     map[int]string
}

// rolloutStream binds the stream and checks it holds the rollout subjects.
func (s *session) rolloutStream(ctx context.Context) error {
	return s.do(ctx, "reading stream "+wire.Stream, func(ctx context.Context) error {
		st, err := s.js.Stream(ctx, wire.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s is %w: it is missing (run certsync setup with the admin credential)", wire.Stream, ErrNotSetUp)
		}
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", wire.Stream, err)
		}
		if !slices.Contains(st.CachedInfo().Config.Subjects, wire.RolloutSubjects) {
			return fmt.Errorf("stream %s is %w: it lacks the rollout subjects %s (set up before rollouts existed): run certsync setup with the admin credential",
				wire.Stream, ErrNotSetUp, wire.RolloutSubjects)
		}
		s.stream = st
		s.groups = slices.Contains(st.CachedInfo().Config.Subjects, wire.GroupSubjects)
		return nil
	})
}

// readRollout reads the newest bundle of name (the highest version of
// the newest messages of its bundle and group subjects: every group of a
// version carries the same certificate and records) and its newest
// rollout record. Only what the publisher's own key signed counts:
// another bundle is no bundle, another record is ignored with a warning
// (and the newest signed one before it is used).
func (s *session) readRollout(ctx context.Context, name string) (*rolloutRead, error) {
	key := s.p.cfg.SigningKey.Public()
	rd := &rolloutRead{}
	heads, err := s.readHeads(ctx, name)
	if err != nil {
		return nil, err
	}
	var ours []published
	for _, subject := range slices.Sorted(maps.Keys(heads)) {
		msg := heads[subject]
		pub, ok := parsePublished(msg, name, key)
		if !ok || pub.Fingerprint.IsZero() {
			s.log.Warn("rollout_bundle_ignored", "name", name, "subject", subject, "sequence", msg.Sequence,
				"reason", "not a bundle signed with this signing key for its subject, or without a seal record")
			continue
		}
		ours = append(ours, pub)
	}
	if len(ours) > 0 {
		newest := slices.MaxFunc(ours, comparePublished)
		rd.bundle = heldBundle{Version: newest.Version, Fingerprint: newest.Fingerprint, Hold: newest.Hold, Serial: newest.Serial}
		rd.recipients, rd.count = newest.Recipients, newest.Group.Count
		for _, pub := range ours {
			if rd.count > 1 && pub.Version == newest.Version && pub.Fingerprint == newest.Fingerprint && pub.Group.Count == rd.count {
				if rd.groups == nil {
					rd.groups = map[int]string{}
				}
				rd.groups[pub.Group.Index] = pub.Recipients
			}
		}
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, wire.RolloutSubject(name))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return rd, nil
	case err != nil:
		return nil, fmt.Errorf("reading the newest rollout record of %q: %w", name, err)
	}
	rd.lastSeq = msg.Sequence
	if rd.record = s.ourRecord(name, msg.Data, msg.Sequence); rd.record != nil {
		return rd, nil
	}
	rd.record, err = s.olderRecord(ctx, name, msg.Sequence)
	return rd, err
}

// ourRecord verifies a rollout record stored at seq with the publisher's
// key; nil, with a warning, when it is not one for name.
func (s *session) ourRecord(name string, data []byte, seq uint64) *crypto.RolloutRecord {
	r, _, err := crypto.VerifyRollout(data, []crypto.PublicKey{s.p.cfg.SigningKey.Public()})
	if err == nil && r.Name != name {
		err = fmt.Errorf("record for certificate %q", r.Name)
	}
	if err != nil {
		s.log.Warn("rollout_record_ignored", "name", name, "sequence", seq, "error", err,
			"reason", "not a rollout record of this certificate signed with this signing key")
		return nil
	}
	return r
}

// olderRecord is the newest record the publisher signed among those the
// stream holds on name's rollout subject before sequence before.
func (s *session) olderRecord(ctx context.Context, name string, before uint64) (*crypto.RolloutRecord, error) {
	cons, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{wire.RolloutSubject(name)},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("reading the rollout records of %q: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("reading the rollout records of %q: %w", name, err)
	}
	defer it.Stop()
	var newest *crypto.RolloutRecord
	for {
		msg, err := natsconn.Next(ctx, it)
		if err != nil {
			return nil, fmt.Errorf("reading the rollout records of %q: %w", name, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("reading the rollout records of %q: %w", name, err)
		}
		if meta.Sequence.Stream >= before {
			return newest, nil
		}
		if r := s.ourRecord(name, msg.Data(), meta.Sequence.Stream); r != nil {
			newest = r
		}
		if meta.NumPending == 0 {
			return newest, nil
		}
	}
}

// errRecordRefused marks a record SignRollout refused: a bug, never retried.
type errRecordRefused struct{ err error }

func (e errRecordRefused) Error() string { return e.err.Error() }
func (e errRecordRefused) Unwrap() error { return e.err }

// writeRollout signs r and stores it on its rollout subject, only if the
// subject's last sequence is still lastSeq: a controller and an
// operator's command never interleave (the loser reads again and decides
// again).
func (s *session) writeRollout(ctx context.Context, r *crypto.RolloutRecord, lastSeq uint64) error {
	data, err := crypto.SignRollout(r, s.p.cfg.SigningKey)
	if err != nil {
		return errRecordRefused{err}
	}
	msg := nats.NewMsg(wire.RolloutSubject(r.Name))
	msg.Data = data
	msg.Header.Set(wire.HeaderName, r.Name)
	msg.Header.Set(wire.HeaderVersion, strconv.FormatUint(r.Version, 10))
	msg.Header.Set(wire.HeaderFingerprint, r.Fingerprint.String())
	msg.Header.Set(wire.HeaderRolloutState, r.State)
	msg.Header.Set(wire.HeaderRolloutGeneration, strconv.FormatUint(r.Generation, 10))
	if r.Reason != "" {
		msg.Header.Set(wire.HeaderRolloutReason, r.Reason)
	}
	_, err = s.js.PublishMsg(ctx, msg,
		jetstream.WithExpectStream(wire.Stream),
		jetstream.WithExpectLastSequencePerSubject(lastSeq))
	if err != nil {
		return fmt.Errorf("storing the rollout record of %q: %w", r.Name, err)
	}
	return nil
}

// statusByCert groups status records by certificate, then node.
func statusByCert(records []wire.Status) map[string]map[string]*wire.Status {
	out := map[string]map[string]*wire.Status{}
	for i := range records {
		st := &records[i]
		if out[st.Certificate] == nil {
			out[st.Certificate] = map[string]*wire.Status{}
		}
		out[st.Certificate][st.Node] = st
	}
	return out
}

// policyNames lists the certificates with a rollout policy, sorted.
func (p *Publisher) policyNames() []string {
	var names []string
	for _, name := range sortedKeys(p.cfg.Certificates) {
		if p.cfg.Policy(name) != nil {
			names = append(names, name)
		}
	}
	return names
}

// rolloutCall is the connection of one rollout call (Plan, RolloutStep,
// Rollouts, the commands): a session whose stream holds the rollout
// subjects, and the status records by certificate and node, read once
// when it opened.
type rolloutCall struct {
	*session
	statuses map[string]map[string]*wire.Status
}

// withRollouts runs fn on a rolloutCall within the configured timeout
// (bound) and closes the connection after. Opening needs the signing key
// (its public half says which records are the publisher's), a stream that
// holds the rollout subjects, and the status records; an error there
// comes back as "<doing>: …", fn's own errors as they are.
func (p *Publisher) withRollouts(ctx context.Context, doing string, fn func(ctx context.Context, c *rolloutCall) error) error {
	if p.cfg.SigningKey == nil {
		return fmt.Errorf("%s: no signing key configured", doing)
	}
	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	defer s.close()
	if err := s.rolloutStream(ctx); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	var records []wire.Status
	err = s.do(ctx, "reading status records", func(ctx context.Context) error {
		var err error
		records, err = s.statusRecords(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return fn(ctx, &rolloutCall{session: s, statuses: statusByCert(records)})
}

// input reads the newest bundle and rollout record of name (readRollout)
// and returns them with what a step of its rollout decides on: its
// configured policy and nodes, their status records, and the time now.
func (c *rolloutCall) input(ctx context.Context, name string) (*rolloutRead, stepInput, error) {
	rd, err := c.readRollout(ctx, name)
	if err != nil {
		return nil, stepInput{}, err
	}
	return rd, stepInput{Name: name, Bundle: rd.bundle, Record: rd.record, Policy: c.p.cfg.Policy(name),
		Nodes: c.p.cfg.Certificates[name], Status: c.statuses[name], Now: c.p.now()}, nil
}

// read is input retried as one step (session.do) named what: for the
// calls that only read.
func (c *rolloutCall) read(ctx context.Context, what, name string) (*rolloutRead, stepInput, error) {
	var rd *rolloutRead
	var in stepInput
	err := c.do(ctx, what, func(ctx context.Context) error {
		var err error
		rd, in, err = c.input(ctx, name)
		return err
	})
	return rd, in, err
}

// RolloutChange is one rollout record a step or a command wrote.
type RolloutChange struct {
	// Name, Version and Fingerprint say which rollout.
	Name        string             `json:"name"`
	Version     uint64             `json:"version"`
	Fingerprint crypto.Fingerprint `json:"fingerprint"`
	// Event is what happened: "started", "wave_released", "halted",
	// "complete", or a command's "promoted", "paused", "resumed",
	// "aborted".
	Event string `json:"event"`
	// State, Wave and Generation are the new record's.
	State      string `json:"state"`
	Wave       int    `json:"wave"`
	Generation uint64 `json:"generation"`
	// Released are the nodes this record released that the one before
	// did not (none for a complete rollout, which releases every node).
	Released []string `json:"released,omitempty"`
	// Reason is the record's reason (halted, paused, aborted).
	Reason string `json:"reason,omitempty"`
}

// change describes next, written after prev (nil: none for this version).
func change(event string, prev, next *crypto.RolloutRecord) RolloutChange {
	c := RolloutChange{Name: next.Name, Version: next.Version, Fingerprint: next.Fingerprint, Event: event,
		State: next.State, Wave: next.Wave, Generation: next.Generation, Reason: next.Reason}
	for _, n := range next.Released {
		if prev == nil || !prev.Releases(n) {
			c.Released = append(c.Released, n)
		}
	}
	return c
}

// logChange logs a change as the event rollout_<event>.
func (s *session) logChange(c RolloutChange) {
	args := []any{"name", c.Name, "version", c.Version, "fingerprint", c.Fingerprint,
		"state", c.State, "wave", c.Wave, "generation", c.Generation}
	if len(c.Released) > 0 {
		args = append(args, "released", strings.Join(c.Released, ","))
	}
	if c.Reason != "" {
		args = append(args, "reason", c.Reason)
	}
	if c.State == crypto.RolloutHalted {
		s.log.Warn("rollout_"+c.Event, args...)
		return
	}
	s.log.Info("rollout_"+c.Event, args...)
}

// RolloutStep does one pass of the controller over every certificate with
// a rollout policy: it starts the rollout of a newly published held
// bundle, halts one with more failed nodes than its policy allows,
// releases the next wave of one whose released nodes have all installed
// and soaked, and completes one after its last wave (decideStep). It
// returns what it wrote. An error about one certificate does not stop the
// others; they are joined.
func (p *Publisher) RolloutStep(ctx context.Context) ([]RolloutChange, error) {
	names := p.policyNames()
	if len(names) == 0 {
		return nil, nil
	}
	var changes []RolloutChange
	var errs []error
	err := p.withRollouts(ctx, "advancing rollouts", func(ctx context.Context, c *rolloutCall) error {
		for _, name := range names {
			ch, err := c.step(ctx, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("advancing the rollout of %q: %w", name, err))
				continue
			}
			if ch != nil {
				changes = append(changes, *ch)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return changes, errors.Join(errs...)
}

// step advances one certificate's rollout (decideStep).
func (c *rolloutCall) step(ctx context.Context, name string) (*RolloutChange, error) {
	_, made, err := c.decide(ctx, "advancing the rollout of "+name, name, func(in *stepInput) (*crypto.RolloutRecord, string, error) {
		next, kind := decideStep(*in)
		return next, string(kind), nil
	})
	return made, err
}

// decide reads name's rollout (input), writes the record decide gives,
// and logs the change as rollout_<event>; it reads and decides again,
// as one step named what (session.do), when another writer stored a
// record first (writeRollout). decide returns the record to write (nil:
// none) and its event, or an error that refuses the write, which is
// returned and never retried. It returns the input last read, its Record
// the one written, and the change (nil: none).
func (c *rolloutCall) decide(ctx context.Context, what, name string, decide func(in *stepInput) (*crypto.RolloutRecord, string, error)) (stepInput, *RolloutChange, error) {
	var in stepInput
	var written *crypto.RolloutRecord
	var made *RolloutChange
	var refused error
	err := c.do(ctx, what, func(ctx context.Context) error {
		written, made, refused = nil, nil, nil
		var rd *rolloutRead
		var err error
		if rd, in, err = c.input(ctx, name); err != nil {
			return err
		}
		prev := in.current()
		next, event, err := decide(&in)
		if err != nil {
			refused = err
			return nil
		}
		if next == nil {
			return nil
		}
		if err := c.writeRollout(ctx, next, rd.lastSeq); err != nil {
			return err
		}
		ch := change(event, prev, next)
		written, made = next, &ch
		return nil
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return stepInput{}, nil, err
	}
	if made != nil {
		c.logChange(*made)
		in.Record = written
	}
	return in, made, nil
}

// RolloutRun runs the controller until ctx ends: a RolloutStep now and
// then every interval. A failed step (NATS away, a stream not set up yet)
// is logged and tried again at the next interval; it never ends the run.
// It returns nil when ctx ends, and an error only for what no retry can
// mend: an interval that is not positive, or no signing key.
func (p *Publisher) RolloutRun(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("running rollouts: want a positive interval, got %v", interval)
	}
	if p.cfg.SigningKey == nil {
		return errors.New("running rollouts: no signing key configured")
	}
	names := p.policyNames()
	if len(names) == 0 {
		p.log.Warn("rollout_nothing_to_run", "reason", "no certificate has a rollout policy")
	}
	p.log.Info("rollout_run_started", "interval", interval, "certificates", strings.Join(names, ","))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := p.RolloutStep(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("rollout_step_failed", "error", err, "retry_in", interval)
		}
		select {
		case <-ctx.Done():
			p.log.Info("rollout_run_stopped")
			return nil
		case <-t.C:
		}
	}
}

// WaveView is one wave of a RolloutView.
type WaveView struct {
	// Wave is its number: 0 the canaries, then 1, 2, …
	Wave int `json:"wave"`
	// Released is true once the rollout record releases every node of it.
	Released bool `json:"released"`
	// Nodes are its nodes, sorted, each with its outcome.
	Nodes []RolloutNode `json:"nodes"`
	// Installed, Verified, Failed, InFlight and Waiting count its nodes by
	// outcome (Verified those installed that report their served check
	// passed); Waiting counts the nodes not released yet.
	Installed int `json:"installed"`
	Verified  int `json:"verified"`
	Failed    int `json:"failed"`
	InFlight  int `json:"in_flight"`
	Waiting   int `json:"waiting"`
}

// RolloutNode is one node of a wave.
type RolloutNode struct {
	Node string `json:"node"`
	// Outcome is NodeInstalled, NodeFailed, NodeInFlight or NodeWaiting.
	Outcome string `json:"outcome"`
	// Why says why it failed.
	Why      string `json:"why,omitempty"`
	Verified bool   `json:"verified,omitempty"`
}

// RolloutView is where the rollout of a certificate's newest bundle
// stands.
type RolloutView struct {
	Name string `json:"name"`
	// Version, Fingerprint and Serial are the newest bundle's (zero when
	// none is published).
	Version     uint64             `json:"version"`
	Fingerprint crypto.Fingerprint `json:"fingerprint"`
	Serial      string             `json:"serial"`
	// Hold is true when the newest bundle is held for a rollout.
	Hold bool `json:"hold"`
	// State is the rollout record's state, RolloutPending or RolloutNone.
	State string `json:"state"`
	// Reason says why it is paused, halted or aborted.
	Reason string `json:"reason"`
	// Generation and Wave are the record's (0 without one); WaveStarted
	// when that wave was released, Updated when the record was written.
	Generation  uint64    `json:"generation"`
	Wave        int       `json:"wave"`
	WaveStarted time.Time `json:"wave_started,omitzero"`
	Updated     time.Time `json:"updated,omitzero"`
	// Waves are the waves that have nodes, in order.
	Waves []WaveView `json:"waves"`
}

// Halted tells whether the rollout is halted.
func (v *RolloutView) Halted() bool { return v.State == crypto.RolloutHalted }

// state is the state of the rollout of in's newest bundle: its record's,
// RolloutPending or RolloutNone.
func (in *stepInput) state() string {
	switch rec := in.current(); {
	case rec != nil:
		return rec.State
	case in.Bundle.exists() && in.Bundle.Hold:
		return RolloutPending
	}
	return RolloutNone
}

// view shows in: the rollout of its newest bundle.
func view(in stepInput) RolloutView {
	v := RolloutView{Name: in.Name, Version: in.Bundle.Version, Fingerprint: in.Bundle.Fingerprint,
		Serial: in.Bundle.Serial, Hold: in.Bundle.Hold, State: in.state()}
	rec := in.current()
	if rec != nil {
		v.Reason, v.Generation, v.Wave = rec.Reason, rec.Generation, rec.Wave
		v.WaveStarted, v.Updated = rec.WaveStarted, rec.Time
	}
	if !in.Bundle.exists() {
		return v
	}
	w := planWaves(in.Policy, in.Nodes)
	for k, nodes := range w.nodes {
		if len(nodes) == 0 {
			continue
		}
		wv := WaveView{Wave: k, Released: rec != nil || !in.Bundle.Hold}
		for _, n := range nodes {
			st := in.Status[n]
			rn := RolloutNode{Node: n, Outcome: NodeWaiting}
			released := !in.Bundle.Hold || rec != nil && rec.Releases(n)
			switch {
			case installedIt(st, in.Bundle.Version, in.Bundle.Fingerprint):
				rn.Outcome, rn.Verified = NodeInstalled, st.Verified
			case released && rec != nil:
				r := classify(n, st, rec, in.Policy.WaveDeadline, in.Now)
				rn.Outcome, rn.Why = map[outcome]string{inFlight: NodeInFlight, failed: NodeFailed}[r.outcome], r.why
			case released:
				rn.Outcome = NodeInFlight
			}
			if !released {
				wv.Released = false
			}
			switch rn.Outcome {
			case NodeInstalled:
				wv.Installed++
				if rn.Verified {
					wv.Verified++
				}
			case NodeFailed:
				wv.Failed++
			case NodeInFlight:
				wv.InFlight++
			case NodeWaiting:
				wv.Waiting++
			}
			wv.Nodes = append(wv.Nodes, rn)
		}
		v.Waves = append(v.Waves, wv)
	}
	return v
}

// checkRolloutName checks that name is a configured certificate with a
// rollout policy.
func (p *Publisher) checkRolloutName(name string) (*RolloutPolicy, error) {
	if err := wire.CheckCertName(name); err != nil {
		return nil, err
	}
	if _, ok := p.cfg.Certificates[name]; !ok {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrUnknownCertificate)
	}
	pol := p.cfg.Policy(name)
	if pol == nil {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNoPolicy)
	}
	return pol, nil
}

// ErrNoPolicy means a rollout command named a certificate without a
// rollout policy: it goes into service at once, with no rollout.
var ErrNoPolicy = errors.New("has no rollout policy")

// Rollouts shows where the rollout of each named certificate (every one
// with a policy when none is named) stands, sorted by name. A name that is
// not configured, or has no policy, is an error.
func (p *Publisher) Rollouts(ctx context.Context, names ...string) ([]RolloutView, error) {
	if len(names) == 0 {
		names = p.policyNames()
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	for _, name := range names {
		if _, err := p.checkRolloutName(name); err != nil {
			return nil, fmt.Errorf("reading rollouts: %w", err)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make([]RolloutView, 0, len(names))
	err := p.withRollouts(ctx, "reading rollouts", func(ctx context.Context, c *rolloutCall) error {
		for _, name := range names {
			_, in, err := c.read(ctx, "reading the rollout of "+name, name)
			if err != nil {
				return fmt.Errorf("reading the rollout of %q: %w", name, err)
			}
			out = append(out, view(in))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// errCommand is a command refused on what it read: never retried.
type errCommand struct{ msg string }

func (e errCommand) Error() string { return e.msg }

// command applies an operator's command (verb, logged as rollout_<event>)
// to the rollout of name: apply gives the record to write from what was
// read (nil: write none), or refuses (errCommand). It is read, decided and
// written again when another writer stored a record first (decide). It
// returns the view after.
func (p *Publisher) command(ctx context.Context, verb, event, name string, apply func(in *stepInput) (*crypto.RolloutRecord, error)) (*RolloutView, error) {
	if _, err := p.checkRolloutName(name); err != nil {
		return nil, fmt.Errorf("%s rollout: %w", verb, err)
	}
	doing := fmt.Sprintf("%s rollout of %q", verb, name)
	var v RolloutView
	err := p.withRollouts(ctx, doing, func(ctx context.Context, c *rolloutCall) error {
		in, _, err := c.decide(ctx, verb+" rollout of "+name, name, func(in *stepInput) (*crypto.RolloutRecord, string, error) {
			next, err := apply(in)
			return next, event, err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", doing, err)
		}
		v = view(in)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// started is the current record of in, or a refusal naming why there is
// no rollout to act on.
func started(in *stepInput) (*crypto.RolloutRecord, error) {
	switch rec := in.current(); {
	case rec != nil:
		return rec, nil
	case !in.Bundle.exists():
		return nil, errCommand{"no bundle is published"}
	case !in.Bundle.Hold:
		return nil, errCommand{fmt.Sprintf("the newest bundle (version %d) is not held: it goes into service at once, with no rollout", in.Bundle.Version)}
	default:
		return nil, errCommand{fmt.Sprintf("the rollout of version %d has not started: the controller (certsync rollout run) starts it", in.Bundle.Version)}
	}
}

// openRecord is the rollout record a command acts on: started (started),
// not in a final state (refuseState), and in one of states when any are
// named.
func openRecord(in *stepInput, states ...string) (*crypto.RolloutRecord, error) {
	rec, err := started(in)
	if err != nil {
		return nil, err
	}
	if err := refuseState(rec); err != nil {
		return nil, err
	}
	if len(states) > 0 && !slices.Contains(states, rec.State) {
		return nil, errCommand{"not " + strings.Join(states, " or ") + ": it is " + rec.State}
	}
	return rec, nil
}

// refuseState refuses acting on a rollout in a final state.
func refuseState(rec *crypto.RolloutRecord) error {
	switch rec.State {
	case crypto.RolloutComplete:
		return errCommand{fmt.Sprintf("version %d is already complete: every node is released (certsync rollback NAME takes it out of service)", rec.Version)}
	case crypto.RolloutAborted:
		return errCommand{fmt.Sprintf("version %d was aborted", rec.Version)}
	}
	return nil
}

// Promote releases the next wave of name's rollout now, whatever the
// soak and the nodes in flight (generation+1); after the last wave it
// completes the rollout. A rollout not started yet is started (its
// canaries released). A paused rollout stays paused (pause and promote
// step through the waves by hand); a halted one must be resumed first.
func (p *Publisher) Promote(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "promote", "promoted", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		if in.Bundle.exists() && in.Bundle.Hold && in.current() == nil {
			return startRecord(in), nil
		}
		rec, err := openRecord(in)
		if err != nil {
			return nil, err
		}
		if rec.State == crypto.RolloutHalted {
			return nil, errCommand{"halted (" + rec.Reason + "): resume it first (certsync rollout resume " + in.Name + ")"}
		}
		next, _ := in.advance(rec, planWaves(in.Policy, in.Nodes))
		return next, nil
	})
	return v, err
}

// Pause stops name's running rollout from releasing further waves; the
// nodes released already go on installing.
func (p *Publisher) Pause(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "pause", "paused", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec, err := openRecord(in, crypto.RolloutRunning)
		if err != nil {
			return nil, err
		}
		next := in.successor(rec, crypto.RolloutPaused, false)
		next.Reason = "paused by the operator"
		return next, nil
	})
	return v, err
}

// Resume sets name's paused or halted rollout running again (generation+1):
// the released nodes whose install failed try again, and the wave's
// deadline starts again from now.
func (p *Publisher) Resume(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "resume", "resumed", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec, err := openRecord(in, crypto.RolloutPaused, crypto.RolloutHalted)
		if err != nil {
			return nil, err
		}
		next := in.successor(rec, crypto.RolloutRunning, true)
		next.WaveStarted = in.Now
		return next, nil
	})
	return v, err
}

// Abort ends name's rollout for good: a record in state aborted that
// releases no node (generation+1, so nodes released but not installed yet
// no longer install it), then the previous certificate published again
// without hold, with a new version and the aborted one withdrawn
// (Rollback with Immediate), so every node that installed it goes back at
// once. When that publish fails, Abort says so; run it again: on an
// aborted rollout whose bundle is still the newest it only publishes the
// previous certificate again.
func (p *Publisher) Abort(ctx context.Context, name string) (*RolloutView, error) {
	v, err := p.command(ctx, "abort", "aborted", name, func(in *stepInput) (*crypto.RolloutRecord, error) {
		rec := in.current()
		if rec != nil && rec.State == crypto.RolloutAborted {
			return nil, nil // only the rollback is left to do
		}
		if rec == nil {
			if !in.Bundle.exists() || !in.Bundle.Hold {
				_, err := started(in)
				return nil, err
			}
			rec = startRecord(in) // not started: abort before any release
			rec.Released, rec.Wave = nil, 0
		} else if rec.State == crypto.RolloutComplete {
			return nil, refuseState(rec)
		}
		next := in.successor(rec, crypto.RolloutAborted, true)
		next.Released, next.All = nil, false
		next.Reason = "aborted by the operator"
		return next, nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.Rollback(ctx, name, RollbackOptions{Immediate: true}); err != nil {
		return v, fmt.Errorf("abort rollout of %q: aborted, but publishing the previous certificate again failed (run certsync rollout abort %s again): %w", name, name, err)
	}
	p.log.Info("rollout_abort_rolled_back", "name", name, "version", v.Version, "fingerprint", v.Fingerprint)
	return v, nil
}
