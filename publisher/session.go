package publisher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// session is one call's connection to NATS.
type session struct {
	p      *Publisher
	log    *slog.Logger
	nc     *natsconn.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	status jetstream.KeyValue
	// rollouts is true when the stream holds the rollout subjects
	// (wire.RolloutSubjects): consumers then filter them too, and held
	// bundles and rollout records may be stored (needRollouts). A stream
	// set up before rollouts has only the bundle subjects until the admin
	// runs Setup.
	rollouts bool
	// groups is true when the stream holds the recipient group subjects
	// (wire.GroupSubjects): a certificate one envelope cannot hold may be
	// sealed in groups (needGroups). A stream set up before groups lacks
	// them until the admin runs Setup.
	groups bool
	// layouts is, by certificate, the recipient group layout this session
	// last stored (node -> its subject): consumers filter what it says
	// (consumerSubjects).
	layouts map[string]map[string]string
}

// connect connects to NATS, retrying until ctx ends. Each JetStream
// request of the session waits at most natsconn.RequestTimeout for its
// answer (natsconn.Conn.JetStream), inside the call's ctx (bound).
func (p *Publisher) connect(ctx context.Context) (*session, error) {
	nc, err := natsconn.Connect(ctx, p.cfg.NATS, p.log)
	if err != nil {
		return nil, err
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &session{p: p, log: p.log, nc: nc, js: js}, nil
}

func (s *session) close() { s.nc.Close() }

// do runs fn until it succeeds, fails for good, or ctx ends
// (natsconn.Conn.Retry): a permission the server denies is for good, and
// is known at once. Transient failures (no servers, no JetStream leader, a
// request unanswered within its own natsconn.RequestTimeout) and a publish
// that lost the race for the subject's last sequence are retried with a
// capped backoff; others are returned as they are. When ctx ends, the last
// error is returned with why it gave up. fn's errors say what failed; what
// names the step in logs. fn runs again from the start on each try: it
// reads what it decides on again (session.publish reads the subject's head
// again, and finds there a bundle a try whose acknowledgement was lost
// stored).
func (s *session) do(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	return s.nc.Retry(ctx, s.log, what, transient, fn)
}

// transient tells the failures worth retrying: the server is away, busy
// electing a leader, or did not answer in time (natsconn.Transient), or
// another publisher stored on the subject first.
func transient(err error) bool {
	return natsconn.Transient(err) || wrongLastSequence(err)
}

// wrongLastSequence tells the error of a publish whose expected last
// subject sequence was no longer the last: someone else published first.
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

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
	s.stream = st
	s.rollouts = slices.Contains(st.CachedInfo().Config.Subjects, wire.RolloutSubjects)
	s.groups = slices.Contains(st.CachedInfo().Config.Subjects, wire.GroupSubjects)
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
// gets, no MaxAge, the byte and message size limits want sets (non-zero),
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

// published is what a stored bundle says of itself, under its signature.
type published struct {
	// Release holds the signed version and the fingerprint of the
	// envelope's signed seal record (zero when it has none). Its Serial is
	// the Certsync-Serial header, for messages only.
	crypto.Release
	// Recipients comes from the seal record too; empty when there is none.
	Recipients string
	// Hold and Withdrawn are the envelope's hold and withdrawn records.
	Hold      bool
	Withdrawn []crypto.Fingerprint
	// Group is the envelope's recipient group record (zero: ungrouped),
	// which matches the subject it is on.
	Group crypto.Group
	// Sequence is the message's stream sequence, Subject its subject and
	// Size its body's size.
	Sequence uint64
	Subject  string
	Size     int
}

// parsePublished reads a message on a subject. It counts as a bundle only
// when its body is an envelope for name signed with key, the publisher's
// own: anyone else allowed to publish on the subject could store junk
// whose headers claim a huge version (which would make every later
// publish's version jump) or today's certificate (which would make it
// look unchanged). Everything compared comes from under the signature:
// the version, the hold and withdrawn records, and the leaf's fingerprint
// and recipients digest of the seal record. The headers are not trusted at
// all, not even on the publisher's own body: whoever may publish can store
// that body again with other headers (say a Certsync-Recipients of today's
// recipients, so that a change of recipients would be missed). A body
// without a seal record (sealed before records existed) has an unknown
// certificate and recipients, so it is sealed again. After a rotation of
// the signing key the newest bundle does not verify, so it is published
// over: that is how bundles come to carry the new signature. An envelope
// whose group record does not match its subject (a group envelope on the
// bundle subject or on another group's, an ungrouped one on a group
// subject) is not one either: nodes refuse it.
func parsePublished(msg *jetstream.RawStreamMsg, name string, key crypto.PublicKey) (published, bool) {
	h, err := crypto.Verify(msg.Data, []crypto.PublicKey{key})
	if err != nil || h.Name != name || !groupMatches(msg.Subject, h.Group) {
		return published{}, false
	}
	return published{
		Release: crypto.Release{
			Version:     h.Version,
			Fingerprint: h.Record.Fingerprint,
			Serial:      msg.Header.Get(wire.HeaderSerial),
		},
		Recipients: h.Record.Recipients,
		Hold:       h.Hold,
		Withdrawn:  h.Withdrawn,
		Group:      h.Group,
		Sequence:   msg.Sequence,
		Subject:    msg.Subject,
		Size:       len(msg.Data),
	}, true
}

// groupMatches tells whether an envelope with group record g belongs on
// subject: an ungrouped one on the bundle subject, group k's on group
// subject k. nodes apply the same rule (subscriber's authenticate).
func groupMatches(subject string, g crypto.Group) bool {
	_, k, err := wire.ParseBundleSubject(subject)
	if err != nil {
		return false
	}
	if k < 0 {
		return g.IsZero()
	}
	return !g.IsZero() && g.Index == k
}

// history reads every message the stream retains on the subjects of
// heads (name's bundle and group subjects, each up to its newest message
// in heads), and returns those that are bundles signed with the
// publisher's key (parsePublished), oldest first: by stream sequence,
// across the subjects (the groups of one publish share its version, and a
// later publish is stored after). It gets them one by
// one (the next message on the subject from a sequence on), creating no
// consumer; the stream keeps at most wire.MaxHistory messages per subject,
// each at most crypto.MaxEnvelopeSize bytes, and a certificate has at most
// wire.MaxGroups group subjects.
func (s *session) history(ctx context.Context, name string, heads map[string]*jetstream.RawStreamMsg) ([]published, error) {
	key := s.p.cfg.SigningKey.Public()
	var out []published
	for _, subject := range slices.Sorted(maps.Keys(heads)) {
		last := heads[subject].Sequence
		for seq, n := uint64(1), 0; seq <= last && n <= wire.MaxHistory; n++ {
			msg, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("reading the history of %q: %w", name, err)
			}
			if msg.Sequence > last {
				break
			}
			if pub, ok := parsePublished(msg, name, key); ok {
				out = append(out, pub)
			}
			seq = msg.Sequence + 1
		}
	}
	slices.SortFunc(out, func(a, b published) int { return cmp.Compare(a.Sequence, b.Sequence) })
	return out, nil
}

