package main

// End-to-end tests of issue 2's acceptance: the certsync command run as
// separate processes (certsync server, publish as certbot's deploy hook,
// node sync and node run) against real certbot and pebble, a real NATS
// server, on loopback only.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// wildcard are the names certbot asks for in these tests.
var wildcard = []string{"*.example.test", "example.test"}

// stageTimeout bounds how long a running node may take to stage a bundle.
const stageTimeout = 30 * time.Second

// certbotHook is the deploy hook certbot is given: certsync publish with
// f's publisher.yaml, by absolute path as certbot requires.
func certbotHook(t testing.TB, f *fleet) string {
	t.Helper()
	return certsyncBin(t) + " publish --config " + f.Publisher
}

// newCertbotFleet starts pebble, a certbot that uses it and `certsync
// server`, and returns them with a fleet as o describes, on that server and
// publishing certbot's lineages.
func newCertbotFleet(t *testing.T, o fleetOptions) (*acmetest.Certbot, *testServer, *fleet) {
	t.Helper()
	cb := acmetest.NewCertbot(t, acmetest.StartPebble(t))
	srv := startServer(t)
	o.URL, o.Lineages = srv.URL, cb.ConfigDir+"/live"
	return cb, srv, newFleet(t, o)
}

// hookRan fails the test when certbot's output after what says the deploy
// hook failed: certbot exits 0 all the same.
func hookRan(t testing.TB, what string, res acmetest.Result) {
	t.Helper()
	if strings.Contains(res.Output, acmetest.DeployHookFailed) {
		t.Fatalf("%s: certbot reports the deploy hook failed:\n%s", what, res.Output)
	}
}

// newest returns the newest of rows (the highest sequence).
func newest(t testing.TB, rows []inspectRow) inspectRow {
	t.Helper()
	if len(rows) == 0 {
		t.Fatal("the stream holds no bundle")
	}
	return slices.MaxFunc(rows, func(a, b inspectRow) int { return int(a.Sequence) - int(b.Sequence) })
}

// TestCertbotDeployHookE2E is acceptance 2: real certbot issues a wildcard
// certificate from pebble with `certsync publish` as its deploy hook; two
// nodes, one with an age key and one with an SSH host key, stage files
// byte-identical to certbot's; a forced renewal reaches both again.
func TestCertbotDeployHookE2E(t *testing.T) {
	t.Parallel()
	cb, _, f := newCertbotFleet(t, fleetOptions{
		Certificates: map[string][]string{"example": {"web1", "web2"}},
		SSHNodes:     []string{"web2"},
	})
	if r := f.Nodes["web2"].Recipient; !strings.HasPrefix(r, "ssh-ed25519 ") {
		t.Fatalf("web2's recipient is %q, want its SSH host key", r)
	}

	lineage, res := cb.ObtainWildcard(t, "example", wildcard, certbotHook(t, f))
	hookRan(t, "issuance", res)
	rows := inspectBundles(t, f.Publisher)
	if len(rows) != 1 || rows[0].Name != "example" {
		t.Fatalf("after issuance the stream holds %+v, want one bundle of example", rows)
	}
	first := map[string]string{}
	for _, node := range []string{"web1", "web2"} {
		f.sync(t, node)
		checkStaged(t, f.Nodes[node].StageDir, "example", lineage)
		staged := readStaged(t, f.Nodes[node].StageDir, "example")
		if staged.Fingerprint.String() != rows[0].Fingerprint || staged.Serial != rows[0].Serial {
			t.Errorf("%s staged %s (serial %s), the stream holds %s (serial %s)", node,
				staged.Fingerprint, staged.Serial, rows[0].Fingerprint, rows[0].Serial)
		}
		first[node] = staged.Serial
	}

	hookRan(t, "renewal", cb.Renew(t, ""))
	rows = inspectBundles(t, f.Publisher)
	if len(rows) != 2 {
		t.Fatalf("after the renewal the stream holds %d bundles, want 2", len(rows))
	}
	renewed := newest(t, rows)
	for _, node := range []string{"web1", "web2"} {
		f.sync(t, node)
		checkStaged(t, f.Nodes[node].StageDir, "example", lineage)
		staged := readStaged(t, f.Nodes[node].StageDir, "example")
		if staged.Serial == first[node] {
			t.Errorf("%s still holds serial %s after the renewal", node, staged.Serial)
		}
		if staged.Fingerprint.String() != renewed.Fingerprint || staged.Sequence != renewed.Sequence {
			t.Errorf("%s staged %s seq %d, want the renewal %s seq %d", node,
				staged.Fingerprint, staged.Sequence, renewed.Fingerprint, renewed.Sequence)
		}
	}
}

