package main

// The NATS deployments of deploy/nats, each started exactly as shipped: the
// test copies the files, replaces only the placeholders their header
// comments name (addresses become loopback ports, /etc/certsync/tls and the
// store become the test's folders; the include paths stay), and runs them
// with `certsync server --config`, as certsync-server.service does. Then the
// whole least-privilege path: certsync auth, certsync setup with admin.nk,
// publish with publisher.nk, node sync with the node's nkey (and an install),
// and certsync status exiting 0.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// deployDir is deploy/nats, from this package's folder.
const deployDir = "../../deploy/nats"

// installDeployConf copies deploy/nats/rel to dst, replacing each old
// string of repl (old, new pairs) with its new one. Each old string must
// occur in the file, and afterwards no line but comments may still hold
// a placeholder: the test substitutes what an operator substitutes, no
// more and no less.
func installDeployConf(t *testing.T, rel, dst string, repl ...string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("deploy/nats/%s: no %q to replace: the file and its test disagree", rel, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	for n, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, p := range []string{"/etc/certsync", "/var/lib/certsync", "example.net", "0.0.0.0"} {
			if strings.Contains(line, p) {
				t.Fatalf("deploy/nats/%s line %d still holds the placeholder %q after the operator's replacements: %s", rel, n+1, p, line)
			}
		}
	}
	treetest.MkdirAll(t, filepath.Dir(dst), 0o700)
	treetest.WriteFile(t, dst, []byte(s), 0o600)
}

// copyInto copies the file src to dst with mode perm, making dst's folder.
func copyInto(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	treetest.MkdirAll(t, filepath.Dir(dst), 0o700)
	treetest.WriteFile(t, dst, data, perm)
}

// deployHost is one NATS server's /etc/certsync: its configuration, its
// tls/ folder and its nats-auth/ folder, in a temporary folder.
type deployHost struct {
	// Etc stands for /etc/certsync; Store for /var/lib/certsync/nats.
	Etc, Store string
}

// newDeployHost makes a host folder with a server certificate from ca in
// Etc/tls: server.pem (leaf and chain), server-key.pem (0600) and ca.pem
// (the root). The certificate is valid for localhost and 127.0.0.1, for
// serverAuth and clientAuth (routes and leaf links are clients too).
func newDeployHost(t *testing.T, ca *testcert.CA) *deployHost {
	t.Helper()
	root := t.TempDir()
	h := &deployHost{Etc: filepath.Join(root, "etc"), Store: filepath.Join(root, "store")}
	c := ca.Issue(t, testcert.Options{Names: []string{"localhost", "127.0.0.1"}, ClientAuth: true})
	tls := filepath.Join(h.Etc, "tls")
	copyBytes := func(name string, data []byte, perm os.FileMode) {
		treetest.MkdirAll(t, tls, 0o700)
		treetest.WriteFile(t, filepath.Join(tls, name), data, perm)
	}
	copyBytes("server.pem", c.FullChain, 0o644)
	copyBytes("server-key.pem", c.PrivKey, 0o600)
	copyBytes("ca.pem", ca.RootPEM, 0o644)
	return h
}

// paths are the replacements of the host's paths.
func (h *deployHost) paths() []string {
	return []string{"/var/lib/certsync/nats", h.Store, "/etc/certsync/tls/", filepath.Join(h.Etc, "tls") + "/"}
}

// start runs `certsync server --config Etc/nats-server.conf` and waits
// until it is ready.
func (h *deployHost) start(t *testing.T) *proc {
	t.Helper()
	p := startCertsync(t, nil, "server", "--config", filepath.Join(h.Etc, "nats-server.conf"))
	natstest.WaitFor(t, serverReady, "certsync server --config "+h.Etc+"/nats-server.conf to be ready", func() bool {
		return len(logEvents(p.Log(), "server_ready")) > 0 || p.exited()
	})
	if p.exited() {
		t.Fatalf("certsync server --config %s/nats-server.conf exited with status %d:\n%s", h.Etc, p.code, p.Log())
	}
	return p
}

// deployMgmt is the management host's side: the CA, the signing key,
// publisher.yaml with one node, its lineages, and the credentials
// `certsync auth` wrote into Auth.
type deployMgmt struct {
	Dir, Auth, Publisher, Signing, CA string
	Lineages                          *lineages
	ca                                *testcert.CA
}

