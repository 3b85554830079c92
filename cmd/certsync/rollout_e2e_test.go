package main

// Staged rollouts end to end, with the real binary, five nodes each checked
// and reloaded by its own real nginx, and the controller running as
// certsync-rollout.service runs it (`certsync rollout run`): canary first,
// a canary whose check fails halts the rollout, `rollout resume` goes on
// wave by wave after each soak, `rollout abort` puts the previous
// certificate back, `rollback` does so deliberately through the waves, a
// replay of the rolled-back-from envelope is refused, a renewal rolls out
// normally afterwards, and a certificate from another CA dated earlier is
// accepted, and a node that joins after the rollout completed installs at
// once.

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/nginxtest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// rolloutNode is one node of the rollout test: its nginx and the flag file
// that makes its check fail.
type rolloutNode struct {
	*fleetNode
	ngx  *nginxtest.Nginx
	flag string
}

func TestRolloutE2E(t *testing.T) {
	t.Parallel()
	const name = "example.com"
	srv := startServer(t)
	lin := newLineages(t)
	nodes := []string{"web1", "web2", "web3", "web4", "web5"}
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: lin.Live(), Certificates: map[string][]string{name: nodes}})
	// The policy of the issue: the canary first, then half of the others,
	// then all; a short soak so that the test runs in seconds.
	f.PublisherConfig.Rollout = map[string]any{
		"canary": []string{"web1"}, "waves": []string{"50%", "100%"}, "soak": "1s", "wave_deadline": "2m", "max_failures": 0,
	}
	writePublisherConfig(t, f.Publisher, f.PublisherConfig)

	// Each node serves a certificate it had before certsync from a real
	// folder at install_dir (certsync moves it aside at the first install),
	// with its own nginx; its check is nginx -t, failing while its flag
	// file exists.
	placeholder := testcert.NewCA(t).Issue(t, testcert.Options{Names: []string{name, "*." + name}})
	fleet := map[string]*rolloutNode{}
	for _, n := range nodes {
		fn := f.Nodes[n]
		dir := filepath.Dir(fn.Config)
		installDir := filepath.Join(dir, "installed", name)
		treetest.MkdirAll(t, installDir, 0o755)
		for file, data := range map[string][]byte{"cert.pem": placeholder.Cert, "chain.pem": placeholder.Chain, "fullchain.pem": placeholder.FullChain, "privkey.pem": placeholder.PrivKey} {
			treetest.WriteFile(t, filepath.Join(installDir, file), data, 0o600)
		}
		ngx := nginxtest.StartNginx(t, nginxtest.TLSFiles(filepath.Join(installDir, "fullchain.pem"), filepath.Join(installDir, "privkey.pem")))
		rn := &rolloutNode{fleetNode: fn, ngx: ngx, flag: filepath.Join(dir, "check-fails")}
		check := filepath.Join(dir, "check.sh")
		script := fmt.Sprintf("#!/bin/sh\nif [ -e %s ]; then echo 'check: refused by the test' >&2; exit 1; fi\nexec %s\n", rn.flag, shellWords(ngx.Command("-t", "-q")))
		treetest.WriteFile(t, check, []byte(script), 0o755)
		writeYAML(t, fn.Config, map[string]any{
			"name": n, "nats": natsConfig{URL: srv.URL}, "identity": filepath.Join(dir, "node.key"),
			"trusted_publishers": []string{f.Signing}, "stage_dir": fn.StageDir, "status_interval": "1s",
			"certificates": map[string]map[string]string{name: {
				"install_dir":    installDir,
				"check":          "/bin/sh " + check,
				"reload":         shellWords(ngx.Command("-s", "reload")),
				"verify":         ngx.Addr,
				"verify_timeout": "20s",
			}},
		})
		fleet[n] = rn
	}
	// The publisher creates the stream and the consumers; then the nodes
	// and the controller run.
	live, v1 := lin.Write(name, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	for _, n := range nodes {
		startCertsync(t, nil, "node", "run", "--config", f.Nodes[n].Config)
	}
	controller := startCertsync(t, nil, "rollout", "run", "--config", f.Publisher, "--interval", "200ms")

	// The first rollout: every node ends serving v1, canary first, then
	// web2 and web3 (half of the four others, in name order), then web4 and
	// web5, each wave after the one before has soaked.
	serves(t, fleet, nodes, v1.Leaf)
	checkWaveOrder(t, f.Publisher, name, [][]string{{"web1"}, {"web2", "web3"}, {"web4", "web5"}}, time.Second)
	mustCertsync(t, "status", "--config", f.Publisher)

	// v2, while web1's check fails: the canary fails and rolls back, the
	// rollout halts, and no other node installs.
	treetest.WriteFile(t, fleet["web1"].flag, nil, 0o644)
	live, v2 := lin.Write(name, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	natstest.WaitFor(t, time.Minute, "the rollout of v2 to halt", func() bool {
		res := certsyncCmd(t, "rollout", "status", "--config", f.Publisher, name)
		return res.Code == 1 && strings.Contains(res.Stdout, "halted")
	})
	res := certsyncCmd(t, "rollout", "status", "--config", f.Publisher, name)
	if !strings.Contains(res.Stdout, "web1") {
		t.Errorf("rollout status does not name the failed canary:\n%s", res.Stdout)
	}
	res = certsyncCmd(t, "status", "--config", f.Publisher)
	if res.Code != 1 || !strings.Contains(res.Stdout+res.Stderr, "halted") {
		t.Errorf("status with a halted rollout: exit %d, want 1 saying halted\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	// The halt holds: two soaks later, every node still serves v1, and the
	// others report that they wait.
	waitRecords(t, f.Publisher, name, "the other nodes to report they wait for their wave", func(rows map[string]fleetRow) bool {
		for _, n := range nodes[1:] {
			if rows[n].Rollout != wire.RolloutWaiting || rows[n].StagedFingerprint != fingerprintOf(v2.Leaf) {
				return false
			}
		}
		return true
	})
	serves(t, fleet, nodes, v1.Leaf)

	// The check fixed, resume: the canary tries again, then the waves in
	// order, each after its soak.
	if err := os.Remove(fleet["web1"].flag); err != nil {
		t.Fatal(err)
	}
	mustCertsync(t, "rollout", "resume", "--config", f.Publisher, name)
	serves(t, fleet, nodes, v2.Leaf)
	checkWaveOrder(t, f.Publisher, name, [][]string{{"web1"}, {"web2", "web3"}, {"web4", "web5"}}, time.Second)
	mustCertsync(t, "status", "--config", f.Publisher)

	// v3, with the controller stopped once the canary serves it: abort
	// sends the canary back to v2, and no other node installs v3.
	live, v3 := lin.Write(name, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	nginxtest.WaitServes(t, fleet["web1"].ngx.Addr, name, v3.Leaf, time.Minute)
	controller.Stop(t)
	mustCertsync(t, "rollout", "abort", "--config", f.Publisher, name)
	serves(t, fleet, nodes, v2.Leaf)
	res = certsyncCmd(t, "rollout", "status", "--config", f.Publisher, name)
	// The newest bundle is v2 again, published without hold: no rollout.
	if res.Code != 0 || !strings.Contains(res.Stdout, "rollout none") || !strings.Contains(res.Stdout, "serial "+v2.Leaf.SerialNumber.Text(16)) {
		t.Errorf("rollout status after abort: exit %d\n%s", res.Code, res.Stdout)
	}

	// A deliberate rollback to v1, through the waves again.
	controller = startCertsync(t, nil, "rollout", "run", "--config", f.Publisher, "--interval", "200ms")
	replay := newestMessage(t, srv.URL, name) // v2, as re-published by the abort
	mustCertsync(t, "rollback", "--config", f.Publisher, "--to", v1.Leaf.SerialNumber.Text(16), name)
	serves(t, fleet, nodes, v1.Leaf)
	checkWaveOrder(t, f.Publisher, name, [][]string{{"web1"}, {"web2", "web3"}, {"web4", "web5"}}, time.Second)

	// The rolled-back-from envelope, stored again as it was: every node
	// refuses it as a downgrade and keeps serving v1.
	js := natstest.JetStream(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, replay); err != nil {
		t.Fatalf("storing the replay: %v", err)
	}
	waitRecords(t, f.Publisher, name, "every node to refuse the replay", func(rows map[string]fleetRow) bool {
		for _, n := range nodes {
			if !strings.Contains(rows[n].Error, "older") {
				return false
			}
		}
		return true
	})
	serves(t, fleet, nodes, v1.Leaf)
	// republish does not undo the rollback (the lineage still holds v3).
	mustCertsync(t, "republish", "--config", f.Publisher)
	serves(t, fleet, nodes, v1.Leaf)

	// A new renewal rolls out normally, and then one from another CA,
	// dated earlier than the one installed, is accepted too.
	live, v4 := lin.Write(name, certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	serves(t, fleet, nodes, v4.Leaf)
	other := testcert.NewCA(t).Issue(t, testcert.Options{Names: []string{name, "*." + name}, NotBefore: v4.Leaf.NotBefore.Add(-time.Hour)})
	live, _ = testcert.RenewLineage(t, lin.Root, name, other)
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", live)
	serves(t, fleet, nodes, other.Leaf)

	// A node that joins after the rollout completed installs at once: the
	// newest rollout record releases every node, named or not.
	natstest.WaitFor(t, time.Minute, "the rollout to complete after its last soak", func() bool {
		res := certsyncCmd(t, "rollout", "status", "--config", f.Publisher, name)
		return res.Code == 0 && strings.Contains(res.Stdout, "rollout complete")
	})
	controller.Stop(t)
	dir := filepath.Join(f.Dir, "web6")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	web6 := &fleetNode{Name: "web6", StageDir: filepath.Join(dir, "stage"), Config: filepath.Join(dir, "node.yaml")}
	web6.Recipient = keygenNode(t, filepath.Join(dir, "node.key"))
	writeNodeConfig(t, web6.Config, nodeConfig{
		Name: "web6", NATS: natsConfig{URL: srv.URL}, Identity: filepath.Join(dir, "node.key"),
		TrustedPublishers: []string{f.Signing}, StageDir: web6.StageDir, Certificates: map[string]map[string]string{name: nil},
	})
	f.PublisherConfig.Nodes["web6"] = web6.Recipient
	f.PublisherConfig.Certificates[name] = append(nodes, "web6")
	writePublisherConfig(t, f.Publisher, f.PublisherConfig)
	mustCertsync(t, "republish", "--config", f.Publisher, name)
	mustCertsync(t, "node", "sync", "--config", web6.Config, "--timeout", "30s")
	waitRecords(t, f.Publisher, name, "web6 to report the newest certificate installed", func(rows map[string]fleetRow) bool {
		return rows["web6"].InstalledFingerprint == fingerprintOf(other.Leaf)
	})
}

// serves waits until every named node's nginx serves want and the node
// reports it installed.
func serves(t *testing.T, fleet map[string]*rolloutNode, nodes []string, want *x509.Certificate) {
	t.Helper()
	for _, n := range nodes {
		nginxtest.WaitServes(t, fleet[n].ngx.Addr, "example.com", want, 2*time.Minute)
	}
	var config string
	for _, n := range fleet {
		config = filepath.Join(filepath.Dir(filepath.Dir(n.Config)), "publisher.yaml")
		break
	}
	waitRecords(t, config, "example.com", "every node to report "+fingerprintOf(want)+" installed", func(rows map[string]fleetRow) bool {
		for _, n := range nodes {
			if rows[n].InstalledFingerprint != fingerprintOf(want) || rows[n].InstalledAt.IsZero() {
				return false
			}
		}
		return true
	})
}

// fleetRow is the part of a `status --json` row these tests read.
type fleetRow struct {
	Node                 string    `json:"node"`
	InstalledFingerprint string    `json:"installed_fingerprint"`
	StagedFingerprint    string    `json:"staged_fingerprint"`
	Error                string    `json:"error"`
	InstalledAt          time.Time `json:"installed_at"`
	Rollout              string    `json:"rollout"`
}

// statusRows runs `certsync status --json` and returns its rows of name
// by node.
func statusRows(t *testing.T, config, name string) map[string]fleetRow {
	t.Helper()
	res := certsyncCmd(t, "status", "--json", "--config", config)
	var rows []struct {
		fleetRow
		Certificate string `json:"certificate"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, res.Stdout)
	}
	out := map[string]fleetRow{}
	for _, r := range rows {
		if r.Certificate == name {
			out[r.Node] = r.fleetRow
		}
	}
	return out
}

// waitRecords polls the fleet's status of name until ok.
func waitRecords(t *testing.T, config, name, what string, ok func(map[string]fleetRow) bool) {
	t.Helper()
	var last map[string]fleetRow
	natstest.WaitFor(t, time.Minute, what, func() bool {
		last = statusRows(t, config, name)
		return ok(last)
	})
}

// checkWaveOrder checks, from the nodes' installed_at, that each wave
// installed after every node of the one before, at least soak later.
func checkWaveOrder(t *testing.T, config, name string, waves [][]string, soak time.Duration) {
	t.Helper()
	rows := statusRows(t, config, name)
	var prevLast time.Time
	for i, wave := range waves {
		var first, last time.Time
		for _, n := range wave {
			at := rows[n].InstalledAt
			if at.IsZero() {
				t.Fatalf("wave %d: %s reports no installed_at: %+v", i, n, rows[n])
			}
			if first.IsZero() || at.Before(first) {
				first = at
			}
			if at.After(last) {
				last = at
			}
		}
		if i > 0 && first.Before(prevLast.Add(soak)) {
			t.Errorf("wave %d (%v) installed at %v, before the wave before it (last at %v) soaked %v", i, wave, first, prevLast, soak)
		}
		prevLast = last
	}
}

// fingerprintOf is the text form of a leaf's fingerprint.
func fingerprintOf(c *x509.Certificate) string { return crypto.FingerprintOf(c.Raw).String() }

// newestMessage returns the newest message stored on name's bundle
// subject, as a message to store again (a replay): its subject, body and
// Certsync headers, but none of NATS' own (Nats-Msg-Id would have the
// server drop it as a duplicate, the expected last sequence refuse it; an
// attacker leaves them out too).
func newestMessage(t *testing.T, url, name string) *nats.Msg {
	t.Helper()
	js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.GetLastMsgForSubject(ctx, wire.Subject(name))
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(raw.Subject)
	msg.Data = raw.Data
	for k, v := range raw.Header {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	return msg
}
