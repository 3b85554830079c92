package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// statusWriter keeps the node's records in the status bucket. A record is
// built from what is staged and from the last refusal or failure of the
// certificate, which stays until a later bundle (higher stream sequence)
// is staged or found already staged, or the failed one succeeds on retry. Status is worth less than
// certificates: when the bucket cannot be reached or created, the node
// warns once and goes on, looking again after StatusInterval.
type statusWriter struct {
	h        holdings
	certs    map[string]Certificate // the node's certificates, for their schedules
	node     string                 // the node's name
	version  string                 // certsync's version, for the records
	names    []string
	known    map[string]bool // names, for lookups
	now      func() time.Time
	interval time.Duration // StatusInterval
	log      *slog.Logger

	mu       sync.Mutex // held while a record is built and written
	failures map[string]failure
	// installFailures are, by certificate, the failures of installs that
	// the install state could not record (Node.retryUnrecorded), until an
	// install succeeds.
	installFailures map[string]failure
	// retry is signalled when a record could not be written (a timeout
	// under load, a lost connection): Run then writes again soon rather
	// than after StatusInterval.
	retry chan struct{}
	// cleared are the certificates a bundle succeeded for since start:
	// a failure recorded before the restart no longer holds for them.
	cleared map[string]bool
	js      jetstream.JetStream // the connection kv belongs to
	kv      jetstream.KeyValue
	retryAt time.Time
	// bucketWait is how long bucket waits before it asks for the bucket
	// again after NATS did not answer (natsconn.Transient): statusRetry,
	// doubling to the interval while it goes on; 0 after an answer.
	bucketWait time.Duration
	warned     bool
	seeded     bool
}

// statusTimeout bounds each status bucket call: a request's own deadline,
// natsconn.RequestTimeout. A server that denies the node the bucket only
// lets the call time out, so it is short.
const statusTimeout = natsconn.RequestTimeout

// failure is the last refusal or transient failure of a certificate.
type failure struct {
	seq uint64 // stream sequence of the message; 0 when read back from the bucket
	msg string
	at  time.Time
	// rollout: the message was a rollout record. A later good record
	// clears only a record's failure; a later bundle clears either.
	rollout bool
}

// holdings is what the status writer reads of a node: what it holds of a
// certificate, staged and in service, and when the staged one installs.
// Node implements it. Each method may be called at any time from the
// writer's goroutine; each reads the disk afresh.
type holdings interface {
	// staged returns the record of what is staged for name: an error
	// wrapping ErrNotStaged when nothing is, the stage folder's refusal
	// when it is unsafe.
	staged(name string) (*Staged, error)
	// installed returns the version of name in service and its install
	// state (see installer.installed).
	installed(name string) (*Installed, *installState, error)
	// planFor says when staged installs on its own (see Node.planFor).
	planFor(name string, staged *Staged, inst *Installed, st *installState, now time.Time) plan
}

// init readies s to report on the certificates names of the node cfg
// names, reading what it holds through h.
func (s *statusWriter) init(h holdings, cfg Config, names []string, log *slog.Logger) {
	s.h, s.node, s.version, s.names, s.now, s.interval, s.log = h, cfg.Node, cfg.Version, names, cfg.Now, cfg.StatusInterval, log
	s.certs = cfg.Certificates
	s.known = make(map[string]bool, len(names))
	for _, name := range names {
		s.known[name] = true
	}
	s.failures = map[string]failure{}
	s.installFailures = map[string]failure{}
	s.cleared = map[string]bool{}
	s.retry = make(chan struct{}, 1)
}

// succeeded clears the failure of name unless it came from a later message
// than seq (a refused newer bundle stays reported when an older one
// stages), or from a bundle when this success is a rollout record's
// (rollout): a good record says nothing of a refused bundle.
func (s *statusWriter) succeeded(name string, seq uint64, rollout bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rollout {
		if f, ok := s.failures[name]; ok && f.rollout && seq >= f.seq {
			delete(s.failures, name)
		}
		return
	}
	s.cleared[name] = true
	if f, ok := s.failures[name]; ok && seq >= f.seq {
		delete(s.failures, name)
	}
}

// failed records err as the last failure of name. Names that are not this
// node's certificates have no record; the log and the report carry them.
func (s *statusWriter) failed(name string, seq uint64, err error, rollout bool) {
	if !s.known[name] {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.failures[name]; ok && f.seq > seq {
		return // a later message's failure says more
	}
	s.failures[name] = failure{seq: seq, msg: err.Error(), at: s.now().UTC(), rollout: rollout}
}

// installFailed records err as the failure of name's install, one the
// install state could not record.
func (s *statusWriter) installFailed(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installFailures[name] = failure{msg: err.Error(), at: s.now().UTC()}
}

// installRecovered clears what installFailed recorded: an install of name
// succeeded, or found its bundle in service.
func (s *statusWriter) installRecovered(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.installFailures, name)
}

