package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// fleetFixture is a management host and its nodes, each with its own
// folder, driven through the real CLI (run) against a real in-process NATS
// server.
type fleetFixture struct {
	t         *testing.T
	dir       string
	url       string
	ca        *testcert.CA
	certbot   string              // certbot's folder, holding live/ and archive/
	signing   string              // the publisher's public key, for trusted_publishers
	publisher string              // publisher.yaml
	certs     map[string][]string // certificate -> nodes
	nodes     map[string]string   // node -> recipient
	issued    map[string]*testcert.Cert
	auth      string            // with least privilege: the folder of the nkeys and auth.conf
	checks    map[string]string // node -> the check command of its certificates
}

// newFleetFixture makes keys for the publisher and every node of certs
// (certificate -> node names), writes publisher.yaml and each node.yaml,
// and starts a server anyone may use.
func newFleetFixture(t *testing.T, certs map[string][]string) *fleetFixture {
	t.Helper()
	return buildFleetFixture(t, certs, false)
}

// newAuthFleetFixture is newFleetFixture with least privilege: `certsync
// auth` writes an nkey per node, for the publisher and the admin, and the
// server only lets each do what auth.conf grants. The configurations use
// their own nkeys; the fixture's own client (js, kv) is the admin.
// The admin then runs the first setup, as docs/SECURITY.md has it:
// certsync setup --nkey admin.nk.
func newAuthFleetFixture(t *testing.T, certs map[string][]string) *fleetFixture {
	t.Helper()
	f := buildFleetFixture(t, certs, true)
	f.mustCLI("setup", "--config", f.publisher, "--nkey", f.nkey("admin"))
	return f
}

// newAuthFleetFixtureWithoutSetup is newAuthFleetFixture before the first
// setup: the server holds no stream and no bucket.
func newAuthFleetFixtureWithoutSetup(t *testing.T, certs map[string][]string) *fleetFixture {
	t.Helper()
	return buildFleetFixture(t, certs, true)
}

func buildFleetFixture(t *testing.T, certs map[string][]string, auth bool) *fleetFixture {
	t.Helper()
	f := &fleetFixture{
		t:      t,
		dir:    t.TempDir(),
		ca:     testcert.NewCA(t),
		certs:  certs,
		nodes:  map[string]string{},
		issued: map[string]*testcert.Cert{},
		checks: map[string]string{},
	}
	f.certbot = filepath.Join(f.dir, "letsencrypt")
	f.publisher = filepath.Join(f.dir, "mgmt", "publisher.yaml")
	treetest.MkdirAll(t, filepath.Dir(f.publisher), 0o700)
	f.signing = f.keygen("signing", filepath.Join(f.dir, "mgmt", "signing.key"))
	for _, nodes := range certs {
		for _, node := range nodes {
			if _, ok := f.nodes[node]; ok {
				continue
			}
			treetest.MkdirAll(t, filepath.Join(f.dir, node), 0o700)
			f.nodes[node] = f.keygen("node", filepath.Join(f.dir, node, "node.key"))
		}
	}
	if auth {
		f.auth = filepath.Join(f.dir, "mgmt", "auth")
		f.writePublisherConfig() // auth reads the nodes from it
		f.mustCLI("auth", "--config", f.publisher, "--out", f.auth)
		conf := filepath.Join(f.dir, "mgmt", "nats-server.conf")
		treetest.WriteFile(t, conf, []byte("include ./auth/auth.conf\n"), 0o600)
		opts, err := server.ProcessConfigFile(conf)
		if err != nil {
			t.Fatalf("nats-server configuration with auth.conf: %v", err)
		}
		def := natstest.Options(t.TempDir())
		opts.ServerName, opts.Host, opts.Port = def.ServerName, def.Host, def.Port
		opts.JetStream, opts.StoreDir, opts.NoLog, opts.NoSigs = true, def.StoreDir, true, true
		f.url = natstest.URL(natstest.Start(t, opts))
	} else {
		f.url = natstest.URL(natstest.RunServer(t))
	}
	f.writePublisherConfig()
	for node := range f.nodes {
		f.writeNodeConfig(node, f.signing)
	}
	return f
}

