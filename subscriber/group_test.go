package subscriber

import (
	"context"
	"errors"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// TestSyncGroupSubjects: a node takes a recipient group's envelope on
// that group's subject, and refuses, as on the wrong subject, one whose
// signed group record does not match the subject it came on: a group's
// envelope on the bundle subject or on another group's subject, and an
// ungrouped envelope on a group subject.
func TestSyncGroupSubjects(t *testing.T) {
	t.Parallel()
	const name = "example.com"
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The consumer the publisher makes for a node of group 0 of 2, here
	// also filtering the bundle subject and every group subject so that
	// the misplaced envelopes reach the node.
	cfg := wire.ConsumerConfig(nodeName, []string{name}, true)
	cfg.FilterSubjects = append(cfg.FilterSubjects, wire.GroupSubjectsOf(name))
	if _, err := e.js.CreateConsumer(ctx, wire.Stream, cfg); err != nil {
		t.Fatal(err)
	}
	c := e.issue(time.Hour)
	base := uint64(time.Now().UnixMilli())
	put := func(subject string, version uint64, opts ...crypto.SealOption) uint64 {
		t.Helper()
		b := bundleOf(name, c)
		b.Version = version
		data, err := crypto.Seal(b, e.key, []age.Recipient{e.id.Recipient()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subject)
		m.Data = data
		ack, err := e.js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		e.unsynced++
		return ack.Sequence
	}
	good := put(wire.GroupSubject(0, name), base, crypto.WithGroup(0, 2))
	misplaced := map[uint64]string{
		put(wire.Subject(name), base+1, crypto.WithGroup(0, 2)):         "a group's envelope on the bundle subject",
		put(wire.GroupSubject(0, name), base+2, crypto.WithGroup(1, 2)): "group 1's envelope on group 0's subject",
		put(wire.GroupSubject(1, name), base+3):                         "an ungrouped envelope on a group subject",
	}
	n := e.node(t.TempDir(), name)
	rep := n.sync(t)
	for seq, what := range misplaced {
		if r := resultOf(t, rep, seq); r.Outcome != OutcomeRefused || !errors.Is(r.Err, ErrWrongSubject) {
			t.Errorf("%s: %s, %v; want refused, ErrWrongSubject", what, r.Outcome, r.Err)
		}
	}
	if r := resultOf(t, rep, good); r.Outcome != OutcomeStaged {
		t.Errorf("group 0's envelope on its subject: %s, %v; want staged", r.Outcome, r.Err)
	}
	if st, err := n.Stage().Read(name); err != nil || st.Version != base {
		t.Errorf("staged %+v, %v; want version %d", st, err, base)
	}
}
