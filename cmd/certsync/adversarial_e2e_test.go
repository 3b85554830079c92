package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// envFields are the offsets of an envelope's fields, as docs/FORMAT.md lays
// them out (n the name's length, e the extension area's, c the
// ciphertext's).
type envFields struct {
	n, e, c                                   int
	name, version, signer, extLen, ext, ctLen int
	ct, sig                                   int
}

// parseFields finds the fields of a valid envelope from the layout of
// docs/FORMAT.md, and checks that they add up to its length.
func parseFields(t testing.TB, env []byte) envFields {
	t.Helper()
	// Formats 1 and 2 share the layout.
	if len(env) < 122 || string(env[:8]) != "CERTSYNC" || env[8] < 1 || env[8] > 2 {
		t.Fatalf("not an envelope of format 1 or 2: % x…", env[:min(len(env), 16)])
	}
	var f envFields
	f.n = int(env[9])
	f.name = 10
	f.version = 10 + f.n
	f.signer = 18 + f.n
	f.extLen = 50 + f.n
	f.e = int(binary.BigEndian.Uint32(env[f.extLen:]))
	f.ext = 54 + f.n
	f.ctLen = 54 + f.n + f.e
	f.c = int(binary.BigEndian.Uint32(env[f.ctLen:]))
	f.ct = 58 + f.n + f.e
	f.sig = f.ct + f.c
	if f.sig+64 != len(env) {
		t.Fatalf("envelope fields end at %d, the envelope at %d", f.sig+64, len(env))
	}
	if !bytes.HasPrefix(env[f.ct:], []byte("age-encryption.org/v1\n")) {
		t.Fatalf("no age file at offset %d", f.ct)
	}
	return f
}

// b64 is the standard padded base64 of the text form of public keys.
func b64(raw []byte) string { return base64.StdEncoding.EncodeToString(raw) }

// splice returns env with env[from:to] replaced by repl.
func splice(env []byte, from, to int, repl []byte) []byte {
	out := append([]byte{}, env[:from]...)
	out = append(out, repl...)
	return append(out, env[to:]...)
}

