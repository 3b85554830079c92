// The stream and the status bucket: ensure makes them with certsync's
// settings where the credential may, and otherwise checks what a setup (or
// an older certsync) made; streamUpdate says what differs and which of
// those differences protect the nodes.

package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// ensure makes sure the stream and the status bucket exist with certsync's
// settings, creating or upgrading them where this credential may; see
// ensureStream. With setup (certsync setup, the admin's credential) every
// change certsync owns must be made; otherwise (publish, republish) a
// setting that differs but protects nothing (history, replicas…) and that
// this credential may not change is only reported.
func (s *session) ensure(ctx context.Context, o wire.StreamOptions, setup bool) error {
	st, err := s.ensureStream(ctx, wire.StreamConfig(o), setup)
	if err != nil {
		return err
	}
	s.use(st)
	if _, err := s.ensureStream(ctx, wire.StatusStreamConfig(o.Replicas), setup); err != nil {
		return err
	}
	return s.do(ctx, "binding bucket "+wire.StatusBucket, func(ctx context.Context) error {
		kv, err := s.js.KeyValue(ctx, wire.StatusBucket)
		if err != nil {
			return fmt.Errorf("binding bucket %q: %w", wire.StatusBucket, err)
		}
		s.status = kv
		return nil
	})
}

// use makes st the session's stream, with what its configuration allows:
// the rollout subjects, the group subjects, atomic batches.
func (s *session) use(st jetstream.Stream) {
	cfg := st.CachedInfo().Config
	s.stream = st
	s.rollouts = slices.Contains(cfg.Subjects, wire.RolloutSubjects)
	s.groups = slices.Contains(cfg.Subjects, wire.GroupSubjects)
	s.atomic = cfg.AllowAtomicPublish
}