// record builds the status record of certificate name.
func (s *statusWriter) record(name string) wire.Status {
	st := wire.Status{
		Node:        s.node,
		Certificate: name,
		LastSeen:    s.now().UTC(),
		Version:     s.version,
	}
	s.schedule(&st, name)
	meta, err := s.h.staged(name)
	switch {
	case err == nil:
		st.State = wire.StateStaged
		st.SetStaged(meta.Release)
	case errors.Is(err, ErrNotStaged):
		st.State = wire.StateMissing
	default:
		st.State, st.Error, st.ErrorTime, st.ErrorKind = wire.StateFailed, err.Error(), st.LastSeen, wire.ErrorKindStage
	}
	s.installed(&st, name, meta)
	if f, ok := s.installFailures[name]; ok && st.State != wire.StateFailed {
		st.State, st.Error, st.ErrorTime, st.ErrorKind = wire.StateFailed, f.msg, f.at, wire.ErrorKindInstall
	}
	if f, ok := s.failures[name]; ok {
		st.State, st.Error, st.ErrorTime, st.ErrorKind = wire.StateFailed, f.msg, f.at, wire.ErrorKindBundle
	}
	return st
}

// installed fills the Installed fields of st, InstallAt, and its state:
// installed when the staged bundle is in service, failed when its install
// failed (the error then says when it is retried, if it is).
func (s *statusWriter) installed(st *wire.Status, name string, staged *Staged) {
	inst, ist, err := s.h.installed(name)
	if err != nil {
		st.State, st.Error, st.ErrorTime, st.ErrorKind = wire.StateFailed, err.Error(), st.LastSeen, wire.ErrorKindInstall
		return
	}
	if inst != nil {
		st.SetInstalled(inst.Release)
		st.InstalledAt = inst.InstalledAt
		st.Verified = ist.Pending == nil && ist.Verified.is(&inst.Staged, s.certs[name].Verify)
	}
	if ist.Failed != nil {
		st.FailedVersion, st.FailedFingerprint = ist.Failed.Version, ist.Failed.Fingerprint.String()
		st.FailedGeneration = ist.Failed.Generation
	}
	var p plan
	if staged != nil {
		p = s.h.planFor(name, staged, inst, ist, st.LastSeen)
		// While a held bundle waits for its release, when it installs is
		// not known: install_at stays zero (p.at, if ok, is when the
		// expiry deadline would override the hold).
		if p.ok && p.why != "interrupted" && p.rollout != wire.RolloutWaiting {
			st.InstallAt = p.at.UTC()
		}
		st.Rollout, st.RolloutGeneration = p.rollout, p.generation
		if staged.Hold && inst != nil && inst.Rollout != "" && crypto.Compare(inst.Release, staged.Release) == crypto.Same {
			st.Rollout = inst.Rollout // how it went into service
		}
	}
	switch {
	case st.State == wire.StateFailed:
	case ist.Failed.is(staged):
		st.State, st.Error, st.ErrorTime, st.ErrorKind = wire.StateFailed, ist.Failed.Error, ist.Failed.At, wire.ErrorKindInstall
		switch {
		case p.force:
			st.Error += fmt.Sprintf("; failed %d times, tried again at %s: rollout generation %d releases this node again",
				max(ist.Failed.Attempts, 1), st.InstallAt.Format(time.RFC3339), p.generation)
		case p.ok:
			st.Error += fmt.Sprintf("; failed %d times, tried again at %s under expiry_deadline",
				max(ist.Failed.Attempts, 1), p.at.UTC().Format(time.RFC3339))
		case staged.Hold:
			st.Error += fmt.Sprintf("; failed %d times, tried again once a later rollout generation than %d releases this node",
				max(ist.Failed.Attempts, 1), ist.Failed.Generation)
		}
	case inst != nil && ist.Pending == nil && (staged == nil || crypto.Compare(inst.Release, staged.Release) == crypto.Same):
		st.State = wire.StateInstalled
	}
}

// schedule fills the schedule fields of st from certificate name's
// configuration: what `certsync plan` needs to tell what the node will do
// with a bundle it has not received yet.
func (s *statusWriter) schedule(st *wire.Status, name string) {
	c, ok := s.certs[name]
	if !ok {
		return
	}
	st.Schedule = c.Schedule.String()
	if next := c.Schedule.next(st.LastSeen); !next.IsZero() {
		st.NextWindow = next.UTC()
	}
	if c.Splay > 0 {
		st.Splay = c.Splay.String()
	}
	st.ExpiryDeadline = max(c.ExpiryDeadline, 0).String()
}

