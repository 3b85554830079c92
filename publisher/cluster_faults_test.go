package publisher

// Faults of the NATS side during a publish: a stream without a leader, an
// acknowledgement lost on the way back. Each request has its own deadline
// (natsconn.RequestTimeout) inside the publish's timeout, and is retried.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// TestClusterPublishWithoutLeader is a publish started while the stream
// has no leader (two of its three servers died): it succeeds once one of
// them is back and the cluster has elected a leader, well within its
// timeout. Each request waits natsconn.RequestTimeout, not the whole
// timeout, and is sent again.
func TestClusterPublishWithoutLeader(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	f := newFixture(t, c.URLs, map[string][]string{"example.com": {"web1", "web2"}})
	f.cfg.Stream.Replicas = 3
	f.cfg.Timeout = 30 * time.Second // the default
	first := f.publish(f.lineage("example.com", f.issue("example.com", time.Now().Add(-time.Hour))))

	leader := c.WaitStreamLeader(wire.Stream, 10*time.Second)
	other := (leader + 1) % 3
	c.Kill(leader)
	c.Kill(other)
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	start := time.Now()
	done := f.goPublish(b)
	// The publish is under way, on a stream without a quorum: once it is
	// connected (to the one server left), it asks for the stream.
	natstest.WaitFor(t, 20*time.Second, "the publisher to connect to the server left", func() bool {
		return c.ServerOf(f.cfg.NATS.Name) >= 0
	})
	c.Restart(other)
	back := time.Now()
	var o publishOutcome
	select {
	case o = <-done:
	case <-time.After(time.Minute):
		t.Fatal("publish still running a minute later")
	}
	if o.err != nil {
		t.Fatalf("publish started without a stream leader: %v (after %v)", o.err, time.Since(start))
	}
	t.Logf("published %v after the start, %v after a server came back", time.Since(start).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	if o.res.Action != Published || o.res.Sequence != first.Sequence+1 {
		t.Fatalf("result %s at sequence %d, want published at %d", o.res.Action, o.res.Sequence, first.Sequence+1)
	}
	if n := f.count("example.com"); n != 2 {
		t.Errorf("the subject holds %d messages, want 2", n)
	}
}

// TestPublishAckLost cuts the publisher's connection right after the server
// stored the bundle, before the acknowledgement reaches it: the publish
// reconnects, finds its own bundle as the subject's newest, and reports it
// published, stored once.
func TestPublishAckLost(t *testing.T) {
	t.Parallel()
	f, proxy := newProxiedFixture(t, map[string][]string{"example.com": {"web1"}})
	f.cfg.Timeout = 40 * time.Second
	first := f.publish(f.lineage("example.com", f.issue("example.com", time.Now().Add(-time.Hour))))

	// The bundle's publish, then the server's acknowledgement of it.
	proxy.CutAfter("HPUB "+wire.Subject("example.com")+" ", `"stream":"`+wire.Stream+`"`)
	start := time.Now()
	res, err := f.publisher().Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatalf("publish whose acknowledgement was lost: %v (after %v)", err, time.Since(start))
	}
	t.Logf("published after %v", time.Since(start).Round(time.Millisecond))
	if proxy.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", proxy.Cuts())
	}
	if res.Action != Published || res.Sequence != first.Sequence+1 || len(res.Stored) != 1 {
		t.Errorf("result %s at sequence %d, stored on %v; want published at %d", res.Action, res.Sequence, res.Stored, first.Sequence+1)
	}
	if n := f.count("example.com"); n != 2 {
		t.Errorf("the subject holds %d messages, want 2: the bundle once, after the first", n)
	}
}