// newDeployMgmt writes publisher.yaml (nats url with the publisher's nkey
// and the private CA, stream replicas) for node web1 and runs certsync auth.
func newDeployMgmt(t *testing.T, url string, replicas int) *deployMgmt {
	t.Helper()
	m := &deployMgmt{Dir: t.TempDir(), ca: testcert.NewCA(t)}
	m.Auth = filepath.Join(m.Dir, "nats-auth")
	m.CA = filepath.Join(m.Dir, "ca.pem")
	treetest.WriteFile(t, m.CA, m.ca.RootPEM, 0o644)
	m.Lineages = newLineages(t)
	m.Signing = keygenSigning(t, filepath.Join(m.Dir, "signing.key"))
	recipient := keygenNode(t, filepath.Join(m.Dir, "web1.key"))
	y := fmt.Sprintf("nats: {url: %q, nkey: %s, tls: {ca: %s}}\nsigning_key: %s\nlineages: %s\n"+
		"nodes:\n  web1: %s\ncertificates:\n  example.com: [web1]\nstream: {replicas: %d}\ntimeout: 20s\n",
		url, filepath.Join(m.Auth, "publisher.nk"), m.CA, filepath.Join(m.Dir, "signing.key"), m.Lineages.Live(), recipient, replicas)
	m.Publisher = writeFile(t, filepath.Join(m.Dir, "publisher.yaml"), y)
	mustCertsync(t, "auth", "--config", m.Publisher, "--out", m.Auth)
	return m
}

// waitJetStream waits until the JetStream of the server at url answers
// the admin (a cluster has elected its meta leader).
func (m *deployMgmt) waitJetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	admin, err := nats.NkeyOptionFromSeed(filepath.Join(m.Auth, "admin.nk"))
	if err != nil {
		t.Fatal(err)
	}
	var nc *nats.Conn
	natstest.WaitFor(t, 30*time.Second, "the admin to connect to "+url, func() bool {
		nc, err = nats.Connect(url, admin, nats.RootCAs(m.CA), nats.Timeout(5*time.Second))
		return err == nil
	})
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, "JetStream at "+url+" to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return js
}

// pipeline runs setup, publish, node sync through nodeURL (installing
// example.com), and status, each of which must exit 0.
func (m *deployMgmt) pipeline(t *testing.T, nodeURL string) {
	t.Helper()
	mustCertsync(t, "setup", "--config", m.Publisher, "--nkey", filepath.Join(m.Auth, "admin.nk"))
	live, _ := m.Lineages.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", m.Publisher, "--lineage", live)

	node := t.TempDir()
	copyInto(t, filepath.Join(m.Auth, "web1.nk"), filepath.Join(node, "web1.nk"), 0o600)
	copyInto(t, m.CA, filepath.Join(node, "ca.pem"), 0o644)
	install := filepath.Join(node, "installed", "example.com")
	nodeCfg := writeFile(t, filepath.Join(node, "node.yaml"), fmt.Sprintf(
		"name: web1\nnats: {url: %q, nkey: %s, tls: {ca: %s}}\nidentity: %s\ntrusted_publishers: [%q]\nstage_dir: %s\n"+
			"certificates:\n  example.com:\n    install_dir: %s\n",
		nodeURL, filepath.Join(node, "web1.nk"), filepath.Join(node, "ca.pem"), filepath.Join(m.Dir, "web1.key"),
		m.Signing, filepath.Join(node, "stage"), install))
	res := certsyncCmd(t, "node", "sync", "--config", nodeCfg, "--timeout", "30s")
	if res.Code != 0 {
		t.Fatalf("certsync node sync through %s: exit %d\n%s", nodeURL, res.Code, res.Stderr)
	}
	checkStaged(t, filepath.Join(node, "stage"), "example.com", live)
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, _ := os.ReadFile(filepath.Join(live, f))
		if got, err := os.ReadFile(filepath.Join(install, f)); err != nil || string(got) != string(want) {
			t.Errorf("installed %s differs from the lineage's (%v)", f, err)
		}
	}
	if res := certsyncCmd(t, "status", "--config", m.Publisher); res.Code != 0 {
		t.Fatalf("certsync status: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
}

// TestDeployNATSSingleE2E: deploy/nats/nats-server.conf, the management
// host's own server with TLS and the auth.conf include.
func TestDeployNATSSingleE2E(t *testing.T) {
	t.Parallel()
	port := loopback.FreePort(t)
	url := fmt.Sprintf("tls://127.0.0.1:%d", port)
	m := newDeployMgmt(t, url, 1)
	h := newDeployHost(t, m.ca)
	copyInto(t, filepath.Join(m.Auth, "auth.conf"), filepath.Join(h.Etc, "nats-auth", "auth.conf"), 0o644)
	installDeployConf(t, "nats-server.conf", filepath.Join(h.Etc, "nats-server.conf"),
		append([]string{"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", port)}, h.paths()...)...)
	h.start(t)
	m.waitJetStream(t, url)
	m.pipeline(t, url)
}

