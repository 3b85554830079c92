package main

// Security acceptance tests of issue 4 through the command, against real
// parts: `certsync server` as a process, keys from
// `certsync keygen`, configurations on disk, `certsync node sync` as cron
// runs it.
//
//	security_e2e_test.go     signing-key rotation and node removal, each following docs/SECURITY.md step by step;
//	                         the helpers below, shared by the other *_e2e_test.go files of this suite
//	adversarial_e2e_test.go  every envelope field tampered, replays, downgrade after a restart, a max_payload no envelope fits,
//	                         headers that lie or are huge
//	symlink_e2e_test.go      symbolic links and foreign owners on the stage and install paths
//	forged_headers_e2e_test.go  forged headers on a subject must not block the publisher
//
// The suite relies on, and does not repeat: the refusal of each check at
// the package level (subscriber/node_test.go), byte flips and test vectors
// of the envelope (crypto/envelope_test.go, crypto/vectors_test.go),
// garbage, empty and moved bodies through the command
// (refusals_e2e_test.go), key file permissions and the NATS permissions of
// each credential (crypto/keyfile_test.go, internal/authconf).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"

	"github.com/certsync/certsync/internal/testing/treetest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// nodeDirs are the folders a fleet node writes to: its stage folder and the
// parent of its install folders (writeNodeConfig puts them side by side).
func nodeDirs(n *fleetNode) []string {
	return []string{n.StageDir, filepath.Join(filepath.Dir(n.StageDir), "installed")}
}

// checkRefused fails the test unless a `node sync` run exited 1 with
// exactly one error line, naming the certificate name and saying want, and
// printed nothing on stdout. It returns the error line.
func checkRefused(t testing.TB, what string, res cliResult, name, want string) string {
	t.Helper()
	errs := res.errorLines()
	if res.Code != 1 || len(errs) != 1 || !strings.Contains(errs[0], fmt.Sprintf("%q", name)) || !strings.Contains(errs[0], want) {
		t.Errorf("%s: node sync exit status %d, want 1 and one error line naming %q and saying %q; stderr:\n%s",
			what, res.Code, name, want, res.Stderr)
	}
	if res.Stdout != "" {
		t.Errorf("%s: node sync printed on stdout: %q", what, res.Stdout)
	}
	if len(errs) == 0 {
		return ""
	}
	return errs[0]
}

// statusRow runs `certsync status --json` with the publisher's
// configuration and returns the row of node and certificate name (nil when
// there is none). Its exit status is not checked: a refusal makes it 1.
func statusRow(t testing.TB, publisherConfig, node, name string) map[string]any {
	t.Helper()
	res := certsyncCmd(t, "status", "--json", "--config", publisherConfig)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil {
		t.Fatalf("certsync status --json printed no JSON array (exit %d): %v\nstdout:\n%s\nstderr:\n%s", res.Code, err, res.Stdout, res.Stderr)
	}
	for _, r := range rows {
		if r["node"] == node && r["certificate"] == name {
			return r
		}
	}
	return nil
}

// checkStatusRefused fails the test unless certsync status shows node's
// certificate name failed with an error saying want.
func checkStatusRefused(t testing.TB, what, publisherConfig, node, name, want string) {
	t.Helper()
	r := statusRow(t, publisherConfig, node, name)
	if r == nil || r["state"] != wire.StateFailed || !strings.Contains(fmt.Sprint(r["error"]), want) {
		t.Errorf("%s: certsync status shows %s %s as %v, want state %q and an error saying %q", what, node, name, r, wire.StateFailed, want)
	}
}

// checkStatusHealthy fails the test unless certsync status shows node's
// certificate name installed with the fingerprint and no error.
func checkStatusHealthy(t testing.TB, publisherConfig, node, name, fingerprint string) {
	t.Helper()
	r := statusRow(t, publisherConfig, node, name)
	if r == nil || r["state"] != wire.StateInstalled || r["installed_fingerprint"] != fingerprint || r["error"] != "" {
		t.Errorf("certsync status shows %s %s as %v, want installed %s without error", node, name, r, fingerprint)
	}
}

