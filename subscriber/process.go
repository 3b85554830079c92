// Deciding on a batch of messages: process orders them, authenticate checks
// the publisher's signature and the names before anything is decrypted,
// apply opens the newest bundle of each certificate, checks it and stages
// it, settle acks, terminates or naks each message.

package subscriber

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// delivery is one message of a batch and what is known of it so far.
type delivery struct {
	msg       jetstream.Msg
	seq       uint64 // stream sequence
	delivered uint64 // how many times the server delivered it
	subject   string
	name      string         // certificate name, from the subject
	header    *crypto.Header // set once a bundle is authenticated
	// rollout is set once a rollout record (a message on a rollout
	// subject) is authenticated; header stays nil then.
	rollout *crypto.RolloutRecord
}

// process decides on a batch of messages and settles each one with the
// server: ack (staged, unchanged, superseded), term (refused) or nak with a
// delay (transient failure). It writes the status of every certificate it
// decided on and returns one result per message.
func (n *Node) process(ctx context.Context, js jetstream.JetStream, msgs []jetstream.Msg) []Result {
	n.mu.Lock()
	defer n.mu.Unlock()
	// A batch once started is settled even if ctx ends meanwhile: each
	// call to the server has its own timeout.
	ctx = context.WithoutCancel(ctx)

	var results []Result
	touched := map[string]bool{}
	settle := func(d *delivery, r Result) {
		r.Subject, r.Sequence = d.subject, d.seq
		if r.Name == "" {
			r.Name = d.name
		}
		n.settle(ctx, d, &r)
		results = append(results, r)
		touched[r.Name] = true
	}

	// First pass: what can be judged without opening anything. Rollout
	// records are kept once the bundles are staged, so that one for a
	// version staged in this batch is not taken for an older one's.
	byName := map[string][]*delivery{}
	var rollouts []*delivery
	for _, m := range msgs {
		d := &delivery{msg: m, subject: m.Subject()}
		if md, err := m.Metadata(); err == nil {
			d.seq, d.delivered = md.Sequence.Stream, md.NumDelivered
		}
		if err := n.authenticate(d); err != nil {
			settle(d, Result{Outcome: OutcomeRefused, Err: err, Rollout: d.isRollout()})
			continue
		}
		if d.rollout != nil {
			rollouts = append(rollouts, d)
			continue
		}
		byName[d.name] = append(byName[d.name], d)
	}

	// Second pass, per certificate: newest first. The first one that
	// stages (or is already staged) supersedes the older ones; a refused
	// one lets the next older one try, so a bad newest bundle does not hide
	// a good one. One held back by the node's clock (ErrClock) is not
	// refused: it supersedes the older ones as a staged one does, so that
	// a wrong clock never has an older bundle staged instead of the newest.
	// A transient failure of another kind has the older ones wait with it.
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ds := byName[name]
		slices.SortFunc(ds, func(a, b *delivery) int {
			return cmp.Or(cmp.Compare(b.header.Version, a.header.Version), cmp.Compare(b.seq, a.seq))
		})
		// The staged bundle, to tell a late redelivery of an older message
		// from a replay (see lateFor).
		staged, _ := n.stage.Read(name)
		var done *delivery
		for i, d := range ds {
			if done != nil {
				n.log.Info("bundle_superseded", "name", name, "seq", d.seq, "version", d.header.Version,
					"by_seq", done.seq, "by_version", done.header.Version)
				settle(d, Result{Version: d.header.Version, Outcome: OutcomeSuperseded})
				continue
			}
			if lateFor(d, staged) {
				n.log.Info("bundle_superseded", "name", name, "seq", d.seq, "version", d.header.Version,
					"by_seq", staged.Sequence, "by_version", staged.Version)
				settle(d, Result{Version: d.header.Version, Outcome: OutcomeSuperseded})
				continue
			}
			r := n.apply(d)
			settle(d, r)
			switch {
			case r.Outcome == OutcomeStaged, r.Outcome == OutcomeUnchanged:
				done = d
			case r.Outcome == OutcomeFailed && errors.Is(r.Err, ErrClock):
				done = d
			case r.Outcome == OutcomeFailed:
				// A transient failure: the older ones wait with it, to
				// be judged together when they come back.
				for _, older := range ds[i+1:] {
					settle(older, Result{Version: older.header.Version, Outcome: OutcomeFailed,
						Err: fmt.Errorf("waiting for seq %d: %w", d.seq, r.Err)})
				}
			}
			if r.Outcome == OutcomeFailed && done == nil {
				break
			}
		}
	}
	for _, d := range rollouts {
		settle(d, n.keepRollout(d))
	}
	for _, name := range n.names {
		if touched[name] {
			n.status.write(ctx, js, name)
		}
	}
	return results
}

