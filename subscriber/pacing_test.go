package subscriber

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
)

// TestReconnectDelaySpread: the delays after a reconnect are bounded by
// the spread and spread over it: of 10,000 nodes, none waits the spread or
// more, and no tenth of it holds more than 12% of them.
func TestReconnectDelaySpread(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	const nodes, spread = 10000, 30 * time.Second
	var buckets [10]int
	for range nodes {
		d := reconnectDelay(spread, r.Int64N)
		if d < 0 || d >= spread {
			t.Fatalf("delay %v, want in [0, %v)", d, spread)
		}
		buckets[d*10/spread]++
	}
	for i, n := range buckets {
		if n > nodes*12/100 || n < nodes*8/100 {
			t.Errorf("%d of %d delays in [%v, %v), want about a tenth", n, nodes, spread*time.Duration(i)/10, spread*time.Duration(i+1)/10)
		}
	}
	if d := reconnectDelay(0, r.Int64N); d != 0 {
		t.Errorf("delay with no spread %v, want 0", d)
	}
}

// apiDropLog counts the server's warnings that it dropped its JetStream
// API queue ("… queue limit reached, dropping N requests"). The server
// writes the first drop of every second, so none counted means none
// dropped.
type apiDropLog struct{ drops atomic.Int64 }

func (l *apiDropLog) Noticef(string, ...any) {}
func (l *apiDropLog) Errorf(string, ...any)  {}
func (l *apiDropLog) Fatalf(string, ...any)  {}
func (l *apiDropLog) Debugf(string, ...any)  {}
func (l *apiDropLog) Tracef(string, ...any)  {}
func (l *apiDropLog) Warnf(format string, v ...any) {
	if strings.Contains(fmt.Sprintf(format, v...), "limit reached, dropping") {
		l.drops.Add(1)
	}
}

