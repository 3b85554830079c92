// Package fleetbench measures certsync at fleet scale: a publisher and many
// nodes against real NATS servers on loopback.
//
// It holds benchmarks, one test of the fixture (TestFleetRound) and one of
// a publish while a cluster server is killed (TestPublishServerKilled).
// The small rows run a publisher, up to 500 nodes and an in-process server
// in one process (make bench):
//
//	go test -run '^$' -bench 'Benchmark(FleetDelivery|NodeSync|RunMemory|PublishRecipients)$' -benchtime 3x -benchmem -timeout 30m ./internal/testing/fleetbench/
//
// BenchmarkScale (scale_test.go) runs thousands of `node run` nodes against
// `certsync server` processes (server_test.go), one row at a time with
// -benchtime 1x (make bench-fleet). docs/BENCHMARKS.md says what each one
// measures. Everything shares one machine: the servers, the publisher and
// every node compete for the same cores, so the figures are an upper bound
// of what a real fleet, with one machine per node, would see for its nodes.
package fleetbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// certName is the one certificate every node of a fleet receives.
const certName = "example.com"

// syncTimeout bounds one node's Sync and one Publish.
const syncTimeout = 2 * time.Minute

// fleet is a management host and its nodes: a signing key, a CA, and one
// identity per node, X25519 and ssh-ed25519 in turn.
type fleet struct {
	tb        testing.TB
	url       string
	signer    *crypto.SigningKey
	ca        *testcert.CA
	names     []string // sorted: the order of the envelope's stanzas
	kinds     []string // "x25519" or "ssh-ed25519", by index in names
	ids       []age.Identity
	cfg       publisher.Config
	notBase   time.Time // NotBefore of version 0
	version   int       // the newest version issued
	published uint64    // the version of the newest publish
}

// newFleet configures n nodes for certName against the server at url.
// With mixed, every second node has an ssh-ed25519 identity; otherwise
// all are X25519.
func newFleet(tb testing.TB, url string, n int, mixed bool) *fleet {
	tb.Helper()
	signer, err := crypto.GenerateSigningKey()
	if err != nil {
		tb.Fatal(err)
	}
	f := &fleet{
		tb:      tb,
		url:     url,
		signer:  signer,
		ca:      testcert.NewCA(tb),
		notBase: time.Now().Add(-24 * time.Hour).Truncate(time.Second),
		cfg: publisher.Config{
			NATS:         natsconn.Options{URL: url, Name: "certsync-fleetbench-publisher"},
			SigningKey:   signer,
			Nodes:        map[string]string{},
			Certificates: map[string][]string{},
			Timeout:      syncTimeout,
		},
	}
	for i := range n {
		name := fmt.Sprintf("node%04d", i)
		kind := "x25519"
		if mixed && i%2 == 1 {
			kind = "ssh-ed25519"
		}
		id, recipient := newIdentity(tb, kind)
		f.names = append(f.names, name)
		f.kinds = append(f.kinds, kind)
		f.ids = append(f.ids, id)
		f.cfg.Nodes[name] = recipient
	}
	f.cfg.Certificates[certName] = f.names
	return f
}

// newIdentity returns a fresh identity of kind and its recipient as the
// publisher's configuration writes it.
func newIdentity(tb testing.TB, kind string) (age.Identity, string) {
	tb.Helper()
	if kind == "x25519" {
		id := testkeys.X25519(tb)
		return id, id.Recipient().String()
	}
	k := testkeys.Ed25519(tb)
	id, err := agessh.NewEd25519Identity(k.Private)
	if err != nil {
		tb.Fatal(err)
	}
	return id, k.Line
}

// renew issues the next version of the certificate: a new leaf and key,
// one second later than the previous one.
func (f *fleet) renew() *crypto.Bundle {
	f.tb.Helper()
	f.version++
	c := f.ca.Issue(f.tb, testcert.Options{
		Names:     []string{certName, "*." + certName},
		NotBefore: f.notBase.Add(time.Duration(f.version) * time.Second),
	})
	return &crypto.Bundle{Name: certName, Cert: c.Cert, Chain: c.Chain, FullChain: c.FullChain, PrivKey: c.PrivKey}
}

// expected is the bundle version of the newest publish (the publisher
// assigns it).
func (f *fleet) expected() uint64 { return f.published }

