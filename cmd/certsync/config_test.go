package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// publicKeys are public keys for documents that are parsed but not loaded.
type publicKeys struct {
	r1, r2, ssh, pub, pub2 string
}

var testPublicKeys = sync.OnceValue(func() publicKeys {
	var k publicKeys
	for _, r := range []*string{&k.r1, &k.r2} {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			panic(err)
		}
		*r = id.Recipient().String()
	}
	for _, p := range []*string{&k.pub, &k.pub2} {
		sk, err := crypto.GenerateSigningKey()
		if err != nil {
			panic(err)
		}
		*p = sk.Public().String()
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic(err)
	}
	k.ssh = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	return k
})

// doc joins lines into a document whose $R1, $R2 (age recipients), $SSH (an
// ssh-ed25519 recipient), $PUB and $PUB2 (publisher keys) are replaced by
// real public keys. Line n of the document is lines[n-1].
func doc(lines ...string) string {
	k := testPublicKeys()
	return strings.NewReplacer("$R1", k.r1, "$R2", k.r2, "$SSH", k.ssh, "$PUB2", k.pub2, "$PUB", k.pub).
		Replace(strings.Join(lines, "\n") + "\n")
}

// checkErr fails unless err is one line holding every part of want.
func checkErr(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not contain %q", msg, w)
		}
	}
}

func TestParsePublisherValid(t *testing.T) {
	t.Parallel()
	k := testPublicKeys()
	f := must(t, parsePublisherFile, []byte(doc(
		"nats:",
		"  url: nats://a:4222,nats://b:4222",
		"  nkey: /etc/certsync/publisher.nk",
		"  tls: {ca: /ca.pem, cert: /c.pem, key: /c.key}",
		"signing_key: /etc/certsync/signing.key",
		"lineages: /srv/letsencrypt/live/",
		"nodes:",
		"  web1: $R1",
		"  web2: $SSH",
		"  spare: $R2",
		"certificates:",
		"  example.com: [web1, web2]",
		"  example.org: [web2]",
		"stream: {replicas: 3, history: 10, duplicate_window: 1h, consumer_replicas: 3}",
		"timeout: 2m",
	)))
	cfg := f.config
	if f.key != "/etc/certsync/signing.key" || f.keyLine != 5 {
		t.Errorf("signing key %q on line %d, want /etc/certsync/signing.key on line 5", f.key, f.keyLine)
	}
	wantNATS := natsconn.Options{
		URL:         "nats://a:4222,nats://b:4222",
		NKey:        "/etc/certsync/publisher.nk",
		TLS:         natsconn.TLSOptions{CA: "/ca.pem", Cert: "/c.pem", Key: "/c.key"},
		Name:        "certsync publisher",
		InboxPrefix: "_INBOX_certsync_publisher",
	}
	if cfg.NATS != wantNATS {
		t.Errorf("NATS = %+v, want %+v", cfg.NATS, wantNATS)
	}
	if cfg.Lineages != "/srv/letsencrypt/live" {
		t.Errorf("Lineages = %q", cfg.Lineages)
	}
	wantNodes := map[string]string{"web1": k.r1, "web2": k.ssh, "spare": k.r2}
	if !reflect.DeepEqual(cfg.Nodes, wantNodes) {
		t.Errorf("Nodes = %v, want %v", cfg.Nodes, wantNodes)
	}
	wantCerts := map[string][]string{"example.com": {"web1", "web2"}, "example.org": {"web2"}}
	if !reflect.DeepEqual(cfg.Certificates, wantCerts) {
		t.Errorf("Certificates = %v, want %v", cfg.Certificates, wantCerts)
	}
	wantStream := wire.StreamOptions{Replicas: 3, History: 10, DuplicateWindow: time.Hour, ConsumerReplicas: 3}
	if cfg.Stream != wantStream {
		t.Errorf("Stream = %+v, want %+v", cfg.Stream, wantStream)
	}
	if cfg.Timeout != 2*time.Minute {
		t.Errorf("Timeout = %v, want 2m", cfg.Timeout)
	}
	if cfg.SigningKey != nil {
		t.Error("parsing loaded the signing key")
	}
}

// TestParsePublisherRollout: the rollout policy, as a default and per
// certificate (the mapping form of a certificate), percentages, "none",
// and a zero soak.
func TestParsePublisherRollout(t *testing.T) {
	t.Parallel()
	f := must(t, parsePublisherFile, []byte(doc(
		"signing_key: /k",
		"nodes: {web1: $R1, web2: $R2, web3: $SSH}",
		"rollout:",
		"  canary: [web1]",
		"  waves: [25%, 100%]",
		"  soak: 0s",
		"  wave_deadline: 30m",
		"  max_failures: 10%",
		"certificates:",
		"  example.com: [web1, web2, web3]",
		"  b.example.com:",
		"    nodes: [web2, web3]",
		"    rollout: {canary: 50%, max_failures: 2}",
		"  c.example.com:",
		"    nodes: [web3]",
		"    rollout: none",
	)))
	cfg := f.config
	want := &publisher.RolloutPolicy{Canary: []string{"web1"}, Waves: []int{25, 100}, Soak: publisher.SoakZero,
		WaveDeadline: 30 * time.Minute, MaxFailuresPercent: 10}
	if got := cfg.Policy("example.com"); !reflect.DeepEqual(got, want) {
		t.Errorf("example.com's policy = %+v, want %+v", got, want)
	}
	wantB := &publisher.RolloutPolicy{CanaryPercent: 50, Waves: []int{100}, Soak: publisher.DefaultSoak,
		WaveDeadline: publisher.DefaultWaveDeadline, MaxFailures: 2}
	if got := cfg.Policy("b.example.com"); !reflect.DeepEqual(got, wantB) {
		t.Errorf("b.example.com's policy = %+v, want %+v", got, wantB)
	}
	if got := cfg.Policy("c.example.com"); got != nil {
		t.Errorf("c.example.com's policy = %+v, want none", got)
	}
	if got := cfg.Certificates["b.example.com"]; !reflect.DeepEqual(got, []string{"web2", "web3"}) {
		t.Errorf("b.example.com goes to %v", got)
	}
	if got := want.SoakTime(); got != 0 {
		t.Errorf("SoakTime of soak 0s = %v", got)
	}
}

// TestParsePublisherDefaults: publisher.yaml adds no default of its own: a
// minimal file gives what the library's Validate makes of the keys it
// sets (the default values are asserted by publisher's
// TestConfigValidateDefaults).
func TestParsePublisherDefaults(t *testing.T) {
	t.Parallel()
	f := must(t, parsePublisherFile, []byte(doc(
		"signing_key: signing.key",
		"nodes: {web1: $R1}",
		"certificates: {example.com: [web1]}",
	)))
	want := publisher.Config{
		Nodes:        map[string]string{"web1": testPublicKeys().r1},
		Certificates: map[string][]string{"example.com": {"web1"}},
	}
	if err := want.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.config, want) {
		t.Errorf("config\n got %+v\nwant %+v", f.config, want)
	}
}