// TestRunRestartPaced: a few hundred nodes run against a server that is
// restarted without their consumers (a store restored from before they
// existed) and with JetStream API queues of 40 requests. Each node checks
// its consumer after the reconnect at a random moment within its spread,
// finds it gone and creates it again (an open server lets it): every node
// stages the renewal published after the restart, and the server dropped
// no API request. Without the check the nodes would pull from nothing
// forever; without the spread, a few hundred checks and creations at once
// would overflow the queues.
func TestRunRestartPaced(t *testing.T) {
	t.Parallel()
	const nodes, spread = 200, 3 * time.Second
	dir := t.TempDir()
	opts := natstest.Options(dir)
	opts.Port = loopback.FreePort(t)
	e := startEnv(t, opts)

	ids := make([]age.Recipient, nodes)
	var staged sync.Map // node name -> highest version staged
	stagedAll := func(v uint64) int {
		n := 0
		staged.Range(func(_, got any) bool {
			if got.(uint64) >= v {
				n++
			}
			return true
		})
		return n
	}
	var logs []*logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	var runs []*Node
	for i := range nodes {
		id := testkeys.X25519(t)
		ids[i] = id.Recipient()
		name := fmt.Sprintf("node%03d", i)
		stageDir := filepath.Join(dir, "nodes", name)
		buf := &logtest.Buffer{}
		n, err := New(Config{
			Node:         name,
			NATS:         natsconn.Options{URL: e.url},
			Identities:   []age.Identity{id},
			Trusted:      []crypto.PublicKey{e.key.Public()},
			StageDir:     stageDir,
			Version:      "test",
			Certificates: map[string]Certificate{"example.com": {Name: "example.com", InstallDir: liveDir(stageDir, "example.com")}},
		}, slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err != nil {
			t.Fatal(err)
		}
		n.reconnectSpread = spread
		n.onStaged = func(s *Staged) { staged.Store(name, s.Version) }
		logs = append(logs, buf)
		runs = append(runs, n)
	}
	publish := func(ago time.Duration) uint64 {
		c := e.issue(ago)
		e.publish("example.com", e.sealWith(bundleOf("example.com", c), e.key, ids...), c)
		return uint64(c.Leaf.NotBefore.Unix())
	}
	v1 := publish(2 * time.Hour)
	for _, n := range runs {
		wg.Go(func() {
			if err := n.Run(ctx); err != nil {
				t.Errorf("Run %s: %v", n.cfg.Node, err)
			}
		})
	}
	natstest.WaitFor(t, 2*time.Minute, "every node to stage the first version", func() bool { return stagedAll(v1) == nodes })

	// The server comes back on the same port and store, without the
	// node consumers, and with small API queues.
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	obs := filepath.Join(dir, "jetstream", "$G", "streams", wire.Stream, "obs")
	if err := os.RemoveAll(obs); err != nil {
		t.Fatal(err)
	}
	opts.JetStreamRequestQueueLimit, opts.JetStreamInfoQueueLimit = 40, 40
	drops := &apiDropLog{}
	e.srv = natstest.Start(t, opts)
	e.srv.SetLoggerV2(drops, false, false, false)
	natstest.WaitFor(t, 10*time.Second, "the test's client to reconnect", e.nc.IsConnected)
	v2 := publish(time.Hour)
	natstest.WaitFor(t, 2*time.Minute, "every node to stage the renewal after the restart", func() bool { return stagedAll(v2) == nodes })

	if got := drops.drops.Load(); got != 0 {
		t.Errorf("the server dropped its JetStream API queue %d times, want never", got)
	}
	// The delays were the nodes' own: bounded by the spread, spread over it.
	var lo, hi time.Duration = spread, 0
	for i, buf := range logs {
		events := buf.Events("consumer_check_scheduled")
		if len(events) == 0 {
			t.Fatalf("node %d logged no consumer_check_scheduled", i)
		}
		d := time.Duration(events[0]["in"].(float64))
		if d < 0 || d >= spread {
			t.Errorf("node %d waited %v, want in [0, %v)", i, d, spread)
		}
		lo, hi = min(lo, d), max(hi, d)
		if len(buf.Events("consumer_lost")) != 1 {
			t.Errorf("node %d: %d consumer_lost events, want 1", i, len(buf.Events("consumer_lost")))
		}
	}
	if hi-lo < spread/2 {
		t.Errorf("the nodes' delays span %v to %v, want them spread over the %v", lo, hi, spread)
	}
}

// TestDeliverySpread: the spread grows by SpreadPerGroup with each group
// past the first, up to MaxDeliverySpread; an ungrouped envelope, a
// header that does not parse and one past wire.MaxGroups are not delayed.
func TestDeliverySpread(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"0/1", 0},
		{"1/2", SpreadPerGroup},
		{"44/45", 44 * SpreadPerGroup},
		{"0/121", MaxDeliverySpread},
		{"0/256", MaxDeliverySpread},
		{"0/257", 0},
		{"0/-3", 0},
		{"7", 0},
		{"0/x", 0},
	} {
		m := headerMsg{h: nats.Header{}}
		if tc.header != "" {
			m.h.Set(wire.HeaderGroup, tc.header)
		}
		if got := deliverySpread(groupCount(m), SpreadPerGroup); got != tc.want {
			t.Errorf("%s %q: spread %v, want %v", wire.HeaderGroup, tc.header, got, tc.want)
		}
	}
	if got := deliverySpread(45, 0); got != 0 {
		t.Errorf("no spread per group: spread %v, want 0", got)
	}
	// A batch waits for its most grouped envelope; the delays of 10,000
	// nodes fill the spread.
	n := &Node{spreadPerGroup: SpreadPerGroup}
	batch := []jetstream.Msg{headerMsg{h: nats.Header{wire.HeaderGroup: {"3/9"}}}, headerMsg{h: nats.Header{}}}
	r := rand.New(rand.NewPCG(3, 4))
	spread := 8 * SpreadPerGroup
	var lo, hi time.Duration = spread, 0
	for range 10000 {
		d := n.spreadDelay(batch, r.Int64N)
		if d < 0 || d >= spread {
			t.Fatalf("delay %v, want in [0, %v)", d, spread)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	if lo > spread/100 || hi < spread*99/100 {
		t.Errorf("delays from %v to %v, want them over all of [0, %v)", lo, hi, spread)
	}
}

// headerMsg is a received message as far as its headers go.
type headerMsg struct {
	jetstream.Msg
	h nats.Header
}

func (m headerMsg) Headers() nats.Header { return m.h }

// TestRunDeliverySpread: Run waits its delivery spread before it acts on
// an envelope of a certificate sealed in recipient groups (here group 0
// of 3, so at most 2 x spreadPerGroup), then stages it; an envelope of an
// ungrouped certificate is staged without waiting.
func TestRunDeliverySpread(t *testing.T) {
	t.Parallel()
	const name, perGroup = "example.com", 400 * time.Millisecond
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The consumer the publisher makes for a node of group 0 of 3 of
	// example.com and of the ungrouped other.example.
	cfg := wire.ConsumerConfig(nodeName, []string{name, "other.example"}, true)
	for i, s := range cfg.FilterSubjects {
		if s == wire.Subject(name) {
			cfg.FilterSubjects[i] = wire.GroupSubject(0, name)
		}
	}
	if _, err := e.js.CreateConsumer(ctx, wire.Stream, cfg); err != nil {
		t.Fatal(err)
	}
	n := e.node(t.TempDir(), name, "other.example")
	n.spreadPerGroup = perGroup
	startRun(t, n)

	c := e.issue(time.Hour)
	b := bundleOf(name, c)
	b.Version = uint64(time.Now().UnixMilli())
	data, err := crypto.Seal(b, e.key, []age.Recipient{e.id.Recipient()}, crypto.WithGroup(0, 3))
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(wire.GroupSubject(0, name))
	m.Data = data
	m.Header.Set(wire.HeaderGroup, "0/3")
	sent := time.Now()
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, "the node to stage the grouped envelope", func() bool { return len(n.stagedVersions()) == 1 })
	took := time.Since(sent)
	waits := n.logs.Events("delivery_spread")
	if len(waits) != 1 {
		t.Fatalf("%d delivery_spread events, want 1", len(waits))
	}
	wait := time.Duration(waits[0]["wait"].(float64))
	if wait <= 0 || wait >= 2*perGroup {
		t.Errorf("waited %v, want in (0, %v)", wait, 2*perGroup)
	}
	if took < wait {
		t.Errorf("staged %v after the publish, before its %v wait ended", took, wait)
	}

	oc := e.issue(time.Hour)
	e.publish("other.example", e.seal("other.example", oc), oc)
	natstest.WaitFor(t, 30*time.Second, "the node to stage the ungrouped envelope", func() bool { return len(n.stagedVersions()) == 2 })
	if got := len(n.logs.Events("delivery_spread")); got != 1 {
		t.Errorf("%d delivery_spread events after an ungrouped envelope, want still 1", got)
	}
}