// TestDeployNATSClusterE2E: deploy/nats/cluster, three servers with TLS
// routes; the stream is created with three replicas, the publisher talks
// to the first server and the node syncs through the third.
func TestDeployNATSClusterE2E(t *testing.T) {
	t.Parallel()
	ports := loopback.FreePorts(t, 6)
	client := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }
	route := func(i int) int { return ports[3+i] }
	m := newDeployMgmt(t, "tls://"+client(0), 3)
	for i := range 3 {
		h := newDeployHost(t, m.ca)
		copyInto(t, filepath.Join(m.Auth, "auth.conf"), filepath.Join(h.Etc, "nats-auth", "auth.conf"), 0o644)
		repl := []string{
			"0.0.0.0:4222", client(i),
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", route(i)),
			"nats1.example.net:6222", fmt.Sprintf("localhost:%d", route(0)),
			"nats2.example.net:6222", fmt.Sprintf("localhost:%d", route(1)),
			"nats3.example.net:6222", fmt.Sprintf("localhost:%d", route(2)),
		}
		installDeployConf(t, "cluster/cluster.conf", filepath.Join(h.Etc, "cluster.conf"), append(repl, h.paths()...)...)
		installDeployConf(t, fmt.Sprintf("cluster/nats-server-%d.conf", i+1), filepath.Join(h.Etc, "nats-server.conf"))
		h.start(t)
	}
	js := m.waitJetStream(t, "tls://"+client(0))
	m.pipeline(t, "tls://"+client(2))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Errorf("stream %s: replicas %d, cluster %+v; want 3 replicas on three servers", wire.Stream, info.Config.Replicas, info.Cluster)
	}
}

// TestDeployNATSLeafE2E: deploy/nats/leaf, the management host's server
// with leafnodes.conf included, and a leaf server at a remote site; the
// publisher is on the hub, the node connects to the leaf only.
func TestDeployNATSLeafE2E(t *testing.T) {
	t.Parallel()
	ports := loopback.FreePorts(t, 3)
	hubURL := fmt.Sprintf("tls://127.0.0.1:%d", ports[0])
	m := newDeployMgmt(t, hubURL, 1)

	hub := newDeployHost(t, m.ca)
	copyInto(t, filepath.Join(m.Auth, "auth.conf"), filepath.Join(hub.Etc, "nats-auth", "auth.conf"), 0o644)
	installDeployConf(t, "nats-server.conf", filepath.Join(hub.Etc, "nats-server.conf"),
		append([]string{"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", ports[0]),
			// The one line leafnodes.conf's header says to add.
			"include ./nats-auth/auth.conf\n", "include ./nats-auth/auth.conf\ninclude ./leafnodes.conf\n"}, hub.paths()...)...)
	installDeployConf(t, "leaf/leafnodes.conf", filepath.Join(hub.Etc, "leafnodes.conf"),
		"0.0.0.0:7422", fmt.Sprintf("127.0.0.1:%d", ports[1]), "/etc/certsync/tls/", filepath.Join(hub.Etc, "tls")+"/")
	hub.start(t)
	m.waitJetStream(t, hubURL)

	leaf := newDeployHost(t, m.ca)
	copyInto(t, filepath.Join(m.Auth, "leaf-auth.conf"), filepath.Join(leaf.Etc, "nats-auth", "leaf-auth.conf"), 0o600)
	installDeployConf(t, "leaf/leaf.conf", filepath.Join(leaf.Etc, "nats-server.conf"),
		append([]string{
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", ports[2]),
			"tls://mgmt.example.net:7422", fmt.Sprintf("tls://127.0.0.1:%d", ports[1]),
		}, leaf.paths()...)...)
	p := leaf.start(t)
	natstest.WaitFor(t, 30*time.Second, "the leaf server to connect to the hub", func() bool {
		return strings.Contains(p.Log(), "Leafnode connection created")
	})
	m.pipeline(t, fmt.Sprintf("tls://127.0.0.1:%d", ports[2]))

	// The leaf link's credential is for leaf connections only: as a
	// client of the hub it is refused.
	leafKey, err := nats.NkeyOptionFromSeed(filepath.Join(m.Auth, "leaf.nk"))
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := nats.Connect(hubURL, leafKey, nats.RootCAs(m.CA), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("leaf.nk logs in to the hub as a client")
	}
}