// comparePublished orders bundles by version, then stream sequence.
func comparePublished(a, b published) int {
	return cmp.Or(cmp.Compare(a.Version, b.Version), cmp.Compare(a.Sequence, b.Sequence))
}

// seal is what session.publish seals: the bundle's version and records.
// same says the certificate is the newest bundle's: a group whose subject
// holds it sealed to the same recipients is unchanged.
type seal struct {
	same      bool
	version   uint64
	hold      bool
	withdrawn []crypto.Fingerprint
}

// refusal marks an error of session.publish that is a refusal: nothing was
// stored, and trying again would change nothing.
type refusal struct{ error }

func (r refusal) Unwrap() error { return r.error }

// withdrawnError is the refusal of a certificate the newest bundle's
// withdrawn record lists; Republish reads newest from it.
type withdrawnError struct {
	err    error
	newest published
}

func (e *withdrawnError) Error() string { return e.err.Error() }
func (e *withdrawnError) Unwrap() error { return e.err }

// decide says how j is sealed, from heads, the newest message of each of
// the certificate's subjects (its bundle subject and its group subjects),
// and, when that is not enough, their history. The newest bundle is the
// one stored last across them (the groups of one publish share its
// version, and versions only grow from one publish to the next). The rules
// (docs/FORMAT.md, "The version"):
//
//   - The certificate of the newest bundle: sealed with the newest's
//     version, hold and withdrawn records (same), so that a node holding
//     it finds it the same; a group whose subject holds it sealed to the
//     same recipients is unchanged (session.layout). Refused for a
//     rollback.
//   - A certificate the newest bundle withdrew, or the certificate of an
//     earlier bundle of the history: refused (ErrWithdrawn, ErrEarlier);
//     putting one back is Rollback's job, which j.rollback says this is.
//   - Any other (a renewal, a switch of CA whatever its NotBefore, a
//     rollback): a new version, max(the clock in Unix milliseconds, the
//     highest version of the history + 1), with the hold record when the
//     certificate has a rollout policy (not for an immediate rollback),
//     and the newest's withdrawn record carried forward (a rollback adds
//     the newest's certificate and takes out its own).
//
// Only bundles signed with the publisher's key count: a message that is
// not one is ignored, and published over. An error that is a refusal is a
// refusal; any other is NATS's.
func (s *session) decide(ctx context.Context, j *job, heads map[string]*jetstream.RawStreamMsg) (seal, error) {
	name, fp := j.bundle.Name, j.info.Fingerprint
	key := s.p.cfg.SigningKey.Public()
	// top is the newest of the subjects' newest messages, when each of
	// them is a bundle; else the history says which bundle is the newest.
	var top *published
	junk := false
	for _, subject := range slices.Sorted(maps.Keys(heads)) {
		last := heads[subject]
		pub, ok := parsePublished(last, name, key)
		if !ok {
			junk = true
			s.log.Warn("newest_message_not_our_bundle", "name", name, "subject", subject, "sequence", last.Sequence,
				"hint", "not signed with this signing key, or not for its subject: published over")
			continue
		}
		if top == nil || pub.Sequence > top.Sequence {
			top = &pub
		}
	}
	if junk {
		top = nil
	}
	if top != nil && top.Fingerprint == fp {
		if j.rollback {
			return seal{}, refusal{fmt.Errorf("certificate serial %s is the newest bundle's already (version %d at sequence %d)", j.info.Serial, top.Version, top.Sequence)}
		}
		return seal{same: true, version: top.Version, hold: top.Hold, withdrawn: top.Withdrawn}, nil
	}
	if top != nil && !j.rollback && slices.Contains(top.Withdrawn, fp) {
		return seal{}, refusal{&withdrawnError{newest: *top, err: fmt.Errorf(
			"certificate serial %s is %w (the newest bundle, version %d at sequence %d, lists it); to put it back deliberately: certsync rollback %s --to %s",
			j.info.Serial, ErrWithdrawn, top.Version, top.Sequence, name, j.info.Serial)}}
	}
	var hist []published
	if len(heads) > 0 {
		var err error
		if hist, err = s.history(ctx, name, heads); err != nil {
			return seal{}, err
		}
	}
	var newest *published
	if len(hist) > 0 {
		newest = &hist[len(hist)-1]
	}
	if top == nil && newest != nil {
		// A newest message is not a bundle: the newest bundle of the
		// history is what nodes hold.
		switch {
		case newest.Fingerprint == fp && j.rollback:
			return seal{}, refusal{fmt.Errorf("certificate serial %s is the newest bundle's already (version %d at sequence %d)", j.info.Serial, newest.Version, newest.Sequence)}
		case newest.Fingerprint == fp:
			return seal{same: true, version: newest.Version, hold: newest.Hold, withdrawn: newest.Withdrawn}, nil
		case !j.rollback && slices.Contains(newest.Withdrawn, fp):
			return seal{}, refusal{&withdrawnError{newest: *newest, err: fmt.Errorf(
				"certificate serial %s is %w (the newest bundle, version %d at sequence %d, lists it); to put it back deliberately: certsync rollback %s --to %s",
				j.info.Serial, ErrWithdrawn, newest.Version, newest.Sequence, name, j.info.Serial)}}
		}
	}
	if j.rollback && newest == nil {
		return seal{}, refusal{fmt.Errorf("the stream holds no bundle of it signed with this signing key to roll back from")}
	}
	// An earlier bundle's certificate, unless the newest's is unknown (no
	// seal record: it may well be this one). The newest's is not j's here.
	if !j.rollback && newest != nil && !newest.Fingerprint.IsZero() {
		for _, e := range hist {
			if e.Fingerprint == fp {
				return seal{}, refusal{fmt.Errorf(
					"certificate serial %s is %w (version %d at sequence %d), not the newest bundle's (version %d at sequence %d); putting it back is a rollback: certsync rollback %s --to %s",
					j.info.Serial, ErrEarlier, e.Version, e.Sequence, newest.Version, newest.Sequence, name, j.info.Serial)}
			}
		}
	}
	sl := seal{version: max(uint64(max(s.p.now().UnixMilli(), 0)), 1)}
	for _, e := range hist {
		sl.version = max(sl.version, e.Version+1)
	}
	if newest != nil {
		// The newest message read from the head of the subject, in case
		// the history read from the start (bounded) did not reach it.
		sl.version = max(sl.version, newest.Version+1)
	}
	sl.hold = s.p.cfg.Policy(name) != nil && !j.immediate
	if newest != nil {
		withdrawn := newest.Withdrawn
		if j.rollback {
			withdrawn = append(slices.Clone(withdrawn), newest.Fingerprint)
			withdrawn = slices.DeleteFunc(withdrawn, func(w crypto.Fingerprint) bool { return w == fp })
		}
		sl.withdrawn = capWithdrawn(withdrawn, hist)
	}
	return sl, nil
}

