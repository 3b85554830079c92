package publisher

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// signRollout stores a rollout record of the publisher's, releasing every
// node, for the bundle res, on the certificate's rollout subject.
func (f *fixture) signRollout(res *Result, generation uint64) *jetstream.PubAck {
	f.t.Helper()
	now := time.Now().UTC()
	data, err := crypto.SignRollout(&crypto.RolloutRecord{Name: res.Name, Version: res.Version, Fingerprint: res.Fingerprint,
		Generation: generation, State: crypto.RolloutComplete, Wave: 1, All: true, Time: now, WaveStarted: now}, f.signer)
	if err != nil {
		f.t.Fatal(err)
	}
	ack, err := f.js().Publish(context.Background(), wire.RolloutSubject(res.Name), data)
	if err != nil {
		f.t.Fatal(err)
	}
	return ack
}

// TestBundlesHoldWithdrawnSkipsRolloutRecords: inspect's list says which
// bundles are held and what they withdrew, and lists bundles only: the
// rollout records beside them are skipped, whatever they hold.
func TestBundlesHoldWithdrawnSkipsRolloutRecords(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	f.cfg.Rollout = &RolloutPolicy{}
	ctx := context.Background()
	now := time.Now()
	a := f.publish(f.lineage("example.com", f.issue("example.com", now.Add(-time.Hour))))
	f.signRollout(a, 1)
	if _, err := f.js().Publish(ctx, wire.RolloutSubject("example.com"), []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	b := f.publish(f.lineage("example.com", f.issue("example.com", time.Time{})))
	back, err := f.rollback("example.com", RollbackOptions{Immediate: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{nil, {"example.com"}} {
		got, err := f.publisher().Bundles(ctx, names)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("Bundles(%v): %d entries, want the 3 bundles: %+v", names, len(got), got)
		}
		for i, w := range []*Result{a, b, back} {
			g := got[i]
			if g.Sequence != w.Sequence || g.Hold != w.Hold || !slices.Equal(g.Withdrawn, w.Withdrawn) || g.Subject != wire.Subject("example.com") {
				t.Errorf("Bundles(%v)[%d]: sequence %d hold %v withdrawn %v, want %d %v %v", names, i, g.Sequence, g.Hold, g.Withdrawn, w.Sequence, w.Hold, w.Withdrawn)
			}
		}
	}
	if !a.Hold || !b.Hold || back.Hold || !slices.Equal(back.Withdrawn, []crypto.Fingerprint{b.Fingerprint}) {
		t.Errorf("held %v %v %v, withdrawn %v; want held, held, immediate withdrawing B", a.Hold, b.Hold, back.Hold, back.Withdrawn)
	}
}

// TestRepublishRepostsRolloutRecord: a node whose existing consumer gains
// a certificate is not delivered the subject's earlier messages: the
// bundle is sealed again (same version, still held) and the newest
// rollout record about it is stored again, as it is, so that the node can
// install it (a completed rollout releases every node). A record about
// another bundle, or not the publisher's, is not copied.
func TestRepublishRepostsRolloutRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"a.example": {"web2"}, "b.example": {"web1"}, "c.example": {"web2"}})
	f.cfg.Rollout = &RolloutPolicy{}
	ctx := context.Background()
	a := f.publish(f.lineage("a.example", f.issue("a.example", time.Time{})))
	f.publish(f.lineage("b.example", f.issue("b.example", time.Time{})))
	c := f.publish(f.lineage("c.example", f.issue("c.example", time.Time{})))
	f.signRollout(a, 3)
	record := f.lastOn(wire.RolloutSubject("a.example"))
	// c.example's newest record is about another version.
	stale := *c
	stale.Version--
	f.signRollout(&stale, 1)

	f.cfg.Certificates["a.example"] = []string{"web1", "web2"}
	f.cfg.Certificates["c.example"] = []string{"web1", "web2"}
	report, err := f.publisher().Republish(ctx, nil)
	if err != nil {
		t.Fatalf("Republish: %v", err)
	}
	for _, r := range report.Results {
		if r.Name != "b.example" && (r.Action != Published || !r.Hold) {
			t.Errorf("%s: %s hold %v, want published again, held", r.Name, r.Action, r.Hold)
		}
	}
	if got := filterSubjects(*f.consumer("web1")); !slices.Equal(got, subjectsOf([]string{"a.example", "b.example", "c.example"}, true)) {
		t.Errorf("web1's consumer filters %v", got)
	}
	copied := f.lastOn(wire.RolloutSubject("a.example"))
	if copied.Sequence == record.Sequence || string(copied.Data) != string(record.Data) ||
		copied.Header.Get(wire.HeaderRolloutGeneration) != "3" || copied.Header.Get(wire.HeaderRolloutState) != crypto.RolloutComplete {
		t.Errorf("a.example's newest record: sequence %d (the original %d), headers %v; want a copy of it", copied.Sequence, record.Sequence, copied.Header)
	}
	if n := f.countOn(wire.RolloutSubject("c.example")); n != 1 {
		t.Errorf("c.example holds %d rollout records, want 1: its record is about another version", n)
	}
	if !strings.Contains(f.logs.String(), "rollout_record_reposted") {
		t.Error("no rollout_record_reposted log")
	}
	// Nothing changes: nothing is copied again.
	if _, err := f.publisher().Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.countOn(wire.RolloutSubject("a.example")); n != 2 {
		t.Errorf("a.example holds %d rollout records after a quiet republish, want 2", n)
	}
}

