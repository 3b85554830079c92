package publisher

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRepublishForce: Force seals and stores the newest lineage again
// although nothing changed, each time (the duplicate window does not drop
// it: its Nats-Msg-Id names the sequence it follows), and only for the
// named certificates; without Force nothing is stored.
func TestRepublishForce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}, "other.example": {"web1"}})
	for _, name := range []string{"example.com", "other.example"} {
		f.lineage(name, f.issue(name, time.Time{}))
	}
	ctx := context.Background()
	if _, err := f.publisher().Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	first := f.last("example.com")
	if report, err := f.publisher().Republish(ctx, nil); err != nil || report.Results[0].Action != Unchanged || report.Results[1].Action != Unchanged {
		t.Fatalf("republish without changes: %+v, %v; want both unchanged", report, err)
	}
	ids := map[string]bool{first.Header.Get(wire.HeaderMsgID): true}
	for i := range 2 {
		report, err := f.publisher().Republish(ctx, []string{"example.com"}, Force())
		if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published {
			t.Fatalf("forced republish %d: %+v, %v; want example.com published", i+1, report, err)
		}
		msg := f.last("example.com")
		if msg.Sequence != report.Results[0].Sequence {
			t.Errorf("forced republish %d: newest sequence %d, report says %d", i+1, msg.Sequence, report.Results[0].Sequence)
		}
		if id := msg.Header.Get(wire.HeaderMsgID); ids[id] {
			t.Errorf("forced republish %d: Nats-Msg-Id %q repeats an earlier one", i+1, id)
		} else {
			ids[id] = true
		}
		_, b := f.open(msg, "web1")
		_, was := f.open(first, "web1")
		if b.Version != was.Version || string(b.Cert) != string(was.Cert) {
			t.Errorf("forced republish %d: another certificate was published", i+1)
		}
	}
	if n := f.count("example.com"); n != 3 {
		t.Errorf("example.com holds %d messages, want 3", n)
	}
	if n := f.count("other.example"); n != 1 {
		t.Errorf("other.example holds %d messages, want 1: it was not named", n)
	}
	if report, err := f.publisher().Republish(ctx, nil); err != nil || report.Results[0].Action != Unchanged {
		t.Fatalf("republish after forcing: %+v, %v; want unchanged", report, err)
	}
}

// TestForcedPublishStoresEachGroupOnce: a forced publish on a stream without
// atomic batches stores its groups one by one; when one of them fails
// (another writer stored on its subject first), the next try of the same
// call stores that group again, and only that one: the groups the first
// try stored are not forced a second time. Every group subject gains one
// message of the call.
func TestForcedPublishStoresEachGroupOnce(t *testing.T) {
	t.Parallel()
	f, proxy := newProxiedFixture(t, map[string][]string{"example.com": namedNodes("web", 7)})
	p, ctx, s := f.withoutAtomicBatches()
	lineage := f.lineage("example.com", f.issue("example.com", time.Time{}))
	j, err := p.prepare(lineage)
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := s.publish(ctx, j, false)
	if err != nil || first.Groups < 3 || len(first.Stored) != first.Groups {
		t.Fatalf("first publish: %+v, %v; want every group stored", first, err)
	}

	// As the forced publish sends the last group, another writer stores a
	// copy of that group's envelope on its subject, so the last group's
	// expected last sequence no longer holds.
	last := wire.GroupSubject(first.Groups-1, "example.com")
	copied := f.lastOn(last)
	proxy.OnSend("HPUB "+last+" ", func() {
		msg := nats.NewMsg(last)
		msg.Data = copied.Data
		for k, v := range copied.Header {
			if k != jetstream.MsgIDHeader && !strings.HasPrefix(k, "Nats-Expected-") {
				msg.Header[k] = v
			}
		}
		if _, err := f.js().PublishMsg(context.Background(), msg); err != nil {
			t.Errorf("storing the copy: %v", err)
		}
	})
	j, err = p.prepare(lineage)
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := s.publish(ctx, j, true)
	if err != nil || res.Action != Published || len(res.Stored) != res.Groups {
		t.Fatalf("forced publish: %+v, %v; want every group stored", res, err)
	}
	if !strings.Contains(f.logs.String(), "wrong last sequence") {
		t.Fatalf("the last group's store did not fail once:\n%s", f.logs.String())
	}
	for subject, n := range f.bundleMsgs() {
		want := uint64(2) // the first publish's and the forced one's
		if subject == last {
			want = 3 // and the copy
		}
		if n != want {
			t.Errorf("%s holds %d messages, want %d", subject, n, want)
		}
	}
}
