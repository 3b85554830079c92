package subscriber

// Faults of a three-server NATS cluster (stream replicas 3) while real
// nodes run: the stream leader killed during a publish and during
// delivery, a node's own server killed, the whole cluster restarted. The
// nodes are real Nodes (Run) with real files; the publisher is the real
// one. What a node installed is counted by its reload command (one line
// per install), what the stream holds from the stream.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// faultCert is the certificate of the fault tests.
const faultCert = "example.com"

// faultTimeout bounds each wait of the fault tests for what nodes do.
const faultTimeout = 45 * time.Second

// faultRig is a three-server cluster, a publisher and nodes.
type faultRig struct {
	t     *testing.T
	c     *natstest.Cluster
	ca    *testcert.CA
	key   *crypto.SigningKey
	pcfg  publisher.Config
	logs  *logtest.Buffer // the publisher's
	nodes map[string]*faultNode
	certs []*testcert.Cert // published, in order
}

// faultNode is one node of a faultRig.
type faultNode struct {
	*Node
	name       string
	logs       *logtest.Buffer
	installDir string
	reloads    *counter
	stop       func() error
}

// newFaultRig starts a cluster and configures nodes (their names, each
// with the URL list it is given: urls(i) for the i-th) for faultCert,
// stream replicas 3.
func newFaultRig(t *testing.T, names []string, urls func(c *natstest.Cluster, i int) string) *faultRig {
	t.Helper()
	r := &faultRig{t: t, c: natstest.StartCluster(t, 3), ca: testcert.NewCA(t), logs: &logtest.Buffer{}, nodes: map[string]*faultNode{}}
	var err error
	if r.key, err = crypto.GenerateSigningKey(); err != nil {
		t.Fatal(err)
	}
	r.pcfg = publisher.Config{
		NATS:         natsconn.Options{URL: r.c.URLs},
		SigningKey:   r.key,
		Nodes:        map[string]string{},
		Certificates: map[string][]string{faultCert: names},
		// Consumers replicated like the stream, so that every node is
		// served while a killed server stays down; with the default of
		// one, the nodes on it wait for its return (docs/OPERATIONS.md,
		// "Many nodes"; fleetbench's TestPublishServerKilled).
		Stream:  wire.StreamOptions{Replicas: 3, ConsumerReplicas: 3},
		Timeout: 30 * time.Second,
	}
	for i, name := range names {
		id := testkeys.X25519(t)
		r.pcfg.Nodes[name] = id.Recipient().String()
		dir := t.TempDir()
		fn := &faultNode{name: name, logs: &logtest.Buffer{}, installDir: filepath.Join(dir, "live", faultCert), reloads: newCounter(t, dir)}
		n, err := New(Config{
			Node:       name,
			NATS:       natsconn.Options{URL: urls(r.c, i)},
			Identities: []age.Identity{id},
			Trusted:    []crypto.PublicKey{r.key.Public()},
			StageDir:   filepath.Join(dir, "stage"),
			Version:    "test",
			Certificates: map[string]Certificate{faultCert: {
				Name: faultCert, InstallDir: fn.installDir, Reload: mustCommand(t, fn.reloads.script),
			}},
		}, slog.New(slog.NewJSONHandler(fn.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err != nil {
			t.Fatalf("New %s: %v", name, err)
		}
		fn.Node = n
		r.nodes[name] = fn
	}
	return r
}

// allURLs gives every node the whole list.
func allURLs(c *natstest.Cluster, _ int) string { return c.URLs }

// publisherWith is the rig's publisher, reaching NATS at url.
func (r *faultRig) publisherWith(url string) *publisher.Publisher {
	r.t.Helper()
	cfg := r.pcfg
	cfg.NATS.URL = url
	p, err := publisher.New(cfg, slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		r.t.Fatalf("publisher: %v", err)
	}
	return p
}

// renew issues the next certificate of faultCert.
func (r *faultRig) renew() *testcert.Cert {
	c := r.ca.Issue(r.t, testcert.Options{Names: []string{faultCert}, NotBefore: time.Now().Add(-time.Hour + time.Duration(len(r.certs))*time.Second)})
	r.certs = append(r.certs, c)
	return c
}

// publish publishes c through the whole URL list and fails the test
// unless it is stored.
func (r *faultRig) publish(c *testcert.Cert) *publisher.Result {
	r.t.Helper()
	res, err := r.publisherWith(r.c.URLs).Publish(context.Background(), bundleOf(faultCert, c))
	if err != nil {
		r.t.Fatalf("publish: %v", err)
	}
	if res.Action != publisher.Published {
		r.t.Fatalf("publish: %s, want published", res.Action)
	}
	return res
}

// run starts node's Run until the test ends (or its stop is called).
func (r *faultRig) run(name string) {
	r.t.Helper()
	fn := r.nodes[name]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn.Run(ctx) }()
	stopped := false
	fn.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("node %s: Run did not stop after its context ended", name)
		}
	}
	r.t.Cleanup(func() {
		if err := fn.stop(); err != nil {
			r.t.Error(err)
		}
	})
}