// ensureStream makes sure the stream want names exists with the settings
// certsync owns: it creates a missing one and updates one whose settings
// differ. Settings an operator added (limits, placement…) are kept; storage
// and retention cannot change and are only reported.
//
// The stream's protections (DenyPurge, DenyDelete, no roll-ups, its
// subjects, direct gets, and the byte and message size limits certsync
// sets, the status bucket's) must hold: when they do not and this
// credential may not create or update the stream (the publisher's, under
// least privilege), it fails with ErrNotSetUp. Sources, a mirror,
// republish, a subject transform, message schedules and subject delete
// markers are never taken off silently: each can copy messages into the
// status bucket or out of the stream, or needs roll-ups, so they are
// refused with ErrRefusedSettings, naming them, for the admin to look at
// and remove.
func (s *session) ensureStream(ctx context.Context, want jetstream.StreamConfig, setup bool) (jetstream.Stream, error) {
	name := want.Name
	var st jetstream.Stream
	read := func(ctx context.Context) error {
		var err error
		if st, err = s.js.Stream(ctx, name); err != nil {
			return fmt.Errorf("reading stream %q: %w", name, err)
		}
		return nil
	}
	err := s.do(ctx, "reading stream "+name, read)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = s.do(ctx, "creating stream "+name, func(ctx context.Context) error {
			var err error
			st, err = s.js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrMaximumConsumersLimit) && want.MaxConsumers > 0 {
				s.accountConsumerLimit(name, want.MaxConsumers)
				want.MaxConsumers = 0
				st, err = s.js.CreateStream(ctx, want)
			}
			return err
		})
		switch {
		case err == nil:
			s.log.Info("stream_created", "stream", name, "replicas", want.Replicas,
				"history", want.MaxMsgsPerSubject, "duplicate_window", want.Duplicates)
			return st, nil
		case errors.Is(err, natsconn.ErrDenied):
			return nil, fmt.Errorf("stream %q is %w: it is missing and this credential may not create it: %w", name, ErrNotSetUp, err)
		case !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			return nil, fmt.Errorf("creating stream %q: %w", name, err)
		}
		// Created by someone else meanwhile: look again.
		err = s.do(ctx, "reading stream "+name, read)
	}
	if err != nil {
		return nil, err
	}
	cur := st.CachedInfo().Config
	plan := streamUpdate(cur, want)
	if len(plan.refused) > 0 {
		return nil, fmt.Errorf("stream %q has %s, %w", name, strings.Join(plan.refused, ", "), ErrRefusedSettings)
	}
	if cur.Storage != want.Storage || cur.Retention != want.Retention {
		s.log.Warn("stream_settings_kept", "stream", name, "storage", cur.Storage.String(),
			"retention", cur.Retention.String(), "reason", "cannot be changed on an existing stream")
	}
	if len(plan.changed) == 0 {
		return st, nil
	}
	changed := strings.Join(plan.changed, ", ")
	var updated jetstream.Stream
	err = s.do(ctx, "updating stream "+name, func(ctx context.Context) error {
		var err error
		updated, err = s.js.UpdateStream(ctx, plan.upd)
		if errors.Is(err, jetstream.ErrMaximumConsumersLimit) && plan.upd.MaxConsumers != cur.MaxConsumers {
			s.accountConsumerLimit(name, plan.upd.MaxConsumers)
			plan.upd.MaxConsumers = cur.MaxConsumers
			plan.changed = slices.DeleteFunc(plan.changed, func(c string) bool { return c == "max_consumers" })
			if changed = strings.Join(plan.changed, ", "); len(plan.changed) == 0 {
				updated = st
				return nil
			}
			updated, err = s.js.UpdateStream(ctx, plan.upd)
		}
		return err
	})
	switch {
	case err == nil && len(plan.changed) == 0:
		return updated, nil
	case err == nil:
		s.log.Info("stream_updated", "stream", name, "changed", strings.Join(plan.changed, ","))
		return updated, nil
	case errors.Is(err, natsconn.ErrDenied) && !setup && len(plan.unsafe) == 0:
		// Nothing that protects the stream: go on with what it has.
		s.log.Warn("stream_settings_differ", "stream", name, "changed", strings.Join(plan.changed, ","),
			"reason", "this credential may not update the stream",
			"hint", "run certsync setup with the admin credential to apply them")
		return st, nil
	case errors.Is(err, natsconn.ErrDenied):
		return nil, fmt.Errorf("stream %q is %w: its settings %s differ from certsync's, and this credential may not update it: %w",
			name, ErrNotSetUp, changed, err)
	}
	return nil, fmt.Errorf("updating stream %q (%s): %w", name, changed, err)
}

// accountConsumerLimit notes that the server refused the stream name
// the consumer limit certsync sets (limit) because the NATS account's
// JetStream limit max_consumers is lower: the stream is then made or kept
// without a limit of its own, and the account's governs. certsync sets
// its own only to lift nats-server's default of 1,000 per stream, which
// does not apply when the account sets a limit; it never overrides what
// the operator chose for the account.
func (s *session) accountConsumerLimit(name string, limit int) {
	s.log.Warn("stream_consumer_limit_of_account", "stream", name, "wanted", limit,
		"reason", "the NATS account's JetStream max_consumers is lower; it limits the nodes' consumers",
		"hint", "raise the account's max_consumers to the number of nodes, or remove it")
}

// streamPlan is what ensureStream must do to an existing stream.
type streamPlan struct {
	// upd is the stream's configuration with the settings certsync owns
	// taken from what it wants.
	upd jetstream.StreamConfig
	// changed names the settings that differed.
	changed []string
	// unsafe names those of changed that protect the stream's content.
	unsafe []string
	// refused names what certsync never removes by itself.
	refused []string
}