func TestParsePublisherInvalid(t *testing.T) {
	t.Parallel()
	const (
		sk    = "signing_key: /k"
		nodes = "nodes: {web1: $R1, web2: $R2}"
		certs = "certificates: {example.com: [web1]}"
	)
	tests := []refusal{
		{"empty", "", []string{"empty configuration"}},
		{"comments only", "# nothing\n", []string{"empty configuration"}},
		{"top level list", "- a\n- b\n", []string{"line 1: want a mapping of keys at the top level, got a list"}},
		{"top level string", "hello\n", []string{"line 1:", "got a string"}},
		{"syntax", doc(sk, "nodes: {web1: $R1", certs), []string{"line "}},
		{"tab indentation", "nodes:\n\tweb1: x\n", []string{"line 2"}},
		{"two documents", doc(sk, nodes, certs, "---", "signing_key: /other"), []string{"line 4: a second YAML document"}},
		{"two documents, second empty", doc(sk, nodes, certs, "---", "# nothing"), []string{"second YAML document"}},
		{"anchor", doc("signing_key: &k /k", nodes, certs), []string{"line 1: anchors and aliases"}},
		{"alias", doc(sk, "nodes: {web1: &r $R1, web2: *r}", certs), []string{"line 2: anchors and aliases"}},
		{"merge key", doc(sk, nodes, "certificates:", "  <<: {example.com: [web1]}"), []string{"line 4: certificates:", "invalid certificate name \"<<\""}},
		{"unknown top key", doc(sk, nodes, certs, "signing_kye: /k"), []string{`line 4: unknown key "signing_kye" (did you mean "signing_key"?)`}},
		{"unknown key far away", doc(sk, nodes, certs, "zzzzzzzz: 1"), []string{`line 4: unknown key "zzzzzzzz"`}},
		{"unknown nats key", doc("nats:", "  url: nats://a:4222", "  token: x", sk, nodes, certs), []string{`line 3: nats: unknown key "token"`}},
		{"unknown tls key", doc("nats:", "  tls:", "    ca: /ca", "    crt: /c", sk, nodes, certs), []string{`line 4: nats.tls: unknown key "crt" (did you mean "cert"?)`}},
		{"unknown stream key", doc(sk, nodes, certs, "stream:", "  replica: 3"), []string{`line 5: stream: unknown key "replica" (did you mean "replicas"?)`}},
		{"duplicate top key", doc(sk, nodes, certs, "signing_key: /k2"), []string{`line 4: duplicate key "signing_key" (first on line 1)`}},
		{"duplicate node", doc(sk, "nodes:", "  web1: $R1", "  web1: $R2", certs), []string{`line 4: nodes: duplicate key "web1" (first on line 3)`}},
		{"duplicate certificate", doc(sk, nodes, "certificates:", "  a.com: [web1]", "  a.com: [web2]"), []string{`line 5: certificates: duplicate key "a.com" (first on line 4)`}},
		{"signing_key missing", doc(nodes, certs), []string{"line 1: signing_key: missing"}},
		{"signing_key empty", doc(`signing_key: ""`, nodes, certs), []string{"line 1: signing_key: empty"}},
		{"signing_key null", doc("signing_key:", nodes, certs), []string{"line 1: signing_key: want a string, got nothing"}},
		{"signing_key list", doc("signing_key: [/k]", nodes, certs), []string{"line 1: signing_key: want a string, got a list"}},
		{"signing_key integer", doc("signing_key: 12", nodes, certs), []string{"line 1: signing_key: want a string, got an integer (quote it)"}},
		{"lineages relative", doc(sk, "lineages: live", nodes, certs), []string{`line 2: lineages: want an absolute path, got "live"`}},
		{"lineages root", doc(sk, "lineages: /", nodes, certs), []string{"line 2: lineages: the root folder"}},
		{"nats not a mapping", doc("nats: nats://a:4222", sk, nodes, certs), []string{"line 1: nats: want a mapping, got a string"}},
		{"nats url bad scheme", doc("nats: {url: 'http://a:4222'}", sk, nodes, certs), []string{`line 1: nats.url: server 1: want scheme nats, tls, ws or wss, got "http"`}},
		{"nats url empty entry", doc("nats: {url: 'nats://a:4222,,nats://b:4222'}", sk, nodes, certs), []string{"line 1: nats.url: server 2 of the list is empty"}},
		{"nats url bad port", doc("nats: {url: 'nats://a:http'}", sk, nodes, certs), []string{"line 1: nats.url: server 1"}},
		{"nats url no host", doc("nats: {url: 'nats://:4222'}", sk, nodes, certs), []string{"line 1: nats.url: server 1 has no host"}},
		{"nats bare address without port", doc("nats: {url: 'mgmt'}", sk, nodes, certs), []string{"line 1: nats.url: server 1: want nats://HOST:PORT"}},
		{"nats bare address with login", doc("nats: {url: 'u:hunter2@mgmt:4222'}", sk, nodes, certs), []string{"line 1: nats.url: server 1: want nats://HOST:PORT"}},
		{"nats creds and nkey", doc("nats:", "  creds: /c", "  nkey: /n", sk, nodes, certs), []string{"line 2: nats: set only one of creds, nkey or user and password"}},
		{"nats nkey and user", doc("nats: {nkey: /n, user: u, password: p}", sk, nodes, certs), []string{"nats: set only one"}},
		{"nats user without password", doc("nats:", "  user: u", sk, nodes, certs), []string{"line 2: nats: user needs a password"}},
		{"nats password without user", doc("nats:", "  password: p", sk, nodes, certs), []string{"line 2: nats: password needs a user"}},
		{"nats tls cert without key", doc("nats:", "  tls: {cert: /c}", sk, nodes, certs), []string{"line 2: nats.tls: cert and key go together"}},
		{"nats tls key without cert", doc("nats:", "  tls:", "    key: /k", sk, nodes, certs), []string{"line 3: nats.tls: cert and key go together"}},
		{"nats creds list", doc("nats: {creds: [a]}", sk, nodes, certs), []string{"line 1: nats.creds: want a string, got a list"}},
		{"nodes list", doc(sk, "nodes: [web1]", certs), []string{"line 2: nodes: want a mapping, got a list"}},
		{"node name traversal", doc(sk, "nodes:", "  ../../etc: $R1", certs), []string{`line 3: nodes: invalid node name "../../etc"`}},
		{"node name with dot", doc(sk, "nodes:", "  web.1: $R1", certs), []string{`line 3: nodes: invalid node name "web.1"`}},
		{"bad age recipient", doc(sk, "nodes:", "  web1: age1notarecipient", certs), []string{"line 3: nodes.web1: parsing recipient"}},
		{"bad ssh recipient", doc(sk, "nodes:", "  web1: ssh-ed25519 AAAAnope", certs), []string{"line 3: nodes.web1: parsing recipient"}},
		{"recipient list", doc(sk, "nodes:", "  web1: [$R1]", certs), []string{"line 3: nodes.web1: want a string, got a list"}},
		{"recipient missing", doc(sk, "nodes:", "  web1:", certs), []string{"line 3: nodes.web1: want a string, got nothing"}},
		{"duplicate recipient", doc(sk, "nodes:", "  web1: $R1", "  web2: $R1", certs), []string{`line 4: nodes.web2: same recipient as node "web1"`}},
		{"duplicate ssh recipient, other comment", doc(sk, "nodes:", "  web1: $SSH root@a", "  web2: $SSH root@b", certs), []string{`line 4: nodes.web2: same recipient as node "web1"`}},
		{"certificates missing", doc(sk, nodes), []string{"line 1: certificates: none"}},
		{"certificates empty", doc(sk, nodes, "certificates: {}"), []string{"line 3: certificates: none"}},
		{"certificates list", doc(sk, nodes, "certificates: [example.com]"), []string{"line 3: certificates: want a mapping, got a list"}},
		{"certificate name traversal", doc(sk, nodes, "certificates:", "  ../../etc: [web1]"), []string{`line 4: certificates: invalid certificate name "../../etc"`}},
		{"certificate name trailing dot", doc(sk, nodes, "certificates:", "  example.com.: [web1]"), []string{`line 4: certificates: invalid certificate name "example.com."`}},
		{"certificate nodes string", doc(sk, nodes, "certificates:", "  example.com: web1"), []string{"line 4: certificates.example.com: want a list, got a string"}},
		{"certificate no nodes", doc(sk, nodes, "certificates:", "  example.com: []"), []string{"line 4: certificates.example.com: no nodes"}},
		{"certificate null nodes", doc(sk, nodes, "certificates:", "  example.com:"), []string{"line 4: certificates.example.com: no nodes"}},
		{"unknown node", doc(sk, "certificates:", "  example.com:", "    - web1", "    - web3", nodes), []string{`line 5: certificates.example.com: unknown node "web3"`}},
		{"node listed twice", doc(sk, nodes, "certificates:", "  example.com: [web1, web1]"), []string{`line 4: certificates.example.com: node "web1" listed twice`}},
		{"bad node in list", doc(sk, nodes, "certificates:", "  example.com:", "    - ../../etc"), []string{`line 5: certificates.example.com: invalid node name "../../etc"`}},
		{"node in list is a mapping", doc(sk, nodes, "certificates:", "  example.com:", "    - {web1: x}"), []string{"line 5: certificates.example.com: want a string, got a mapping"}},
		{"stream replicas zero", doc(sk, nodes, certs, "stream: {replicas: 0}"), []string{"line 4: stream.replicas: want an integer from 1 to 5, got 0"}},
		{"stream replicas six", doc(sk, nodes, certs, "stream: {replicas: 6}"), []string{"line 4: stream.replicas: want an integer from 1 to 5"}},
		{"stream replicas string", doc(sk, nodes, certs, "stream: {replicas: '3'}"), []string{"line 4: stream.replicas: want an integer, got a string"}},
		{"stream replicas float", doc(sk, nodes, certs, "stream: {replicas: 3.5}"), []string{"line 4: stream.replicas: want an integer, got a number"}},
		{"stream replicas huge", doc(sk, nodes, certs, "stream: {replicas: 99999999999999999999999}"), []string{"line 4: stream.replicas:"}},
		{"stream history zero", doc(sk, nodes, certs, "stream: {history: 0}"), []string{"line 4: stream.history: want an integer from 1 to 100"}},
		{"stream history 101", doc(sk, nodes, certs, "stream: {history: 101}"), []string{"line 4: stream.history: want an integer from 1 to 100"}},
		{"stream consumer replicas zero", doc(sk, nodes, certs, "stream: {consumer_replicas: 0}"), []string{"line 4: stream.consumer_replicas: want an integer from 1 to 5, got 0"}},
		{"stream consumer replicas above replicas", doc(sk, nodes, certs, "stream: {replicas: 3, consumer_replicas: 5}"), []string{"line 4: stream.consumer_replicas: want an integer from 1 to stream.replicas (3), got 5"}},
		{"stream duplicate_window bare number", doc(sk, nodes, certs, "stream: {duplicate_window: 10}"), []string{`line 4: stream.duplicate_window: want a duration such as "30s"`}},
		{"stream duplicate_window zero", doc(sk, nodes, certs, "stream: {duplicate_window: 0s}"), []string{"line 4: stream.duplicate_window: want a positive duration"}},
		{"timeout negative", doc(sk, nodes, certs, "timeout: -1s"), []string{"line 4: timeout: want a positive duration"}},
		{"timeout word", doc(sk, nodes, certs, "timeout: forever"), []string{`line 4: timeout: want a duration such as "30s", "5m" or "168h", got "forever"`}},
		{"timeout bool", doc(sk, nodes, certs, "timeout: true"), []string{`line 4: timeout: want a duration such as "30s", "5m" or "168h", got a boolean`}},
		{"non-scalar key", doc(sk, nodes, certs, "? [a, b]", ": x"), []string{"line 4: want a name as key, got a list"}},
		{"rollout unknown key", doc(sk, nodes, certs, "rollout:", "  canry: [web1]"), []string{`line 5: rollout: unknown key "canry" (did you mean "canary"?)`}},
		{"rollout canary unknown node", doc(sk, nodes, certs, "rollout:", "  canary: [web1, web9]"), []string{`line 5: rollout.canary[1]: unknown node "web9"`}},
		{"rollout canary twice", doc(sk, nodes, certs, "rollout:", "  canary:", "    - web1", "    - web1"), []string{`line 7: rollout.canary[1]: node "web1" listed twice`}},
		{"rollout canary percent too big", doc(sk, nodes, certs, "rollout: {canary: 120%}"), []string{`line 4: rollout.canary: want a percentage from 0% to 100%, got "120%"`}},
		{"rollout canary number", doc(sk, nodes, certs, "rollout: {canary: 3}"), []string{`line 4: rollout.canary: want a list, got an integer`}},
		{"rollout canary not receiving", doc(sk, nodes, certs, "rollout: {canary: [web2]}"), []string{"certificates.example.com.rollout: none of the canaries [web2] receives certificate \"example.com\""}},
		{"rollout waves not percent", doc(sk, nodes, certs, "rollout:", "  waves: [25, 100%]"), []string{`line 5: rollout.waves[0]: want a percentage such as "25%", got an integer`}},
		{"rollout waves shrink", doc(sk, nodes, certs, "rollout:", "  waves:", "    - 50%", "    - 25%", "    - 100%"), []string{"line 7: rollout.waves[1]: 25% does not grow from 50%: waves are cumulative"}},
		{"rollout waves not ending at 100", doc(sk, nodes, certs, "rollout:", "  waves: [25%, 50%]"), []string{"line 5: rollout.waves: the last wave is 50%, want 100%"}},
		{"rollout soak negative", doc(sk, nodes, certs, "rollout: {soak: -1m}"), []string{"line 4: rollout.soak:"}},
		{"rollout wave_deadline zero", doc(sk, nodes, certs, "rollout: {wave_deadline: 0s}"), []string{"line 4: rollout.wave_deadline:"}},
		{"rollout max_failures negative", doc(sk, nodes, certs, "rollout: {max_failures: -1}"), []string{"line 4: rollout.max_failures:"}},
		{"rollout max_failures bad percent", doc(sk, nodes, certs, "rollout: {max_failures: 5.5%}"), []string{`line 4: rollout.max_failures: want a percentage from 0% to 100%, got "5.5%"`}},
		{"certificate mapping without nodes", doc(sk, nodes, "certificates:", "  example.com: {rollout: none}"), []string{"line 4: certificates.example.com: no nodes: list them under nodes"}},
		{"certificate mapping unknown key", doc(sk, nodes, "certificates:", "  example.com: {nodes: [web1], node: x}"), []string{`line 4: certificates.example.com: unknown key "node" (did you mean "nodes"?)`}},
		{"certificate rollout unknown node", doc(sk, nodes, "certificates:", "  example.com:", "    nodes: [web1]", "    rollout:", "      canary: [web3]"), []string{`line 7: certificates.example.com.rollout.canary[0]: unknown node "web3"`}},
		{"certificate mapping unknown node", doc(sk, nodes, "certificates:", "  example.com:", "    nodes: [web1, web3]"), []string{`line 5: certificates.example.com: unknown node "web3"`}},
	}
	checkParseRefused(t, parsePublisherFile, tests)
}