// checkInstalled fails the test unless installDir shows the four files of
// the lineage, byte for byte.
func checkInstalled(t testing.TB, installDir, lineage string) {
	t.Helper()
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, err := os.ReadFile(filepath.Join(lineage, f))
		if err != nil {
			t.Fatalf("read lineage file: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(installDir, f))
		if err != nil || string(got) != string(want) {
			t.Errorf("installed %s in %s differs from the lineage's (%v)", f, installDir, err)
		}
	}
}

// installedMatches reports whether installDir shows the four files of the
// lineage, byte for byte: a condition to poll.
func installedMatches(installDir, lineage string) bool {
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, err := os.ReadFile(filepath.Join(lineage, f))
		if err != nil {
			return false
		}
		got, err := os.ReadFile(filepath.Join(installDir, f))
		if err != nil || !bytes.Equal(got, want) {
			return false
		}
	}
	return true
}

// newestBundle reads the newest message on certificate name's subject
// with a nats.go client, headers and body.
func newestBundle(t testing.TB, js jetstream.JetStream, name string) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatalf("stream %s: %v", wire.Stream, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, wire.Subject(name))
	if err != nil {
		t.Fatalf("newest bundle of %q: %v", name, err)
	}
	return m
}

// forgedID numbers the message ids of forged messages: a repeated
// Nats-Msg-Id would make the stream drop the message as a duplicate.
var forgedID atomic.Uint64

// publishForged stores body on subject with a copy of header and a fresh
// Nats-Msg-Id, as anyone allowed to publish to certsync.bundle.> can, and
// returns its stream sequence. Of header, only what is not a NATS header
// (Nats-*) is copied: a message read back holds the expectations of its
// own publish and the headers of the get that read it, which would
// contradict the new message.
func publishForged(t testing.TB, js jetstream.JetStream, subject string, body []byte, header nats.Header) uint64 {
	t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = body
	for k, v := range header {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = slices.Clone(v)
		}
	}
	msg.Header.Set(wire.HeaderMsgID, fmt.Sprintf("forged-%d-%d", time.Now().UnixNano(), forgedID.Add(1)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publish a forged message on %s: %v", subject, err)
	}
	if ack.Duplicate {
		t.Fatalf("the forged message on %s was dropped as a duplicate", subject)
	}
	return ack.Sequence
}

// setTrusted rewrites node n's node.yaml (as newFleet wrote it, with the
// certificates names) to trust exactly the keys trusted.
func setTrusted(t testing.TB, f *fleet, n *fleetNode, names []string, trusted ...string) {
	t.Helper()
	certs := map[string]map[string]string{}
	for _, name := range names {
		certs[name] = nil
	}
	identity := filepath.Join(f.Dir, n.Name, "node.key")
	writeNodeConfig(t, n.Config, nodeConfig{
		Name: n.Name, NATS: natsConfig{URL: f.PublisherConfig.NATS.URL}, Identity: identity,
		TrustedPublishers: trusted, StageDir: n.StageDir, Certificates: certs,
	})
}

// signerOf is the signer field of an envelope (docs/FORMAT.md: 32 bytes at
// offset 18+n), as the text nodes list in trusted_publishers.
func signerOf(t testing.TB, envelope []byte) string {
	t.Helper()
	f := parseFields(t, envelope)
	h, err := crypto.Verify(envelope, []crypto.PublicKey{mustPublicKey(t, envelope[f.signer:f.signer+32])})
	if err != nil {
		t.Fatalf("envelope does not verify under its own signer: %v", err)
	}
	return h.Signer.String()
}

