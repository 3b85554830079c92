package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/treetest"

	"github.com/nats-io/nkeys"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
)

// authPublisherYAML is a publisher.yaml for `certsync auth`: the signing
// key need not exist, auth never reads it.
func authPublisherYAML(t *testing.T, dir string, nodes ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("signing_key: " + filepath.Join(dir, "no-such-signing.key") + "\nnodes:\n")
	for _, n := range nodes {
		b.WriteString("  " + n + ": " + keygenNode(t, filepath.Join(dir, n+".key")) + "\n")
	}
	b.WriteString("certificates:\n  example.com: [" + nodes[0] + "]\n")
	path := filepath.Join(dir, "publisher.yaml")
	treetest.WriteFile(t, path, []byte(b.String()), 0o644)
	return path
}

func TestAuthWritesAndKeeps(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := authPublisherYAML(t, dir, "web1", "web2")
	out := filepath.Join(dir, "auth")
	res := certsyncCmd(t, "auth", "--config", cfg, "--out", out)
	if res.Code != 0 || res.Stdout != "" || res.Stderr != "" {
		t.Fatalf("certsync auth: exit %d, want 0 and quiet\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	seeds := map[string]string{}
	for _, user := range []string{"web1", "web2", "publisher", "admin"} {
		path := filepath.Join(out, user+".nk")
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v, want 0600", path, err, fi.Mode().Perm())
		}
		data, _ := os.ReadFile(path)
		if _, err := nkeys.ParseDecoratedUserNKey(data); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		seeds[user] = string(data)
	}
	conf, err := os.ReadFile(filepath.Join(out, "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"$JS.API.CONSUMER.MSG.NEXT.CERTSYNC.node-web1", "$JS.API.CONSUMER.MSG.NEXT.CERTSYNC.node-web2", "jetstream: enabled"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("auth.conf lacks %q", want)
		}
	}

	// Again after web2 left: seeds kept, web2 out of auth.conf and named
	// on stderr as a leftover.
	cfg = authPublisherYAML(t, t.TempDir(), "web1")
	res = certsyncCmd(t, "auth", "--config", cfg, "--out", out)
	if res.Code != 0 || res.Stdout != "" {
		t.Fatalf("certsync auth again: exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	if ev := logEvents(res.Stderr, "seed_unused"); len(ev) != 1 || ev[0]["path"] != filepath.Join(out, "web2.nk") {
		t.Errorf("second run's stderr does not name web2.nk as unused:\n%s", res.Stderr)
	}
	for user, before := range seeds {
		if after, _ := os.ReadFile(filepath.Join(out, user+".nk")); string(after) != before {
			t.Errorf("%s.nk changed on a second run", user)
		}
	}
	conf, _ = os.ReadFile(filepath.Join(out, "auth.conf"))
	if strings.Contains(string(conf), "node-web2") {
		t.Error("auth.conf still grants web2 after it left")
	}
}

func TestAuthRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string // in the error line
		hint string // in a hint line, if any
	}{
		{"no --out", []string{"auth", "--config", authPublisherYAML(t, t.TempDir(), "web1")}, "--out is required", "certsync auth --help"},
		{"node named admin", []string{"auth", "--config", authPublisherYAML(t, t.TempDir(), "admin"), "--out", filepath.Join(dir, "a")},
			`node name "admin"`, "another name"},
		{"missing config", []string{"auth", "--config", filepath.Join(dir, "none.yaml"), "--out", filepath.Join(dir, "b")},
			"none.yaml", ""},
		{"argument", []string{"auth", "--config", filepath.Join(dir, "none.yaml"), "--out", filepath.Join(dir, "c"), "extra"},
			`unexpected argument "extra"`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := certsyncCmd(t, tc.args...)
			lines := res.errorLines()
			if res.Code != 1 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, error lines %q; want one containing %q\nstderr: %s", res.Code, lines, tc.want, res.Stderr)
			}
			if tc.hint != "" && (!strings.Contains(res.Stderr, "certsync: hint: ") || !strings.Contains(res.Stderr, tc.hint)) {
				t.Errorf("no hint with %q:\n%s", tc.hint, res.Stderr)
			}
		})
	}
}