// TestParseNoSecretInErrors checks that values that may be secrets are not
// repeated in errors.
func TestParseNoSecretInErrors(t *testing.T) {
	t.Parallel()
	id := testkeys.X25519(t)
	sk, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	secret := id.String()
	tests := []struct {
		name, doc, secret string
		parse             func([]byte) error
	}{
		{"identity as recipient", doc("signing_key: /k", "nodes: {web1: "+secret+"}", "certificates: {a.com: [web1]}"), secret, publisherParse},
		{"password as integer", doc("nats: {user: u, password: 73519}", "signing_key: /k", "nodes: {web1: $R1}", "certificates: {a.com: [web1]}"), "73519", publisherParse},
		{"password in bare url", doc("nats: {url: 'u:hunter2@a:4222'}", "signing_key: /k", "nodes: {web1: $R1}", "certificates: {a.com: [web1]}"), "hunter2", publisherParse},
		{"password in url", doc("nats: {url: 'http://u:hunter2@a:4222'}", "signing_key: /k", "nodes: {web1: $R1}", "certificates: {a.com: [web1]}"), "hunter2", publisherParse},
		{"identity as trusted key", doc("name: web1", "identity: /k", "trusted_publishers: ['"+secret+"']", "certificates: {a.com: {}}"), secret, nodeParse},
		{"signing key as trusted key", doc("name: web1", "identity: /k", "trusted_publishers:", "  - |", indent(string(sk.MarshalPEM()), "    "), "certificates: {a.com: {}}"), "PRIVATE KEY-----\n", nodeParse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), tt.secret) || strings.Contains(err.Error(), strings.TrimSpace(tt.secret)) {
				t.Errorf("error repeats the secret: %v", err)
			}
		})
	}
}