// fp is c's fingerprint as reload commands see it.
func fp(c *testcert.Cert) string { return fingerprint(c.Leaf.Raw) }

// waitInstalled waits until every named node (all when none are named)
// reloaded for c, and says how long it took.
func (r *faultRig) waitInstalled(c *testcert.Cert, names ...string) time.Duration {
	r.t.Helper()
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(r.nodes))
	}
	start := time.Now()
	natstest.WaitFor(r.t, faultTimeout, fmt.Sprintf("%v to install %s", names, fp(c)), func() bool {
		for _, name := range names {
			if !slices.Contains(r.nodes[name].reloads.reloads(), fp(c)) {
				return false
			}
		}
		return true
	})
	return time.Since(start)
}

// checkInstalledOnce checks that each node (all when none are named)
// reloaded for exactly certs, each once, in order: no certificate
// installed twice, none skipped, none older after a newer.
func (r *faultRig) checkInstalledOnce(certs []*testcert.Cert, names ...string) {
	r.t.Helper()
	if len(names) == 0 {
		names = slices.Sorted(maps.Keys(r.nodes))
	}
	var want []string
	for _, c := range certs {
		want = append(want, fp(c))
	}
	for _, name := range names {
		if got := r.nodes[name].reloads.reloads(); !slices.Equal(got, want) {
			r.t.Errorf("node %s installed %v, want each of %v once", name, got, want)
		}
	}
}

// checkStream checks that the stream holds exactly the bundles of certs
// on faultCert's subject, in order: nothing lost, nothing twice.
func (r *faultRig) checkStream(certs []*testcert.Cert) {
	r.t.Helper()
	js := natstest.JetStream(r.t, r.c.URLs)
	var got []string
	natstest.WaitFor(r.t, faultTimeout, "the stream's messages", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, wire.Stream)
		if err != nil {
			return false
		}
		got = nil
		for seq := uint64(1); seq <= st.CachedInfo().State.LastSeq; seq++ {
			msg, err := st.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return false
			}
			if msg.Subject == wire.Subject(faultCert) {
				got = append(got, msg.Header.Get(wire.HeaderFingerprint))
			}
		}
		return true
	})
	var want []string
	for _, c := range certs {
		want = append(want, fp(c))
	}
	if !slices.Equal(got, want) {
		r.t.Errorf("the stream holds %v on %s, want %v", got, wire.Subject(faultCert), want)
	}
}

// TestClusterLeaderKilledDuringPublish kills the stream's leader while the
// bundle's publish is on its way to it: the publish succeeds once the
// cluster has a new leader (it never waits its whole timeout on one
// request, and never stores the bundle twice), a second run finds it
// unchanged, and every node installs the new certificate once.
func TestClusterLeaderKilledDuringPublish(t *testing.T) {
	t.Parallel()
	r := newFaultRig(t, []string{"web1", "web2", "web3"}, allURLs)
	v1 := r.renew()
	r.publish(v1)
	for name := range r.nodes {
		r.run(name)
	}
	r.waitInstalled(v1)

	leader := r.c.WaitStreamLeader(wire.Stream, faultTimeout)
	follower := (leader + 1) % 3
	// The publisher reaches a follower through a proxy, which kills the
	// leader as the bundle's publish goes by.
	proxy := natstest.StartProxy(t, strings.TrimPrefix(r.c.URL(follower), "nats://"))
	proxy.OnSend("HPUB "+wire.Subject(faultCert)+" ", func() { r.c.Kill(leader) })
	v2 := r.renew()
	start := time.Now()
	res, err := r.publisherWith(proxy.URL).Publish(context.Background(), bundleOf(faultCert, v2))
	took := time.Since(start)
	if r.c.Servers()[leader] != nil {
		t.Fatal("the publish never went by the proxy: the leader lives")
	}
	if err != nil {
		t.Fatalf("publish with its stream leader killed: %v (after %v)", err, took)
	}
	if res.Action != publisher.Published || len(res.Stored) != 1 {
		t.Fatalf("publish: %s, stored on %v; want published once", res.Action, res.Stored)
	}
	again, err := r.publisherWith(r.c.URLs).Publish(context.Background(), bundleOf(faultCert, v2))
	if err != nil || again.Action != publisher.Unchanged || again.Sequence != res.Sequence {
		t.Fatalf("publish again: %+v, %v; want unchanged at sequence %d", again, err, res.Sequence)
	}
	installed := r.waitInstalled(v2)
	t.Logf("leader %s killed during the publish: published in %v, installed on every node %v later",
		r.c.Name(leader), took.Round(time.Millisecond), installed.Round(time.Millisecond))
	r.checkStream(r.certs)
	r.checkInstalledOnce(r.certs)
}