// TestAuthInboxPrefixes checks that the configuration loader gives each
// client the inbox prefix auth.conf lets it subscribe to.
func TestAuthInboxPrefixes(t *testing.T) {
	t.Parallel()
	pf, err := parsePublisherFile([]byte("signing_key: /k\nnodes: {web1: " + keygenNode(t, filepath.Join(t.TempDir(), "k")) + "}\ncertificates: {example.com: [web1]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := pf.config.NATS.InboxPrefix; got != wire.PublisherInboxPrefix {
		t.Errorf("publisher inbox prefix %q, want %q", got, wire.PublisherInboxPrefix)
	}
	nf, err := parseNodeFile([]byte("name: web1\nidentity: /k\ntrusted_publishers: [\"" + keygenSigning(t, filepath.Join(t.TempDir(), "s")) + "\"]\ncertificates: {example.com: {}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := nf.config.NATS.InboxPrefix, wire.NodeInboxPrefix("web1"); got != want {
		t.Errorf("node inbox prefix %q, want %q", got, want)
	}
}

// TestAuthTLSPipelineE2E runs the whole pipeline the way SECURITY.md tells
// an operator to set it up: `certsync server` over TLS with a private CA,
// the users `certsync auth` generated, publish, two nodes syncing (stage
// and install) with their own nkeys, and status read with the publisher's.
func TestAuthTLSPipelineE2E(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := writeTestTLS(t, dir)
	lin := newLineages(t)
	signing := keygenSigning(t, filepath.Join(dir, "signing.key"))
	auth := filepath.Join(dir, "auth")
	addr := loopback.FreeAddr(t)
	url := "tls://" + addr
	nats := func(user string) string {
		return "nats: {url: \"" + url + "\", nkey: " + filepath.Join(auth, user+".nk") + ", tls: {ca: " + ca + "}}\n"
	}
	nodes := []string{"web1", "web2"}
	pub := nats("publisher") + "signing_key: " + filepath.Join(dir, "signing.key") + "\nlineages: " + lin.Live() + "\nnodes:\n"
	for _, n := range nodes {
		pub += "  " + n + ": " + keygenNode(t, filepath.Join(dir, n+".key")) + "\n"
	}
	pub += "certificates:\n  example.com: [web1, web2]\ntimeout: 20s\n"
	pubCfg := filepath.Join(dir, "publisher.yaml")
	treetest.WriteFile(t, pubCfg, []byte(pub), 0o644)
	mustCertsync(t, "auth", "--config", pubCfg, "--out", auth)

	serverConf := filepath.Join(dir, "nats-server.conf")
	conf := "listen: " + addr + "\nserver_name: certsync-tls\n" +
		"jetstream {\n  store_dir: " + filepath.Join(dir, "js") + "\n}\n" +
		"tls {\n  cert_file: " + filepath.Join(dir, "server.pem") + "\n  key_file: " + filepath.Join(dir, "server-key.pem") + "\n}\n" +
		"include ./auth/auth.conf\n"
	treetest.WriteFile(t, serverConf, []byte(conf), 0o644)
	srv := startCertsync(t, nil, "server", "--config", serverConf)
	natstest.WaitFor(t, serverReady, "certsync server with TLS and auth.conf", func() bool {
		return len(logEvents(srv.Log(), "server_ready")) > 0 || srv.exited()
	})
	if srv.exited() {
		t.Fatalf("certsync server --config exited:\n%s", srv.Log())
	}
	mustCertsync(t, "setup", "--config", pubCfg, "--nkey", filepath.Join(auth, "admin.nk"))

	live, _ := lin.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", pubCfg, "--lineage", live)
	for _, n := range nodes {
		stage := filepath.Join(dir, n, "stage")
		install := filepath.Join(dir, n, "installed", "example.com")
		nodeCfg := filepath.Join(dir, n+".yaml")
		y := "name: " + n + "\n" + nats(n) + "identity: " + filepath.Join(dir, n+".key") +
			"\ntrusted_publishers: [\"" + signing + "\"]\nstage_dir: " + stage +
			"\ncertificates:\n  example.com:\n    install_dir: " + install + "\n"
		treetest.WriteFile(t, nodeCfg, []byte(y), 0o644)
		res := certsyncCmd(t, "node", "sync", "--config", nodeCfg, "--timeout", "30s")
		if res.Code != 0 || strings.Contains(strings.ToLower(res.Stderr), "permissions violation") {
			t.Fatalf("node sync %s: exit %d\n%s", n, res.Code, res.Stderr)
		}
		checkStaged(t, stage, "example.com", live)
		for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
			want, _ := os.ReadFile(filepath.Join(live, f))
			if got, err := os.ReadFile(filepath.Join(install, f)); err != nil || string(got) != string(want) {
				t.Errorf("%s: installed %s differs from the lineage's (%v)", n, f, err)
			}
		}
	}

	res := certsyncCmd(t, "status", "--config", pubCfg, "--json")
	if res.Code != 0 {
		t.Fatalf("status: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	var rows []struct {
		Node, Certificate, State string
	}
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, res.Stdout)
	}
	installed := 0
	for _, r := range rows {
		if r.Certificate == "example.com" && r.State == "installed" {
			installed++
		}
	}
	if installed != len(nodes) {
		t.Errorf("status: %d nodes installed, want %d\n%s", installed, len(nodes), res.Stdout)
	}
}

// writeTestTLS writes a private CA (ca.pem) and a server certificate for
// 127.0.0.1 signed by it (server.pem, with its chain, and server-key.pem)
// into dir, and returns the CA's path.
func writeTestTLS(t *testing.T, dir string) string {
	t.Helper()
	ca := testcert.NewCA(t)
	server := ca.Issue(t, testcert.Options{Names: []string{"127.0.0.1"}})
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"ca.pem", ca.RootPEM, 0o644},
		{"server.pem", server.FullChain, 0o644},
		{"server-key.pem", server.PrivKey, 0o600},
	} {
		treetest.WriteFile(t, filepath.Join(dir, f.name), f.data, f.mode)
	}
	return filepath.Join(dir, "ca.pem")
}