// isRollout reports whether d came on a rollout subject.
func (d *delivery) isRollout() bool { return strings.HasPrefix(d.subject, wire.RolloutSubjectPrefix) }

// lateFor reports whether d is a late redelivery of a message the staged
// bundle already supersedes: an older version, delivered before (so not
// for the first time), and published before the staged one (a lower
// stream sequence). Such a message was held back or retried while a newer
// one staged (a node whose clock was wrong, say); it is acknowledged as
// superseded. An older version delivered for the first time, or published
// after the staged one, is a replay (or a stream rebuilt with old
// bundles), and apply refuses it as a downgrade, reported.
func lateFor(d *delivery, staged *Staged) bool {
	return staged != nil && d.delivered > 1 && d.header.Version < staged.Version && d.seq < staged.Sequence
}

// authenticate checks what can be checked before decrypting: the size, the
// subject, the signature (crypto.Verify), that the signed name is the
// subject's and one of this node's certificates, and that the signed
// recipient group record matches the subject: none on the bundle subject
// certsync.bundle.<name>, group k's on the group subject
// certsync.group.<k>.<name> (the publisher's consumer filters only the
// node's own group; a body moved to another subject is refused). The
// groups of one version share it, so what follows (newest first, the
// stage's order) is the same for every subject. On success d.name and
// d.header are set. Every failure is permanent. (In this package "verify"
// is the served-certificate check after a reload, the verify: setting;
// see verifyServed.)
func (n *Node) authenticate(d *delivery) error {
	if d.isRollout() {
		return n.authenticateRollout(d)
	}
	name, group, err := wire.ParseBundleSubject(d.subject)
	if err != nil {
		return permanent(fmt.Errorf("refusing seq %d: %v: %w", d.seq, err, ErrWrongSubject))
	}
	d.name = name
	data := d.msg.Data()
	if len(data) > crypto.MaxEnvelopeSize {
		return permanent(fmt.Errorf("refusing %q seq %d: %d bytes: %w", name, d.seq, len(data), ErrTooLarge))
	}
	h, err := crypto.Verify(data, n.cfg.Trusted)
	if err != nil {
		// crypto's error says "verifying envelope …" itself.
		return permanent(fmt.Errorf("refusing %q seq %d: %w", name, d.seq, err))
	}
	if h.Name != name {
		return permanent(fmt.Errorf("verifying %q seq %d: signed for certificate %q: %w", name, d.seq, h.Name, ErrWrongSubject))
	}
	switch {
	case group < 0 && !h.Group.IsZero():
		return permanent(fmt.Errorf("verifying %q seq %d: signed for recipient group %s, on the subject of the ungrouped bundle: %w", name, d.seq, h.Group, ErrWrongSubject))
	case group >= 0 && h.Group.IsZero():
		return permanent(fmt.Errorf("verifying %q seq %d: signed for no recipient group, on the subject of group %d: %w", name, d.seq, group, ErrWrongSubject))
	case group >= 0 && h.Group.Index != group:
		return permanent(fmt.Errorf("verifying %q seq %d: signed for recipient group %s, on the subject of group %d: %w", name, d.seq, h.Group, group, ErrWrongSubject))
	}
	if _, ok := n.cfg.Certificates[name]; !ok {
		return permanent(fmt.Errorf("verifying %q seq %d: %w", name, d.seq, ErrUnknownCertificate))
	}
	d.header = h
	return nil
}

