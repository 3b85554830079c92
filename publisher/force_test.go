package publisher

import (
	"context"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/wire"
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
