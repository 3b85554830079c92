package fleetbench

import (
	"context"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// TestPublishServerKilled: on a cluster of three `certsync server`
// processes, the stream on 3 replicas and the node consumers on one each
// (stream.consumer_replicas' default), a renewal is published within the
// publisher's default timeout right after the server holding the most
// consumers (of those that lead nothing else) is killed (SIGKILL: its peers are not told, and describe its
// consumers as missing from the list for as long as it is down). Before,
// listing the consumers asked for the same page until the publish timed
// out, and the consumers it could not list were created again, in vain.
// The killed server leads neither the streams nor the meta layer.
func TestPublishServerKilled(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("three server processes: skipped under -short")
	}
	procs := newNATSProcs(t, t.TempDir(), 3)
	url := procs[0].URL() + "," + procs[1].URL() + "," + procs[2].URL()
	f := newFleet(t, url, 30, false)
	f.cfg.Stream.Replicas = 3
	f.setup()
	f.publish(f.renew())

	// The server leading the most node consumers.
	js := connectJS(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	leaders := map[string]int{}
	l := st.ListConsumers(ctx)
	for info := range l.Info() {
		if info.Config.Replicas != 1 {
			t.Errorf("consumer %s has %d replicas, want 1", info.Name, info.Config.Replicas)
		}
		if info.Cluster != nil {
			leaders[info.Cluster.Leader]++
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	// Not a server that leads the streams or the meta layer: a request
	// to a leader killed without a word waits out its deadline until the
	// others elect a new one, which is another matter (the publisher's
	// per-request deadlines).
	busy := map[string]bool{metaLeader(t, procs): true}
	for _, name := range []string{wire.Stream, wire.StatusStream} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if c := s.CachedInfo().Cluster; c != nil {
			busy[c.Leader] = true
		}
	}
	var victim *natsProc
	for _, p := range procs {
		if !busy[p.name] && (victim == nil || leaders[p.name] > leaders[victim.name]) {
			victim = p
		}
	}
	if victim == nil || leaders[victim.name] == 0 {
		t.Skipf("every server that holds node consumers leads a stream or the meta layer: %v, leaders %v", leaders, busy)
	}
	victim.kill()

	b := f.renew()
	p := f.newPublisher()
	pctx, pcancel := context.WithTimeout(context.Background(), publisher.DefaultTimeout)
	defer pcancel()
	res, err := p.Publish(pctx, b)
	if err != nil {
		t.Fatalf("publish with %s (%d of the 30 consumers) killed: %v", victim.name, leaders[victim.name], err)
	}
	if res.Action != publisher.Published {
		t.Fatalf("publish: %s, want %s", res.Action, publisher.Published)
	}
}