// publish publishes b as certbot's hook does: a new Publisher, one
// connection, seal, store. It fails unless b was stored.
func (f *fleet) publish(b *crypto.Bundle) *publisher.Result {
	f.tb.Helper()
	p := f.newPublisher()
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	res, err := p.Publish(ctx, b)
	if err != nil {
		f.tb.Fatalf("Publish: %v", err)
	}
	if res.Action != publisher.Published {
		f.tb.Fatalf("Publish: %s, want %s", res.Action, publisher.Published)
	}
	f.published = res.Version
	return res
}

// newPublisher is a Publisher of the fleet's configuration.
func (f *fleet) newPublisher() *publisher.Publisher {
	f.tb.Helper()
	var log *slog.Logger
	if os.Getenv("FLEETBENCH_PUBLISHER_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	p, err := publisher.New(f.cfg, log)
	if err != nil {
		f.tb.Fatalf("publisher.New: %v", err)
	}
	return p
}

// trusted is what the nodes trust: the fleet's signing key.
func (f *fleet) trusted() []crypto.PublicKey { return []crypto.PublicKey{f.signer.Public()} }

// node builds node i, staging and installing under dir, installing at once
// with no check and no reload, logging nothing.
func (f *fleet) node(i int, dir string) (*subscriber.Node, string) {
	f.tb.Helper()
	return f.nodeWith(i, dir, nil)
}

// envelopeBytes is the size of the newest bundle on the stream.
func (f *fleet) envelopeBytes() int {
	f.tb.Helper()
	js := natstest.JetStream(f.tb, f.url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		f.tb.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, wire.Subject(certName))
	if err != nil {
		f.tb.Fatalf("newest bundle: %v", err)
	}
	return len(msg.Data)
}

// syncOnce runs Sync on n until version want is staged and installed, as
// a node's periodic `node sync` would, and returns how many Syncs that
// took. A Sync that finds nothing is repeated: right after a publish the
// server may not yet count the new message as pending for every consumer
// (it signals consumers after acknowledging the publish), and Sync then
// returns without it. Any refusal, failure, or a Sync that staged the
// bundle without installing it fails.
func syncOnce(n *subscriber.Node, install string, want uint64) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	for syncs := 1; ; syncs++ {
		rep, err := n.Sync(ctx)
		if err != nil {
			return syncs, err
		}
		if err := rep.Err(); err != nil {
			return syncs, err
		}
		if checkInstalled(n, install, want) == nil {
			return syncs, nil
		}
		if staged := rep.Count(subscriber.OutcomeStaged); staged != 0 {
			return syncs, fmt.Errorf("sync staged %d bundles and installed %d, want version %d installed",
				staged, rep.InstallCount(subscriber.InstallInstalled), want)
		}
	}
}

// checkInstalled reports whether version want is staged and in service at
// install (a link to a version folder named "<version>-<fingerprint>").
func checkInstalled(n *subscriber.Node, install string, want uint64) error {
	staged, err := n.Stage().Read(certName)
	if err != nil {
		return err
	}
	if staged.Version != want {
		return fmt.Errorf("staged version %d, want %d", staged.Version, want)
	}
	target, err := os.Readlink(install)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(filepath.Base(target), strconv.FormatUint(want, 10)+"-") {
		return fmt.Errorf("install_dir points at %s, want version %d", target, want)
	}
	return nil
}

// syncAll runs syncOnce on every node, at most workers at a time, and
// returns each node's duration (first Sync to installed) and how many
// Syncs beyond one per node were needed.
func syncAll(nodes []*subscriber.Node, installs []string, want uint64, workers int) ([]time.Duration, int, error) {
	took := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var next, extra atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(nodes) {
					return
				}
				start := time.Now()
				syncs, err := syncOnce(nodes[i], installs[i], want)
				took[i] = time.Since(start)
				extra.Add(int64(syncs - 1))
				if err != nil {
					errs[i] = fmt.Errorf("node %d: %w", i, err)
				}
			}
		})
	}
	wg.Wait()
	return took, int(extra.Load()), errors.Join(errs...)
}

