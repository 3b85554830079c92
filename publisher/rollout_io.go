// The I/O around the rollout's decisions: opening a rollout call,
// reading a certificate's newest bundle and rollout record, writing a
// record.

package publisher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

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
		s.use(st)
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