// TestSetupAddsRolloutSubjects: a stream set up before rollouts (only
// certsync.bundle.>) gains certsync.rollout.> from Setup, and the next
// republish adds each certificate's rollout subject to the consumers.
// Where the credential may update the stream, publish upgrades it too.
func TestSetupAddsRolloutSubjects(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"setup", "publish"} {
		t.Run(by, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
			ctx := context.Background()
			old := wire.StreamConfig(wire.StreamOptions{})
			old.Subjects = []string{wire.Subjects}
			if _, err := f.js().CreateStream(ctx, old); err != nil {
				t.Fatal(err)
			}
			if _, err := f.js().CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig("web1", []string{"example.com"}, false)); err != nil {
				t.Fatal(err)
			}
			switch by {
			case "setup":
				if err := f.publisher().Setup(ctx); err != nil {
					t.Fatal(err)
				}
				st, err := f.js().Stream(ctx, wire.Stream)
				if err != nil {
					t.Fatal(err)
				}
				if s := st.CachedInfo().Config.Subjects; !slices.Equal(s, []string{wire.Subjects, wire.RolloutSubjects, wire.GroupSubjects}) {
					t.Fatalf("subjects after setup %v, want the bundle, rollout and group subjects", s)
				}
				f.lineage("example.com", f.issue("example.com", time.Time{}))
				if _, err := f.publisher().Republish(ctx, nil); err != nil {
					t.Fatal(err)
				}
			case "publish":
				f.cfg.Rollout = &RolloutPolicy{}
				if res := f.publish(f.lineage("example.com", f.issue("example.com", time.Time{}))); !res.Hold {
					t.Error("not held")
				}
			}
			if got := filterSubjects(*f.consumer("web1")); !slices.Equal(got, subjectsOf([]string{"example.com"}, true)) {
				t.Errorf("web1's consumer filters %v, want the bundle and rollout subjects", got)
			}
		})
	}
}

// TestStreamUpdateRolloutSubjects: a stream without the rollout subjects
// differs, but in nothing that protects it (the publisher goes on with it
// for certificates without a policy); other missing subjects do protect.
func TestStreamUpdateRolloutSubjects(t *testing.T) {
	t.Parallel()
	want := wire.StreamConfig(wire.StreamOptions{})
	cur := want
	cur.Subjects = []string{wire.Subjects}
	p := streamUpdate(cur, want)
	if !slices.Equal(p.changed, []string{"subjects"}) || len(p.unsafe) != 0 || !slices.Equal(p.upd.Subjects, want.Subjects) {
		t.Errorf("without the rollout subjects: changed %v unsafe %v subjects %v; want subjects changed, nothing unsafe", p.changed, p.unsafe, p.upd.Subjects)
	}
	cur.Subjects = []string{wire.Subjects, "other.>"}
	if p := streamUpdate(cur, want); !slices.Equal(p.unsafe, []string{"subjects"}) {
		t.Errorf("with another subject: unsafe %v, want subjects", p.unsafe)
	}
}