// natsYAML is the nats: line of a configuration for user; none before
// the server has started.
func (f *fleetFixture) natsYAML(user string) string {
	switch {
	case f.url == "":
		return ""
	case f.auth == "":
		return fmt.Sprintf("nats: {url: %q}\n", f.url)
	}
	return fmt.Sprintf("nats: {url: %q, nkey: %s}\n", f.url, f.nkey(user))
}

// nkey is the path of user's nkey seed, with auth.
func (f *fleetFixture) nkey(user string) string { return filepath.Join(f.auth, user+".nk") }

// writePublisherConfig writes publisher.yaml.
func (f *fleetFixture) writePublisherConfig() {
	f.t.Helper()
	var b strings.Builder
	b.WriteString(f.natsYAML("publisher"))
	fmt.Fprintf(&b, "signing_key: %s\nlineages: %s\nnodes:\n",
		filepath.Join(f.dir, "mgmt", "signing.key"), filepath.Join(f.certbot, "live"))
	for _, node := range sortedNames(f.nodes) {
		fmt.Fprintf(&b, "  %s: %s\n", node, f.nodes[node])
	}
	b.WriteString("certificates:\n")
	for _, cert := range sortedNames(f.certs) {
		fmt.Fprintf(&b, "  %s: [%s]\n", cert, strings.Join(f.certs[cert], ", "))
	}
	b.WriteString("timeout: 20s\n")
	treetest.WriteFile(f.t, f.publisher, []byte(b.String()), 0o600)
}

func sortedNames[V any](m map[string]V) []string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// runMu serialises in-process runs of certsync: urfave/cli keeps state in
// package-level flags (its help flag, and our verboseFlag), so two apps
// parsing at once race.
var runMu sync.Mutex

// cli runs certsync in-process with args and returns its stdout, stderr
// and exit status.
func (f *fleetFixture) cli(args ...string) (stdout, stderr string, code int) {
	f.t.Helper()
	var out, errOut bytes.Buffer
	runMu.Lock()
	defer runMu.Unlock()
	code = run(append([]string{"certsync"}, args...), &out, &errOut)
	return out.String(), errOut.String(), code
}