// write writes the record of certificate name, if it is one of the node's.
func (s *statusWriter) write(ctx context.Context, js jetstream.JetStream, name string) {
	if !s.known[name] {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.put(ctx, js, name)
}

// writeAll writes the records of all the node's certificates.
func (s *statusWriter) writeAll(ctx context.Context, js jetstream.JetStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.names {
		if !s.put(ctx, js, name) {
			return
		}
	}
}

// put writes one record; it reports false when the bucket is unavailable.
// The caller holds s.mu.
func (s *statusWriter) put(ctx context.Context, js jetstream.JetStream, name string) bool {
	kv := s.bucket(ctx, js)
	if kv == nil {
		return false
	}
	st := s.record(name)
	val, err := json.Marshal(st)
	if err != nil {
		s.log.Warn("status_write_failed", "name", name, "error", err)
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if _, err := kv.Put(ctx, wire.StatusKey(s.node, name), val); err != nil {
		s.log.Warn("status_write_failed", "name", name, "error", err)
		s.signalRetry()
	}
	return true
}

// signalRetry tells Run to write the records again soon (statusRetry).
func (s *statusWriter) signalRetry() {
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// bucket returns the status bucket on js, creating it if it is missing and
// the server lets the node, or nil. The caller holds s.mu.
func (s *statusWriter) bucket(ctx context.Context, js jetstream.JetStream) jetstream.KeyValue {
	if s.js == js && s.kv != nil {
		return s.kv
	}
	now := time.Now()
	if s.js == js && now.Before(s.retryAt) {
		if s.bucketWait > 0 {
			s.signalRetry() // Run looks again soon: retryAt may come before the interval
		}
		return nil
	}
	s.js, s.kv = js, nil
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, wire.StatusBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		// Only on a server without permissions: the bucket's stream, with
		// the protections the management side gives it (no roll-ups,
		// purges or deletes), not CreateKeyValue's, which allow roll-ups.
		_, err = js.CreateStream(ctx, wire.StatusStreamConfig(1))
		if err == nil || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			kv, err = js.KeyValue(ctx, wire.StatusBucket) // ours, or another node was quicker
		}
	}
	if err != nil {
		// A bucket NATS did not answer for (its leader died, the cluster
		// is electing one) is asked for again soon, backing off to the
		// interval: a node denied the bucket only sees timeouts too, and
		// a fleet of them must not ask every few seconds. A missing or
		// refused one waits for the interval.
		hint := "the management side creates the bucket; this node goes on without reporting"
		wait := s.interval
		if natsconn.Transient(err) {
			s.bucketWait = min(max(2*s.bucketWait, statusRetry), s.interval)
			wait = s.bucketWait
			hint = "NATS did not answer in time: this node asks again, backing off to its status interval"
			s.signalRetry()
		}
		s.retryAt = now.Add(wait)
		if !s.warned && !errors.Is(err, context.Canceled) {
			s.warned = true
			s.log.Warn("status_unavailable", "bucket", wire.StatusBucket, "error", err, "retry_in", wait, "hint", hint)
		}
		return nil
	}
	s.bucketWait = 0
	s.kv = kv
	s.seed(ctx, kv)
	return kv
}

// seed takes back, once per Node, the failures recorded before a restart,
// so a refusal stays visible until a later bundle succeeds, unless one
// already has (the bucket is first reached after a pass, in Sync).
func (s *statusWriter) seed(ctx context.Context, kv jetstream.KeyValue) {
	if s.seeded {
		return
	}
	s.seeded = true
	for _, name := range s.names {
		if _, ok := s.failures[name]; ok || s.cleared[name] {
			continue
		}
		e, err := kv.Get(ctx, wire.StatusKey(s.node, name))
		if err != nil {
			continue // missing, or not readable: nothing to take back
		}
		// Only a bundle's failure is taken back: an install's is the
		// install state's on disk, which says if it lasts. A record
		// written before kinds existed has none, and is not taken back.
		var st wire.Status
		if json.Unmarshal(e.Value(), &st) != nil || st.State != wire.StateFailed || st.Error == "" || st.ErrorKind != wire.ErrorKindBundle {
			continue
		}
		s.failures[name] = failure{msg: st.Error, at: st.ErrorTime}
	}
}

// staged implements holdings: the stage's record of name, or why the stage
// folder was refused.
func (n *Node) staged(name string) (*Staged, error) {
	if n.stage == nil {
		return nil, n.stageErr
	}
	return n.stage.Read(name)
}

// installed implements holdings: what name's installer says is in service.
func (n *Node) installed(name string) (*Installed, *installState, error) {
	in := n.installers[name]
	if in == nil {
		return nil, nil, fmt.Errorf("reading installed %q: %w", name, ErrUnknownCertificate)
	}
	return in.installed()
}
