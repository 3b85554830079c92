package publisher

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// Defaults of HealthOptions.
const (
	// DefaultStaleAfter is how old a node's last report may be before its
	// records are stale. `node run` refreshes its records every 5 minutes by
	// default, so an hour is a dozen missed refreshes: long enough to ride out
	// a NATS restart or a reboot, short enough to be noticed the same hour.
	// Nodes that only run `node sync` from cron report once per run and need
	// a threshold longer than their cron period.
	DefaultStaleAfter = time.Hour
	// DefaultWarnBefore is how close to its not-after a certificate is
	// flagged as expiring: two weeks, half of the 30 days before expiry at
	// which certbot renews, so a renewal that did not reach a node is caught
	// with time to act.
	DefaultWarnBefore = 14 * 24 * time.Hour
)

// Problems a Row may have. Each makes a configured row unhealthy.
const (
	ProblemFailed   = "failed"   // the node reported a failure (the row's Error says which)
	ProblemStale    = "stale"    // the node's last report is older than HealthOptions.StaleAfter
	ProblemMissing  = "missing"  // the node never reported, or holds nothing yet
	ProblemBehind   = "behind"   // the node holds another certificate than the newest published
	ProblemExpiring = "expiring" // what the node holds expires within HealthOptions.WarnBefore
	// ProblemRolloutHalted: the rollout of the newest bundle of the row's
	// certificate is halted (the row's RolloutReason says why). Every
	// configured row of the certificate has it. Waiting for a wave is no
	// problem.
	ProblemRolloutHalted = "rollout_halted"
)

// Fleet is what the stream and the status bucket say about the fleet at one
// moment, unjudged: the configuration it is to be compared with, every
// status record the nodes wrote, and the newest bundle of each certificate.
// Rows judges it.
type Fleet struct {
	// Certificates is the configuration: certificate name -> node names.
	Certificates map[string][]string
	// Records are every record of the status bucket, sorted by node, then
	// certificate. Node and Certificate always come from the record's key,
	// which a node can only write for itself. A value that cannot be decoded
	// is kept as a failed record saying so, last seen when it was written.
	Records []wire.Status
	// Newest is the newest bundle the stream holds for each certificate, by
	// name, read from headers only.
	Newest map[string]BundleInfo
	// Rollouts is what the newest rollout record of each certificate says
	// in its headers, by name; none for a certificate without one, or when
	// the stream holds no rollout subjects.
	Rollouts map[string]RolloutHead
	// ReadAt is when the fleet was read.
	ReadAt time.Time
}