// schedule and command parse what the test knows is valid.
func schedule(t *testing.T, s string) subscriber.Schedule {
	t.Helper()
	sch, err := subscriber.ParseSchedule(s)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func command(t *testing.T, line string) subscriber.Command {
	t.Helper()
	c, err := subscriber.ParseCommand(line)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func publisherParse(data []byte) error { _, err := parsePublisherFile(data); return err }
func nodeParse(data []byte) error      { _, err := parseNodeFile(data); return err }

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// TestParseNodeDefaults: node.yaml adds no default of its own: a minimal
// file gives what the library's Validate makes of the keys it sets (the
// default values are asserted by subscriber's TestValidateDefaults).
func TestParseNodeDefaults(t *testing.T) {
	t.Parallel()
	f := must(t, parseNodeFile, []byte(doc(
		"name: web1",
		"identity: /etc/certsync/node.key",
		"trusted_publishers: [$PUB]",
		"certificates:",
		"  example.com:",
	)))
	if f.key != "/etc/certsync/node.key" || f.keyLine != 2 {
		t.Errorf("identity %q on line %d", f.key, f.keyLine)
	}
	pub := must(t, crypto.ParsePublicKey, testPublicKeys().pub)
	want := validated(t, subscriber.Config{
		Node:         "web1",
		Trusted:      []crypto.PublicKey{pub},
		Certificates: map[string]subscriber.Certificate{"example.com": {}},
	})
	if !reflect.DeepEqual(f.config, want) {
		t.Errorf("config\n got %+v\nwant %+v", f.config, want)
	}
}

// validated returns cfg as the library's Validate completes it: what
// node.yaml gives when it sets only cfg's fields.
func validated(t *testing.T, cfg subscriber.Config) subscriber.Config {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParseNodeFull(t *testing.T) {
	t.Parallel()
	k := testPublicKeys()
	data := substitute(t, "node-full.yaml", map[string]string{
		"IDENTITY":            "/etc/ssh/ssh_host_ed25519_key",
		"PUBLISHER_KEY":       k.pub,
		"OTHER_PUBLISHER_KEY": k.pub2,
	})
	f := must(t, parseNodeFile, data)
	cfg := f.config
	wantNATS := natsconn.Options{
		URL:         "tls://a.example.net:4222, tls://b.example.net:4222",
		User:        "web2",
		Password:    "s3cret",
		TLS:         natsconn.TLSOptions{CA: "/etc/certsync/ca.pem", Cert: "/etc/certsync/client.pem", Key: "/etc/certsync/client.key"},
		Name:        "certsync node web2",
		InboxPrefix: "_INBOX_certsync_node_web2",
	}
	if cfg.NATS != wantNATS {
		t.Errorf("NATS = %+v, want %+v", cfg.NATS, wantNATS)
	}
	if len(cfg.Trusted) != 2 || cfg.Trusted[0].String() != k.pub || cfg.Trusted[1].String() != k.pub2 {
		t.Errorf("Trusted = %v", cfg.Trusted)
	}
	if cfg.StageDir != "/var/lib/certsync/stage" || cfg.MetricsListen != ":9469" || cfg.StatusInterval != time.Minute {
		t.Errorf("StageDir %q, MetricsListen %q, StatusInterval %v", cfg.StageDir, cfg.MetricsListen, cfg.StatusInterval)
	}
	// Built-in defaults < defaults < the certificate's entry.
	fromDefaults := subscriber.Certificate{
		Schedule:       schedule(t, "manual"),
		Check:          command(t, "nginx -t"),
		Reload:         command(t, "systemctl reload nginx"),
		Owner:          "0",
		Group:          "ssl-cert",
		CertMode:       0o640,
		KeyMode:        0o640,
		Keep:           5,
		Splay:          10 * time.Minute,
		ExpiryDeadline: 72 * time.Hour,
		CommandTimeout: 2 * time.Minute,
		VerifyTimeout:  45 * time.Second,
	}
	com := fromDefaults
	com.Name, com.InstallDir = "example.com", "/etc/letsencrypt/live/example.com"
	com.Schedule, com.Verify, com.Combined = schedule(t, "30 2 * * 1-5"), "[::1]:8443", true
	org := fromDefaults
	org.Name, org.InstallDir, org.Keep, org.CertMode = "example.org", "/srv/tls/example.org", 1, 0o644
	net := fromDefaults
	net.Name, net.InstallDir = "example.net", "/etc/letsencrypt/live/example.net"
	want := map[string]subscriber.Certificate{"example.com": com, "example.org": org, "example.net": net}
	if !reflect.DeepEqual(cfg.Certificates, want) {
		for name := range want {
			if !reflect.DeepEqual(cfg.Certificates[name], want[name]) {
				t.Errorf("certificate %s\n got %+v\nwant %+v", name, cfg.Certificates[name], want[name])
			}
		}
		if len(cfg.Certificates) != len(want) {
			t.Errorf("%d certificates, want %d", len(cfg.Certificates), len(want))
		}
	}
}

func TestParseNodeCertificateValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value string
		check func(subscriber.Certificate) bool
	}{
		{"schedule: immediate", func(c subscriber.Certificate) bool { return c.Schedule.String() == "immediate" }},
		{"schedule: '*/15 * * * *'", func(c subscriber.Certificate) bool { return c.Schedule.String() == "*/15 * * * *" }},
		{"schedule: '0 3 * * sun'", func(c subscriber.Certificate) bool { return c.Schedule.String() == "0 3 * * sun" }},
		{"schedule: manual", func(c subscriber.Certificate) bool { return c.Schedule.Manual() }},
		{"check: \"nginx -t -c '/etc/a b.conf'\"", func(c subscriber.Certificate) bool {
			return slices.Equal(c.Check.Args(), []string{"nginx", "-t", "-c", "/etc/a b.conf"})
		}},
		{"cert_mode: 0644", func(c subscriber.Certificate) bool { return c.CertMode == 0o644 }},
		{"cert_mode: 0o444", func(c subscriber.Certificate) bool { return c.CertMode == 0o444 }},
		{"cert_mode: '0600'", func(c subscriber.Certificate) bool { return c.CertMode == 0o600 }},
		{"key_mode: '0400'", func(c subscriber.Certificate) bool { return c.KeyMode == 0o400 }},
		{"key_mode: '0640'", func(c subscriber.Certificate) bool { return c.KeyMode == 0o640 }},
		{"keep: 50", func(c subscriber.Certificate) bool { return c.Keep == 50 }},
		{"splay: 0s", func(c subscriber.Certificate) bool { return c.Splay == 0 }},
		{"splay: 0", func(c subscriber.Certificate) bool { return c.Splay == 0 }},
		{"expiry_deadline: 0s", func(c subscriber.Certificate) bool { return c.ExpiryDeadline == subscriber.ExpiryDeadlineOff }},
		{"expiry_deadline: 24h", func(c subscriber.Certificate) bool { return c.ExpiryDeadline == 24*time.Hour }},
		{"owner: 1000", func(c subscriber.Certificate) bool { return c.Owner == "1000" }},
		{"group: www-data", func(c subscriber.Certificate) bool { return c.Group == "www-data" }},
		{"verify: 'localhost:443'", func(c subscriber.Certificate) bool { return c.Verify == "localhost:443" }},
		{"combined: false", func(c subscriber.Certificate) bool { return !c.Combined }},
		{"install_dir: /srv/tls/../tls/a/", func(c subscriber.Certificate) bool { return c.InstallDir == "/srv/tls/a" }},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			t.Parallel()
			f := must(t, parseNodeFile, []byte(doc("name: web1", "identity: /k", "trusted_publishers: [$PUB]", "certificates:", "  a.com:", "    "+tt.value)))
			if c := f.config.Certificates["a.com"]; !tt.check(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

func TestParseNodeInvalid(t *testing.T) {
	t.Parallel()
	const (
		name  = "name: web1"
		id    = "identity: /k"
		trust = "trusted_publishers: [$PUB]"
		certs = "certificates: {example.com: {}}"
	)
	// cert puts one per-certificate setting on line 6.
	cert := func(setting string) string {
		return doc(name, id, trust, "certificates:", "  example.com:", "    "+setting)
	}
	tests := []refusal{
		{"name missing", doc(id, trust, certs), []string{"line 1: name: missing"}},
		{"name traversal", doc("name: ../x", id, trust, certs), []string{`line 1: name: invalid node name "../x"`}},
		{"name integer", doc("name: 7", id, trust, certs), []string{"line 1: name: want a string, got an integer"}},
		{"identity missing", doc(name, trust, certs), []string{"line 1: identity: missing"}},
		{"identity mapping", doc(name, "identity: {path: /k}", trust, certs), []string{"line 2: identity: want a string, got a mapping"}},
		{"trusted missing", doc(name, id, certs), []string{"line 1: trusted_publishers: missing"}},
		{"trusted empty", doc(name, id, "trusted_publishers: []", certs), []string{"line 3: trusted_publishers: empty"}},
		{"trusted null", doc(name, id, "trusted_publishers:", certs), []string{"line 3: trusted_publishers: empty"}},
		{"trusted string", doc(name, id, "trusted_publishers: $PUB", certs), []string{"line 3: trusted_publishers: want a list, got a string"}},
		{"trusted bad key", doc(name, id, "trusted_publishers:", "  - $PUB", "  - certsync-ed25519:AAAA", certs), []string{"line 5: trusted_publishers[1]: parsing public key"}},
		{"trusted wrong kind", doc(name, id, "trusted_publishers:", "  - $R1", certs), []string{"line 4: trusted_publishers[0]: parsing public key"}},
		{"trusted twice", doc(name, id, "trusted_publishers:", "  - $PUB", "  - $PUB2", "  - $PUB", certs), []string{"line 6: trusted_publishers[2]: listed twice (first on line 4)"}},
		{"stage_dir relative", doc(name, id, trust, "stage_dir: stage", certs), []string{`line 4: stage_dir: want an absolute path, got "stage"`}},
		{"stage_dir root", doc(name, id, trust, "stage_dir: /", certs), []string{"line 4: stage_dir: the root folder"}},
		{"metrics_listen no port", doc(name, id, trust, "metrics_listen: localhost", certs), []string{`line 4: metrics_listen: want HOST:PORT, got "localhost"`}},
		{"metrics_listen named port", doc(name, id, trust, "metrics_listen: 'localhost:http'", certs), []string{"line 4: metrics_listen: want HOST:PORT with a numeric port"}},
		{"status_interval zero", doc(name, id, trust, "status_interval: 0s", certs), []string{"line 4: status_interval: want a positive duration"}},
		{"status_interval bare", doc(name, id, trust, "status_interval: 5", certs), []string{`line 4: status_interval: want a duration such as "30s"`}},
		{"unknown top key", doc(name, id, trust, "stagedir: /x", certs), []string{`line 4: unknown key "stagedir" (did you mean "stage_dir"?)`}},
		{"unknown nats key", doc(name, "nats:", "  url: nats://a:4222", "  seed: /x", id, trust, certs), []string{`line 4: nats: unknown key "seed"`}},
		{"unknown defaults key", doc(name, id, trust, "defaults:", "  relaod: x", certs), []string{`line 5: defaults: unknown key "relaod" (did you mean "reload"?)`}},
		{"unknown certificate key", cert("instal_dir: /x"), []string{`line 6: certificates.example.com: unknown key "instal_dir" (did you mean "install_dir"?)`}},
		{"unknown key on second certificate", doc(name, id, trust, "certificates:", "  a.com: {}", "  b.com:", "    reload: x", "    chek: y"), []string{`line 8: certificates.b.com: unknown key "chek" (did you mean "check"?)`}},
		{"publisher key in node file", doc(name, id, trust, certs, "signing_key: /k"), []string{`line 5: unknown key "signing_key"`}},
		{"duplicate top key", doc(name, id, trust, certs, "name: web2"), []string{`line 5: duplicate key "name" (first on line 1)`}},
		{"duplicate certificate key", doc(name, id, trust, "certificates:", "  example.com:", "    reload: a", "    reload: b"), []string{`line 7: certificates.example.com: duplicate key "reload" (first on line 6)`}},
		{"duplicate certificate", doc(name, id, trust, "certificates:", "  a.com: {}", "  a.com: {}"), []string{`line 6: certificates: duplicate key "a.com" (first on line 5)`}},
		{"defaults list", doc(name, id, trust, "defaults: [a]", certs), []string{"line 4: defaults: want a mapping, got a list"}},
		{"defaults bad value", doc(name, id, trust, "defaults:", "  keep: 0", certs), []string{"line 5: defaults.keep: want an integer from 1 to 50"}},
		{"certificates missing", doc(name, id, trust), []string{"line 1: certificates: none"}},
		{"certificates empty", doc(name, id, trust, "certificates: {}"), []string{"line 4: certificates: none"}},
		{"certificates list", doc(name, id, trust, "certificates: [a.com]"), []string{"line 4: certificates: want a mapping, got a list"}},
		{"certificate name traversal", doc(name, id, trust, "certificates:", "  ../../etc: {}"), []string{`line 5: certificates: invalid certificate name "../../etc"`}},
		{"certificate name double dot", doc(name, id, trust, "certificates:", "  a..b: {}"), []string{`line 5: certificates: invalid certificate name "a..b"`}},
		{"certificate settings string", doc(name, id, trust, "certificates:", "  a.com: immediate"), []string{"line 5: certificates.a.com: want a mapping, got a string"}},
		{"install_dir relative", cert("install_dir: live/x"), []string{`line 6: certificates.example.com.install_dir: want an absolute path, got "live/x"`}},
		{"install_dir root", cert("install_dir: /"), []string{"line 6: certificates.example.com.install_dir: the root folder"}},
		{"install_dir in stage_dir", doc(name, id, trust, "stage_dir: /srv/stage", "certificates:", "  a.com: {install_dir: /srv/stage/a.com}"), []string{`line 6: certificates.a.com: install_dir "/srv/stage/a.com" overlaps stage_dir "/srv/stage"`}},
		{"stage_dir in install_dir", doc(name, id, trust, "stage_dir: /etc/letsencrypt/live/a.com/stage", "certificates:", "  a.com: {}"), []string{"line 6: certificates.a.com: install_dir", "overlaps stage_dir"}},
		{"stage_dir is an install store", doc(name, id, trust, "stage_dir: /etc/letsencrypt/live/.certsync", "certificates:", "  a.com: {}"), []string{`line 6: certificates.a.com: stage_dir "/etc/letsencrypt/live/.certsync" overlaps the install store "/etc/letsencrypt/live/.certsync" that install_dir "/etc/letsencrypt/live/a.com" keeps its versions in`}},
		{"stage_dir in an install store", doc(name, id, trust, "stage_dir: /srv/tls/.certsync/stage", "certificates:", "  a.com: {install_dir: /srv/tls/a.com}"), []string{`line 6: certificates.a.com: stage_dir "/srv/tls/.certsync/stage" overlaps the install store "/srv/tls/.certsync"`}},
		{"stage_dir holds an install store", doc(name, id, trust, "stage_dir: /srv/tls/.certsync", "certificates:", "  a.com: {install_dir: /srv/tls/a.com}"), []string{`overlaps the install store "/srv/tls/.certsync"`}},
		{"install_dir is its own store", doc(name, id, trust, "certificates:", "  a.com: {install_dir: /srv/tls/.certsync}"), []string{`line 5: certificates.a.com: install_dir "/srv/tls/.certsync" overlaps its own install store "/srv/tls/.certsync"`}},
		{"install_dir in another's store", doc(name, id, trust, "certificates:", "  a.com: {install_dir: /srv/tls/a.com}", "  b.com: {install_dir: /srv/tls/.certsync/b.com}"), []string{`line 6: certificates.b.com: install_dir "/srv/tls/.certsync/b.com" overlaps certificate "a.com"'s install store "/srv/tls/.certsync"`}},
		{"store holds another's install_dir", doc(name, id, trust, "certificates:", "  a.com: {install_dir: /srv/.certsync/a}", "  b.com: {install_dir: /srv/b.com}"), []string{`line 6: certificates.b.com: install_dir "/srv/b.com" keeps its versions in "/srv/.certsync", which overlaps certificate "a.com"'s install_dir "/srv/.certsync/a"`}},
		{"shared install_dir from defaults", doc(name, id, trust, "defaults: {install_dir: /srv/tls}", "certificates:", "  a.com:", "  b.com:"), []string{`line 7: certificates.b.com: install_dir "/srv/tls" overlaps certificate "a.com"'s "/srv/tls"`}},
		{"nested install_dir", doc(name, id, trust, "certificates:", "  a.com: {install_dir: /srv/tls}", "  b.com: {install_dir: /srv/tls/b}"), []string{`line 6: certificates.b.com: install_dir "/srv/tls/b" overlaps certificate "a.com"'s`}},
		{"schedule descriptor", cert("schedule: '@daily'"), []string{`line 6: certificates.example.com.schedule: descriptor "@daily" not supported`}},
		{"schedule every", cert("schedule: '@every 1h'"), []string{`line 6: certificates.example.com.schedule: descriptor "@every 1h" not supported`}},
		{"schedule six fields", cert("schedule: '0 0 3 * * *'"), []string{"line 6: certificates.example.com.schedule: want immediate, manual or five cron fields", "(6 fields)"}},
		{"schedule word", cert("schedule: nightly"), []string{`line 6: certificates.example.com.schedule: want immediate, manual or five cron fields (minute hour day-of-month month day-of-week), got "nightly"`}},
		{"schedule bad minute", cert("schedule: '61 3 * * *'"), []string{`line 6: certificates.example.com.schedule: invalid cron expression "61 3 * * *"`}},
		{"schedule time zone", cert("schedule: 'CRON_TZ=UTC 0 3 * * *'"), []string{"line 6: certificates.example.com.schedule: time zone"}},
		{"schedule never fires", cert("schedule: '0 0 30 2 *'"), []string{"line 6: certificates.example.com.schedule: cron expression \"0 0 30 2 *\" never fires"}},
		{"schedule capitalised", cert("schedule: Manual"), []string{"line 6: certificates.example.com.schedule: want immediate, manual"}},
		{"check empty", cert("check: ''"), []string{"line 6: certificates.example.com.check: empty"}},
		{"check blank", cert("check: '   '"), []string{"line 6: certificates.example.com.check: empty"}},
		{"reload list", cert("reload: [systemctl, reload, nginx]"), []string{"line 6: certificates.example.com.reload: want a string, got a list"}},
		{"reload null", cert("reload:"), []string{"line 6: certificates.example.com.reload: want a string, got nothing"}},
		{"check shell operator", cert("check: 'nginx -t && true'"), []string{"line 6: certificates.example.com.check: ", "invalid command line"}},
		{"reload unbalanced quote", cert(`reload: "systemctl reload 'nginx"`), []string{"line 6: certificates.example.com.reload: ", "invalid command line"}},
		{"verify no port", cert("verify: 127.0.0.1"), []string{`line 6: certificates.example.com.verify: want HOST:PORT, got "127.0.0.1"`}},
		{"verify named port", cert("verify: '127.0.0.1:https'"), []string{"line 6: certificates.example.com.verify: want HOST:PORT with a numeric port"}},
		{"verify port zero", cert("verify: '127.0.0.1:0'"), []string{"line 6: certificates.example.com.verify: want HOST:PORT with a numeric port"}},
		{"verify port too big", cert("verify: '127.0.0.1:65536'"), []string{"line 6: certificates.example.com.verify: want HOST:PORT with a numeric port"}},
		{"verify no host", cert("verify: ':443'"), []string{"line 6: certificates.example.com.verify: want HOST:PORT, got \":443\": no host"}},
		{"owner with space", cert("owner: 'www data'"), []string{`line 6: certificates.example.com.owner: want a name or a numeric id, got "www data"`}},
		{"owner option-like", cert("owner: -r"), []string{"line 6: certificates.example.com.owner: want a name or a numeric id"}},
		{"group with colon", cert("group: 'a:b'"), []string{"line 6: certificates.example.com.group: want a name or a numeric id"}},
		{"group list", cert("group: [a]"), []string{"line 6: certificates.example.com.group: want a name or a numeric id, got a list"}},
		{"cert_mode group-writable", cert("cert_mode: '0664'"), []string{"line 6: certificates.example.com.cert_mode: mode 0664 is group- or other-writable"}},
		{"cert_mode other-writable", cert("cert_mode: '0646'"), []string{"line 6: certificates.example.com.cert_mode: mode 0646 is group- or other-writable"}},
		{"cert_mode not octal", cert("cert_mode: '0888'"), []string{`line 6: certificates.example.com.cert_mode: want an octal mode from "0000" to "0777"`}},
		{"cert_mode setuid", cert("cert_mode: '4644'"), []string{`line 6: certificates.example.com.cert_mode: want an octal mode from "0000" to "0777"`}},
		{"cert_mode symbolic", cert("cert_mode: u+rw"), []string{`line 6: certificates.example.com.cert_mode: want an octal mode`}},
		{"cert_mode signed", cert("cert_mode: '+644'"), []string{`line 6: certificates.example.com.cert_mode: want an octal mode`}},
		{"cert_mode bool", cert("cert_mode: true"), []string{`line 6: certificates.example.com.cert_mode: want an octal mode such as "0644", got a boolean`}},
		{"key_mode other-readable", cert("key_mode: '0604'"), []string{"line 6: certificates.example.com.key_mode: mode 0604 is open to others"}},
		{"key_mode other-writable", cert("key_mode: '0602'"), []string{"line 6: certificates.example.com.key_mode: mode 0602 is open to others"}},
		{"key_mode other-executable", cert("key_mode: '0601'"), []string{"line 6: certificates.example.com.key_mode: mode 0601 is open to others"}},
		{"key_mode world", cert("key_mode: 0644"), []string{"line 6: certificates.example.com.key_mode: mode 0644 is open to others"}},
		{"keep zero", cert("keep: 0"), []string{"line 6: certificates.example.com.keep: want an integer from 1 to 50, got 0"}},
		{"keep 51", cert("keep: 51"), []string{"line 6: certificates.example.com.keep: want an integer from 1 to 50, got 51"}},
		{"keep string", cert("keep: 'three'"), []string{"line 6: certificates.example.com.keep: want an integer, got a string"}},
		{"splay negative", cert("splay: -1s"), []string{"line 6: certificates.example.com.splay: want a duration of 0s or more"}},
		{"splay unit", cert("splay: 1x"), []string{`line 6: certificates.example.com.splay: want a duration such as "30s"`}},
		{"splay days", cert("splay: 1d"), []string{`line 6: certificates.example.com.splay: want a duration such as "30s"`}},
		{"expiry_deadline negative", cert("expiry_deadline: -1h"), []string{"line 6: certificates.example.com.expiry_deadline: want a duration of 0s or more"}},
		{"expiry_deadline huge", cert("expiry_deadline: 2000000h"), []string{"line 6: certificates.example.com.expiry_deadline: duration 2000000h is too long"}},
		{"command_timeout zero", cert("command_timeout: 0s"), []string{"line 6: certificates.example.com.command_timeout: want a positive duration"}},
		{"verify_timeout zero", cert("verify_timeout: 0s"), []string{"line 6: certificates.example.com.verify_timeout: want a positive duration"}},
		{"combined string", cert("combined: 'true'"), []string{"line 6: certificates.example.com.combined: want true or false, got a string"}},
		{"combined yes", cert("combined: yes"), []string{"line 6: certificates.example.com.combined: want true or false, got a string"}},
		{"alias between certificates", doc(name, id, trust, "certificates:", "  a.com: &s {reload: x}", "  b.com: *s"), []string{"line 5: anchors and aliases"}},
	}
	checkParseRefused(t, parseNodeFile, tests)
}

// refusal is a document a parser must refuse, and the parts of its error.
type refusal struct {
	name string
	doc  string
	want []string
}

// checkParseRefused runs parse on each document of tests, each in a parallel
// subtest, and fails unless it is refused with a one-line error holding
// every part of want.
func checkParseRefused[C any](t *testing.T, parse func([]byte) (*configFile[C], error), tests []refusal) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("parsed %q into %+v, want an error", tt.doc, f.config)
			}
			t.Log(err)
			checkErr(t, err, tt.want...)
		})
	}
}

