package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// sshKeygen runs ssh-keygen with args and fails the test unless it exits 0.
func sshKeygen(t *testing.T, args ...string) {
	t.Helper()
	bin := acmetest.RequireTool(t, "ssh-keygen")
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newSSHHostKey makes a host key with ssh-keygen, as a server's
// /etc/ssh/ssh_host_<type>_key, and returns its path and public key line
// without comment.
func newSSHHostKey(t *testing.T, dir, typ string) (string, string) {
	t.Helper()
	treetest.MkdirAll(t, dir, 0o700)
	path := filepath.Join(dir, "ssh_host_"+typ+"_key")
	args := []string{"-q", "-t", typ, "-N", "", "-C", "root@host", "-f", path}
	if typ == "rsa" {
		args = append(args, "-b", "2048")
	}
	sshKeygen(t, args...)
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	return path, f[0] + " " + f[1]
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	treetest.MkdirAll(t, filepath.Dir(path), 0o755)
	treetest.WriteFile(t, path, []byte(data), 0o644)
	return path
}

// TestImportMigratesOldScript migrates the old rsync script's configuration
// (per-certificate server lists naming servers by IP and by hostname, the
// management host's hashed known_hosts, a server with only an RSA host key)
// with import seed and import seed-node, then publishes, and each migrated
// node installs its certificates, decrypting with its SSH host key.
func TestImportMigratesOldScript(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	dir := t.TempDir()
	signing := keygenSigning(t, filepath.Join(dir, "signing.key"))

	// The servers, each with the host keys sshd made for it.
	type host struct{ server, node, key, pub string }
	hosts := []*host{
		{server: "web1.example.test", node: "web1"},
		{server: "127.0.0.12", node: "127-0-0-12"},
		{server: "web2.example.test", node: "web2"},
	}
	var kh strings.Builder
	for _, h := range hosts {
		h.key, h.pub = newSSHHostKey(t, filepath.Join(dir, "hosts", h.node), "ed25519")
		if h.node != "web2" {
			kh.WriteString(h.server + " " + h.pub + "\n")
		}
	}
	_, rsaPub := newSSHHostKey(t, filepath.Join(dir, "hosts", "db1"), "rsa")
	kh.WriteString("db1.example.test " + rsaPub + "\n")
	knownHosts := writeFile(t, filepath.Join(dir, "known_hosts"), kh.String())
	// The management host's known_hosts is hashed, as HashKnownHosts makes it.
	sshKeygen(t, "-H", "-f", knownHosts)
	hashedKH, err := os.ReadFile(knownHosts)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(hashedKH), "example.test") || strings.Contains(string(hashedKH), "127.0.0.12") {
		t.Fatalf("ssh-keygen -H left names in known_hosts:\n%s", hashedKH)
	}
	// ssh-keyscan output for web2, with its comment, and a CA line.
	f, err := os.OpenFile(knownHosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("# web2.example.test:22 SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\n[web2.example.test]:22 " + hosts[2].pub + "\n@cert-authority *.example.test " + hosts[0].pub + "\n")
	f.Close()

	// The old script's lists, with a bad line first.
	lists := filepath.Join(dir, "lists")
	writeFile(t, filepath.Join(lists, "example.com"), "# the shop\nweb1.example.test\n127.0.0.12\n\ndb1.example.test\n")
	writeFile(t, filepath.Join(lists, "example.org"), "WEB2.Example.Test.\nweb1.example.test web3.example.test\n")
	pub := filepath.Join(dir, "publisher.yaml")
	seedArgs := []string{"import", "seed", "--lists", lists, "--known-hosts", knownHosts, "--out", pub,
		"--nats", srv.URL, "--signing-key", filepath.Join(dir, "signing.key")}
	res := certsyncCmd(t, seedArgs...)
	if res.Code == 0 || len(res.errorLines()) != 1 || !strings.Contains(res.Stderr, `"`+filepath.Join(lists, "example.org")+`": line 2: `) {
		t.Fatalf("a bad line: exit %d, stderr:\n%s\nwant one error naming the file and line 2", res.Code, res.Stderr)
	}
	if _, err := os.Stat(pub); !os.IsNotExist(err) {
		t.Fatalf("publisher.yaml written despite the bad line: %v", err)
	}
	writeFile(t, filepath.Join(lists, "example.org"), "WEB2.Example.Test.\nweb1.example.test\n")
	res = mustCertsync(t, seedArgs...)
	for _, h := range hosts {
		if !strings.Contains(res.Stdout, h.node+"  ") {
			t.Errorf("the table lacks node %s:\n%s", h.node, res.Stdout)
		}
	}
	if !strings.Contains(res.Stderr, `certsync: warning: server "db1.example.test"`) || !strings.Contains(res.Stderr, "only ssh-rsa") {
		t.Errorf("no warning for the server without an ssh-ed25519 key:\n%s", res.Stderr)
	}
	cfg, err := loadPublisherConfig(pub)
	if err != nil {
		t.Fatalf("the written publisher.yaml does not load: %v", err)
	}
	if len(cfg.Nodes) != 3 || strings.Join(cfg.Certificates["example.com"], ",") != "127-0-0-12,web1" || strings.Join(cfg.Certificates["example.org"], ",") != "web1,web2" {
		t.Fatalf("publisher.yaml: nodes %v, certificates %v", cfg.Nodes, cfg.Certificates)
	}
	for _, h := range hosts {
		if cfg.Nodes[h.node] != h.pub {
			t.Errorf("node %s: recipient %q, want its host key %q", h.node, cfg.Nodes[h.node], h.pub)
		}
	}

	// Each node's old certificate list becomes its node.yaml.
	nodeLists := map[string]string{"web1": "example.com\nexample.org\n", "127-0-0-12": "# from /certsync/live\nexample.com\n", "web2": "example.org\n"}
	nodeDirs := map[string]string{}
	for _, h := range hosts {
		nd := filepath.Join(dir, "hosts", h.node)
		nodeDirs[h.node] = nd
		list := writeFile(t, filepath.Join(nd, "certsync.list"), nodeLists[h.node])
		mustCertsync(t, "import", "seed-node", "--list", list, "--name", h.node, "--nats", srv.URL, "--trusted-publisher", signing,
			"--identity", h.key, "--stage-dir", filepath.Join(nd, "stage"), "--install-parent", filepath.Join(nd, "live"),
			"--check", "true", "--reload", "true", "--out", filepath.Join(nd, "node.yaml"))
		if _, err := loadNodeConfig(filepath.Join(nd, "node.yaml")); err != nil {
			t.Fatalf("node %s: the written node.yaml does not load: %v", h.node, err)
		}
	}

	l := newLineages(t)
	live := map[string]string{}
	for _, name := range []string{"example.com", "example.org"} {
		live[name], _ = l.Write(name, certOptions{})
		mustCertsync(t, "publish", "--config", pub, "--lineage", live[name])
	}
	for _, h := range hosts {
		mustCertsync(t, "node", "sync", "--config", filepath.Join(nodeDirs[h.node], "node.yaml"), "--timeout", "30s")
		for _, c := range strings.Fields(strings.ReplaceAll(nodeLists[h.node], "# from /certsync/live", "")) {
			checkInstalled(t, filepath.Join(nodeDirs[h.node], "live", c), live[c])
		}
	}
}

// TestEnrollNewNode onboards a node with node init on the node and enroll on
// the management host, copying nothing but the line node init printed; the
// node then installs the certificate published before it existed.
func TestEnrollNewNode(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	l := newLineages(t)
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: l.Live(), Certificates: map[string][]string{"example.com": {"web1"}, "example.org": {"web1"}}})
	// A comment and a blank line the edit must keep.
	old, err := os.ReadFile(f.Publisher)
	if err != nil {
		t.Fatal(err)
	}
	old = append([]byte("# the management host's configuration\n\n"), old...)
	treetest.WriteFile(t, f.Publisher, old, 0o640)
	if err := os.Chmod(f.Publisher, 0o640); err != nil {
		t.Fatal(err)
	}
	live, _ := l.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	f.sync(t, "web1")

	// On the new node: nothing but the flags.
	nd := filepath.Join(t.TempDir(), "web3")
	init := mustCertsync(t, "node", "init", "--config", filepath.Join(nd, "etc", "node.yaml"), "--identity", filepath.Join(nd, "etc", "node.key"),
		"--name", "web3", "--nats", srv.URL, "--trusted-publisher", f.Signing, "--certificate", "example.com",
		"--stage-dir", filepath.Join(nd, "stage"), "--install-parent", filepath.Join(nd, "live"))
	line := strings.TrimSuffix(init.Stdout, "\n")
	if !strings.HasPrefix(line, "web3: age1") || strings.Contains(line, "\n") || init.Stderr != "" {
		t.Fatalf("node init printed %q, stderr %q; want one line \"web3: age1…\"", init.Stdout, init.Stderr)
	}
	fi, err := os.Stat(filepath.Join(nd, "etc", "node.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity: %v, mode %v", err, fi.Mode())
	}

	// On the management host: the printed line.
	res := mustCertsync(t, "enroll", "--config", f.Publisher, "--certificate", "example.com", line)
	if res.Stdout != "" {
		t.Errorf("enroll printed %q on stdout", res.Stdout)
	}
	now, err := os.ReadFile(f.Publisher)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(old)) {
		if !strings.Contains(string(now), strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "]")) {
			t.Errorf("enroll lost the line %q:\n%s", l, now)
		}
	}
	if fi, err := os.Stat(f.Publisher); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("publisher.yaml mode changed: %v %v", fi.Mode(), err)
	}
	cfg, err := loadPublisherConfig(f.Publisher)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nodes["web3"] != strings.TrimPrefix(line, "web3: ") || strings.Join(cfg.Certificates["example.com"], ",") != "web1,web3" || strings.Join(cfg.Certificates["example.org"], ",") != "web1" {
		t.Fatalf("publisher.yaml after enroll:\n%s", now)
	}

	mustCertsync(t, "node", "sync", "--config", filepath.Join(nd, "etc", "node.yaml"), "--timeout", "30s")
	checkInstalled(t, filepath.Join(nd, "live", "example.com"), live)

	// The same node again is refused, and nothing changes.
	res = certsyncCmd(t, "enroll", "--config", f.Publisher, "--certificate", "example.com", line)
	if res.Code == 0 || !strings.Contains(res.Stderr, `adding node "web3": already under nodes`) {
		t.Errorf("a second enroll: exit %d\n%s", res.Code, res.Stderr)
	}
	if again, _ := os.ReadFile(f.Publisher); !bytes.Equal(again, now) {
		t.Errorf("a refused enroll changed publisher.yaml")
	}
}

// TestNodeInitSSHHostKey: node init with an existing OpenSSH key prints the
// key's own public half as the recipient, and never rewrites the key.
func TestNodeInitSSHHostKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "ssh_host_ed25519_key")
	pub := sshHostKey(t, key)
	before, _ := os.ReadFile(key)
	signing := keygenSigning(t, filepath.Join(dir, "signing.key"))
	res := mustCertsync(t, "node", "init", "--config", filepath.Join(dir, "node.yaml"), "--identity", key, "--name", "web4",
		"--nats", "nats://127.0.0.1:4222", "--trusted-publisher", signing, "--certificate", "example.com",
		"--stage-dir", filepath.Join(dir, "stage"), "--install-parent", filepath.Join(dir, "live"))
	if res.Stdout != "web4: "+pub+"\n" {
		t.Errorf("node init printed %q, want %q", res.Stdout, "web4: "+pub+"\n")
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Errorf("node init changed the existing key")
	}
	cfg, err := loadNodeConfig(filepath.Join(dir, "node.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Node != "web4" || len(cfg.Identities) != 1 || cfg.Certificates["example.com"].InstallDir != filepath.Join(dir, "live", "example.com") {
		t.Errorf("node.yaml: %+v", cfg)
	}
}