// TestEnvelopeTamperedE2E is acceptance 3 of issue 4 for the envelope:
// every field of a valid envelope taken from the stream, tampered one at a
// time at the offsets docs/FORMAT.md gives and stored on the same subject
// with the same headers, and a valid body replayed on another
// certificate's subject with headers to match, makes `certsync node sync`
// exit 1 with one error line naming the certificate and why. Nothing
// staged or installed changes, certsync status shows the refusal, and a
// renewal published afterwards arrives. (The byte flips of every position
// and the vectors are in crypto; garbage, empty and moved bodies with their
// own headers in refusals_e2e_test.go.)
func TestEnvelopeTamperedE2E(t *testing.T) {
	t.Parallel()
	srv, le, f, lineage, other := twoCertificates(t)
	web1 := f.Nodes["web1"]
	checkStaged(t, web1.StageDir, "example.com", lineage)

	js := natstest.JetStream(t, srv.URL)
	orig := newestBundle(t, js, "example.com")
	moved := newestBundle(t, js, "other.example")
	env := orig.Data
	at := parseFields(t, env)
	stranger := make([]byte, 32)
	rand.Read(stranger)
	// The first stanza's body line: the line after "-> X25519 …".
	stanza := at.ct + bytes.Index(env[at.ct:], []byte("\n-> ")) + 1
	stanzaBody := stanza + bytes.IndexByte(env[stanza:], '\n') + 1
	// The payload starts after the header's MAC line "--- …\n".
	payload := at.ct + bytes.Index(env[at.ct:], []byte("\n--- ")) + 1
	payload += bytes.IndexByte(env[payload:], '\n') + 1
	// record inserts an empty record of type typ before the records the
	// publisher wrote (its seal record, 0x8001).
	record := func(typ uint16) []byte {
		ext := binary.BigEndian.AppendUint16(nil, typ)
		ext = binary.BigEndian.AppendUint32(ext, 0)
		e := splice(env, at.ext, at.ext, ext)
		binary.BigEndian.PutUint32(e[at.extLen:], uint32(at.e+len(ext)))
		return e
	}
	flip := func(i int) []byte {
		e := bytes.Clone(env)
		e[i] ^= 0x01
		return e
	}
	set := func(i int, b ...byte) []byte {
		e := bytes.Clone(env)
		copy(e[i:], b)
		return e
	}
	u32 := func(i, v int) []byte { return set(i, binary.BigEndian.AppendUint32(nil, uint32(v))...) }

	const (
		malformed = "malformed envelope"
		badSig    = "bad envelope signature"
	)
	tests := []struct {
		name   string
		body   []byte
		header nats.Header // nil: the original message's
		want   []string    // what the error line says, all of it
	}{
		{name: "magic", body: set(0, 'X'), want: []string{malformed, "magic"}},
		{name: "format byte 3", body: set(8, 3), want: []string{malformed, "format"}},
		{name: "format byte 0", body: set(8, 0), want: []string{malformed, "format"}},
		{name: "name length 0", body: set(9, 0), want: []string{malformed, "name"}},
		{name: "name length one short", body: set(9, byte(at.n-1)), want: []string{malformed}},
		{name: "name length one long", body: set(9, byte(at.n+1)), want: []string{malformed}},
		{name: "name length 255", body: set(9, 255), want: []string{malformed}},
		{name: "name byte", body: flip(at.name + 1), want: []string{badSig}},
		{name: "name with NUL", body: set(at.name+1, 0), want: []string{malformed, "NUL"}},
		{name: "version byte", body: flip(at.version + 7), want: []string{badSig}},
		{name: "version 0", body: set(at.version, 0, 0, 0, 0, 0, 0, 0, 0), want: []string{malformed, "version"}},
		{name: "version far ahead", body: set(at.version, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), want: []string{badSig}},
		{name: "signer unknown", body: set(at.signer, stranger...), want: []string{crypto.ErrUntrustedSigner.Error()}},
		{name: "signer byte", body: flip(at.signer + 31), want: []string{crypto.ErrUntrustedSigner.Error()}},
		{name: "extensions length 4", body: u32(at.extLen, 4), want: []string{malformed, "extension"}},
		{name: "extensions length past the end", body: u32(at.extLen, 1<<31), want: []string{malformed, "extensions length"}},
		{name: "extension record ignorable", body: record(0x8000), want: []string{badSig}},
		{name: "seal record recipients digest", body: flip(at.ext + 6 + 32), want: []string{badSig}},
		{name: "unknown critical extension record", body: record(0x0007), want: []string{malformed, "critical"}},
		{name: "extension record type 0", body: record(0x0000), want: []string{malformed, "extension type"}},
		{name: "ciphertext length one long", body: u32(at.ctLen, at.c+1), want: []string{malformed, "ciphertext length"}},
		{name: "ciphertext length one short", body: u32(at.ctLen, at.c-1), want: []string{malformed}},
		{name: "ciphertext length 0", body: u32(at.ctLen, 0), want: []string{malformed}},
		{name: "ciphertext age magic", body: flip(at.ct), want: []string{malformed, "ciphertext"}},
		{name: "ciphertext stanza type", body: flip(stanza + 3), want: []string{badSig}},
		{name: "ciphertext stanza body", body: flip(stanzaBody + 2), want: []string{badSig}},
		{name: "ciphertext payload", body: flip(payload + 20), want: []string{badSig}},
		{name: "ciphertext last byte", body: flip(at.sig - 1), want: []string{badSig}},
		{name: "ciphertext cut short, lengths fixed", body: func() []byte {
			e := splice(env, at.sig-16, at.sig, nil)
			binary.BigEndian.PutUint32(e[at.ctLen:], uint32(at.c-16))
			return e
		}(), want: []string{badSig}},
		{name: "signature first byte", body: flip(at.sig), want: []string{badSig}},
		{name: "signature last byte", body: flip(len(env) - 1), want: []string{badSig}},
		{name: "signature zero", body: set(at.sig, make([]byte, 64)...), want: []string{badSig}},
		{name: "signature missing", body: env[:at.sig], want: []string{malformed}},
		{name: "trailing byte", body: append(bytes.Clone(env), 0), want: []string{malformed}},
		{name: "body of another certificate, headers rewritten to match", body: moved.Data, header: func() nats.Header {
			h := nats.Header{}
			for k, v := range orig.Header {
				h[k] = v
			}
			h.Set(wire.HeaderName, "example.com")
			return h
		}(), want: []string{`signed for certificate "other.example"`, subscriber.ErrWrongSubject.Error()}},
	}
	dirs := nodeDirs(web1)
	for _, tt := range tests {
		if bytes.Equal(tt.body, env) {
			t.Fatalf("%s: the tampered body equals the original", tt.name)
		}
		before := treetest.Snapshot(t, dirs...)
		header := tt.header
		if header == nil {
			header = orig.Header
		}
		publishForged(t, js, wire.Subject("example.com"), tt.body, header)
		res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
		line := checkRefused(t, tt.name, res, "example.com", tt.want[0])
		t.Logf("%s: %s", tt.name, line)
		for _, w := range tt.want[1:] {
			if !strings.Contains(line, w) {
				t.Errorf("%s: the error line does not say %q: %s", tt.name, w, line)
			}
		}
		treetest.Unchanged(t, tt.name, before, dirs...)
		checkStatusRefused(t, tt.name, f.Publisher, "web1", "example.com", tt.want[0])
	}

	// Every refusal was settled for good: nothing is left to refuse, and a
	// renewal published afterwards arrives.
	f.sync(t, "web1")
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	f.sync(t, "web1")
	checkStaged(t, web1.StageDir, "example.com", lineage)
	checkInstalled(t, filepath.Join(filepath.Dir(web1.StageDir), "installed", "example.com"), lineage)
	checkStatusHealthy(t, f.Publisher, "web1", "example.com", readStaged(t, web1.StageDir, "example.com").Fingerprint.String())
	checkStaged(t, web1.StageDir, "other.example", other)
}