// mustPublicKey turns 32 raw key bytes into a crypto.PublicKey through its
// text form.
func mustPublicKey(t testing.TB, raw []byte) crypto.PublicKey {
	t.Helper()
	var zero crypto.PublicKey
	prefix, _, _ := strings.Cut(zero.String(), ":")
	k, err := crypto.ParsePublicKey(prefix + ":" + b64(raw))
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	return k
}

// TestSigningKeyRotationE2E is acceptance 5 of issue 4, the rotation: it
// follows "Rotating the signing key" in docs/SECURITY.md step by step, then
// shows that the old key, once dropped, signs nothing a node accepts.
func TestSigningKeyRotationE2E(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	names := []string{"example.com"}
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: le.Live(), Certificates: map[string][]string{"example.com": {"web1", "web2"}}})
	nodes := []*fleetNode{f.Nodes["web1"], f.Nodes["web2"]}
	oldKey := f.Signing
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	for _, n := range nodes {
		f.sync(t, n.Name)
		if s := readStaged(t, n.StageDir, "example.com"); s.Signer != oldKey {
			t.Fatalf("%s staged a bundle signed by %s, want the old key %s", n.Name, s.Signer, oldKey)
		}
	}

	// 1. A new signing key.
	newFile := filepath.Join(f.Dir, "signing-2.key")
	newKey := keygenSigning(t, newFile)

	// 2. Every node trusts both keys; what they hold stays valid.
	for _, n := range nodes {
		setTrusted(t, f, n, names, oldKey, newKey)
		f.sync(t, n.Name)
	}

	// 3. publisher.yaml signs with the new key.
	oldFile := f.PublisherConfig.SigningKey
	f.PublisherConfig.SigningKey = newFile
	writePublisherConfig(t, f.Publisher, f.PublisherConfig)

	// 4. republish signs the newest bundle of every certificate with the
	// new key: the publisher treats a bundle it cannot verify with its own
	// key as not its own, and publishes over it. The nodes, which hold that
	// certificate already, change nothing.
	mustCertsync(t, "republish", "--config", f.Publisher)
	js := natstest.JetStream(t, srv.URL)
	if got := signerOf(t, newestBundle(t, js, "example.com").Data); got != newKey {
		t.Fatalf("after republish the newest bundle is signed by %s, want the new key %s", got, newKey)
	}
	for _, n := range nodes {
		f.sync(t, n.Name)
		checkStaged(t, n.StageDir, "example.com", lineage)
	}
	// A renewal after the switch is signed with the new key too.
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	if got := signerOf(t, newestBundle(t, js, "example.com").Data); got != newKey {
		t.Fatalf("the renewal published after the switch is signed by %s, want the new key %s", got, newKey)
	}

	// 5. Every node holds it: certsync status exits 0.
	for _, n := range nodes {
		f.sync(t, n.Name)
		checkStaged(t, n.StageDir, "example.com", lineage)
		if s := readStaged(t, n.StageDir, "example.com"); s.Signer != newKey {
			t.Errorf("%s staged a bundle signed by %s, want the new key", n.Name, s.Signer)
		}
	}
	if res := certsyncCmd(t, "status", "--config", f.Publisher); res.Code != 0 {
		t.Fatalf("certsync status after the renewal: exit %d, want 0\n%s%s", res.Code, res.Stdout, res.Stderr)
	}

	// 6. The nodes drop the old key.
	for _, n := range nodes {
		setTrusted(t, f, n, names, newKey)
		f.sync(t, n.Name)
	}

	// 7. The old key file goes; a copy of it (stolen, or a publisher.yaml
	// somebody forgot to switch) signs nothing a node accepts.
	stolen := filepath.Join(t.TempDir(), "stolen.key")
	data, err := os.ReadFile(oldFile)
	if err != nil {
		t.Fatal(err)
	}
	treetest.WriteFile(t, stolen, data, 0o600)
	if err := os.Remove(oldFile); err != nil {
		t.Fatal(err)
	}
	staleCfg := f.PublisherConfig
	staleCfg.SigningKey = stolen
	stale := writePublisherConfig(t, filepath.Join(t.TempDir(), "publisher.yaml"), staleCfg)

	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", stale, "--lineage", lineage)
	for _, n := range nodes {
		before := treetest.Snapshot(t, nodeDirs(n)...)
		res := certsyncCmd(t, "node", "sync", "--config", n.Config, "--timeout", "30s")
		checkRefused(t, n.Name+" with a bundle signed by the dropped key", res, "example.com", crypto.ErrUntrustedSigner.Error())
		treetest.Unchanged(t, n.Name+" after a bundle signed by the dropped key", before, nodeDirs(n)...)
		checkStatusRefused(t, n.Name, f.Publisher, n.Name, "example.com", crypto.ErrUntrustedSigner.Error())
	}

	// The next renewal, signed with the new key, arrives.
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	for _, n := range nodes {
		f.sync(t, n.Name)
		checkStaged(t, n.StageDir, "example.com", lineage)
		checkInstalled(t, filepath.Join(filepath.Dir(n.StageDir), "installed", "example.com"), lineage)
		checkStatusHealthy(t, f.Publisher, n.Name, "example.com", readStaged(t, n.StageDir, "example.com").Fingerprint.String())
	}
}