// mustCLI runs certsync and fails the test unless it exits 0.
func (f *fleetFixture) mustCLI(args ...string) string {
	f.t.Helper()
	out, errOut, code := f.cli(args...)
	if code != 0 {
		f.t.Fatalf("certsync %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// keygen makes a key of kind ("node" or "signing") and returns the public
// line it prints.
func (f *fleetFixture) keygen(kind, path string) string {
	f.t.Helper()
	return strings.TrimSpace(f.mustCLI("keygen", kind, "--out", path))
}

// nodeConfig is the path of a node's node.yaml.
func (f *fleetFixture) nodeConfig(node string) string {
	return filepath.Join(f.dir, node, "node.yaml")
}

// writeNodeConfig writes the node's node.yaml, trusting the publisher key
// trusted, with the check command f.checks holds for the node, if any.
func (f *fleetFixture) writeNodeConfig(node, trusted string) {
	f.t.Helper()
	dir := filepath.Join(f.dir, node)
	var b strings.Builder
	fmt.Fprintf(&b, "name: %s\n%sidentity: %s\ntrusted_publishers: [%q]\nstage_dir: %s\ncertificates:\n",
		node, f.natsYAML(node), filepath.Join(dir, "node.key"), trusted, filepath.Join(dir, "stage"))
	for _, cert := range sortedNames(f.certs) {
		if slices.Contains(f.certs[cert], node) {
			fmt.Fprintf(&b, "  %s:\n    install_dir: %s\n", cert, filepath.Join(dir, "live", cert))
			if check := f.checks[node]; check != "" {
				fmt.Fprintf(&b, "    check: %q\n", check)
			}
		}
	}
	treetest.WriteFile(f.t, f.nodeConfig(node), []byte(b.String()), 0o600)
}

// publish issues a certificate valid from a minute ago for validity (zero:
// 90 days), writes or renews its lineage and publishes it with the CLI.
func (f *fleetFixture) publish(name string, validity time.Duration) *testcert.Cert {
	f.t.Helper()
	notBefore := time.Now().Add(-time.Minute).Truncate(time.Second)
	if prev, ok := f.issued[name]; ok && !notBefore.After(prev.Leaf.NotBefore) {
		notBefore = prev.Leaf.NotBefore.Add(time.Second) // each version needs its own second
	}
	c := f.ca.Issue(f.t, testcert.Options{Names: []string{name, "*." + name}, NotBefore: notBefore, Validity: validity})
	var live string
	if _, ok := f.issued[name]; ok {
		live, _ = testcert.RenewLineage(f.t, f.certbot, name, c)
	} else {
		live = testcert.WriteLineage(f.t, f.certbot, name, c)
	}
	f.issued[name] = c
	f.mustCLI("publish", "--config", f.publisher, "--lineage", live)
	return c
}

// sync runs `node sync` for node and returns its exit status.
func (f *fleetFixture) sync(node string) int {
	f.t.Helper()
	_, _, code := f.cli("node", "sync", "--config", f.nodeConfig(node), "--timeout", "30s")
	return code
}

// mustSync runs `node sync` for node and fails unless it exits 0.
func (f *fleetFixture) mustSync(node string) {
	f.t.Helper()
	f.mustCLI("node", "sync", "--config", f.nodeConfig(node), "--timeout", "30s")
}

// js connects a test client to the server, as the admin with auth.
func (f *fleetFixture) js() jetstream.JetStream {
	f.t.Helper()
	var opts []nats.Option
	if f.auth != "" {
		opt, err := nats.NkeyOptionFromSeed(f.nkey("admin"))
		if err != nil {
			f.t.Fatal(err)
		}
		opts = append(opts, opt)
	}
	return natstest.JetStream(f.t, f.url, opts...)
}

// kv opens the status bucket.
func (f *fleetFixture) kv() jetstream.KeyValue {
	f.t.Helper()
	kv, err := f.js().KeyValue(context.Background(), wire.StatusBucket)
	if err != nil {
		f.t.Fatalf("status bucket: %v", err)
	}
	return kv
}

// records reads every record of the status bucket, raw, by key.
func (f *fleetFixture) records() map[string][]byte {
	f.t.Helper()
	ctx := context.Background()
	kv := f.kv()
	keys, err := kv.Keys(ctx)
	if err != nil {
		f.t.Fatalf("status keys: %v", err)
	}
	out := map[string][]byte{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			f.t.Fatalf("status record %s: %v", k, err)
		}
		out[k] = e.Value()
	}
	return out
}

// age rewrites a node's record of cert as if it was last seen ago: the
// CLI cannot move a node's clock, so a stopped node is shown this way.
func (f *fleetFixture) age(node, cert string, ago time.Duration) {
	f.t.Helper()
	ctx := context.Background()
	kv := f.kv()
	e, err := kv.Get(ctx, wire.StatusKey(node, cert))
	if err != nil {
		f.t.Fatalf("status of %s/%s: %v", node, cert, err)
	}
	var st wire.Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		f.t.Fatal(err)
	}
	st.LastSeen = time.Now().Add(-ago).UTC()
	data, err := json.Marshal(st)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := kv.Put(ctx, e.Key(), data); err != nil {
		f.t.Fatal(err)
	}
}

// status runs `certsync status` with extra flags and returns its table,
// its stderr and exit status.
func (f *fleetFixture) status(flags ...string) (table, stderr string, code int) {
	f.t.Helper()
	return f.cli(append([]string{"status", "--config", f.publisher}, flags...)...)
}

// statusJSON runs `certsync status --json` and returns its rows by
// "node/certificate", and its exit status.
func (f *fleetFixture) statusJSON(flags ...string) (map[string]map[string]any, int) {
	f.t.Helper()
	out, errOut, code := f.cli(append([]string{"status", "--config", f.publisher, "--json"}, flags...)...)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		f.t.Fatalf("status --json printed no JSON array: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	byPair := map[string]map[string]any{}
	for _, r := range rows {
		for _, k := range []string{"node", "certificate", "state", "installed_serial", "installed_fingerprint", "not_after", "last_seen", "error"} {
			if _, ok := r[k]; !ok {
				f.t.Errorf("status --json row %v lacks the contract's key %q", r, k)
			}
		}
		byPair[fmt.Sprint(r["node"], "/", r["certificate"])] = r
	}
	return byPair, code
}

// tableRow returns the table line of node and certificate.
func tableRow(t *testing.T, table, node, cert string) string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[0] == node && f[1] == cert {
			return line
		}
	}
	t.Fatalf("no row for %s %s in:\n%s", node, cert, table)
	return ""
}