// testKeys are real key files in a temporary folder.
type testKeys struct {
	dir          string
	signingKey   string // path of an Ed25519 signing key, 0600
	publicKey    string // its public key, as `keygen signing` prints it
	identity     string // path of an age identity file, 0600
	recipient    string // its age1… recipient
	sshKey       string // path of an OpenSSH ed25519 private key, 0600
	sshRecipient string // its "ssh-ed25519 …" public key line
}

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	k := testKeys{dir: t.TempDir()}
	k.signingKey = filepath.Join(k.dir, "signing.key")
	k.identity = filepath.Join(k.dir, "node.key")
	k.sshKey = filepath.Join(k.dir, "ssh_host_ed25519_key")

	sk, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.WriteKeyFile(k.signingKey, sk.MarshalPEM()); err != nil {
		t.Fatal(err)
	}
	k.publicKey = sk.Public().String()

	id := testkeys.X25519(t)
	if err := crypto.WriteKeyFile(k.identity, []byte("# public key: "+id.Recipient().String()+"\n"+id.String()+"\n")); err != nil {
		t.Fatal(err)
	}
	k.recipient = id.Recipient().String()

	hostKey := testkeys.Ed25519(t)
	if err := crypto.WriteKeyFile(k.sshKey, hostKey.PEM); err != nil {
		t.Fatal(err)
	}
	k.sshRecipient = hostKey.Line + " root@web2"
	return k
}

