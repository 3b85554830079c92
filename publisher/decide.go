// Deciding a publish: what the stream holds for a certificate
// (parsePublished, history, read through the publisher's own key) and the
// version, hold and withdrawn list the next envelope is sealed with
// (decide), or the refusal that stores nothing.

package publisher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

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
			Serial:      wire.Printable(msg.Header.Get(wire.HeaderSerial)),
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