// stateOf returns the STATE column of a table line.
func stateOf(line string) string { return strings.Fields(line)[2] }

// held says whether a status state means the node holds the certificate:
// staged today, installed once installing lands.
func held(state any) bool { return state == wire.StateStaged || state == wire.StateInstalled }

// TestStatusFleet is acceptance 1 of issue 5: a healthy node, one whose
// bundle is refused (it trusts another publisher key), one stopped long
// ago, one that never ran, one whose install check fails. status flags
// each and exits 1; once the failing nodes are fixed (the refused bundle
// replayed, the install run again), the stopped one syncs again and the
// last one runs, it exits 0.
func TestStatusFleet(t *testing.T) {
	t.Parallel()
	const cert = "example.com"
	f := newFleetFixture(t, map[string][]string{cert: {"web1", "web2", "web3", "web4", "web5"}})
	other := f.keygen("signing", filepath.Join(f.dir, "mgmt", "other.key"))
	f.writeNodeConfig("web2", other)
	falseCmd, err := exec.LookPath("false")
	if err != nil {
		t.Fatal(err)
	}
	f.checks["web5"] = falseCmd
	f.writeNodeConfig("web5", f.signing)
	c := f.publish(cert, 0)
	serial := fmt.Sprintf("%x", c.Leaf.SerialNumber)

	f.mustSync("web1")
	if code := f.sync("web2"); code == 0 {
		t.Fatal("node sync of web2, which trusts another key, exited 0")
	}
	f.mustSync("web3")
	f.age("web3", cert, 3*time.Hour)
	if code := f.sync("web5"); code == 0 {
		t.Fatal("node sync of web5, whose check fails, exited 0")
	}

	table, stderr, code := f.status()
	if code != 1 {
		t.Fatalf("status exit %d, want 1\n%s%s", code, table, stderr)
	}
	if l := tableRow(t, table, "web1", cert); !held(stateOf(l)) || !strings.Contains(l, serial) || !strings.Contains(l, "(89d)") {
		t.Errorf("web1 row %q: want staged or installed, serial %s and 89 days left", l, serial)
	}
	if l := tableRow(t, table, "web2", cert); stateOf(l) != "failed" {
		t.Errorf("web2 row %q: want failed", l)
	}
	if l := tableRow(t, table, "web3", cert); stateOf(l) != "stale" || !strings.Contains(l, "3h ago") {
		t.Errorf("web3 row %q: want stale, last seen 3h ago", l)
	}
	if l := tableRow(t, table, "web4", cert); stateOf(l) != "missing" || !strings.Contains(l, "never") {
		t.Errorf("web4 row %q: want missing, never seen", l)
	}
	if strings.Contains(table, "\033[") {
		t.Errorf("colour codes in a table not printed to a terminal:\n%q", table)
	}
	if l := tableRow(t, table, "web5", cert); stateOf(l) != "failed" || !strings.Contains(l, "check") {
		t.Errorf("web5 row %q: want failed, its check named", l)
	}
	for _, want := range []string{"certsync: error: status: 4 of 5 unhealthy", "web2/example.com failed", "web3/example.com stale",
		"web4/example.com missing", "web5/example.com failed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "NODE") || !strings.HasPrefix(lines[1], "web1") || !strings.HasPrefix(lines[5], "web5") {
		t.Errorf("table not a header and five rows sorted by node:\n%s", table)
	}

	rows, code := f.statusJSON()
	if code != 1 {
		t.Errorf("status --json exit %d, want 1", code)
	}
	if r := rows["web1/"+cert]; !held(r["state"]) || r["healthy"] != true || r["staged_serial"] != serial ||
		r["published_serial"] != serial || r["behind"] != false || r["not_after"] != c.Leaf.NotAfter.UTC().Format(time.RFC3339) {
		t.Errorf("web1 json %v", r)
	}
	web2 := rows["web2/"+cert]
	if web2["state"] != "failed" || web2["healthy"] != false || web2["error"] == "" || web2["last_seen"] == nil {
		t.Errorf("web2 json %v: want failed with its error", web2)
	}
	if l := tableRow(t, table, "web2", cert); !strings.Contains(l, web2["error"].(string)) {
		t.Errorf("web2 row %q lacks its error %q", l, web2["error"])
	}
	if r := rows["web3/"+cert]; r["state"] != "stale" || r["reported_state"] == "stale" || !held(r["reported_state"]) {
		t.Errorf("web3 json %v: want stale, having reported staged or installed", r)
	}
	if r := rows["web4/"+cert]; r["state"] != "missing" || r["last_seen"] != nil || r["not_after"] != nil || r["days_left"] != nil {
		t.Errorf("web4 json %v: want missing with no times", r)
	}
	if r := rows["web5/"+cert]; r["state"] != "failed" || r["staged_serial"] != serial || !strings.Contains(r["error"].(string), "check") {
		t.Errorf("web5 json %v: want failed, staged, its check named", r)
	}
	// A longer threshold accepts web3's age.
	if rows, _ := f.statusJSON("--stale-after", "4h"); !held(rows["web3/"+cert]["state"]) {
		t.Errorf("web3 with --stale-after 4h: %v", rows["web3/"+cert])
	}

	// Fix web2: trust the right key, replay the newest bundle to it (delete
	// its consumer, republish recreates it at the newest bundle), sync.
	f.writeNodeConfig("web2", f.signing)
	if err := f.js().DeleteConsumer(context.Background(), wire.Stream, wire.ConsumerName("web2")); err != nil {
		t.Fatalf("deleting web2's consumer: %v", err)
	}
	f.mustCLI("republish", "--config", f.publisher)
	f.mustSync("web2")
	// Fix web5's check and install what it staged.
	delete(f.checks, "web5")
	f.writeNodeConfig("web5", f.signing)
	f.mustCLI("node", "install", "--config", f.nodeConfig("web5"))
	// The stopped node comes back; the last one runs for the first time.
	f.mustSync("web3")
	f.mustSync("web4")

	table, stderr, code = f.status()
	if code != 0 {
		t.Fatalf("status after fixing exit %d, want 0\n%s%s", code, table, stderr)
	}
	for _, node := range []string{"web1", "web2", "web3", "web4", "web5"} {
		if l := tableRow(t, table, node, cert); !held(stateOf(l)) || !strings.HasSuffix(strings.TrimSpace(l), "-") {
			t.Errorf("%s row %q: want staged or installed and no error", node, l)
		}
	}
	if stderr != "" {
		t.Errorf("stderr of a healthy status: %q", stderr)
	}
	rows, code = f.statusJSON()
	if code != 0 || len(rows) != 5 {
		t.Fatalf("status --json after fixing: exit %d, %d rows", code, len(rows))
	}
	for pair, r := range rows {
		if r["healthy"] != true || r["error"] != "" || len(r["problems"].([]any)) != 0 {
			t.Errorf("%s: %v, want healthy", pair, r)
		}
	}
}