var placeholder = regexp.MustCompile(`\{\{[A-Z_]+\}\}`)

// substitute returns testdata/config/name with each {{KEY}} replaced.
func substitute(t testing.TB, name string, values map[string]string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "config", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for k, v := range values {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if placeholder.MatchString(s) {
		t.Fatalf("%s: placeholder left in %q", name, s)
	}
	return []byte(s)
}

// writeConfig writes data to a file in dir and returns its path.
func writeConfig(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	treetest.WriteFile(t, path, data, 0o644)
	return path
}

// TestLoadContractExamples loads the two examples of CONTRACT.md with real
// keys: an age identity for web1, an SSH host key for web2.
func TestLoadContractExamples(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	pubPath := writeConfig(t, k.dir, "publisher.yaml", substitute(t, "publisher.yaml", map[string]string{
		"SIGNING_KEY":    k.signingKey,
		"WEB1_RECIPIENT": k.recipient,
		"WEB2_RECIPIENT": k.sshRecipient,
	}))
	pc := must(t, loadPublisherConfig, pubPath)
	if pc.SigningKey == nil || pc.SigningKey.Public().String() != k.publicKey {
		t.Errorf("signing key not loaded")
	}
	if pc.Nodes["web1"] != k.recipient || pc.Nodes["web2"] != k.sshRecipient {
		t.Errorf("Nodes = %v", pc.Nodes)
	}
	if got := pc.Certificates["example.com"]; !reflect.DeepEqual(got, []string{"web1", "web2"}) {
		t.Errorf("example.com goes to %v", got)
	}
	if pc.NATS.URL != "nats://mgmt.example.net:4222" || pc.NATS.Creds != "/etc/certsync/publisher.creds" {
		t.Errorf("NATS = %+v", pc.NATS)
	}

	for _, identity := range []string{k.identity, k.sshKey} {
		nodePath := writeConfig(t, t.TempDir(), "node.yaml", substitute(t, "node.yaml", map[string]string{
			"IDENTITY":      identity,
			"PUBLISHER_KEY": k.publicKey,
		}))
		nc := must(t, loadNodeConfig, nodePath)
		if len(nc.Identities) == 0 {
			t.Errorf("%s: no identity loaded", identity)
		}
		if len(nc.Trusted) != 1 || nc.Trusted[0] != pc.SigningKey.Public() {
			t.Errorf("Trusted = %v, want [%s]", nc.Trusted, k.publicKey)
		}
		// The keys the example sets; the library's defaults for the rest.
		want := validated(t, subscriber.Config{
			Node:    "web1",
			Trusted: nc.Trusted,
			Certificates: map[string]subscriber.Certificate{"example.com": {
				InstallDir: "/etc/letsencrypt/live/example.com",
				Schedule:   schedule(t, "0 3 * * *"),
				Check:      command(t, "nginx -t"),
				Reload:     command(t, "systemctl reload nginx"),
				Verify:     "127.0.0.1:443",
				Owner:      "root",
				Group:      "ssl-cert",
			}},
		}).Certificates["example.com"]
		if got := nc.Certificates["example.com"]; !reflect.DeepEqual(got, want) {
			t.Errorf("example.com\n got %+v\nwant %+v", got, want)
		}
		if nc.Node != "web1" || nc.MetricsListen != "127.0.0.1:9469" || nc.StageDir != "/certsync/live" ||
			nc.NATS.NKey != "/etc/certsync/web1.nk" || nc.NATS.InboxPrefix != "_INBOX_certsync_node_web1" {
			t.Errorf("node config = %+v", nc)
		}
	}
}

func TestLoadKeyErrors(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	openKey := filepath.Join(k.dir, "open.key")
	if err := crypto.WriteKeyFile(openKey, []byte("unused")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openKey, 0o640); err != nil {
		t.Fatal(err)
	}
	notAKey := filepath.Join(k.dir, "not-a.key")
	if err := crypto.WriteKeyFile(notAKey, []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	publisherDoc := func(key string) []byte {
		return []byte(doc("nodes: {web1: $R1}", "certificates: {a.com: [web1]}", "", "signing_key: "+key))
	}
	nodeDoc := func(key string) []byte {
		return []byte(doc("name: web1", "trusted_publishers: [$PUB]", "identity: "+key, "certificates: {a.com: {}}"))
	}
	tests := []struct {
		name      string
		load      func(path string) error
		data      []byte
		want      []string
		permError bool
	}{
		{"signing key group-readable", loadPub, publisherDoc(openKey), []string{"line 4: signing_key:", "0640"}, true},
		{"signing key missing", loadPub, publisherDoc(filepath.Join(k.dir, "nope")), []string{"line 4: signing_key:", "nope"}, false},
		{"signing key is an identity", loadPub, publisherDoc(k.identity), []string{"line 4: signing_key:"}, false},
		{"signing key garbage", loadPub, publisherDoc(notAKey), []string{"line 4: signing_key:"}, false},
		{"identity group-readable", loadNode, nodeDoc(openKey), []string{"line 3: identity:", "0640"}, true},
		{"identity missing", loadNode, nodeDoc(filepath.Join(k.dir, "nope")), []string{"line 3: identity:"}, false},
		{"identity garbage", loadNode, nodeDoc(notAKey), []string{"line 3: identity:"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeConfig(t, t.TempDir(), "config.yaml", tt.data)
			err := tt.load(path)
			checkErr(t, err, append([]string{`reading config "` + path + `": `}, tt.want...)...)
			if got := errors.Is(err, crypto.ErrKeyPermissions); got != tt.permError {
				t.Errorf("errors.Is(err, crypto.ErrKeyPermissions) = %v, want %v", got, tt.permError)
			}
		})
	}
}

func TestLoadPublisherConfigWithoutKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The key file is unreadable (missing): only loadPublisherConfig needs it.
	path := writeConfig(t, dir, "publisher.yaml", []byte(doc(
		"signing_key: "+filepath.Join(dir, "missing.key"),
		"nodes: {web1: $R1}",
		"certificates: {example.com: [web1]}",
	)))
	cfg := must(t, loadPublisherConfigWithoutKey, path)
	if cfg.SigningKey != nil || !reflect.DeepEqual(cfg.Certificates, map[string][]string{"example.com": {"web1"}}) {
		t.Errorf("config = %+v", cfg)
	}
	_, err := loadPublisherConfig(path)
	checkErr(t, err, "line 1: signing_key:", "missing.key")

	bad := writeConfig(t, dir, "bad.yaml", []byte(doc("signing_key: /k", "nodes: {web1: $R1}", "certificates: {example.com: [web9]}")))
	_, err = loadPublisherConfigWithoutKey(bad)
	checkErr(t, err, `reading config "`+bad+`": line 3: certificates.example.com: unknown node "web9"`)
}

func loadPub(path string) error  { _, err := loadPublisherConfig(path); return err }
func loadNode(path string) error { _, err := loadNodeConfig(path); return err }

func TestLoadSSHRecipientAndIdentity(t *testing.T) {
	t.Parallel()
	k := newTestKeys(t)
	path := writeConfig(t, k.dir, "publisher.yaml", []byte(doc(
		"signing_key: "+k.signingKey,
		"nodes:",
		"  web2: "+k.sshRecipient,
		"certificates: {example.com: [web2]}",
	)))
	pc := must(t, loadPublisherConfig, path)
	if pc.Nodes["web2"] != k.sshRecipient {
		t.Errorf("web2's recipient = %q, want %q", pc.Nodes["web2"], k.sshRecipient)
	}
}

func TestLoadErrorFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeConfig(t, dir, "node.yaml", []byte(doc(
		"name: web1",
		"identity: /k",
		"trusted_publishers: [$PUB]",
		"certificates:",
		"  example.com:",
		"    reload: systemctl reload nginx",
		"    instal_dir: /srv/x",
	)))
	_, err := loadNodeConfig(path)
	want := `reading config "` + path + `": line 7: certificates.example.com: unknown key "instal_dir" (did you mean "install_dir"?)`
	if err == nil || err.Error() != want {
		t.Errorf("error\n got %v\nwant %s", err, want)
	}
}

func TestLoadFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.yaml")
	_, err := loadPublisherConfig(missing)
	checkErr(t, err, `reading config "`+missing+`": no such file or directory`)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(%v, fs.ErrNotExist) = false", err)
	}

	_, err = loadNodeConfig(dir)
	checkErr(t, err, `reading config "`+dir+`"`)

	big := writeConfig(t, dir, "big.yaml", []byte("# "+strings.Repeat("x", maxConfigSize)+"\n"))
	_, err = loadNodeConfig(big)
	checkErr(t, err, `reading config "`+big+`": larger than 1048576 bytes`)

	empty := writeConfig(t, dir, "empty.yaml", nil)
	_, err = loadPublisherConfig(empty)
	checkErr(t, err, `reading config "`+empty+`": empty configuration`)
}

// TestConfigPath is not parallel: it sets the environment.
func TestConfigPath(t *testing.T) {
	t.Setenv(configEnv, "")
	if got := configPath("", DefaultNodeConfig); got != "/etc/certsync/node.yaml" {
		t.Errorf("no flag, no env: %q", got)
	}
	if got := configPath("", DefaultPublisherConfig); got != "/etc/certsync/publisher.yaml" {
		t.Errorf("no flag, no env: %q", got)
	}
	t.Setenv(configEnv, "/env.yaml")
	if got := configPath("", DefaultNodeConfig); got != "/env.yaml" {
		t.Errorf("env: %q, want /env.yaml", got)
	}
	if got := configPath("/flag.yaml", DefaultNodeConfig); got != "/flag.yaml" {
		t.Errorf("flag and env: %q, want /flag.yaml", got)
	}
}