// authenticateRollout checks a message on a rollout subject as
// authenticate checks a bundle: the subject, the size, the signature
// (crypto.VerifyRollout with the trusted publishers: a forged, unsigned or
// malformed record is refused), and that the signed name is the subject's
// and one of this node's certificates. On success d.name and d.rollout are
// set. Every failure is permanent: a refused record releases nothing.
func (n *Node) authenticateRollout(d *delivery) error {
	name, err := wire.NameFromRolloutSubject(d.subject)
	if err != nil {
		return permanent(fmt.Errorf("refusing rollout record seq %d: %v: %w", d.seq, err, ErrWrongSubject))
	}
	d.name = name
	data := d.msg.Data()
	if len(data) > crypto.MaxRolloutSize {
		return permanent(fmt.Errorf("refusing rollout record %q seq %d: %d bytes: %w", name, d.seq, len(data), ErrTooLarge))
	}
	r, _, err := crypto.VerifyRollout(data, n.cfg.Trusted)
	if err != nil {
		// crypto's error says "verifying rollout record …" itself.
		return permanent(fmt.Errorf("refusing %q seq %d: %w", name, d.seq, err))
	}
	if r.Name != name {
		return permanent(fmt.Errorf("verifying rollout record %q seq %d: signed for certificate %q: %w", name, d.seq, r.Name, ErrWrongSubject))
	}
	if _, ok := n.cfg.Certificates[name]; !ok {
		return permanent(fmt.Errorf("verifying rollout record %q seq %d: %w", name, d.seq, ErrUnknownCertificate))
	}
	d.rollout = r
	return nil
}

// keepRollout keeps an authenticated rollout record in the stage and wakes
// the scheduler when it is new: the node plans again at once.
func (n *Node) keepRollout(d *delivery) Result {
	r := d.rollout
	res := Result{Version: r.Version, Rollout: true}
	outcome, err := n.stage.keepRollout(d.msg.Data(), r, n.cfg.Trusted, n.cfg.Node, n.cfg.Now())
	switch {
	case err != nil:
		res.Outcome, res.Err = OutcomeFailed, err
		return res
	case outcome == rolloutSuperseded:
		n.log.Info("rollout_superseded", "name", r.Name, "seq", d.seq, "version", r.Version, "generation", r.Generation)
		res.Outcome = OutcomeSuperseded
		return res
	case outcome == rolloutUnchanged:
		res.Outcome = OutcomeUnchanged
		return res
	}
	n.log.Info("rollout_kept", "name", r.Name, "seq", d.seq, "version", r.Version, "fingerprint", r.Fingerprint,
		"generation", r.Generation, "state", r.State, "wave", r.Wave, "released", released(r, n.cfg.Node))
	n.wakeInstaller()
	res.Outcome = OutcomeStaged
	return res
}