// TestStatusFlagsExpiringBehindAndNeverReported is acceptance 2 of issue 5,
// and a node that has not synced a renewal.
func TestStatusFlagsExpiringBehindAndNeverReported(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{
		"short.example": {"web1"},
		"long.example":  {"web1", "web2"},
	})
	f.publish("short.example", 5*24*time.Hour)
	f.publish("long.example", 0)
	f.mustSync("web1")

	rows, code := f.statusJSON("--warn-before", "336h")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	short := rows["web1/short.example"]
	if !held(short["state"]) || short["expiring"] != true || short["days_left"] != float64(4) ||
		!slices.Equal(short["problems"].([]any), []any{"expiring"}) {
		t.Errorf("short-lived certificate: %v, want expiring with 4 days left", short)
	}
	if r := rows["web2/long.example"]; r["state"] != "missing" || r["healthy"] != false ||
		!slices.Equal(r["problems"].([]any), []any{"missing"}) {
		t.Errorf("node that never reported: %v, want missing", r)
	}
	if r := rows["web1/long.example"]; r["healthy"] != true {
		t.Errorf("web1/long.example: %v, want healthy", r)
	}
	table, _, _ := f.status("--warn-before", "336h")
	if l := tableRow(t, table, "web1", "short.example"); !strings.Contains(stateOf(l), "expiring") || !strings.Contains(l, "(4d)") {
		t.Errorf("short-lived row %q: want flagged expiring with 4 days left", l)
	}
	if l := tableRow(t, table, "web2", "long.example"); stateOf(l) != "missing" {
		t.Errorf("never reported row %q: want missing", l)
	}

	// A 3-day window no longer flags the short-lived certificate; web2 runs.
	f.mustSync("web2")
	if rows, code := f.statusJSON("--warn-before", "72h"); code != 0 || rows["web1/short.example"]["expiring"] != false {
		t.Errorf("--warn-before 72h: exit %d, %v", code, rows["web1/short.example"])
	}

	// A renewal web2 has not received yet: web2 is behind.
	renewed := f.publish("long.example", 0)
	f.mustSync("web1")
	rows, code = f.statusJSON("--warn-before", "72h")
	if code != 1 {
		t.Errorf("exit %d with web2 behind, want 1", code)
	}
	r := rows["web2/long.example"]
	if !held(r["state"]) || r["behind"] != true || r["published_serial"] != fmt.Sprintf("%x", renewed.Leaf.SerialNumber) ||
		!slices.Equal(r["problems"].([]any), []any{"behind"}) {
		t.Errorf("web2 after a renewal it has not synced: %v, want behind", r)
	}
	table, _, _ = f.status("--warn-before", "72h")
	if l := tableRow(t, table, "web2", "long.example"); !strings.HasSuffix(stateOf(l), ",behind") {
		t.Errorf("behind row %q: want the state flagged behind", l)
	}
	f.mustSync("web2")
	if _, code := f.statusJSON("--warn-before", "72h"); code != 0 {
		t.Errorf("exit %d once web2 synced, want 0", code)
	}
}

