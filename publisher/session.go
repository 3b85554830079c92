package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// connect connects to NATS, retrying until ctx ends.
func (p *Publisher) connect(ctx context.Context) (*session, error) {
	nc, err := natsconn.Connect(ctx, p.cfg.NATS, p.log)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return &session{p: p, log: p.log, nc: nc, js: js}, nil
}

func (s *session) close() { s.nc.Close() }

// do runs fn until it succeeds, fails for good, or ctx ends; a permission
// the server denies is for good, and is known at once (natsconn.Call). Transient
// failures (no servers, no JetStream leader, timeouts) are retried with a
// capped backoff; others are returned as they are. When ctx ends, the last
// error is returned with why it gave up. fn's errors say what failed; what
// names the step in logs.
func (s *session) do(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	wait := 100 * time.Millisecond
	for {
		err := s.nc.Call(ctx, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !transient(err) {
			return err
		}
		if ctx.Err() == nil {
			s.log.Debug("nats_retry", "doing", what, "error", err, "retry_in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
				wait = min(wait*2, 2*time.Second)
				continue
			}
		}
		return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
	}
}

// transient tells the failures worth retrying: the server is away, busy
// electing a leader, or did not answer in time.
func transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.Code == 408 || wrongLastSequence(err)
	}
	return errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, context.DeadlineExceeded)
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
		return err
	})
	switch {
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
		p.change("subjects", true)
	}
	own(&p, &p.upd.MaxMsgsPerSubject, want.MaxMsgsPerSubject, "history", false)
	own(&p, &p.upd.Duplicates, want.Duplicates, "duplicate_window", false)
	own(&p, &p.upd.Replicas, want.Replicas, "replicas", false)
	own(&p, &p.upd.MaxAge, 0, "max_age", false)
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
}

// parsePublished reads the newest message on a subject. It counts as a
// bundle only when its body is an envelope for name signed with key, the
// publisher's own: anyone else allowed to publish on the subject could
// store junk whose headers claim a huge version (which would make every
// later publish look older) or today's certificate (which would make it
// look unchanged). Everything compared comes from under the signature: the
// version, and the leaf's fingerprint and recipients digest of the seal
// record. The headers are not trusted at all, not even on the publisher's
// own body: whoever may publish can store that body again with other
// headers (say a Certsync-Recipients of today's recipients, so that a
// change of recipients would be missed). A body without a seal record
// (sealed before records existed) has an unknown certificate and
// recipients, so it is sealed again. After a rotation of the signing key
// the newest bundle does not verify, so it is published over: that is how
// bundles come to carry the new signature.
func parsePublished(msg *jetstream.RawStreamMsg, name string, key crypto.PublicKey) (published, bool) {
	h, err := crypto.Verify(msg.Data, []crypto.PublicKey{key})
	if err != nil || h.Name != name {
		return published{}, false
	}
	return published{
		Release: crypto.Release{
			Version:     h.Version,
			Fingerprint: h.Record.Fingerprint,
			Serial:      msg.Header.Get(wire.HeaderSerial),
		},
		Recipients: h.Record.Recipients,
	}, true
}