// maxWithdrawn is the most certificates a withdrawn record lists
// (docs/FORMAT.md).
const maxWithdrawn = 16

// capWithdrawn returns fps without zero or repeated fingerprints, at most
// maxWithdrawn of them: when there are more, those withdrawn longest ago go,
// as the history tells (the one whose last bundle in hist is oldest, and
// first those hist no longer holds).
func capWithdrawn(fps []crypto.Fingerprint, hist []published) []crypto.Fingerprint {
	var out []crypto.Fingerprint
	for _, fp := range fps {
		if !fp.IsZero() && !slices.Contains(out, fp) {
			out = append(out, fp)
		}
	}
	if len(out) <= maxWithdrawn {
		return out
	}
	lastSeen := func(fp crypto.Fingerprint) uint64 {
		var seq uint64
		for _, e := range hist {
			if e.Fingerprint == fp {
				seq = e.Sequence
			}
		}
		return seq
	}
	slices.SortStableFunc(out, func(a, b crypto.Fingerprint) int { return cmp.Compare(lastSeen(a), lastSeen(b)) })
	return out[len(out)-maxWithdrawn:]
}

// needRollouts is nil when the stream holds the rollout subjects, else why
// what (a held bundle, a rollout record) cannot be stored: ErrNotSetUp,
// for the admin's certsync setup. Every writer of held bundles and rollout
// records asks it first.
func (s *session) needRollouts(what string) error {
	if s.rollouts {
		return nil
	}
	return fmt.Errorf("%s needs the rollout subjects (%s), and stream %q is %w: it was set up before rollouts; the admin adds them with certsync setup",
		what, wire.RolloutSubjects, wire.Stream, ErrNotSetUp)
}