// removalFleet is the management host and three nodes of
// TestNodeRemovalE2E, under least privilege: each has its own nkey from
// `certsync auth`, and the server runs the generated auth.conf.
type removalFleet struct {
	dir, url, auth string
	publisher      string            // publisher.yaml
	signing        string            // the signing key's path
	lineages       string            // certbot's live folder
	recipients     map[string]string // node -> age recipient
}

// writePublisher writes publisher.yaml with certs (certificate -> nodes)
// and the nodes they name.
func (r *removalFleet) writePublisher(t *testing.T, certs map[string][]string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "nats: {url: %q, nkey: %s}\nsigning_key: %s\nlineages: %s\ntimeout: 20s\nnodes:\n",
		r.url, filepath.Join(r.auth, "publisher.nk"), r.signing, r.lineages)
	var nodes []string
	for _, ns := range certs {
		nodes = append(nodes, ns...)
	}
	slices.Sort(nodes)
	for _, n := range slices.Compact(nodes) {
		fmt.Fprintf(&b, "  %s: %s\n", n, r.recipients[n])
	}
	b.WriteString("certificates:\n")
	for _, name := range sortedNames(certs) {
		fmt.Fprintf(&b, "  %s: [%s]\n", name, strings.Join(certs[name], ", "))
	}
	treetest.WriteFile(t, r.publisher, []byte(b.String()), 0o600)
}