// publish stores j on its subject unless the newest bundle there is the
// same certificate sealed to the same recipients (and force is false).
func (s *session) publish(ctx context.Context, j *job, force bool) (*Result, error) {
	name := j.bundle.Name
	subject := wire.Subject(name)
	res := &Result{
		Name:       name,
		Release:    j.info.Release,
		Recipients: j.digest,
		Nodes:      j.nodes,
	}
	var envelope []byte
	var refused error
	err := s.do(ctx, "storing the bundle", func(ctx context.Context) error {
		var prev uint64
		last, err := s.stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return fmt.Errorf("reading the newest bundle: %w", err)
		default:
			prev = last.Sequence
			pub, ok := parsePublished(last, name, s.p.cfg.SigningKey.Public())
			if !ok {
				s.log.Warn("newest_message_not_our_bundle", "name", name, "sequence", last.Sequence,
					"hint", "not signed with this signing key: published over")
				break
			}
			// Without a seal record the certificate is unknown (a zero
			// fingerprint, which Compare does not compare): sealing it
			// again is harmless, since a node treats the same version of
			// the same certificate as unchanged (and refuses another).
			order := crypto.Compare(pub.Release, j.info.Release)
			if order == crypto.Same && pub.Fingerprint == j.info.Fingerprint && pub.Recipients == j.digest && !force {
				res.Action, res.Sequence = Unchanged, last.Sequence
				return nil
			}
			if oerr := crypto.CheckOrder(pub.Release, j.info.Release); oerr != nil {
				if order == crypto.Conflict {
					refused = fmt.Errorf("%w: stream holds another certificate (serial %s) with the same version %d at sequence %d: %w",
						ErrOlder, pub.Serial, pub.Version, last.Sequence, oerr)
				} else {
					refused = fmt.Errorf("%w: version %d (serial %s), stream holds version %d (serial %s) at sequence %d: %w",
						ErrOlder, j.info.Version, j.info.Serial, pub.Version, pub.Serial, last.Sequence, oerr)
				}
				return nil
			}
		}
		if envelope == nil {
			env, err := crypto.Seal(&j.bundle, s.p.cfg.SigningKey, j.recipients, crypto.WithRecipientsDigest(j.digest))
			if err != nil {
				refused = fmt.Errorf("sealing: %w", err)
				return nil
			}
			envelope = env
		}
		msg := nats.NewMsg(subject)
		msg.Data = envelope
		setHeaders(msg.Header, j)
		ack, err := s.js.PublishMsg(ctx, msg,
			jetstream.WithMsgID(msgID(j, prev)),
			jetstream.WithExpectStream(wire.Stream),
			jetstream.WithExpectLastSequencePerSubject(prev))
		if err != nil {
			return fmt.Errorf("storing the bundle: %w", err)
		}
		res.Sequence = ack.Sequence
		res.Action = Published
		if ack.Duplicate {
			res.Action = Unchanged
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	if res.Action == Unchanged {
		s.log.Info("bundle_unchanged", "name", name, "sequence", res.Sequence, "version", res.Version,
			"fingerprint", res.Fingerprint, "forced", force)
		return res, nil
	}
	s.log.Info("bundle_published", "name", name, "sequence", res.Sequence, "version", res.Version,
		"serial", res.Serial, "fingerprint", res.Fingerprint, "not_after", res.NotAfter,
		"nodes", strings.Join(res.Nodes, ","), "recipients", len(j.recipients), "size", len(envelope))
	return res, nil
}

// msgID is the Nats-Msg-Id of a bundle: the name, the leaf's fingerprint,
// a prefix of the recipients digest and the subject sequence it follows.
// The same hook run twice gives the same id, so the server drops the
// second copy; the sequence lets a certificate sealed again to an earlier
// recipient set (a node removed, then added back) be stored within the
// duplicate window.
func msgID(j *job, prev uint64) string {
	// The recipients digest has a fingerprint's text form (and parses:
	// crypto.RecipientsDigest made it).
	digest, _ := crypto.ParseFingerprint(j.digest)
	return fmt.Sprintf("%s/%s/%s/%d", j.bundle.Name, j.info.Fingerprint.Hex(), digest.Hex()[:16], prev)
}

// setHeaders sets the contract's headers. None holds a secret.
func setHeaders(h nats.Header, j *job) {
	h.Set(wire.HeaderName, j.bundle.Name)
	h.Set(wire.HeaderSerial, j.info.Serial)
	h.Set(wire.HeaderFingerprint, j.info.Fingerprint.String())
	h.Set(wire.HeaderNotBefore, j.info.NotBefore.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderNotAfter, j.info.NotAfter.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderFormat, strconv.Itoa(crypto.Format))
	h.Set(wire.HeaderVersion, strconv.FormatUint(j.info.Version, 10))
	h.Set(wire.HeaderRecipients, j.digest)
}