// msgID is the Nats-Msg-Id of a bundle: the name, the leaf's fingerprint,
// a prefix of the recipients digest (of the group's recipients) and the
// subject sequence it follows, then for a group envelope its group
// ("/g<k>of<count>"). The same hook run twice gives the same id, so the
// server drops the second copy; the sequence lets a certificate sealed
// again to an earlier recipient set (a node removed, then added back) be
// stored within the duplicate window.
func msgID(j *job, g *group, prev uint64) string {
	// The recipients digest has a fingerprint's text form (and parses:
	// crypto.RecipientsDigest made it).
	digest, _ := crypto.ParseFingerprint(g.digest)
	id := fmt.Sprintf("%s/%s/%s/%d", j.bundle.Name, j.info.Fingerprint.Hex(), digest.Hex()[:16], prev)
	if !g.rec.IsZero() {
		id += fmt.Sprintf("/g%dof%d", g.rec.Index, g.rec.Count)
	}
	return id
}

// setHeaders sets the contract's headers of j sealed as d for group g.
// None holds a secret.
func setHeaders(h nats.Header, j *job, d seal, g *group) {
	h.Set(wire.HeaderName, j.bundle.Name)
	h.Set(wire.HeaderSerial, j.info.Serial)
	h.Set(wire.HeaderFingerprint, j.info.Fingerprint.String())
	h.Set(wire.HeaderNotBefore, j.info.NotBefore.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderNotAfter, j.info.NotAfter.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderFormat, strconv.Itoa(crypto.Format))
	h.Set(wire.HeaderVersion, strconv.FormatUint(d.version, 10))
	h.Set(wire.HeaderRecipients, g.digest)
	if d.hold {
		h.Set(wire.HeaderHold, "true")
	}
	if len(d.withdrawn) > 0 {
		h.Set(wire.HeaderWithdrawn, withdrawnHeader(d.withdrawn))
	}
	if !g.rec.IsZero() {
		h.Set(wire.HeaderGroup, g.rec.String())
	}
}

// withdrawnHeader is the Certsync-Withdrawn header of fps: their text
// forms in ascending order (the withdrawn record's), comma separated.
func withdrawnHeader(fps []crypto.Fingerprint) string {
	texts := make([]string, len(fps))
	for i, fp := range fps {
		texts[i] = fp.String()
	}
	slices.Sort(texts)
	return strings.Join(texts, ",")
}