// TestDowngradeAfterRestartE2E is acceptance 3 of issue 4 for replays: an
// old bundle, valid and signed by the trusted key, stored again on its
// subject after the node daemon restarted is refused as a downgrade: the
// version the node holds is persisted, not kept in memory.
func TestDowngradeAfterRestartE2E(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: le.Live(), Certificates: map[string][]string{"example.com": {"web1"}}})
	web1 := f.Nodes["web1"]
	js := natstest.JetStream(t, srv.URL)

	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	old := newestBundle(t, js, "example.com")
	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	cur := newestBundle(t, js, "example.com")

	node := startCertsync(t, nil, "node", "run", "--config", web1.Config)
	node.WaitLog(t, 30*time.Second, "node_started")
	waitAcked(t, srv.URL, "web1", cur.Sequence)
	installDir := filepath.Join(filepath.Dir(web1.StageDir), "installed", "example.com")
	natstest.WaitFor(t, 30*time.Second, "web1 to install the renewal", func() bool {
		return stagedFingerprint(web1.StageDir, "example.com") == cur.Header.Get(wire.HeaderFingerprint) && installedMatches(installDir, lineage)
	})
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node run exited with status %d:\n%s", code, node.Log())
	}
	dirs := nodeDirs(web1)
	before := treetest.Snapshot(t, dirs...)

	seq := publishForged(t, js, wire.Subject("example.com"), old.Data, old.Header)
	node = startCertsync(t, nil, "node", "run", "--config", web1.Config)
	rec := node.WaitLog(t, 30*time.Second, "bundle_refused")
	if reason := fmt.Sprint(rec["reason"]); rec["name"] != "example.com" || !strings.Contains(reason, subscriber.ErrDowngrade.Error()) {
		t.Errorf("the restarted node refused %v, want example.com as %q", rec, subscriber.ErrDowngrade)
	}
	waitAcked(t, srv.URL, "web1", seq)
	if code := node.Stop(t); code != 0 {
		t.Fatalf("node run exited with status %d:\n%s", code, node.Log())
	}
	treetest.Unchanged(t, "after the replay", before, dirs...)
	checkStatusRefused(t, "replay", f.Publisher, "web1", "example.com", subscriber.ErrDowngrade.Error())

	// The same replay seen by node sync, a process of its own each time.
	before = treetest.Snapshot(t, dirs...)
	publishForged(t, js, wire.Subject("example.com"), old.Data, old.Header)
	res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
	checkRefused(t, "replay to node sync", res, "example.com", subscriber.ErrDowngrade.Error())
	treetest.Unchanged(t, "after the replay to node sync", before, dirs...)

	le.Write("example.com", certOptions{})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	f.sync(t, "web1")
	checkStaged(t, web1.StageDir, "example.com", lineage)
	checkStatusHealthy(t, f.Publisher, "web1", "example.com", readStaged(t, web1.StageDir, "example.com").Fingerprint.String())
}

