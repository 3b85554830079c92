package publisher

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// TestPublishGroupsPastMaxBatchSize: on a server whose jetstream
// max_batch_size (2) is below a certificate's group count (3), the
// server refuses the one batch whole; the publish learns the limit from
// its answer, warns naming it, and stores the groups in batches of at most
// 2, each group once, and every node receives its own. A renewal, in a
// session of its own, does the same.
func TestPublishGroupsPastMaxBatchSize(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.JetStreamLimits.MaxBatchSize = 2
	nodes := namedNodes("web", 6)
	f := newFixture(t, natstest.URL(natstest.Start(t, opts)), map[string][]string{"example.com": nodes})
	groups := groupCount(nodes, testGroupCapacity)
	if groups != 3 {
		t.Fatalf("%d nodes make %d groups, want 3", len(nodes), groups)
	}
	p := f.groupedPublisher()
	for renewal := range 2 {
		after := f.lastSeq()
		res, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
		if err != nil {
			t.Fatalf("publish %d: %v", renewal, err)
		}
		if res.Action != Published || res.Groups != groups || len(res.Stored) != groups {
			t.Fatalf("publish %d: %+v, want every one of %d groups stored", renewal, res, groups)
		}
		msgs := f.bundleMsgs()
		for k := range groups {
			subject := wire.GroupSubject(k, "example.com")
			if msgs[subject] != uint64(renewal+1) {
				t.Errorf("publish %d: %s holds %d messages, want %d (each group stored once)", renewal, subject, msgs[subject], renewal+1)
			}
		}
		if got := f.lastSeq() - after; got != uint64(groups) {
			t.Errorf("publish %d stored %d messages, want %d", renewal, got, groups)
		}
		for _, name := range nodes {
			f.realNode(name).syncTo(t, res.Version, after)
		}
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "msg=atomic_batch_too_large"); n != 2 {
		t.Errorf("%d atomic_batch_too_large warnings, want one per publish (session):\n%s", n, logs)
	}
	for _, want := range []string{"level=WARN msg=atomic_batch_too_large name=example.com groups=3 max_batch_size=2 batches=2", "batch { max_msgs: 256 }"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// TestPublishGroupsBatchDisabled: a stream that stopped taking atomic
// batches after the session read it (an admin took allow_atomic off)
// refuses the batch; the publish stores the groups one by one, as on a
// stream set up before batches, warns, and every node receives its own.
func TestPublishGroupsBatchDisabled(t *testing.T) {
	t.Parallel()
	nodes := namedNodes("web", 6)
	f := newFixture(t, runServer(t), map[string][]string{"example.com": nodes})
	p, ctx, s := f.withoutAtomicBatches()
	s.atomic = true // as the session read the stream before the admin's edit
	j, err := p.prepare(f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}
	res, plan, err := s.publish(ctx, j, false)
	if err != nil || res.Action != Published || res.Groups != 3 || len(res.Stored) != res.Groups {
		t.Fatalf("publish: %+v, %v; want every group stored", res, err)
	}
	if s.atomic {
		t.Error("the session still sends atomic batches to a stream that refuses them")
	}
	if err := s.createConsumers(ctx, s.wantOf(j), plan.missing); err != nil {
		t.Fatal(err)
	}
	for _, name := range nodes {
		f.realNode(name).syncTo(t, res.Version, 0)
	}
	if logs := f.logs.String(); strings.Count(logs, "level=WARN msg=atomic_batch_disabled name=example.com") != 1 {
		t.Errorf("want one atomic_batch_disabled warning:\n%s", logs)
	}
}

// TestPublishGroupsBatchesInFlight: while a server holds as many atomic
// batches in flight on the stream as it allows (max_batch_inflight_per_stream
// 1, held by a batch another client never commits), the publish's batch
// is refused and tried again with the usual backoff, and stores every
// group once the other batch has timed out (max_batch_timeout). The
// server refuses the first message of the batch (10210, unanswered: only
// the commit asks for one) and answers the commit as incomplete (10176).
func TestPublishGroupsBatchesInFlight(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.JetStreamLimits.MaxBatchInflightPerStream = 1
	opts.JetStreamLimits.MaxBatchTimeout = 2 * time.Second
	nodes := namedNodes("web", 6)
	f := newFixture(t, natstest.URL(natstest.Start(t, opts)), map[string][]string{"example.com": nodes})
	p := f.groupedPublisher()
	first, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatal(err)
	}

	nc := f.js().Conn()
	hold := nats.NewMsg(wire.GroupSubject(0, "other.example"))
	hold.Header.Set(headerBatchID, "held-open")
	hold.Header.Set(headerBatchSeq, "1")
	reply, err := nc.RequestMsg(hold, 5*time.Second)
	if err != nil || len(reply.Data) != 0 {
		t.Fatalf("opening a batch: %v %q, want the server's empty answer", reply, err)
	}
	after := f.lastSeq()
	res, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil || res.Action != Published || len(res.Stored) != first.Groups {
		t.Fatalf("publish while the stream's batches are in flight: %+v, %v; want every group stored", res, err)
	}
	if got := f.lastSeq() - after; got != uint64(first.Groups) {
		t.Errorf("stored %d messages, want %d", got, first.Groups)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "msg=nats_retry doing=\"storing the bundle\"") {
		t.Errorf("no retry of the store logged:\n%s", logs)
	}
	for _, name := range f.sampleOf(nodes) {
		f.realNode(name).syncTo(t, res.Version, after)
	}
}

// TestTransientBatch: which refusals of an atomic batch publish tries
// again (transient).
func TestTransientBatch(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want bool
	}{
		{api(429, 10210, "atomic publish too many inflight"), true},
		{api(400, 10176, "atomic publish batch is incomplete"), true},
		{api(400, 10201, "atomic publish batch contains duplicate message id"), true},
		{api(409, 10158, "duplicate message id is in process"), true},
		{api(400, 10071, "wrong last sequence: 5"), true},
		{api(400, 10199, "atomic publish batch is too large: 2"), false}, // storeSealed splits
		{api(400, 10174, "atomic publish is disabled"), false},           // storeSealed stores one by one
		{api(400, 10177, "atomic publish unsupported header used: Nats-Expected-Last-Msg-Id"), false},
		{api(400, 10179, "atomic publish batch ID is invalid"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestBatchLimit: the most groups a batch may hold after the server
// refused one of n as too large: the limit its answer names, or half of n
// when the answer names none below n.
func TestBatchLimit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err   error
		n     int
		limit int
		ok    bool
	}{
		{api(400, 10199, "atomic publish batch is too large: 2"), 3, 2, true},
		{api(400, 10199, "atomic publish batch is too large: 100"), 256, 100, true},
		{api(400, 10199, "atomic publish batch is too large: 1"), 256, 1, true},
		{api(400, 10199, "atomic publish batch is too large"), 9, 4, true}, // no number: half
		{api(400, 10199, "atomic publish batch is too large: 0"), 9, 4, true},
		{api(400, 10199, "atomic publish batch is too large: 300"), 256, 128, true}, // not below n: half
		{api(400, 10199, "atomic publish batch is too large: 2"), 2, 1, true},
		{api(400, 10176, "atomic publish batch is incomplete"), 3, 0, false},
		{nats.ErrTimeout, 3, 0, false},
	} {
		if limit, ok := batchLimit(c.err, c.n); limit != c.limit || ok != c.ok {
			t.Errorf("batchLimit(%v, %d) = %d, %v; want %d, %v", c.err, c.n, limit, ok, c.limit, c.ok)
		}
	}
}

// api is the error of a store on a group subject that the server answered
// with code and errCode.
func api(code int, errCode jetstream.ErrorCode, desc string) error {
	return fmt.Errorf("storing the bundle on certsync.group.0.example.com: %w",
		&jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
}