// TestStatusUnconfiguredRecord shows a record of a pair no longer in the
// configuration without failing the check.
func TestStatusUnconfiguredRecord(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{"example.com": {"web1"}})
	f.publish("example.com", 0)
	f.mustSync("web1")
	kv := f.kv()
	old, _ := json.Marshal(wire.Status{Node: "old", Certificate: "example.com", State: wire.StateStaged, LastSeen: time.Now().Add(-72 * time.Hour)})
	if _, err := kv.Put(context.Background(), wire.StatusKey("old", "example.com"), old); err != nil {
		t.Fatal(err)
	}
	table, stderr, code := f.status()
	if code != 0 {
		t.Errorf("exit %d with an unconfigured record, want 0\n%s%s", code, table, stderr)
	}
	if l := tableRow(t, table, "old", "example.com"); stateOf(l) != "stale,unconfigured" {
		t.Errorf("unconfigured row %q: want stale,unconfigured", l)
	}
	rows, _ := f.statusJSON()
	if r := rows["old/example.com"]; r["configured"] != false || r["healthy"] != true {
		t.Errorf("unconfigured json %v", r)
	}
}

// TestStatusHostileRecord: a node's record whose error and serial hold a
// line break, a carriage return and escape sequences (what a stolen node
// credential may write) prints as one row of escaped text: it cannot
// forge a row, erase another or reach the terminal; the JSON carries the
// same escaped text.
func TestStatusHostileRecord(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{"example.com": {"web1", "web2"}})
	f.publish("example.com", 0)
	f.mustSync("web1")
	f.mustSync("web2")
	hostile, _ := json.Marshal(wire.Status{State: wire.StateFailed, LastSeen: time.Now(), InstalledFingerprint: "sha256:00", InstalledSerial: "\x1b]0;owned\x07",
		Error: "ok\rweb1  example.com  installed\nweb3  example.com  installed\x1b[1A\x1b[2K"})
	if _, err := f.kv().Put(context.Background(), wire.StatusKey("web2", "example.com"), hostile); err != nil {
		t.Fatal(err)
	}
	table, stderr, code := f.status()
	if code != 1 {
		t.Errorf("exit %d, want 1: web2 reports a failure\n%s%s", code, table, stderr)
	}
	if strings.ContainsAny(table, "\x1b\r\a") || strings.Count(table, "\n") != 3 {
		t.Fatalf("the table holds what the record wrote, or more than its header and two rows:\n%q", table)
	}
	if l := tableRow(t, table, "web2", "example.com"); !strings.Contains(l, `ok\x0dweb1  example.com  installed\x0aweb3`) || !strings.Contains(l, `\x1b]0;owned\x07`) {
		t.Errorf("web2's row %q, want the record's text escaped", l)
	}
	rows, _ := f.statusJSON()
	if r := rows["web2/example.com"]; r["error"] != `ok\x0dweb1  example.com  installed\x0aweb3  example.com  installed\x1b[1A\x1b[2K` {
		t.Errorf("json error %q, want it escaped as in the table", r["error"])
	}
}