// TestNodeAwayAcrossRenewals is acceptance 4: a node daemon stopped across
// three certbot renewals stages only the newest, once, when it comes back.
func TestNodeAwayAcrossRenewals(t *testing.T) {
	t.Parallel()
	cb, srv, f := newCertbotFleet(t, fleetOptions{
		Certificates: map[string][]string{"example": {"web1"}},
	})
	web1 := f.Nodes["web1"]
	node := startCertsync(t, nil, "node", "run", "--config", web1.Config)
	node.WaitLog(t, stageTimeout, "node_started")

	lineage, res := cb.ObtainWildcard(t, "example", wildcard, certbotHook(t, f))
	hookRan(t, "issuance", res)
	issued := newest(t, inspectBundles(t, f.Publisher))
	natstest.WaitFor(t, stageTimeout, "web1 to stage the issued certificate", func() bool {
		return stagedFingerprint(web1.StageDir, "example") == issued.Fingerprint
	})
	waitAcked(t, srv.URL, "web1", issued.Sequence)
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node run exited with status %d after SIGTERM:\n%s", code, node.Log())
	}

	for i := range 3 {
		hookRan(t, fmt.Sprintf("renewal %d", i+1), cb.Renew(t, ""))
	}
	rows := inspectBundles(t, f.Publisher)
	if len(rows) != 4 {
		t.Fatalf("the stream holds %d bundles, want 4 (issuance and three renewals)", len(rows))
	}
	last := newest(t, rows)
	if got := stagedFingerprint(web1.StageDir, "example"); got != issued.Fingerprint {
		t.Fatalf("web1 staged %s while stopped", got)
	}

	node = startCertsync(t, nil, "node", "run", "--config", web1.Config)
	natstest.WaitFor(t, stageTimeout, "web1 to stage the newest renewal", func() bool {
		return stagedFingerprint(web1.StageDir, "example") == last.Fingerprint
	})
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node run exited with status %d after SIGTERM:\n%s", code, node.Log())
	}
	checkStaged(t, web1.StageDir, "example", lineage)
	if staged := readStaged(t, web1.StageDir, "example"); staged.Sequence != last.Sequence {
		t.Errorf("staged sequence %d, want %d", staged.Sequence, last.Sequence)
	}
	log := node.Log()
	if ev := logEvents(log, "bundle_staged"); len(ev) != 1 {
		t.Errorf("back from its absence, web1 staged %d bundles, want 1:\n%s", len(ev), log)
	}
	if ev := logEvents(log, "bundle_superseded"); len(ev) != 2 {
		t.Errorf("back from its absence, web1 skipped %d bundles as superseded, want 2:\n%s", len(ev), log)
	}
	if ev := logEvents(log, "bundle_refused"); len(ev) != 0 {
		t.Errorf("web1 refused bundles:\n%s", log)
	}
}