// TestClusterLeaderKilledDuringDelivery kills the stream's leader as soon
// as the first node staged a new bundle, while the others, each connected
// to another server, are in the middle of taking it (staged, not yet
// acknowledged): every node installs it once.
func TestClusterLeaderKilledDuringDelivery(t *testing.T) {
	t.Parallel()
	// Node i knows server i alone at first (the cluster tells it of the
	// others), so that each is on a server of its own.
	r := newFaultRig(t, []string{"web1", "web2", "web3"}, func(c *natstest.Cluster, i int) string { return c.URL(i) })
	v1, v2 := r.renew(), r.renew()
	// As soon as a node staged v2, the leader dies; the others, delivered
	// v2 too, go on (acknowledge, install) only once it is dead.
	var kill sync.Once
	killed := make(chan string, 1)
	dead := make(chan struct{})
	var leader atomic.Int64 // set before v2 is published
	for name, fn := range r.nodes {
		fn.onStaged = func(s *Staged) {
			if s.Fingerprint.String() != fp(v2) {
				return
			}
			kill.Do(func() {
				r.c.Kill(int(leader.Load()))
				close(dead)
				killed <- name
			})
			select {
			case <-dead:
			case <-time.After(faultTimeout):
			}
		}
	}
	r.publish(v1)
	for name := range r.nodes {
		r.run(name)
	}
	r.waitInstalled(v1)
	for i, name := range []string{"web1", "web2", "web3"} {
		if got := r.c.ServerOf("certsync node " + name); got != i {
			t.Fatalf("node %s is connected to server %d, want %d", name, got, i)
		}
	}

	leader.Store(int64(r.c.WaitStreamLeader(wire.Stream, faultTimeout)))
	r.publish(v2)
	var first string
	select {
	case first = <-killed:
	case <-time.After(faultTimeout):
		t.Fatal("no node staged the new bundle")
	}
	installed := r.waitInstalled(v2)
	t.Logf("leader %s killed once %s staged: installed on every node %v later", r.c.Name(int(leader.Load())), first, installed.Round(time.Millisecond))
	r.checkStream(r.certs)
	r.checkInstalledOnce(r.certs)
}

// TestClusterNodeServerKilled kills the server a node is connected to: the
// node carries on through another of the three its configuration lists,
// and installs what is published next.
func TestClusterNodeServerKilled(t *testing.T) {
	t.Parallel()
	r := newFaultRig(t, []string{"web1"}, allURLs)
	v1 := r.renew()
	r.publish(v1)
	r.run("web1")
	r.waitInstalled(v1)

	home := r.c.ServerOf("certsync node web1")
	if home < 0 {
		t.Fatal("web1 is connected to no server")
	}
	// Whichever server that is: the stream's leader or a follower.
	role := "a follower"
	if r.c.StreamLeader(wire.Stream) == home {
		role = "the stream leader"
	}
	r.c.Kill(home)
	start := time.Now()
	v2 := r.renew()
	r.publish(v2)
	published := time.Since(start)
	installed := r.waitInstalled(v2)
	if got := r.c.ServerOf("certsync node web1"); got < 0 || got == home {
		t.Errorf("web1 is connected to server %d, want another than %d", got, home)
	}
	t.Logf("web1's server %s (%s) killed: published in %v, installed %v later", r.c.Name(home), role, published.Round(time.Millisecond), installed.Round(time.Millisecond))
	r.checkStream(r.certs)
	r.checkInstalledOnce(r.certs)
}

// TestClusterRestart stops all three servers at once and starts them again
// on their store folders: a node that ran throughout and one that was away
// while a renewal was published both catch up, and install each
// certificate once; the stream lost nothing.
func TestClusterRestart(t *testing.T) {
	t.Parallel()
	r := newFaultRig(t, []string{"web1", "web2"}, allURLs)
	v1 := r.renew()
	r.publish(v1)
	r.run("web1")
	r.run("web2")
	r.waitInstalled(v1)
	if err := r.nodes["web2"].stop(); err != nil {
		t.Fatal(err)
	}
	v2 := r.renew()
	r.publish(v2)
	r.waitInstalled(v2, "web1")

	for i := range 3 {
		r.c.Kill(i)
	}
	start := time.Now()
	r.c.StartAll()
	r.c.WaitStreamLeader(wire.Stream, faultTimeout)
	leader := time.Since(start)
	r.run("web2") // the one that was away
	caughtUp := r.waitInstalled(v2, "web2")
	v3 := r.renew()
	r.publish(v3)
	r.waitInstalled(v3)
	t.Logf("cluster restarted: stream leader after %v, the node that was away caught up %v later, a renewal installed on both %v after the start",
		leader.Round(time.Millisecond), caughtUp.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	r.checkStream(r.certs)
	r.checkInstalledOnce(r.certs)
	if _, err := os.Stat(r.nodes["web2"].installDir); err != nil {
		t.Errorf("web2's install_dir: %v", err)
	}
}