// TestClusterPublishWithConsumerServerDown publishes while the server of a
// consumer is down: the cluster's listing of the consumers leaves it out
// (it waits 4 seconds for each consumer's leader). The publish lists them
// all the same, page by page, and reads the node consumers whole: it never
// loops on the page that lacks one, nor takes a node consumer the listing
// missed for one to create.
func TestClusterPublishWithConsumerServerDown(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	f := newFixture(t, c.URLs, map[string][]string{"example.com": {"web1", "web2"}})
	f.cfg.Stream.Replicas = 3
	f.cfg.Timeout = 30 * time.Second
	first := f.publish(f.lineage("example.com", f.issue("example.com", time.Now().Add(-time.Hour))))

	// A reader's consumer on one server only, listed last.
	js := f.js()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateConsumer(ctx, wire.Stream, jetstream.ConsumerConfig{Durable: "zz-reader", Replicas: 1, MemoryStorage: true}); err != nil {
		t.Fatal(err)
	}
	var home int
	natstest.WaitFor(t, 20*time.Second, "the reader's consumer to have a leader", func() bool {
		home = c.ConsumerLeader(wire.Stream, "zz-reader")
		return home >= 0
	})
	c.Kill(home)

	start := time.Now()
	res, err := f.publisher().Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatalf("publish with a consumer's server down: %v (after %v)", err, time.Since(start))
	}
	t.Logf("published %v after the server of a consumer was killed", time.Since(start).Round(time.Millisecond))
	if res.Action != Published || res.Sequence != first.Sequence+1 {
		t.Fatalf("result %s at sequence %d, want published at %d", res.Action, res.Sequence, first.Sequence+1)
	}
	if n := strings.Count(f.logs.String(), "msg=consumer_created"); n != 2 {
		t.Errorf("%d consumers created, want the 2 of the first publish:\n%s", n, f.logs.String())
	}
}

// TestPublishGroupsBatchAckLost cuts the publisher's connection right after
// the server committed a certificate's groups, one atomic batch, before the
// batch's acknowledgement reaches it: the publish reconnects, finds its own
// envelopes as every group subject's newest, and reports them published,
// each stored once.
func TestPublishGroupsBatchAckLost(t *testing.T) {
	t.Parallel()
	f, proxy := newProxiedFixture(t, map[string][]string{"example.com": namedNodes("web", 7)})
	f.cfg.Timeout = 40 * time.Second
	p := f.groupedPublisher()
	first, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Now().Add(-time.Hour))))
	if err != nil || first.Groups < 3 {
		t.Fatalf("first publish: %+v, %v; want groups", first, err)
	}

	// The batch's messages, then the server's acknowledgement of the batch.
	proxy.CutAfter("HPUB "+wire.GroupSubject(0, "example.com")+" ", `"batch":"`)
	res, err := p.Publish(context.Background(), f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil {
		t.Fatalf("publish whose batch acknowledgement was lost: %v", err)
	}
	if proxy.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1", proxy.Cuts())
	}
	if res.Action != Published || len(res.Stored) != first.Groups {
		t.Errorf("result %s, stored on %v; want published on all %d groups", res.Action, res.Stored, first.Groups)
	}
	for subject, n := range f.bundleMsgs() {
		if n != 2 {
			t.Errorf("%s holds %d messages, want 2: the first publish's and this one's, once", subject, n)
		}
	}
}

// TestClusterPublishGroups stores a certificate's groups as one atomic
// batch on a stream replicated on three servers: every group at
// consecutive sequences, and the nodes receive their own.
func TestClusterPublishGroups(t *testing.T) {
	t.Parallel()
	c := natstest.StartCluster(t, 3)
	nodes := namedNodes("web", 7)
	f := newFixture(t, c.URLs, map[string][]string{"example.com": nodes})
	f.cfg.Stream.Replicas = 3
	p := f.groupedPublisher()
	ctx := context.Background()
	if _, err := p.Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Now().Add(-time.Hour)))); err != nil {
		t.Fatal(err)
	}
	res, err := p.Publish(ctx, f.lineage("example.com", f.issue("example.com", time.Time{})))
	if err != nil || res.Action != Published || res.Groups < 3 || len(res.Stored) != res.Groups {
		t.Fatalf("renewal: %+v, %v; want every group stored", res, err)
	}
	seqs := map[uint64]bool{}
	for _, subject := range res.Stored {
		seqs[f.lastOn(subject).Sequence] = true
	}
	for k := range uint64(len(res.Stored)) {
		if !seqs[res.Sequence-k] {
			t.Fatalf("groups stored at %v, want the %d sequences up to %d (one batch)", seqs, len(res.Stored), res.Sequence)
		}
	}
	for _, name := range f.sampleOf(nodes) {
		f.realNode(name).syncTo(t, res.Version, 0)
	}
}