// TestPayloadTooSmallE2E: more nodes than one envelope holds (age's 1,024
// recipients, or the server's max_payload) are sealed in recipient groups
// (publisher/groups_test.go); a server whose max_payload not even one
// node's envelope fits is refused by certsync publish with one clear error
// line naming max_payload, before anything is stored: no message.
func TestPayloadTooSmallE2E(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.MaxPayload = 2048
	url := natstest.URL(natstest.Start(t, opts))
	le := newLineages(t)
	lineage, _ := le.Write("example.com", certOptions{})
	dir := t.TempDir()
	cfg := publisherConfig{
		NATS: natsConfig{URL: url}, Lineages: le.Live(),
		Nodes: map[string]string{}, Certificates: map[string][]string{},
	}
	cfg.SigningKey = filepath.Join(dir, "signing.key")
	keygenSigning(t, cfg.SigningKey)
	for i := range 3 {
		id := testkeys.X25519(t)
		node := fmt.Sprintf("web%d", i+1)
		cfg.Nodes[node] = id.Recipient().String()
		cfg.Certificates["example.com"] = append(cfg.Certificates["example.com"], node)
	}
	path := writePublisherConfig(t, filepath.Join(dir, "publisher.yaml"), cfg)

	res := certsyncCmd(t, "publish", "--config", path, "--lineage", lineage)
	errs := res.errorLines()
	if res.Code != 1 || len(errs) != 1 || !strings.Contains(errs[0], `"example.com"`) ||
		!strings.Contains(errs[0], "max_payload of 2048 bytes") || !strings.Contains(errs[0], "raise max_payload") {
		t.Errorf("publish through a server with max_payload 2048: exit %d, want 1 and one error line naming example.com and max_payload; stderr:\n%s", res.Code, res.Stderr)
	}
	js := natstest.JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.Stream)
	if err == nil && st.CachedInfo().State.Msgs != 0 {
		t.Errorf("stream %s holds %d messages after the refused publish, want none", wire.Stream, st.CachedInfo().State.Msgs)
	} else if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatal(err)
	}
}