// TestStatusNeedsNoSigningKey runs status where the signing key is not
// readable at all.
func TestStatusNeedsNoSigningKey(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{"example.com": {"web1"}})
	f.publish("example.com", 0)
	f.mustSync("web1")
	if err := os.Remove(filepath.Join(f.dir, "mgmt", "signing.key")); err != nil {
		t.Fatal(err)
	}
	if table, stderr, code := f.status(); code != 0 || !strings.Contains(table, "web1") {
		t.Errorf("status without the signing key: exit %d\n%s%s", code, table, stderr)
	}
}

func TestStatusRefusals(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{"example.com": {"web1"}})
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--stale-after", "0s"}, "--stale-after 0s: want a positive duration"},
		{[]string{"--warn-before", "-1h"}, "--warn-before -1h0m0s: want a positive duration"},
		{[]string{"--config", filepath.Join(f.dir, "nope.yaml")}, "nope.yaml"},
	} {
		out, stderr, code := f.status(tt.args...)
		if code != 1 || out != "" || !strings.HasPrefix(stderr, "certsync: error: ") || !strings.Contains(stderr, tt.want) {
			t.Errorf("status %q: exit %d, stdout %q, stderr %q; want exit 1 and an error with %q", tt.args, code, out, stderr, tt.want)
		}
	}
}

// TestNoKeyMaterialInInspectOrStatus is part of acceptance 3 of issue 5:
// neither inspect, status nor any status record holds key material.
func TestNoKeyMaterialInInspectOrStatus(t *testing.T) {
	t.Parallel()
	f := newFleetFixture(t, map[string][]string{"example.com": {"web1", "web2"}})
	var keys [][]byte
	keys = append(keys, f.publish("example.com", 0).PrivKey)
	f.mustSync("web1")
	f.writeNodeConfig("web2", f.keygen("signing", filepath.Join(f.dir, "mgmt", "other.key")))
	f.sync("web2") // refused: its record carries an error
	keys = append(keys, f.publish("example.com", 0).PrivKey)
	f.mustSync("web1")
	for _, node := range []string{"web1", "web2"} {
		for _, name := range []string{"node.key"} {
			data, err := os.ReadFile(filepath.Join(f.dir, node, name))
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, data)
		}
	}

	outputs := map[string]string{
		"inspect":        f.mustCLI("inspect", "--config", f.publisher),
		"inspect --json": f.mustCLI("inspect", "--config", f.publisher, "--json"),
	}
	outputs["status"], _, _ = f.status()
	outputs["status --json"], _, _ = f.cli("status", "--config", f.publisher, "--json")
	records := f.records()
	if len(records) != 2 {
		t.Errorf("%d status records, want 2", len(records))
	}
	for k, v := range records {
		outputs["status record "+k] = string(v)
	}
	if !strings.Contains(outputs["status record web2.example.com"], `"state":"failed"`) {
		t.Errorf("web2's record is not failed: %s", outputs["status record web2.example.com"])
	}
	for what, out := range outputs {
		checkNoKeyMaterial(t, what, out, keys...)
	}
}

// checkNoKeyMaterial fails if s holds a PEM private key, or any part of
// the given key files: their lines, or the base64 of the key bytes they
// hold.
func checkNoKeyMaterial(t *testing.T, what, s string, keyFiles ...[]byte) {
	t.Helper()
	if strings.Contains(s, "PRIVATE KEY") {
		t.Errorf("%s mentions a PRIVATE KEY", what)
	}
	for _, k := range keyFiles {
		var needles []string
		if block, _ := pem.Decode(k); block != nil {
			b64 := base64.StdEncoding.EncodeToString(block.Bytes)
			for i := 0; i+24 <= len(b64); i += 12 {
				needles = append(needles, b64[i:i+24])
			}
			needles = append(needles, base64.RawURLEncoding.EncodeToString(block.Bytes)[:24])
		}
		for _, line := range strings.Split(string(k), "\n") {
			line = strings.TrimSpace(line)
			if len(line) > 16 && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "-----") {
				needles = append(needles, line)
			}
		}
		if len(needles) == 0 {
			t.Fatalf("no key material to look for in a key file of %d bytes", len(k))
		}
		for _, n := range needles {
			if strings.Contains(s, n) {
				t.Errorf("%s holds key material", what)
				break
			}
		}
	}
}

