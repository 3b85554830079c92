package fleetbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// The fleet at scale: BenchmarkScale runs thousands of `node run` nodes
// (subscriber.Node.Run, in this process) against `certsync server`
// processes (server_test.go), one server or a three-server cluster, and
// measures what the targets name: the first publish (which
// creates a consumer per node), a renewal's publish, the renewal staged
// and installed by every node, the server's memory and CPU per idle node,
// and a server restart with every node connected until all have caught
// up, counting the JetStream API requests the server dropped.
// docs/BENCHMARKS.md has the figures and the commands; `make bench-fleet`
// runs it.

// renewals is how many renewals a round publishes, one after the other
// (renewal_publish_s is their median).
const renewals = 3

// scaleTimeout bounds each wait of a scale round: a publish, every node
// staging or installing, a server starting.
const scaleTimeout = 5 * time.Minute

// startInFlight is how many nodes may be starting at once (connected, not
// yet holding the first version) while the benchmark brings the fleet up:
// each start asks the JetStream API for the status bucket and the consumer,
// and thousands at once are a stampede no real fleet makes at its first
// start. It is setup, not measured.
const startInFlight = 200

// nodeDir is where the nodes stage and install. The nodes of a real fleet
// each write to their own disk; here thousands share one, and its fsyncs
// would queue behind each other and measure the benchmark's disk, not
// certsync. So they go to a tmpfs (FLEETBENCH_NODE_DIR, default /dev/shm
// when it exists); the servers' stores stay on the disk of the test's
// temporary folder.
func nodeDir(tb testing.TB) string {
	tb.Helper()
	parent := os.Getenv("FLEETBENCH_NODE_DIR")
	if parent == "" {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			parent = "/dev/shm"
		}
	}
	if parent == "" {
		return tb.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "fleetbench-nodes-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// event is the newest version a node logged for one kind of event, and
// when.
type event struct {
	mu      sync.Mutex
	version uint64
	at      time.Time
}

func (e *event) set(v uint64, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v >= e.version {
		e.version, e.at = v, at
	}
}

func (e *event) get() (uint64, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.version, e.at
}

// watch follows the nodes of a fleet through their logs: when each staged
// and installed which version, and the warnings they logged.
type watch struct {
	staged, installed []event
	started           []atomic.Bool       // ready was closed
	ready             []chan struct{}     // closed when a node is done starting (watch.setReady)
	warnings          sync.Map            // event name -> *atomic.Int64
	firstWarnings     sync.Map            // event name -> the first one's attributes
	errs              atomic.Pointer[any] // the first bundle_refused or install_failed, for the failure message
}

func newWatch(n int) *watch {
	w := &watch{staged: make([]event, n), installed: make([]event, n), started: make([]atomic.Bool, n),
		ready: make([]chan struct{}, n)}
	for i := range w.ready {
		w.ready[i] = make(chan struct{})
	}
	return w
}

// setReady marks node i done starting: it installed what the stream
// held, or it waits its delivery spread (subscriber's pacing.go) before
// it does, which makes no more JetStream API requests than an idle node.
func (w *watch) setReady(i int) {
	if w.started[i].CompareAndSwap(false, true) {
		close(w.ready[i])
	}
}

// count is how many nodes hold version v as staged (or installed).
func (w *watch) count(events []event, v uint64) (n int, last time.Time) {
	for i := range events {
		got, at := events[i].get()
		if got >= v {
			n++
			if at.After(last) {
				last = at
			}
		}
	}
	return n, last
}

// waitAll waits until every node logged version v in events and returns
// when the last one did.
func (w *watch) waitAll(tb testing.TB, events []event, v uint64, what string) time.Time {
	tb.Helper()
	deadline := time.Now().Add(scaleTimeout)
	for {
		n, last := w.count(events, v)
		if n == len(events) {
			return last
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out: %d of %d nodes %s version %d; warnings %v; first error %v", n, len(events), what, v, w.warningCounts(), w.firstError())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// warningCounts is how many times the nodes logged each warning.
func (w *watch) warningCounts() map[string]int64 {
	out := map[string]int64{}
	w.warnings.Range(func(k, v any) bool {
		out[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

func (w *watch) firstError() any {
	if p := w.errs.Load(); p != nil {
		return *p
	}
	return nil
}

// handler is node i's slog handler: it feeds the watch.
type handler struct {
	w *watch
	i int
}

func (h handler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h handler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h handler) WithGroup(string) slog.Handler                { return h }

func (h handler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		c, loaded := h.w.warnings.LoadOrStore(r.Message, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
		if !loaded {
			h.w.firstWarnings.Store(r.Message, fmt.Sprintf("node %d at %s: %s", h.i, r.Time.Format(time.TimeOnly), recordText(r)))
		}
	}
	switch r.Message {
	case "bundle_staged":
		h.w.staged[h.i].set(recordVersion(r), r.Time)
	case "install_done":
		h.w.installed[h.i].set(recordVersion(r), r.Time)
		h.w.setReady(h.i)
	case "delivery_spread":
		h.w.setReady(h.i)
	case "bundle_refused", "install_failed":
		var what any = fmt.Sprintf("node %d: %s", h.i, r.Message)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				what = fmt.Sprintf("node %d: %s: %v", h.i, r.Message, a.Value)
			}
			return true
		})
		h.w.errs.CompareAndSwap(nil, &what)
	}
	return nil
}

// recordText is a record's attributes as text.
func recordText(r slog.Record) string {
	var b strings.Builder
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	return b.String()
}

// recordVersion is a log record's "version" attribute.
func recordVersion(r slog.Record) uint64 {
	var v uint64
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "version" {
			return true
		}
		switch a.Value.Kind() {
		case slog.KindUint64:
			v = a.Value.Uint64()
		case slog.KindInt64:
			v = uint64(a.Value.Int64())
		default:
			v, _ = strconv.ParseUint(a.Value.String(), 10, 64)
		}
		return false
	})
	return v
}

// runFleet is a fleet whose nodes run as `certsync node run` does.
type runFleet struct {
	*fleet
	w      *watch
	nodes  []*subscriber.Node
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
	once   sync.Once
}

// runNodes builds every node of f under dir and starts Run on each, at most
// startInFlight starting at once, and returns once every node has installed
// what the stream holds for it (f must have published). The nodes stop when
// the benchmark ends.
func (f *fleet) runNodes(dir string) *runFleet {
	f.tb.Helper()
	r := &runFleet{fleet: f, w: newWatch(len(f.names)), errs: make(chan error, len(f.names))}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	f.tb.Cleanup(r.stop)
	for i := range f.names {
		n, _ := f.nodeWith(i, dir, slog.New(handler{r.w, i}))
		r.nodes = append(r.nodes, n)
	}
	slots := make(chan struct{}, startInFlight)
	deadline := time.After(scaleTimeout)
	for i, n := range r.nodes {
		select {
		case slots <- struct{}{}:
		case <-deadline:
			f.tb.Fatalf("timed out starting node %d: %d nodes have not installed; warnings %v; first error %v",
				i, len(slots), r.w.warningCounts(), r.w.firstError())
		}
		r.wg.Go(func() {
			if err := n.Run(ctx); err != nil {
				r.errs <- fmt.Errorf("node %d: %w", i, err)
			}
		})
		go func() {
			select {
			case <-r.w.ready[i]:
			case <-ctx.Done():
			}
			<-slots
		}()
	}
	r.w.waitAll(f.tb, r.w.installed, f.expected(), "installed")
	return r
}

// stop ends every node's Run and waits for them.
func (r *runFleet) stop() {
	r.once.Do(func() {
		r.cancel()
		r.wg.Wait()
		close(r.errs)
		for err := range r.errs {
			r.tb.Error(err)
		}
	})
}

// nodeWith is node i as fleet.node builds it, logging to log (nil: nothing).
func (f *fleet) nodeWith(i int, dir string, log *slog.Logger) (*subscriber.Node, string) {
	f.tb.Helper()
	install := filepath.Join(dir, f.names[i], "live", certName)
	n, err := subscriber.New(subscriber.Config{
		Node:       f.names[i],
		NATS:       natsconn.Options{URL: f.url},
		Identities: f.ids[i : i+1],
		Trusted:    f.trusted(),
		StageDir:   filepath.Join(dir, f.names[i], "stage"),
		Version:    "fleetbench",
		Certificates: map[string]subscriber.Certificate{
			certName: {Name: certName, InstallDir: install},
		},
	}, log)
	if err != nil {
		f.tb.Fatalf("subscriber.New %s: %v", f.names[i], err)
	}
	return n, install
}

// consumerVariant is how the node consumers are replicated and stored.
type consumerVariant struct {
	name     string
	replicas int // 0: the stream's
	memory   bool
}

// preCreate creates every node's consumer as wire.ConsumerConfig says,
// with the variant's replicas and storage, before the first publish (which
// then finds them and creates none). The stream exists (setup).
func (f *fleet) preCreate(v consumerVariant) time.Duration {
	f.tb.Helper()
	js := connectJS(f.tb, f.url)
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	start := time.Now()
	for _, name := range f.names {
		cfg := wire.ConsumerConfig(name, []string{certName}, true)
		cfg.Replicas, cfg.MemoryStorage = v.replicas, v.memory
		if _, err := js.CreateOrUpdateConsumer(ctx, wire.Stream, cfg); err != nil {
			f.tb.Fatalf("creating consumer of %s: %v", name, err)
		}
	}
	return time.Since(start)
}

// connectJS is a JetStream client of url for the benchmark's own calls,
// closed at the end.
func connectJS(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := natsconn.Connect(context.Background(), natsconn.Options{URL: url, Name: "certsync-fleetbench"}, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

// memorySample is what the servers hold at one moment.
type memorySample struct {
	rss, heap, stacks uint64
}

// live is the sample's live heap and goroutine stacks: what the
// heap-per-node figures count.
func (m memorySample) live() uint64 { return m.heap + m.stacks }

// perNodeKB is the growth from b to a, shared out over n nodes, in KB.
func perNodeKB(a, b uint64, n int) float64 { return (float64(a) - float64(b)) / float64(n) / 1024 }

// sampleMemory adds up the servers' resident memory and, after a garbage
// collection, their Go heap and goroutine stacks.
func sampleMemory(procs []*natsProc) memorySample {
	var m memorySample
	for _, p := range procs {
		h, st := p.heap() // collects garbage first
		m.heap += h
		m.stacks += st
		m.rss += p.rss()
	}
	return m
}

// downWindow is how long a renewal has, with one server of a cluster
// dead, before serverDies counts the nodes that staged it.
const downWindow = 30 * time.Second

// serverDies is what is lost when a server of a cluster dies: p is killed
// (SIGKILL, no clean shutdown), a renewal is published on the others, and
// publish_server_dead_s is how long the publish took (tried again until
// it succeeds, each try bounded by publisher.DefaultTimeout as certbot's
// hook is),
// staged_server_dead_pct the share of the nodes that staged it within
// downWindow of the kill, or by the time the publish returned when that
// was later; p is started again, and caught_up_after_death_s runs from
// its start until every node has staged the renewal.
func serverDies(b *testing.B, fl *runFleet, p *natsProc) {
	b.Helper()
	b.StopTimer()
	bundle := fl.renew()
	b.StartTimer()
	p.kill()
	start := time.Now()
	v := fl.publishUntil(bundle, scaleTimeout)
	report(b, secs(time.Since(start)), "publish_server_dead_s")
	deadline := start.Add(downWindow)
	for time.Now().Before(deadline) {
		if n, _ := fl.w.count(fl.w.staged, v); n == len(fl.nodes) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, _ := fl.w.count(fl.w.staged, v)
	report(b, 100*float64(n)/float64(len(fl.nodes)), "staged_server_dead_pct")
	start = time.Now()
	p.start(scaleTimeout)
	staged := fl.w.waitAll(b, fl.w.staged, v, "staged after the dead server came back")
	report(b, secs(max(0, staged.Sub(start))), "caught_up_after_death_s")
}

// publishUntil publishes bundle as fleet.publish does, trying again
// while it fails, for up to timeout, and returns its version.
func (f *fleet) publishUntil(bundle *crypto.Bundle, timeout time.Duration) uint64 {
	f.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		// Each try as certbot's hook makes it: publisher.yaml's default
		// timeout.
		ctx, cancel := context.WithTimeout(context.Background(), publisher.DefaultTimeout)
		res, err := f.newPublisher().Publish(ctx, bundle)
		cancel()
		if err == nil && res.Action == publisher.Published {
			f.published = res.Version
			return res.Version
		}
		if time.Now().After(deadline) {
			f.tb.Fatalf("Publish, tried for %v: %v", timeout, err)
		}
		f.tb.Logf("publish failed, trying again: %v", err)
	}
}

// saveProfiles writes each server's heap profile to the folder
// FLEETBENCH_PROFILES names, when it is set (for `go tool pprof`).
func saveProfiles(tb testing.TB, procs []*natsProc, label string) {
	tb.Helper()
	dir := os.Getenv("FLEETBENCH_PROFILES")
	if dir == "" {
		return
	}
	for _, p := range procs {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap", p.profPort))
		if err != nil {
			tb.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			tb.Fatal(err)
		}
		treetest.WriteFile(tb, filepath.Join(dir, label+"-"+p.name+".heap"), b, 0o644)
	}
}

// idleCPU is the servers' CPU time over d while the fleet is idle, as a
// share of one core.
func idleCPU(procs []*natsProc, d time.Duration) float64 {
	var before time.Duration
	for _, p := range procs {
		before += p.cpu()
	}
	time.Sleep(d) // the measurement window itself, not a wait for a condition
	var after time.Duration
	for _, p := range procs {
		after += p.cpu()
	}
	return float64(after-before) / float64(d)
}

func secs(d time.Duration) float64 { return d.Seconds() }

// report is b.ReportMetric, written to stderr as well: a round that
// fails later still shows what it measured.
func report(b *testing.B, v float64, unit string) {
	b.ReportMetric(v, unit)
	fmt.Fprintf(os.Stderr, "fleetbench: %s: %s %.4g\n", b.Name(), unit, v)
}

const (
	// settle is the quiet period before the servers' memory is sampled:
	// the last acks and status writes land, the servers' flushers run.
	settle = 5 * time.Second
	// cpuWindow is how long the servers' idle CPU is measured.
	cpuWindow = 10 * time.Second
)

// setup creates the stream and the status bucket (publisher.Setup), so
// that the first sample of the servers' memory holds them and the first
// publish creates the consumers only.
func (f *fleet) setup() {
	f.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scaleTimeout)
	defer cancel()
	if err := f.newPublisher().Setup(ctx); err != nil {
		f.tb.Fatalf("setup: %v", err)
	}
}

// BenchmarkScale is the fleet at scale (see the top of this file). Each
// row is one round (run it with -benchtime 1x):
//
//  1. the servers start (one, or a cluster of three with the stream and
//     the status bucket on 3 replicas), the stream and the bucket are set
//     up, and the servers' memory is sampled;
//  2. the first publish to N nodes, timed (first_publish_s): it creates N
//     consumers (unless the variant pre-created them:
//     created_consumers_s) and seals N recipients in groups;
//  3. N nodes start Run (at most startInFlight starting at once: setup) and
//     install it; then, idle, the servers' memory is sampled again:
//     server_rss_per_node_kb, and server_heap_per_node_kb (live heap after
//     garbage collection plus goroutine stacks, server_stacks_per_node_kb
//     of it), are the growth over step 1 divided by N (the stream's few
//     messages and the nodes' status records included), split into
//     server_heap_per_consumer_kb (the sample after the first publish,
//     before any node connected) and server_heap_per_connection_kb (the
//     rest); idle_cpu_consumers_pct and idle_cpu_pct are the servers' CPU
//     over cpuWindow of idleness, before and after the nodes connected;
//  4. renewals, each published once the fleet installed the one before:
//     renewal_publish_s, the median of `certsync publish` run as certbot's
//     hook runs it, a process of its own (publishCLI), with its min and
//     max; all_staged_s and all_installed_s from the start of the first
//     one's publish to the last node's bundle_staged and install_done;
//  5. a restart with every node connected: the first server is stopped
//     (SIGTERM; shutdown_s) and started again on its store (recovery_s,
//     until it reports healthy); a renewal is published at once, and
//     restart_caught_up_s runs from the start of the new process until
//     every node has staged it. After it, the nodes' reconnect pacing has
//     its time (subscriber's reconnect spread) and restart_api_requests is
//     what the JetStream API of the restarted server served since it
//     started;
//  6. on a cluster, what is lost when a server dies (serverDies);
//  7. api_dropped counts the JetStream API requests the servers said they
//     dropped during the whole round (their advisories), api_drop_warnings
//     the lines where they logged it; both must be 0.
func BenchmarkScale(b *testing.B) {
	rows := []struct {
		nodes, servers int
		variant        consumerVariant
	}{
		{100, 1, consumerVariant{}},
		{1000, 1, consumerVariant{}},
		{5000, 1, consumerVariant{}},
		{10000, 1, consumerVariant{}},
		{1000, 3, consumerVariant{name: "R3-file"}},
		{1000, 3, consumerVariant{name: "R1-file", replicas: 1}},
		{1000, 3, consumerVariant{name: "R3-memory", memory: true}},
	}
	for _, row := range rows {
		name := fmt.Sprintf("servers=%d/nodes=%d", row.servers, row.nodes)
		if row.variant.name != "" {
			name += "/consumers=" + row.variant.name
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				scaleRound(b, row.nodes, row.servers, row.variant)
			}
		})
	}
}

// scaleRound is one round of BenchmarkScale.
func scaleRound(b *testing.B, n, servers int, variant consumerVariant) {
	b.StopTimer()
	dir := b.TempDir()
	procs := newNATSProcs(b, dir, servers)
	url := procs[0].URL()
	for _, p := range procs[1:] {
		url += "," + p.URL()
	}
	drops := countDrops(b, url)
	f := newFleet(b, url, n, false)
	if servers > 1 {
		f.cfg.Stream.Replicas = 3
	}
	f.setup()
	base := sampleMemory(procs)
	bundle := f.renew()
	b.StartTimer()

	if variant.name != "" {
		report(b, secs(f.preCreate(variant)), "created_consumers_s")
	}
	start := time.Now()
	f.publish(bundle)
	report(b, secs(time.Since(start)), "first_publish_s")

	b.StopTimer()
	time.Sleep(settle) // a measurement's quiet period, not a wait for a condition
	consumers := sampleMemory(procs)
	report(b, 100*idleCPU(procs, cpuWindow), "idle_cpu_consumers_pct")
	start = time.Now()
	fl := f.runNodes(nodeDir(b))
	report(b, secs(time.Since(start)), "first_delivery_s")
	time.Sleep(settle)
	idle := sampleMemory(procs)
	saveProfiles(b, procs, fmt.Sprintf("nodes%d", n))
	report(b, 100*idleCPU(procs, cpuWindow), "idle_cpu_pct")
	report(b, perNodeKB(idle.rss, base.rss, n), "server_rss_per_node_kb")
	report(b, perNodeKB(idle.live(), base.live(), n), "server_heap_per_node_kb")
	report(b, perNodeKB(idle.stacks, base.stacks, n), "server_stacks_per_node_kb")
	report(b, perNodeKB(consumers.live(), base.live(), n), "server_heap_per_consumer_kb")
	report(b, perNodeKB(idle.live(), consumers.live(), n), "server_heap_per_connection_kb")
	bundle = f.renew()
	b.StartTimer()

	// renewals publishes of a renewal, each after every node installed the
	// one before: renewal_publish_s is their median (the store's
	// acknowledgements wait for the cores while the server delivers, so
	// one publish alone varies), all_staged_s and all_installed_s are the
	// first one's.
	var publishes []float64
	for k := range renewals {
		if k > 0 {
			b.StopTimer()
			bundle = f.renew()
			b.StartTimer()
		}
		start = time.Now()
		publishes = append(publishes, secs(f.publishCLI(bundle)))
		staged := fl.w.waitAll(b, fl.w.staged, f.expected(), "staged")
		installed := fl.w.waitAll(b, fl.w.installed, f.expected(), "installed")
		if k == 0 {
			report(b, secs(staged.Sub(start)), "all_staged_s")
			report(b, secs(installed.Sub(start)), "all_installed_s")
		}
	}
	slices.Sort(publishes)
	report(b, publishes[len(publishes)/2], "renewal_publish_s")
	report(b, publishes[0], "renewal_publish_min_s")
	report(b, publishes[len(publishes)-1], "renewal_publish_max_s")

	b.StopTimer()
	bundle = f.renew()
	b.StartTimer()
	report(b, secs(procs[0].stop()), "shutdown_s")
	start = time.Now()
	procs[0].start(scaleTimeout)
	report(b, secs(time.Since(start)), "recovery_s")
	if servers > 1 {
		waitClusterReady(b, procs)
	}
	f.publish(bundle)
	staged := fl.w.waitAll(b, fl.w.staged, f.expected(), "staged after the restart")
	report(b, secs(staged.Sub(start)), "restart_caught_up_s")
	fl.w.waitAll(b, fl.w.installed, f.expected(), "installed after the restart")

	if servers > 1 {
		serverDies(b, fl, procs[len(procs)-1])
	}

	b.StopTimer()
	time.Sleep(subscriber.ReconnectSpread + 5*time.Second) // the paced re-checks of the consumers, then their counts
	report(b, float64(procs[0].api().Total), "restart_api_requests")
	dw := 0
	for _, p := range procs {
		dw += p.dropWarnings()
	}
	report(b, float64(drops.dropped.Load()), "api_dropped")
	report(b, float64(dw), "api_drop_warnings")
	if w := fl.w.warningCounts(); len(w) > 0 {
		b.Logf("node warnings: %v", w)
		fl.w.firstWarnings.Range(func(k, v any) bool {
			b.Logf("first %s: %s", k, v)
			return true
		})
	}
	fl.stop()
	for _, p := range procs {
		p.stop()
	}
	b.StartTimer()
}