// workers is how many nodes sync at once: nodes mostly wait for the server
// and the disk, so a few per core keep both cores busy.
func workers() int { return 4 * runtime.GOMAXPROCS(0) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkFleetDelivery measures one renewal reaching a fleet: the
// publish, then every node's Sync until all have staged and installed it.
// Half the nodes are X25519, half ssh-ed25519, alternating in the
// envelope's stanza order. The fleet has received version 0 before timing
// starts, so each round is a steady-state renewal. At most workers() nodes
// sync at once.
//
// Metrics: publish_ms is Publish alone (connect, consumers, seal, store);
// per_node_sync_ms, x25519_sync_ms and ssh_sync_ms are the mean time from
// a node's first Sync of the round until the renewal is installed; resyncs
// counts, per round, the Syncs that found nothing yet and were repeated.
func BenchmarkFleetDelivery(b *testing.B) {
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			if n > 100 && testing.Short() {
				b.Skip("500 nodes: skipped under -short")
			}
			f := newFleet(b, natstest.URL(natstest.RunServer(b)), n, true)
			dir := b.TempDir()
			nodes := make([]*subscriber.Node, n)
			installs := make([]string, n)
			for i := range n {
				nodes[i], installs[i] = f.node(i, dir)
			}
			f.publish(f.renew())
			if _, _, err := syncAll(nodes, installs, f.expected(), workers()); err != nil {
				b.Fatalf("first delivery: %v", err)
			}

			var publish, syncs time.Duration
			var byKind = map[string]time.Duration{}
			var rounds, resyncs int
			for b.Loop() {
				b.StopTimer()
				bundle := f.renew() // certbot's work, not certsync's
				b.StartTimer()
				start := time.Now()
				f.publish(bundle)
				publish += time.Since(start)
				took, extra, err := syncAll(nodes, installs, f.expected(), workers())
				if err != nil {
					b.Fatalf("round %d: %v", rounds+1, err)
				}
				resyncs += extra
				for i, d := range took {
					syncs += d
					byKind[f.kinds[i]] += d
				}
				rounds++
			}
			b.ReportMetric(ms(publish)/float64(rounds), "publish_ms")
			b.ReportMetric(ms(syncs)/float64(rounds*n), "per_node_sync_ms")
			// Nodes alternate, so each kind is half of them (rounded).
			b.ReportMetric(ms(byKind["x25519"])/float64(rounds*((n+1)/2)), "x25519_sync_ms")
			b.ReportMetric(ms(byKind["ssh-ed25519"])/float64(rounds*(n/2)), "ssh_sync_ms")
			b.ReportMetric(float64(resyncs)/float64(rounds), "resyncs")
			b.ReportMetric(float64(f.envelopeBytes()), "envelope_bytes")
		})
	}
}