func TestStatusTableColour(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := []publisher.Row{
		{Node: "web1", Certificate: "a.example", State: wire.StateStaged, Configured: true, Release: crypto.Release{Serial: "01",
			NotAfter: now.Add(50 * 24 * time.Hour)}, DaysLeft: 50, LastSeen: now.Add(-90 * time.Second)},
		{Node: "web2", Certificate: "a.example", State: wire.StateFailed, Configured: true, Error: "refused: bad signature",
			LastSeen: now.Add(-3 * 24 * time.Hour)},
		{Node: "web3", Certificate: "a.example", State: wire.StateStaged, Configured: true, Behind: true, Expiring: true,
			Release: crypto.Release{NotAfter: now.Add(-time.Hour)}, DaysLeft: -1, LastSeen: now},
		{Node: "web4", Certificate: "a.example", State: wire.StateStaged, Configured: true, Release: crypto.Release{Serial: "02",
			NotAfter: now.Add(50 * 24 * time.Hour)}, DaysLeft: 50, LastSeen: now,
			Reported: &wire.Status{State: wire.StateStaged, InstallAt: now.Add(90 * time.Minute)}},
	}
	var plain, color bytes.Buffer
	if err := printStatusTable(&plain, rows, now, false); err != nil {
		t.Fatal(err)
	}
	if err := printStatusTable(&color, rows, now, true); err != nil {
		t.Fatal(err)
	}
	want := `NODE  CERTIFICATE  STATE                   SERIAL  NOT AFTER                   LAST SEEN  ERROR
web1  a.example    staged                  01      2030-02-20 00:00 (50d)      1m ago     -
web2  a.example    failed                  -       -                           3d ago     refused: bad signature
web3  a.example    staged,behind,expiring  -       2029-12-31 23:00 (expired)  0s ago     -
web4  a.example    staged                  02      2030-02-20 00:00 (50d)      0s ago     installs at 2030-01-01 01:30
`
	if plain.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", plain.String(), want)
	}
	stripped := strings.NewReplacer(colorGreen, "", colorRed, "", colorYellow, "", colorReset, "").Replace(color.String())
	if stripped != want {
		t.Errorf("coloured table without its colours:\n%s\nwant:\n%s", stripped, want)
	}
	for _, w := range []string{colorGreen + "staged" + colorReset, colorRed + "failed" + colorReset, colorYellow + "staged,behind,expiring" + colorReset} {
		if !strings.Contains(color.String(), w) {
			t.Errorf("coloured table lacks %q:\n%q", w, color.String())
		}
	}
}

// TestStatusJSONInstallAt: --json says when a node installs what it
// staged, and null when nothing waits.
func TestStatusJSONInstallAt(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 1, 1, 30, 0, 0, time.UTC)
	rows := []publisher.Row{
		{Node: "web1", Certificate: "a.example", State: wire.StateStaged, Configured: true,
			Reported: &wire.Status{State: wire.StateStaged, InstallAt: at}},
		{Node: "web2", Certificate: "a.example", State: wire.StateInstalled, Configured: true,
			Reported: &wire.Status{State: wire.StateInstalled}},
	}
	var out bytes.Buffer
	if err := printStatusJSON(&out, rows); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0]["install_at"] != "2030-01-01T01:30:00Z" || got[1]["install_at"] != nil {
		t.Errorf("install_at of %s", out.String())
	}
	if _, ok := got[1]["install_at"]; !ok {
		t.Error("install_at missing where nothing waits; want null")
	}
}

// TestUseColour is not parallel: it sets NO_COLOR.
func TestUseColour(t *testing.T) {
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	t.Setenv("NO_COLOR", "")
	if !useColor(devNull) {
		t.Errorf("no colour on a character device")
	}
	if useColor(file) || useColor(&bytes.Buffer{}) {
		t.Errorf("colour on a file or a buffer")
	}
	t.Setenv("NO_COLOR", "1")
	if useColor(devNull) {
		t.Errorf("colour on a character device with NO_COLOR=1")
	}
}