// streamUpdate compares an existing stream's configuration cur with want,
// the one certsync creates it with. It owns the subjects, the history per
// subject, the duplicate window, the replicas, the discard policy, direct
// gets, atomic batches, no MaxAge, the byte and message size limits want sets (non-zero),
// and the protections: DenyPurge and DenyDelete on, roll-ups off. It never
// adds sources, a mirror, republish or a subject transform, and refuses a
// stream that has them, or message schedules or subject delete markers
// (which need roll-ups), rather than remove them silently.
func streamUpdate(cur, want jetstream.StreamConfig) streamPlan {
	p := streamPlan{upd: cur}
	if !slices.Equal(cur.Subjects, want.Subjects) {
		p.upd.Subjects = want.Subjects
		// Only the rollout or the group subjects missing (a stream set up
		// before rollouts or groups) protects nothing: the stream works
		// for every certificate without a rollout policy whose nodes one
		// envelope holds, and held or grouped bundles are refused until
		// Setup adds them.
		p.change("subjects", !slices.Equal(union(cur.Subjects, []string{wire.RolloutSubjects, wire.GroupSubjects}), union(want.Subjects, nil)))
	}
	own(&p, &p.upd.MaxMsgsPerSubject, want.MaxMsgsPerSubject, "history", false)
	own(&p, &p.upd.Duplicates, want.Duplicates, "duplicate_window", false)
	own(&p, &p.upd.Replicas, want.Replicas, "replicas", false)
	own(&p, &p.upd.MaxAge, 0, "max_age", false)
	// A consumer limit certsync sets (the bundle stream's) is a floor: a
	// stream set up before it (server default: 1,000) is raised to it, an
	// operator's higher limit is kept. It protects nothing: without it
	// only the consumers past the server's default are missing.
	if want.MaxConsumers > 0 && p.upd.MaxConsumers < want.MaxConsumers {
		p.upd.MaxConsumers = want.MaxConsumers
		p.change("max_consumers", false)
	}
	// A byte or message size limit certsync sets (the status bucket's) is
	// what keeps a stolen node credential from filling the server's
	// storage: it protects.
	if want.MaxBytes > 0 {
		own(&p, &p.upd.MaxBytes, want.MaxBytes, "max_bytes", true)
	}
	if want.MaxMsgSize > 0 {
		own(&p, &p.upd.MaxMsgSize, want.MaxMsgSize, "max_msg_size", true)
	}
	// The status bucket discards new writes when full: discarding old ones
	// would let one node's writes push out the others' records. The bundle
	// stream discards old ones (its history per subject).
	own(&p, &p.upd.Discard, want.Discard, "discard", want.Discard == jetstream.DiscardNew)
	own(&p, &p.upd.AllowDirect, want.AllowDirect, "allow_direct", true)
	own(&p, &p.upd.AllowRollup, want.AllowRollup, "allow_rollup", true)
	// Without atomic batches a certificate's groups are stored one by one:
	// slower and not all or none, but every node is served.
	own(&p, &p.upd.AllowAtomicPublish, want.AllowAtomicPublish, "allow_atomic", false)
	own(&p, &p.upd.DenyPurge, want.DenyPurge, "deny_purge", true)
	own(&p, &p.upd.DenyDelete, want.DenyDelete, "deny_delete", true)
	for _, r := range []struct {
		has  bool
		what string
	}{
		{len(cur.Sources) > 0, "sources"},
		{cur.Mirror != nil, "a mirror"},
		{cur.RePublish != nil, "republish"},
		{cur.SubjectTransform != nil, "a subject transform"},
		{cur.AllowMsgSchedules, "message schedules"},
		{cur.SubjectDeleteMarkerTTL != 0, "subject delete markers"},
	} {
		if r.has {
			p.refused = append(p.refused, r.what)
		}
	}
	return p
}

// own sets the setting *field of p.upd to want, the value certsync owns,
// and notes it as changed under name when it differs; protects marks a
// setting that protects the stream's content.
func own[T comparable](p *streamPlan, field *T, want T, name string, protects bool) {
	if *field != want {
		*field = want
		p.change(name, protects)
	}
}

// change notes the setting name as changed; protects marks it unsafe too.
func (p *streamPlan) change(name string, protects bool) {
	p.changed = append(p.changed, name)
	if protects {
		p.unsafe = append(p.unsafe, name)
	}
}