// TestNodeRemovalE2E is acceptance 5 of issue 4, node removal: it follows
// "Removing a node" in docs/SECURITY.md step by step with three nodes under
// least privilege. The removed node, with its old configuration, identity
// and credential, never gets a bundle published after its removal: sealed
// without it while its consumer still exists, then no consumer, then no
// login; the other two get every one.
func TestNodeRemovalE2E(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	lin := newLineages(t)
	addr := loopback.FreeAddr(t)
	r := &removalFleet{
		dir: dir, url: "nats://" + addr, auth: filepath.Join(dir, "auth"),
		publisher: filepath.Join(dir, "publisher.yaml"), signing: filepath.Join(dir, "signing.key"),
		lineages: lin.Live(), recipients: map[string]string{},
	}
	signing := keygenSigning(t, r.signing)
	all := map[string][]string{"example.com": {"web1", "web2", "web3"}, "www.example": {"web2", "web3"}}
	nodeNames := []string{"web1", "web2", "web3"}
	for _, n := range nodeNames {
		if err := os.Mkdir(filepath.Join(dir, n), 0o700); err != nil {
			t.Fatal(err)
		}
		r.recipients[n] = keygenNode(t, filepath.Join(dir, n, "node.key"))
	}
	r.writePublisher(t, all)
	mustCertsync(t, "auth", "--config", r.publisher, "--out", r.auth)
	conf := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("listen: %q\njetstream { store_dir: %q }\ninclude ./auth/auth.conf\n",
		addr, filepath.Join(dir, "store"))), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startCertsync(t, nil, "server", "--config", conf)
	srv.WaitLog(t, serverReady, "server_ready")
	mustCertsync(t, "setup", "--config", r.publisher, "--nkey", filepath.Join(r.auth, "admin.nk"))

	nodeCfg := map[string]string{}
	for _, n := range nodeNames {
		var b strings.Builder
		fmt.Fprintf(&b, "name: %s\nnats: {url: %q, nkey: %s}\nidentity: %s\ntrusted_publishers: [%q]\nstage_dir: %s\ncertificates:\n",
			n, r.url, filepath.Join(r.auth, n+".nk"), filepath.Join(dir, n, "node.key"), signing, filepath.Join(dir, n, "stage"))
		for _, name := range sortedNames(all) {
			if slices.Contains(all[name], n) {
				fmt.Fprintf(&b, "  %s:\n    install_dir: %s\n", name, filepath.Join(dir, n, "installed", name))
			}
		}
		nodeCfg[n] = filepath.Join(dir, n, "node.yaml")
		treetest.WriteFile(t, nodeCfg[n], []byte(b.String()), 0o600)
	}
	sync := func(n string) cliResult {
		t.Helper()
		return certsyncCmd(t, "node", "sync", "--config", nodeCfg[n], "--timeout", "30s")
	}
	mustSync := func(n string) {
		t.Helper()
		if res := sync(n); res.Code != 0 {
			t.Fatalf("node sync %s: exit %d\n%s", n, res.Code, res.Stderr)
		}
	}
	live := map[string]string{}
	for _, name := range sortedNames(all) {
		live[name], _ = lin.Write(name, certOptions{})
		mustCertsync(t, "publish", "--config", r.publisher, "--lineage", live[name])
	}
	for _, n := range nodeNames {
		mustSync(n)
	}
	web3Dirs := []string{filepath.Join(dir, "web3", "stage"), filepath.Join(dir, "web3", "installed")}
	for _, name := range sortedNames(all) {
		checkStaged(t, web3Dirs[0], name, live[name])
	}
	web3 := treetest.Snapshot(t, web3Dirs...)
	checkHolds := func(name string) {
		t.Helper()
		for _, n := range all[name] {
			if n == "web3" {
				continue
			}
			mustSync(n)
			checkStaged(t, filepath.Join(dir, n, "stage"), name, live[name])
			checkInstalled(t, filepath.Join(dir, n, "installed", name), live[name])
		}
	}
	admin, err := nats.NkeyOptionFromSeed(filepath.Join(r.auth, "admin.nk"))
	if err != nil {
		t.Fatal(err)
	}
	js := natstest.JetStream(t, r.url, admin)
	web3Identity, err := crypto.LoadIdentities(filepath.Join(dir, "web3", "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	trusted := []crypto.PublicKey{mustParsePublicKey(t, signing)}
	notForWeb3 := func(name string) {
		t.Helper()
		if _, _, err := crypto.Open(newestBundle(t, js, name).Data, trusted, web3Identity); !errors.Is(err, crypto.ErrNotRecipient) {
			t.Errorf("web3's identity opening the newest bundle of %q: %v, want %v", name, err, crypto.ErrNotRecipient)
		}
	}

	// 1. web3 leaves nodes: and every certificate.
	remaining := map[string][]string{"example.com": {"web1", "web2"}, "www.example": {"web2"}}
	r.writePublisher(t, remaining)

	// A renewal published now (certbot's hook may run before step 2) is
	// sealed without web3, though its consumer still delivers it.
	lin.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", r.publisher, "--lineage", live["example.com"])
	notForWeb3("example.com")
	res := sync("web3")
	checkRefused(t, "web3 with a bundle sealed without it", res, "example.com", crypto.ErrNotRecipient.Error())
	treetest.Unchanged(t, "web3 after a bundle sealed without it", web3, web3Dirs...)
	checkHolds("example.com")

	// 2. certsync republish names what web3 may hold and deletes its
	// consumer.
	res = certsyncCmd(t, "republish", "--config", r.publisher)
	if res.Code != 0 {
		t.Fatalf("certsync republish: exit %d\n%s", res.Code, res.Stderr)
	}
	var warnings []string
	for l := range strings.Lines(res.Stderr) {
		if strings.HasPrefix(l, "certsync: warning: ") {
			warnings = append(warnings, strings.TrimSpace(l))
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `node "web3" was removed`) ||
		!strings.Contains(warnings[0], "example.com, www.example") || !strings.Contains(warnings[0], "reissue") {
		t.Errorf("certsync republish warned %q, want one line naming web3, example.com and www.example, and saying reissue", warnings)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName("web3")); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer %s after republish: %v, want it deleted", wire.ConsumerName("web3"), err)
	}
	notForWeb3("www.example")
	checkHolds("www.example")
	res = sync("web3")
	if errs := res.errorLines(); res.Code != 1 || len(errs) != 1 || !strings.Contains(errs[0], `"`+wire.ConsumerName("web3")+`"`) ||
		!strings.Contains(errs[0], "does not exist") {
		t.Errorf("node sync web3 without its consumer: exit %d, want 1 and one error line saying its consumer does not exist; stderr:\n%s", res.Code, res.Stderr)
	}
	treetest.Unchanged(t, "web3 without its consumer", web3, web3Dirs...)

	// 3. certsync auth again, which names web3's seed, and a server reload:
	// web3's credential stops working.
	res = mustCertsync(t, "auth", "--config", r.publisher, "--out", r.auth)
	if ev := logEvents(res.Stderr, "seed_unused"); len(ev) != 1 || ev[0]["path"] != filepath.Join(r.auth, "web3.nk") {
		t.Errorf("certsync auth after the removal logged seed_unused %v, want web3.nk once", ev)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.WaitLog(t, 10*time.Second, "server_reloaded")
	natstest.WaitFor(t, 10*time.Second, "web3's credential to be refused", func() bool {
		nk, err := nats.NkeyOptionFromSeed(filepath.Join(r.auth, "web3.nk"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := nats.Connect(r.url, nk, nats.MaxReconnects(0))
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	res = sync("web3")
	if errs := res.errorLines(); res.Code != 1 || len(errs) != 1 || !strings.Contains(strings.ToLower(errs[0]), "authorization") {
		t.Errorf("node sync web3 with its revoked credential: exit %d, want 1 and one error line saying authorization; stderr:\n%s", res.Code, res.Stderr)
	}
	if err := os.Remove(filepath.Join(r.auth, "web3.nk")); err != nil {
		t.Fatal(err)
	}

	// 4. Reissue what web3 held: the remaining nodes get it, web3 nothing.
	for _, name := range sortedNames(remaining) {
		lin.Write(name, certOptions{})
		mustCertsync(t, "publish", "--config", r.publisher, "--lineage", live[name])
		notForWeb3(name)
		checkHolds(name)
	}
	treetest.Unchanged(t, "web3 after its removal", web3, web3Dirs...)
	if res := certsyncCmd(t, "status", "--config", r.publisher); res.Code != 0 {
		t.Errorf("certsync status after the removal: exit %d, want 0 (web3's records are unconfigured)\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
}

// mustParsePublicKey parses a trusted_publishers line.
func mustParsePublicKey(t testing.TB, s string) crypto.PublicKey {
	t.Helper()
	k, err := crypto.ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