// BenchmarkNodeSync measures one node's Sync of one renewal (connect, bind,
// fetch, verify, open, stage, install, status records) with its
// allocations. The publish of each renewal is not timed. The server runs
// in the same process, so allocs/op and B/op include the server's side of
// the node's requests.
func BenchmarkNodeSync(b *testing.B) {
	b.ReportAllocs()
	f := newFleet(b, natstest.URL(natstest.RunServer(b)), 1, false)
	n, install := f.node(0, b.TempDir())
	f.publish(f.renew())
	if _, err := syncOnce(n, install, f.expected()); err != nil {
		b.Fatalf("first delivery: %v", err)
	}
	for b.Loop() {
		b.StopTimer()
		f.publish(f.renew())
		b.StartTimer()
		if _, err := syncOnce(n, install, f.expected()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunMemory measures the heap of a long-running node (Run). Each
// iteration publishes a renewal (not timed), starts Run on the node, which
// holds the previous version, and waits until Run has staged and installed
// the renewal (ns/op is that: start, connect, receive, install; it includes
// up to 20ms of polling). Then, after a GC:
//
//   - heap_bytes: live heap while Run is idle after the bundle, minus the
//     live heap before Run started (after the publish);
//   - run_heap_bytes: live heap while Run is idle, minus the live heap once
//     Run has returned: what Run holds, including the server's state for
//     the node's connection, since the server runs in this process;
//   - goroutines and stack_bytes: goroutines and goroutine stack memory
//     while Run is idle, minus before it started.
//
// It measures the Go heap only: a `certsync node run` process also holds
// the Go runtime and its binary, which this does not see.
func BenchmarkRunMemory(b *testing.B) {
	f := newFleet(b, natstest.URL(natstest.RunServer(b)), 1, false)
	n, install := f.node(0, b.TempDir())
	f.publish(f.renew())
	if _, err := syncOnce(n, install, f.expected()); err != nil {
		b.Fatalf("first delivery: %v", err)
	}
	var grown, held, routines, stacks float64
	var rounds int
	for b.Loop() {
		b.StopTimer()
		f.publish(f.renew())
		before := liveHeap()
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		natstest.WaitFor(b, syncTimeout, "run to install the renewal", func() bool {
			return checkInstalled(n, install, f.expected()) == nil
		})
		b.StopTimer()
		running := liveHeap()
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("Run: %v", err)
		}
		after := liveHeap()
		grown += float64(running.heap) - float64(before.heap)
		held += float64(running.heap) - float64(after.heap)
		routines += float64(running.goroutines - before.goroutines)
		stacks += float64(running.stacks) - float64(before.stacks)
		rounds++
		b.StartTimer()
	}
	b.ReportMetric(grown/float64(rounds), "heap_bytes")
	b.ReportMetric(held/float64(rounds), "run_heap_bytes")
	b.ReportMetric(routines/float64(rounds), "goroutines")
	b.ReportMetric(stacks/float64(rounds), "stack_bytes")
}

// memory is what liveHeap reads.
type memory struct {
	heap, stacks uint64 // live heap, goroutine stacks in use
	goroutines   int
}

// liveHeap collects garbage and returns the live heap, the stack memory
// and the number of goroutines.
func liveHeap() memory {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memory{heap: m.HeapAlloc, stacks: m.StackInuse, goroutines: runtime.NumGoroutine()}
}

// BenchmarkPublishRecipients measures Publish end to end as certbot's hook
// runs it (New, connect, stream check, consumers, seal, store) for one
// certificate sealed to X25519 recipients.
//
//   - first: a fresh server each iteration, so the publish also creates the
//     stream and one consumer per node. Starting the server is not timed.
//   - renewal: the stream and consumers exist; each iteration publishes
//     the next version.
func BenchmarkPublishRecipients(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("recipients=%d/first", n), func(b *testing.B) {
			f := newFleet(b, "", n, false)
			bundle := f.renew()
			for b.Loop() {
				b.StopTimer()
				srv, dir := startServer(b)
				f.cfg.NATS.URL = natstest.URL(srv)
				b.StartTimer()
				f.publish(bundle)
				b.StopTimer()
				srv.Shutdown()
				srv.WaitForShutdown()
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
		b.Run(fmt.Sprintf("recipients=%d/renewal", n), func(b *testing.B) {
			f := newFleet(b, natstest.URL(natstest.RunServer(b)), n, false)
			f.publish(f.renew())
			for b.Loop() {
				b.StopTimer()
				bundle := f.renew()
				b.StartTimer()
				f.publish(bundle)
			}
			b.ReportMetric(float64(f.envelopeBytes()), "envelope_bytes")
		})
	}
}

// startServer starts a server the caller shuts down, with its storage in
// a folder the caller removes.
func startServer(b *testing.B) (*server.Server, string) {
	b.Helper()
	dir, err := os.MkdirTemp("", "fleetbench-")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.NewServer(natstest.Options(dir))
	if err != nil {
		b.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats server not ready")
	}
	return srv, dir
}

// TestFleetRound checks the fixture the benchmarks rely on, at the
// smallest size: a renewal published to two nodes (one of each kind) is
// staged and installed by both.
func TestFleetRound(t *testing.T) {
	t.Parallel()
	f := newFleet(t, natstest.URL(natstest.RunServer(t)), 2, true)
	dir := t.TempDir()
	nodes := make([]*subscriber.Node, 2)
	installs := make([]string, 2)
	for i := range nodes {
		nodes[i], installs[i] = f.node(i, dir)
	}
	for round := range 2 {
		f.publish(f.renew())
		if _, _, err := syncAll(nodes, installs, f.expected(), 2); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if f.kinds[0] == f.kinds[1] {
		t.Errorf("nodes are both %s, want one of each kind", f.kinds[0])
	}
}

// TestMain removes the certsync binary the scale benchmarks built.
func TestMain(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}
