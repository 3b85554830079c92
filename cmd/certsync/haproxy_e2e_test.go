package main

// An end-to-end test with another service than nginx: Debian's real
// HAProxy, terminating TLS with certsync's combined.pem, checked, reloaded
// and verified by `certsync node sync`, rolled back when its check fails.

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/internal/testing/haproxytest"
	"github.com/certsync/certsync/internal/testing/nginxtest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestHAProxyE2E: a node whose HAProxy reads combined.pem from install_dir
// (node.yaml: combined: true, check `haproxy -c`, reload `kill -USR2` of
// the master as `systemctl reload haproxy` does, verify HAProxy's port).
// `node sync` installs a published certificate over the old cron's copy,
// and HAProxy serves it. Then an operator's typo breaks HAProxy's
// configuration: the next certificate fails the check, install_dir points
// back at the first version, and HAProxy, reloaded once the typo is fixed,
// still serves the first certificate. `node install` then puts the second
// one in service.
func TestHAProxyE2E(t *testing.T) {
	t.Parallel()
	const name = "example.test"
	srv := startServer(t)
	le := newLineages(t)
	lineage, v1 := le.Write(name, certOptions{})
	f := newFleet(t, fleetOptions{
		URL:          srv.URL,
		Lineages:     le.Live(),
		Certificates: map[string][]string{name: {"web1"}},
	})
	web1 := f.Nodes["web1"]

	// What the old cron left: a real folder with the combined PEM file
	// HAProxy serves, from another CA.
	installDir := filepath.Join(filepath.Dir(web1.StageDir), "installed", name)
	treetest.MkdirAll(t, installDir, 0o755)
	old := testcert.NewCA(t).Issue(t, testcert.Options{Names: []string{name, "*." + name}})
	combined := filepath.Join(installDir, "combined.pem")
	treetest.WriteFile(t, combined, slices.Concat(old.FullChain, old.PrivKey), 0o600)
	h := haproxytest.Start(t, combined)
	if got := nginxtest.ServedLeaf(t, h.Addr, name); !got.Equal(old.Leaf) {
		t.Fatalf("haproxy serves serial %x at start, want the old copy's %x", got.SerialNumber, old.Leaf.SerialNumber)
	}
	editYAML(t, web1.Config, func(cfg map[string]any) {
		cfg["certificates"] = map[string]any{name: map[string]any{
			"install_dir": installDir,
			"combined":    true,
			"check":       commandLine(h.CheckCommand()),
			"reload":      commandLine(h.ReloadCommand()),
			"verify":      h.Addr,
		}}
	})

	// The first certificate: installed, checked, reloaded once, verified.
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	res := f.sync(t, "web1")
	noSecrets(t, "node sync", res)
	if p := h.WaitReloads(t, 1); p.Reloads != 1 || p.Failed != 0 {
		t.Fatalf("after the first install haproxy's master says %+v, want one reload that loaded", p)
	}
	if got := nginxtest.ServedLeaf(t, h.Addr, name); !got.Equal(v1.Leaf) {
		t.Fatalf("haproxy serves serial %x after the install, want %x", got.SerialNumber, v1.Leaf.SerialNumber)
	}
	checkCombined(t, combined, v1)
	first, err := os.Readlink(installDir)
	if err != nil {
		t.Fatalf("install_dir is not certsync's link: %v", err)
	}
	backups, _ := filepath.Glob(installDir + ".certsync-backup-*")
	if len(backups) != 1 {
		t.Errorf("the old copy was moved aside %d times, want once: %v", len(backups), backups)
	}

	// An operator's typo in haproxy.cfg, then a renewal: the check fails,
	// certsync rolls back and reloads (a reload HAProxy cannot load, so
	// its worker serves on).
	h.WriteConfig(t, "    bogus-directive")
	lineage, v2 := le.Write(name, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	res = certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
	noSecrets(t, "node sync", res)
	if res.Code == 0 {
		t.Fatalf("node sync exited 0 though haproxy's check failed:\n%s", res.Stderr)
	}
	if !strings.Contains(res.Stderr, "bogus-directive") || !strings.Contains(res.Stderr, "rolled back to "+first) {
		t.Errorf("node sync does not say the check failed on the typo and it rolled back to %s:\n%s", first, res.Stderr)
	}
	if got, err := os.Readlink(installDir); err != nil || got != first {
		t.Fatalf("after the failed check install_dir points at %q (%v), want the first version %q", got, err, first)
	}
	checkCombined(t, combined, v1)
	if p := h.WaitReloads(t, 2); p.Reloads != 2 || p.Failed == 0 {
		t.Fatalf("after the rollback haproxy's master says %+v, want a second reload (that could not load)", p)
	}
	if got := nginxtest.ServedLeaf(t, h.Addr, name); !got.Equal(v1.Leaf) {
		t.Fatalf("haproxy serves serial %x after the rollback, want the first %x", got.SerialNumber, v1.Leaf.SerialNumber)
	}

	// The typo fixed, HAProxy reloaded by hand: a new worker reads
	// install_dir, which holds the first certificate.
	h.WriteConfig(t, "")
	h.Reload(t)
	if got := nginxtest.ServedLeaf(t, h.Addr, name); !got.Equal(v1.Leaf) {
		t.Fatalf("haproxy serves serial %x after its reload, want the first %x", got.SerialNumber, v1.Leaf.SerialNumber)
	}

	// `node install` tries the failed version again, and it goes in.
	res = mustCertsync(t, "node", "install", "--config", web1.Config, name)
	noSecrets(t, "node install", res)
	if p := h.WaitReloads(t, 4); p.Failed != 0 {
		t.Fatalf("after node install haproxy's master says %+v, want a fourth reload that loaded", p)
	}
	if got := nginxtest.ServedLeaf(t, h.Addr, name); !got.Equal(v2.Leaf) {
		t.Fatalf("haproxy serves serial %x after node install, want the second %x", got.SerialNumber, v2.Leaf.SerialNumber)
	}
	checkCombined(t, combined, v2)
}

// editYAML reads the YAML file at path, lets edit change it, and writes it
// back: a node.yaml or publisher.yaml changed as an operator would.
func editYAML(t testing.TB, path string, edit func(map[string]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	edit(doc)
	writeYAML(t, path, doc)
}

// commandLine makes args one check or reload line: each word in single
// quotes, as subscriber.ParseCommand reads them.
func commandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// checkCombined checks that the combined.pem HAProxy reads is c's full
// chain followed by its key, and only its owner may read it.
func checkCombined(t testing.TB, path string, c *testcert.Cert) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read combined.pem: %v", err)
	}
	if !bytes.Equal(got, slices.Concat(c.FullChain, c.PrivKey)) {
		t.Errorf("combined.pem is not the full chain and key of serial %x", c.Leaf.SerialNumber)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("combined.pem has mode %v, want 0600", perm)
	}
}

// noSecrets fails the test if what certsync printed holds a private key.
func noSecrets(t testing.TB, what string, res cliResult) {
	t.Helper()
	if strings.Contains(res.Stdout+res.Stderr, "PRIVATE KEY") {
		t.Fatalf("%s printed a private key", what)
	}
}