// TestPublishWhileServerDown is acceptance 5: publish fails within the
// configured bound with a clear error while NATS is down; republish
// publishes once the server is up; the same hook run twice publishes once.
func TestPublishWhileServerDown(t *testing.T) {
	t.Parallel()
	addr := loopback.FreeAddr(t) // nothing listens there yet
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:          "nats://" + addr,
		Lineages:     le.Live(),
		Certificates: map[string][]string{"example.com": {"web1"}},
		Timeout:      "2s",
	})
	hookEnv := []string{"RENEWED_LINEAGE=" + lineage}

	res := certsyncCmdEnv(t, hookEnv, "publish", "--config", f.Publisher)
	if res.Code != 1 {
		t.Fatalf("publish with NATS down: exit status %d, want 1\n%s", res.Code, res.Stderr)
	}
	if res.Stdout != "" {
		t.Errorf("publish printed on stdout: %q", res.Stdout)
	}
	errs := res.errorLines()
	if len(errs) != 1 || !strings.Contains(errs[0], "nats://"+addr) || !strings.Contains(errs[0], "gave up") {
		t.Errorf("want one error line naming nats://%s and saying it gave up; stderr:\n%s", addr, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "\ncertsync: hint: ") || !strings.Contains(res.Stderr, "certsync republish") {
		t.Errorf("no hint that republish will publish it; stderr:\n%s", res.Stderr)
	}

	startServerAt(t, addr)
	mustCertsync(t, "republish", "--config", f.Publisher)
	rows := inspectBundles(t, f.Publisher)
	if len(rows) != 1 {
		t.Fatalf("after republish the stream holds %d bundles, want 1", len(rows))
	}

	// certbot's hook run twice for the same renewal: one bundle.
	for range 2 {
		if res := certsyncCmdEnv(t, hookEnv, "publish", "--config", f.Publisher); res.Code != 0 || res.Stdout != "" || res.Stderr != "" {
			t.Fatalf("publish again: exit status %d, stdout %q, stderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
	}
	if again := inspectBundles(t, f.Publisher); len(again) != 1 || again[0] != rows[0] {
		t.Fatalf("the same hook run twice more left %+v, want only %+v", again, rows[0])
	}
	mustCertsync(t, "republish", "--config", f.Publisher)
	if again := inspectBundles(t, f.Publisher); len(again) != 1 {
		t.Fatalf("republish with nothing changed left %d bundles, want 1", len(again))
	}

	f.sync(t, "web1")
	checkStaged(t, f.Nodes["web1"].StageDir, "example.com", lineage)
}

// TestServerRestartKeepsState is acceptance 6: restarting certsync server
// keeps every bundle and consumer, and a running node run reconnects and
// stages the next bundle.
func TestServerRestartKeepsState(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	le.Write("other.example", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:      srv.URL,
		Lineages: le.Live(),
		Certificates: map[string][]string{
			"example.com":   {"web1", "web2"},
			"other.example": {"web2"},
		},
	})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", le.Live()+"/other.example")
	web1 := f.Nodes["web1"]
	node := startCertsync(t, nil, "node", "run", "--config", web1.Config)
	v1 := newest(t, inspectBundles(t, f.Publisher, "example.com"))
	natstest.WaitFor(t, stageTimeout, "web1 to stage example.com", func() bool {
		return stagedFingerprint(web1.StageDir, "example.com") == v1.Fingerprint
	})
	waitAcked(t, srv.URL, "web1", v1.Sequence)

	before := inspectBundles(t, f.Publisher)
	consumersBefore := consumerInfos(t, srv.URL, "web1", "web2")
	srv.Stop(t)
	srv.Start(t)

	if after := inspectBundles(t, f.Publisher); !slices.Equal(after, before) {
		t.Errorf("bundles after the restart:\n%+v\nwant:\n%+v", after, before)
	}
	consumersAfter := consumerInfos(t, srv.URL, "web1", "web2")
	for node, b := range consumersBefore {
		a := consumersAfter[node]
		if !slices.Equal(a.Config.FilterSubjects, b.Config.FilterSubjects) || a.Config.Durable != b.Config.Durable {
			t.Errorf("consumer of %s after the restart: %+v, want %+v", node, a.Config, b.Config)
		}
		if a.AckFloor.Stream != b.AckFloor.Stream || a.NumPending != b.NumPending {
			t.Errorf("consumer of %s after the restart: acked %d, pending %d; before: acked %d, pending %d",
				node, a.AckFloor.Stream, a.NumPending, b.AckFloor.Stream, b.NumPending)
		}
	}
	if n := consumersAfter["web2"].NumPending; n != 2 {
		t.Errorf("web2, never synced, has %d bundles pending after the restart, want 2", n)
	}

	// The running node reconnects on its own and stages the next renewal.
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	v2 := newest(t, inspectBundles(t, f.Publisher, "example.com"))
	if v2.Fingerprint == v1.Fingerprint {
		t.Fatal("the renewal was not published")
	}
	natstest.WaitFor(t, stageTimeout, "web1's node run to stage the renewal after the server restart", func() bool {
		return stagedFingerprint(web1.StageDir, "example.com") == v2.Fingerprint
	})
	checkStaged(t, web1.StageDir, "example.com", lineage)
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node run exited with status %d after SIGTERM:\n%s", code, node.Log())
	}
	if ev := logEvents(node.Log(), "bundle_staged"); len(ev) != 2 {
		t.Errorf("node run staged %d bundles, want 2", len(ev))
	}

	// web2 held its place across the restart: it gets the newest of each.
	f.sync(t, "web2")
	checkStaged(t, f.Nodes["web2"].StageDir, "example.com", lineage)
	checkStaged(t, f.Nodes["web2"].StageDir, "other.example", le.Live()+"/other.example")
}

// consumerInfos returns the info of the durable consumers of nodes,
// failing the test if one is missing.
func consumerInfos(t testing.TB, url string, nodes ...string) map[string]*jetstream.ConsumerInfo {
	t.Helper()
	js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	infos := map[string]*jetstream.ConsumerInfo{}
	for _, node := range nodes {
		c, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName(node))
		if err != nil {
			t.Fatalf("consumer %s: %v", wire.ConsumerName(node), err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatalf("consumer %s info: %v", wire.ConsumerName(node), err)
		}
		infos[node] = info
	}
	return infos
}

// TestClusterPublishSync publishes to a three-server cluster with a stream
// of three replicas, through the comma-separated URL list, and a node
// syncs; with one server gone, a renewal still goes through.
func TestClusterPublishSync(t *testing.T) {
	t.Parallel()
	servers, urls := natstest.RunCluster(t, 3)
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	f := newFleet(t, fleetOptions{
		URL:          urls,
		Lineages:     le.Live(),
		Certificates: map[string][]string{"example.com": {"web1"}},
		Replicas:     3,
		// The node is served by any two servers only when its consumer
		// is replicated like the stream (the default, one, waits for
		// its server: docs/OPERATIONS.md, "Many nodes").
		ConsumerReplicas: 3,
	})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	js := natstest.JetStream(t, urls)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info := st.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream has %d replicas (cluster %+v), want 3", info.Config.Replicas, info.Cluster)
	}
	f.sync(t, "web1")
	checkStaged(t, f.Nodes["web1"].StageDir, "example.com", lineage)

	// One server goes away; the other two hold a quorum.
	servers[0].Shutdown()
	servers[0].WaitForShutdown()
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	f.sync(t, "web1")
	checkStaged(t, f.Nodes["web1"].StageDir, "example.com", lineage)
	if rows := inspectBundles(t, f.Publisher); len(rows) != 2 {
		t.Fatalf("the stream holds %d bundles, want 2", len(rows))
	}
}