// TestHeadersNotTrustedE2E is acceptance 3 of issue 4 for headers: a node
// decides on the signed envelope and the subject only, never on the
// Certsync-* headers, which anyone allowed to publish can write. A valid
// bundle whose headers are missing, lie (another certificate's name, a
// wrong version, fingerprint or format) or hold 64 KiB is staged for the
// certificate its envelope names and nothing else; a huge header on a
// worthless body is refused like any worthless body; the node never stalls.
func TestHeadersNotTrustedE2E(t *testing.T) {
	t.Parallel()
	srv, le, f, lineage, _ := twoCertificates(t)
	web1 := f.Nodes["web1"]
	js := natstest.JetStream(t, srv.URL)
	genuine := newestBundle(t, js, "example.com").Header
	otherHeader := newestBundle(t, js, "other.example").Header
	otherDir := filepath.Join(web1.StageDir, "other.example")
	otherFiles := treetest.Snapshot(t, otherDir)

	key, err := crypto.LoadSigningKey(f.PublisherConfig.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	recipient, err := crypto.ParseRecipient(web1.Recipient)
	if err != nil {
		t.Fatal(err)
	}
	// seal renews example.com and seals it as the publisher would, without
	// storing it: the test stores it with headers of its choosing.
	seal := func() ([]byte, string) {
		t.Helper()
		le.Write("example.com", certOptions{})
		b, err := publisher.ReadLineage(lineage, "example.com")
		if err != nil {
			t.Fatal(err)
		}
		info, err := b.Check(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		// A new version as the publisher assigns one: its clock in ms,
		// above what is staged.
		b.Version = uint64(time.Now().UnixMilli())
		env, err := crypto.Seal(b, key, []age.Recipient{recipient})
		if err != nil {
			t.Fatal(err)
		}
		return env, info.Fingerprint.String()
	}
	// NATS refuses a message whose headers exceed 64 KiB; one header value
	// of 60 KiB is stored.
	huge := strings.Repeat("A", 60<<10)
	with := func(h nats.Header, kv ...string) nats.Header {
		out := nats.Header{}
		for k, v := range h {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	tests := []struct {
		name   string
		header nats.Header
	}{
		{name: "no headers", header: nats.Header{}},
		{name: "Certsync-Name of another certificate", header: with(otherHeader, wire.HeaderName, "other.example")},
		{name: "wrong version, fingerprint and format", header: with(genuine,
			wire.HeaderVersion, "18446744073709551615", wire.HeaderFingerprint, otherHeader.Get(wire.HeaderFingerprint), wire.HeaderFormat, "9")},
		{name: "60 KiB header value", header: with(genuine, wire.HeaderSerial, huge)},
		{name: "forged NATS headers", header: with(genuine, "Nats-Sequence", "1", "Nats-Stream", "OTHER",
			"Nats-Subject", wire.Subject("other.example"), "Nats-Num-Pending", "99999")},
	}
	for _, tt := range tests {
		env, fp := seal()
		publishForged(t, js, wire.Subject("example.com"), env, tt.header)
		res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
		if res.Code != 0 {
			t.Errorf("%s: node sync exit status %d, want 0: the envelope is valid\n%s", tt.name, res.Code, res.Stderr)
			continue
		}
		checkStaged(t, web1.StageDir, "example.com", lineage)
		if got := readStaged(t, web1.StageDir, "example.com").Fingerprint.String(); got != fp {
			t.Errorf("%s: staged %s, want the envelope's %s", tt.name, got, fp)
		}
		treetest.Unchanged(t, tt.name+": other.example", otherFiles, otherDir)
	}

	// A worthless body with a 60 KiB header is refused like any other.
	before := treetest.Snapshot(t, nodeDirs(web1)...)
	junk := make([]byte, 1024)
	rand.Read(junk)
	publishForged(t, js, wire.Subject("example.com"), junk, with(genuine, "X-Padding", huge, wire.HeaderName, "other.example"))
	res := certsyncCmd(t, "node", "sync", "--config", web1.Config, "--timeout", "30s")
	checkRefused(t, "junk with a 60 KiB header", res, "example.com", "malformed envelope")
	treetest.Unchanged(t, "junk with a 60 KiB header", before, nodeDirs(web1)...)
	treetest.Unchanged(t, "junk with a 60 KiB header: other.example", otherFiles, otherDir)

	// Headers over 64 KiB never reach the stream: the server refuses them.
	msg := nats.NewMsg(wire.Subject("example.com"))
	msg.Header = with(genuine, "X-Padding", strings.Repeat("A", 64<<10))
	msg.Data = junk
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err == nil || !strings.Contains(err.Error(), "header size exceeds") {
		t.Errorf("publish with a 64 KiB header: %v, want the server's refusal", err)
	}
	f.sync(t, "web1")
	treetest.Unchanged(t, "after the refused 64 KiB header", before, nodeDirs(web1)...)
}

// twoCertificates starts a server and a fleet whose one node, web1, holds
// two certificates, example.com and other.example, both published and
// synced. It returns the lineages of both.
func twoCertificates(t *testing.T) (srv *testServer, le *lineages, f *fleet, lineage, other string) {
	t.Helper()
	srv = startServer(t)
	le = newLineages(t)
	lineage, _ = le.Write("example.com", certOptions{})
	other, _ = le.Write("other.example", certOptions{})
	f = newFleet(t, fleetOptions{
		URL: srv.URL, Lineages: le.Live(),
		Certificates: map[string][]string{"example.com": {"web1"}, "other.example": {"web1"}},
	})
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", lineage)
	mustCertsync(t, "publish", "--config", f.Publisher, "--lineage", other)
	f.sync(t, "web1")
	return srv, le, f, lineage, other
}
