package fleetbench

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/wire"
)

// BenchmarkServerFloor is what nats-server itself holds for an idle node
// of any design that gives each node a durable consumer and a connection,
// with nothing of certsync's in them: the floor under BenchmarkScale's
// server_heap_per_node_kb. On one `certsync server` process, with the
// stream and the status bucket set up, it samples the server's live heap
// and goroutine stacks (as BenchmarkScale does) after each of:
//
//   - N durable pull consumers with the server's defaults but for a name,
//     explicit acks and one filter subject (floor_heap_per_consumer_kb),
//     and N more with certsync's settings, wire.ConsumerConfig
//     (floor_heap_per_certsync_consumer_kb);
//   - N connections of nats.go with its defaults and no subscription
//     (floor_heap_per_connection_kb);
//   - on each connection, one idle pull from its default consumer
//     (Consumer.Messages with its defaults, as a waiting node's:
//     floor_heap_per_pulling_connection_kb, the connection and the pull).
//
// floor_heap_per_node_kb is a default consumer plus a pulling connection.
// Run it with -benchtime 1x (make bench-fleet runs it).
func BenchmarkServerFloor(b *testing.B) {
	for _, n := range []int{2000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			for b.Loop() {
				floorRound(b, n)
			}
		})
	}
}

func floorRound(b *testing.B, n int) {
	b.StopTimer()
	defer b.StartTimer()
	procs := newNATSProcs(b, b.TempDir(), 1)
	url := procs[0].URL()
	f := newFleet(b, url, 1, false)
	f.setup()
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	js := connectJS(b, url)
	settled := func() memorySample {
		time.Sleep(settle) // a measurement's quiet period, not a wait for a condition
		return sampleMemory(procs)
	}
	perNode := func(a, b memorySample) float64 { return perNodeKB(a.live(), b.live(), n) }
	name := func(i int) string { return fmt.Sprintf("floor%05d", i) }

	base := settled()
	for i := range n {
		cfg := jetstream.ConsumerConfig{Durable: name(i), AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: wire.Subject(certName)}
		if _, err := js.CreateConsumer(ctx, wire.Stream, cfg); err != nil {
			b.Fatalf("creating consumer %s: %v", name(i), err)
		}
	}
	consumers := settled()
	for i := range n {
		cfg := wire.ConsumerConfig(fmt.Sprintf("certsync%05d", i), []string{certName}, true)
		if _, err := js.CreateConsumer(ctx, wire.Stream, cfg); err != nil {
			b.Fatalf("creating certsync's consumer %d: %v", i, err)
		}
	}
	certsyncConsumers := settled()

	conns := make([]*nats.Conn, n)
	for i := range conns {
		nc, err := nats.Connect(url, nats.Name(name(i)))
		if err != nil {
			b.Fatalf("connection %d: %v", i, err)
		}
		conns[i] = nc
		defer nc.Close()
	}
	connected := settled()
	for i, nc := range conns {
		njs, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		cons, err := njs.Consumer(ctx, wire.Stream, name(i))
		if err != nil {
			b.Fatalf("binding consumer %s: %v", name(i), err)
		}
		it, err := cons.Messages()
		if err != nil {
			b.Fatalf("pulling from %s: %v", name(i), err)
		}
		defer it.Stop()
	}
	pulling := settled()

	report(b, perNode(consumers, base), "floor_heap_per_consumer_kb")
	report(b, perNode(certsyncConsumers, consumers), "floor_heap_per_certsync_consumer_kb")
	report(b, perNode(connected, certsyncConsumers), "floor_heap_per_connection_kb")
	report(b, perNode(pulling, certsyncConsumers), "floor_heap_per_pulling_connection_kb")
	report(b, perNode(consumers, base)+perNode(pulling, certsyncConsumers), "floor_heap_per_node_kb")
	report(b, perNodeKB(consumers.stacks, base.stacks, n)+perNodeKB(pulling.stacks, certsyncConsumers.stacks, n), "floor_stacks_per_node_kb")
}