// apply opens a verified bundle, checks it and stages it unless the stage
// holds the same or a newer one.
func (n *Node) apply(d *delivery) Result {
	h := d.header
	r := Result{Version: h.Version}
	refuse := func(err error) Result {
		r.Outcome, r.Err = OutcomeRefused, permanent(err)
		return r
	}
	_, b, err := crypto.Open(d.msg.Data(), n.cfg.Trusted, n.cfg.Identities)
	if err != nil {
		// crypto's error says "opening envelope …" itself.
		return refuse(fmt.Errorf("refusing %q seq %d: %w", d.name, d.seq, err))
	}
	now := n.cfg.Now()
	info, err := b.Check(now)
	var clockErr *crypto.ClockError
	if errors.As(err, &clockErr) {
		// The one place a refusal that depends on the node's clock is
		// told from one that does not: it is transient.
		r.Outcome = OutcomeFailed
		r.Err = fmt.Errorf("checking %q seq %d: %w (the node's time is %s): %w", d.name, d.seq, err,
			now.UTC().Format(time.RFC3339), ErrClock)
		return r
	}
	if err != nil {
		return refuse(fmt.Errorf("checking %q seq %d: %v: %w", d.name, d.seq, err, ErrInvalidBundle))
	}
	if v := crypto.Format1Version(info.NotBefore); h.Format == 1 && v != h.Version {
		return refuse(fmt.Errorf("checking %q seq %d: signed version %d, certificate's version %d: %w", d.name, d.seq, h.Version, v, ErrInvalidBundle))
	}
	info.Version = h.Version
	meta := &Staged{
		Name:     d.name,
		Release:  info.Release,
		Signer:   h.Signer.String(),
		StagedAt: now.UTC(),
		Sequence: d.seq,
		Hold:     h.Hold,
	}
	changed, err := n.stage.Put(b, meta)
	switch {
	case errors.Is(err, ErrDowngrade), errors.Is(err, ErrConflict):
		return refuse(err)
	case err != nil:
		r.Outcome, r.Err = OutcomeFailed, err
		return r
	case !changed:
		n.log.Info("bundle_unchanged", "name", d.name, "seq", d.seq, "version", h.Version, "fingerprint", info.Fingerprint)
		r.Outcome = OutcomeUnchanged
		return r
	}
	n.log.Info("bundle_staged", "name", d.name, "seq", d.seq, "version", h.Version,
		"serial", info.Serial, "fingerprint", info.Fingerprint, "not_after", info.NotAfter, "signer", meta.Signer, "hold", h.Hold)
	if h.Hold && !n.rolloutsDelivered(d.name) {
		n.log.Warn("rollout_not_delivered", "name", d.name, "version", h.Version,
			"hint", "the bundle is held for a rollout, but this node's consumer does not deliver the certificate's rollout records: run certsync setup, then certsync republish, on the management side")
	}
	if n.onStaged != nil {
		n.onStaged(meta)
	}
	n.wakeInstaller()
	r.Outcome = OutcomeStaged
	return r
}

// settle tells the server what became of d and records refusals and
// failures in the log and the status.
func (n *Node) settle(ctx context.Context, d *delivery, r *Result) {
	n.observeBundle(r)
	var err error
	switch r.Outcome {
	case OutcomeStaged, OutcomeUnchanged, OutcomeSuperseded:
		actx, cancel := context.WithTimeout(ctx, natsconn.RequestTimeout)
		err = d.msg.DoubleAck(actx)
		cancel()
		if err == nil && r.Outcome != OutcomeSuperseded {
			n.status.succeeded(r.Name, d.seq, r.Rollout)
		}
	case OutcomeRefused:
		event := "bundle_refused"
		if r.Rollout {
			event = "rollout_refused"
		}
		n.log.Warn(event, "name", r.Name, "subject", d.subject, "seq", d.seq, "reason", r.Err)
		n.status.failed(r.Name, d.seq, r.Err, r.Rollout)
		err = d.msg.TermWithReason(r.Err.Error())
	case OutcomeFailed:
		delay := backoff(d.delivered, n.retryBase, n.retryMax)
		event := "bundle_retry"
		if r.Rollout {
			event = "rollout_retry"
		}
		n.log.Warn(event, "name", r.Name, "seq", d.seq, "error", r.Err, "retry_in", delay)
		n.status.failed(r.Name, d.seq, r.Err, r.Rollout)
		err = d.msg.NakWithDelay(delay)
	}
	if err != nil {
		// The server delivers the message again after its AckWait.
		n.log.Warn("bundle_settle_failed", "name", r.Name, "seq", d.seq, "outcome", r.Outcome, "error", err)
	}
}

// backoff is the delay after try number tries: base after the first (and
// for 0), doubling with each one after, up to limit. A message's retries
// use retryBase and retryMax (5s, 10s, 20s … 5m, by its deliveries).
func backoff(tries uint64, base, limit time.Duration) time.Duration {
	d := base
	for i := uint64(1); i < tries && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