// TestSchemaDocumented checks that the annotated schema at the top of
// config.go shows every key the parser knows.
func TestSchemaDocumented(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][]string{publisherKeys, pubCertKeys, rolloutKeys, nodeKeys, natsKeys, tlsKeys, streamKeys, certKeys} {
		for _, key := range keys {
			re := regexp.MustCompile(`(?m)^//\t[ {]*` + regexp.QuoteMeta(key) + `:`)
			if !re.Match(src) {
				t.Errorf("key %q is not in the schema comment of config.go", key)
			}
		}
	}
}

// fuzzSeeds returns the documents of testdata/config, with real public keys,
// and a few from the tables above.
func fuzzSeeds(f *testing.F) [][]byte {
	k := testPublicKeys()
	values := map[string]string{
		"SIGNING_KEY": "/k", "WEB1_RECIPIENT": k.r1, "WEB2_RECIPIENT": k.ssh,
		"IDENTITY": "/k", "PUBLISHER_KEY": k.pub, "OTHER_PUBLISHER_KEY": k.pub2,
	}
	var seeds [][]byte
	for _, name := range []string{"publisher.yaml", "node.yaml", "node-full.yaml"} {
		seeds = append(seeds, substitute(f, name, values))
	}
	seeds = append(seeds,
		[]byte(doc("signing_key: /k", "nodes: {web1: &r $R1, web2: *r}", "certificates: {a.com: [web1]}")),
		[]byte(doc("signing_key: /k", "nodes: {web1: $R1}", "certificates: {a.com: [web1]}", "---", "x: 1")),
		[]byte(doc("signing_key: /k", "nodes: {web1: $R1, web2: $R2}", "rollout: {canary: [web1], waves: [50%, 100%], soak: 0s, max_failures: 10%}",
			"certificates: {a.com: [web1, web2], b.com: {nodes: [web2], rollout: none}, c.com: {nodes: [web1], rollout: {canary: 50%}}}")),
		[]byte(doc("name: web1", "identity: /k", "trusted_publishers: [$PUB]", "defaults: {keep: 2}", "certificates: {a.com: {schedule: '0 3 * * *'}}")),
	)
	return seeds
}

// fuzzParse fuzzes parse from the seeds of fuzzSeeds: a refusal is one
// line, and what parse accepts passes check.
func fuzzParse[C any](f *testing.F, parse func([]byte) (*configFile[C], error), check func(t *testing.T, cf *configFile[C])) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		check(t, cf)
	})
}

func FuzzParsePublisherConfig(f *testing.F) {
	fuzzParse(f, parsePublisherFile, func(t *testing.T, pf *publisherFile) {
		cfg := pf.config
		if pf.key == "" || len(cfg.Certificates) == 0 || cfg.Timeout <= 0 {
			t.Errorf("accepted an incomplete configuration: %+v", pf)
		}
		for name := range cfg.Nodes {
			if err := wire.CheckNodeName(name); err != nil {
				t.Errorf("accepted %v", err)
			}
		}
		for cert, nodes := range cfg.Certificates {
			if err := wire.CheckCertName(cert); err != nil {
				t.Errorf("accepted %v", err)
			}
			if len(nodes) == 0 {
				t.Errorf("accepted certificate %q without nodes", cert)
			}
			for _, n := range nodes {
				if _, ok := cfg.Nodes[n]; !ok {
					t.Errorf("accepted unknown node %q of certificate %q", n, cert)
				}
			}
		}
	})
}

func FuzzParseNodeConfig(f *testing.F) {
	fuzzParse(f, parseNodeFile, func(t *testing.T, nf *nodeFile) {
		cfg := nf.config
		if err := wire.CheckNodeName(cfg.Node); err != nil {
			t.Errorf("accepted %v", err)
		}
		if nf.key == "" || len(cfg.Trusted) == 0 || len(cfg.Certificates) == 0 || !filepath.IsAbs(cfg.StageDir) {
			t.Errorf("accepted an incomplete configuration: %+v", nf)
		}
		for name, c := range cfg.Certificates {
			if err := wire.CheckCertName(name); err != nil || c.Name != name {
				t.Errorf("accepted certificate %q named %q (%v)", name, c.Name, err)
			}
			if !filepath.IsAbs(c.InstallDir) || c.KeyMode&0o007 != 0 || c.CertMode&0o022 != 0 ||
				c.Keep < 1 || c.Keep > subscriber.MaxKeep || c.CommandTimeout <= 0 || c.VerifyTimeout <= 0 || c.Splay < 0 {
				t.Errorf("accepted certificate %+v", c)
			}
			if _, err := subscriber.ParseSchedule(c.Schedule.String()); err != nil {
				t.Errorf("accepted %v", err)
			}
		}
	})
}

// TestLoadContractPublisherBlock loads publisher.yaml exactly as
// docs/CONTRACT.md writes it (with real keys for its placeholders), so
// that every key the contract shows is one certsync reads, with the
// meaning its comment gives.
func TestLoadContractPublisherBlock(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/CONTRACT.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "Publisher, `publisher.yaml`:\n\n```yaml\n")
	if !ok {
		t.Fatal("docs/CONTRACT.md has no publisher.yaml block")
	}
	block, _, _ = strings.Cut(block, "```\n")
	k := newTestKeys(t)
	for old, real := range map[string]string{
		"signing_key: /etc/certsync/signing.key": "signing_key: " + k.signingKey,
		"web1: age1…":                            "web1: " + k.recipient,
		"web2: ssh-ed25519 AAAA…":                "web2: " + k.sshRecipient,
	} {
		if !strings.Contains(block, old) {
			t.Fatalf("the contract's publisher.yaml has no %q", old)
		}
		block = strings.Replace(block, old, real, 1)
	}
	pc := must(t, loadPublisherConfig, writeConfig(t, k.dir, "publisher.yaml", []byte(block)))
	if got := pc.Certificates["www.example.org"]; !reflect.DeepEqual(got, []string{"web1", "web2"}) {
		t.Errorf("www.example.org goes to %v", got)
	}
	if pc.Rollout == nil || !reflect.DeepEqual(pc.Rollout.Canary, []string{"web1"}) || !reflect.DeepEqual(pc.Rollout.Waves, []int{25, 100}) {
		t.Errorf("rollout = %+v, want canary web1, waves 25%% and 100%%", pc.Rollout)
	}
	if r := pc.Rollouts["www.example.org"]; r == nil || !reflect.DeepEqual(r.Canary, []string{"web2"}) {
		t.Errorf("www.example.org's rollout = %+v, want canary web2", r)
	}
	if s := pc.Stream; s.Replicas != 1 || s.History != 5 || s.DuplicateWindow != 24*time.Hour || s.ConsumerReplicas != 1 {
		t.Errorf("stream = %+v, want the defaults the contract gives", s)
	}
	if pc.Timeout != 30*time.Second {
		t.Errorf("timeout = %v, want 30s", pc.Timeout)
	}
}