// Fleet reads the status bucket, the newest bundle of every certificate
// in the stream and the newest rollout record of each. It reads headers
// only, never a body, needs no signing key and creates nothing: a missing stream or bucket reads as empty. Like the
// other calls, it retries while NATS is unreachable, until ctx ends or
// Config.Timeout passes.
func (p *Publisher) Fleet(ctx context.Context) (*Fleet, error) {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the fleet: %w", err)
	}
	defer s.close()
	f := &Fleet{Certificates: maps.Clone(p.cfg.Certificates), Newest: map[string]BundleInfo{}, Rollouts: map[string]RolloutHead{}}
	err = s.do(ctx, "reading bundles", func(ctx context.Context) error {
		bundles, err := s.bundles(ctx, []string{wire.Subjects, wire.GroupSubjects})
		if err != nil {
			return err
		}
		clear(f.Newest)
		for _, b := range bundles {
			if b.Name == "" {
				continue
			}
			// The highest version over the certificate's subjects: every
			// recipient group of one version carries the same one.
			if cur, ok := f.Newest[b.Name]; !ok || b.Version > cur.Version || b.Version == cur.Version && b.Sequence > cur.Sequence {
				f.Newest[b.Name] = b
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the fleet: %w", err)
	}
	err = s.do(ctx, "reading rollout records", func(ctx context.Context) error {
		heads, err := s.rolloutHeads(ctx)
		if err != nil {
			return err
		}
		clear(f.Rollouts)
		for _, h := range heads {
			f.Rollouts[h.Name] = h
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the fleet: %w", err)
	}
	err = s.do(ctx, "reading status records", func(ctx context.Context) error {
		var err error
		f.Records, err = s.statusRecords(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the fleet: %w", err)
	}
	f.ReadAt = p.now()
	return f, nil
}

// RolloutHead is what the newest message on a certificate's rollout
// subject says in its headers. Like the bundles' headers they are not
// signed (the record's body is; Rollouts and the controller read that,
// with the signing key): status needs no key, and only the publisher's
// credential may publish on the stream.
type RolloutHead struct {
	// Sequence is the message's stream sequence; Name the certificate,
	// from the subject.
	Sequence uint64
	Name     string
	// Version and Fingerprint are the bundle the record is about.
	Version     uint64
	Fingerprint crypto.Fingerprint
	// State, Generation and Reason are the record's.
	State      string
	Generation uint64
	Reason     string
}

// rolloutHeads reads the headers of the newest message on each rollout
// subject. A missing stream, or one without the rollout subjects (set up
// before rollouts), has none.
func (s *session) rolloutHeads(ctx context.Context) ([]RolloutHead, error) {
	st, err := s.streamIfAny(ctx)
	if st == nil || err != nil || !slices.Contains(st.CachedInfo().Config.Subjects, wire.RolloutSubjects) {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(wire.RolloutSubjects))
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", wire.Stream, err)
	}
	if len(info.State.Subjects) == 0 {
		return nil, nil
	}
	var out []RolloutHead
	err = readHeaders(ctx, st, []string{wire.RolloutSubjects}, jetstream.DeliverLastPerSubjectPolicy, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
		h := msg.Headers()
		r := RolloutHead{Sequence: meta.Sequence.Stream, State: wire.Printable(h.Get(wire.HeaderRolloutState)), Reason: wire.Printable(h.Get(wire.HeaderRolloutReason))}
		r.Name, _ = wire.NameFromRolloutSubject(msg.Subject())
		r.Version, _ = strconv.ParseUint(h.Get(wire.HeaderVersion), 10, 64)
		r.Generation, _ = strconv.ParseUint(h.Get(wire.HeaderRolloutGeneration), 10, 64)
		r.Fingerprint, _ = crypto.ParseFingerprint(h.Get(wire.HeaderFingerprint))
		if r.Name != "" {
			out = append(out, r)
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// statusRecords reads every record of the status bucket, sorted by node,
// then certificate. A missing bucket has none.
func (s *session) statusRecords(ctx context.Context) ([]wire.Status, error) {
	kv, err := s.js.KeyValue(ctx, wire.StatusBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s: %w", wire.StatusBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("reading bucket %s: %w", wire.StatusBucket, err)
	}
	defer w.Stop()
	var out []wire.Status
	// Each record comes within a request's deadline, or the watch's server
	// went away: session.do reads again.
	stalled := time.NewTimer(natsconn.RequestTimeout)
	defer stalled.Stop()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		stalled.Reset(natsconn.RequestTimeout)
		select {
		case e, ok = <-w.Updates():
		case <-stalled.C:
			return nil, fmt.Errorf("reading bucket %s: no record within %v: %w", wire.StatusBucket, natsconn.RequestTimeout, context.DeadlineExceeded)
		case <-ctx.Done():
			return nil, fmt.Errorf("reading bucket %s: %w", wire.StatusBucket, context.Cause(ctx))
		}
		if !ok {
			return nil, fmt.Errorf("reading bucket %s: %w", wire.StatusBucket, cmp.Or(ctx.Err(), errors.New("watch ended early")))
		}
		if e == nil { // every current value was delivered
			break
		}
		st, ok := s.decodeStatus(e.Key(), e.Value(), e.Created())
		if ok {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b wire.Status) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Certificate, b.Certificate))
	})
	return out, nil
}

// decodeStatus decodes the record under key, written at written. A key that
// is not a status key is skipped with a warning; a value that is not a record
// becomes a failed record saying so, last seen when it was written, so the
// pair shows up instead of vanishing. Its text is made printable
// (wire.Printable): a node writes its record, and what it wrote is shown.
func (s *session) decodeStatus(key string, value []byte, written time.Time) (wire.Status, bool) {
	node, cert, err := wire.SplitStatusKey(key)
	if err != nil {
		s.log.Warn("status_key_skipped", "bucket", wire.StatusBucket, "error", err)
		return wire.Status{}, false
	}
	var st wire.Status
	if err := json.Unmarshal(value, &st); err != nil {
		s.log.Warn("status_record_unreadable", "bucket", wire.StatusBucket, "key", key, "error", err)
		st = wire.Status{State: wire.StateFailed, Error: fmt.Sprintf("unreadable status record: %v", err), LastSeen: written.UTC()}
	}
	st.Node, st.Certificate = node, cert
	st.MakePrintable()
	return st, true
}

// HealthOptions are the thresholds rows are judged by. Zero fields take
// their defaults.
type HealthOptions struct {
	// Now is the moment judged (default Fleet.ReadAt).
	Now time.Time
	// StaleAfter is how old a report may be before it is stale
	// (default DefaultStaleAfter).
	StaleAfter time.Duration
	// WarnBefore is how close to expiry a certificate is flagged expiring
	// (default DefaultWarnBefore).
	WarnBefore time.Duration
}

// Row is one node and one certificate, judged.
type Row struct {
	// Node and Certificate name the pair.
	Node, Certificate string
	// State is wire.StateInstalled, StateStaged or StateFailed as the node
	// reported it, StateMissing when it never reported (or reported holding
	// nothing), or StateStale when its last report is older than StaleAfter.
	// A state this version does not know reads as failed.
	State string
	// Configured is false for a record of a pair the configuration no
	// longer lists (the node left, or no longer receives the certificate).
	// Such a row is shown but is never unhealthy: republish already named
	// the certificates to reissue, and the record stays until someone
	// deletes it from the bucket.
	Configured bool
	// Reported is the node's record; nil when it never reported.
	Reported *wire.Status
	// Newest is the newest bundle published for the certificate; nil when
	// none is.
	Newest *BundleInfo
	// Release describes what the node holds, as its record says: the
	// installed certificate, else the staged one; zero when neither (its
	// NotBefore is never reported).
	crypto.Release
	// DaysLeft is the number of whole days until NotAfter, negative once
	// expired; meaningless when NotAfter is zero.
	DaysLeft int
	// LastSeen is when the node last wrote the record; zero when never.
	LastSeen time.Time
	// Error is the node's last error, empty when none.
	Error string
	// Behind is true when the node holds a certificate other than the
	// newest published, and not a later one. A node holding nothing is
	// missing, not behind.
	Behind bool
	// Expiring is true when NotAfter is within WarnBefore (or past).
	Expiring bool
	// Waiting is true when the node staged the newest bundle, held, and
	// reports waiting for its wave (rollout: waiting): it is not behind.
	Waiting bool
	// RolloutState and RolloutReason are the state and reason of the
	// newest rollout record of the certificate, when it is about the
	// newest bundle (from its headers); empty otherwise.
	RolloutState, RolloutReason string
}

// Problems lists what is wrong with a configured row, in a fixed order
// (the Problem* values); nil when it is healthy or not configured.
func (r Row) Problems() []string {
	if !r.Configured {
		return nil
	}
	var p []string
	switch r.State {
	case wire.StateFailed:
		p = append(p, ProblemFailed)
	case wire.StateStale:
		p = append(p, ProblemStale)
	case wire.StateMissing:
		p = append(p, ProblemMissing)
	}
	if r.Behind {
		p = append(p, ProblemBehind)
	}
	if r.Expiring {
		p = append(p, ProblemExpiring)
	}
	if r.RolloutState == crypto.RolloutHalted {
		p = append(p, ProblemRolloutHalted)
	}
	return p
}

// Healthy is true when the row needs no one's attention: the pair is
// configured, installed or staged, up to date with the newest bundle and
// not expiring; or the pair is no longer configured.
func (r Row) Healthy() bool { return len(r.Problems()) == 0 }

// Rows judges the fleet: one row for each node of each configured
// certificate, and one for each record of a pair no longer configured,
// sorted by node, then certificate. It does no I/O.
func (f *Fleet) Rows(o HealthOptions) []Row {
	if o.Now.IsZero() {
		o.Now = f.ReadAt
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	if o.WarnBefore <= 0 {
		o.WarnBefore = DefaultWarnBefore
	}
	type pair struct{ node, cert string }
	records := make(map[pair]*wire.Status, len(f.Records))
	for i := range f.Records {
		st := &f.Records[i]
		records[pair{st.Node, st.Certificate}] = st
	}
	configured := map[pair]bool{}
	for cert, nodes := range f.Certificates {
		for _, node := range nodes {
			configured[pair{node, cert}] = true
		}
	}
	pairs := slices.Collect(maps.Keys(configured))
	for p := range records {
		if !configured[p] {
			pairs = append(pairs, p)
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(strings.Compare(a.node, b.node), strings.Compare(a.cert, b.cert))
	})
	rows := make([]Row, 0, len(pairs))
	for _, p := range pairs {
		var newest *BundleInfo
		if b, ok := f.Newest[p.cert]; ok {
			newest = &b
		}
		r := judge(p.node, p.cert, configured[p], records[p], newest, o)
		if h, ok := f.Rollouts[p.cert]; ok && newest != nil && newest.Version == h.Version && newest.Fingerprint == h.Fingerprint {
			r.RolloutState, r.RolloutReason = h.State, h.Reason
		}
		rows = append(rows, r)
	}
	return rows
}

// judge makes the row of one pair.
func judge(node, cert string, configured bool, st *wire.Status, newest *BundleInfo, o HealthOptions) Row {
	r := Row{Node: node, Certificate: cert, Configured: configured, Newest: newest, State: wire.StateMissing}
	if st == nil {
		return r
	}
	rec := *st
	r.Reported = &rec
	r.LastSeen = st.LastSeen
	r.Error = st.Error
	switch {
	case st.InstalledFingerprint != "":
		r.Release = st.Installed()
	case st.StagedFingerprint != "":
		r.Release = st.Staged()
	}
	switch st.State {
	case wire.StateInstalled, wire.StateStaged, wire.StateFailed, wire.StateMissing:
		r.State = st.State
	default:
		r.State = wire.StateFailed
		if r.Error == "" {
			r.Error = fmt.Sprintf("reported unknown state %q", st.State)
		}
	}
	if st.LastSeen.IsZero() || o.Now.Sub(st.LastSeen) > o.StaleAfter {
		r.State = wire.StateStale
	}
	if !r.NotAfter.IsZero() {
		left := r.NotAfter.Sub(o.Now)
		r.DaysLeft = int(math.Floor(left.Hours() / 24))
		r.Expiring = left < o.WarnBefore
	}
	if !r.Fingerprint.IsZero() && newest != nil && !newest.Fingerprint.IsZero() && r.Fingerprint != newest.Fingerprint {
		r.Behind = r.Version == 0 || newest.Version == 0 || r.Version < newest.Version
	}
	if newest != nil && !newest.Fingerprint.IsZero() && st.Rollout == wire.RolloutWaiting &&
		st.StagedVersion == newest.Version && st.StagedFingerprint == newest.Fingerprint.String() {
		r.Waiting, r.Behind = true, false
	}
	return r
}
