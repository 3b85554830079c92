package subscriber

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"

	"filippo.io/age"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
)

const nodeName = "web1"

// env is a NATS server holding the CERTSYNC stream, a publisher's signing
// key, a test CA and one node identity: what tests need to publish bundles
// the way the publisher does.
type env struct {
	t         *testing.T
	srv       *server.Server
	url       string
	nc        *nats.Conn
	js        jetstream.JetStream
	key       *crypto.SigningKey
	ca        *testcert.CA
	id        *age.X25519Identity
	baseline  uint64 // version of the first bundle a test staged
	published int    // messages published so far
	unsynced  uint64 // messages published since the last sync
}

func newEnv(t *testing.T) *env {
	t.Helper()
	opts := natstest.Options(t.TempDir())
	// Let an oversized envelope reach the node, as a misconfigured server would.
	opts.MaxPayload = 2 << 20
	return startEnv(t, opts)
}

func startEnv(t *testing.T, opts *server.Options) *env {
	t.Helper()
	srv := natstest.Start(t, opts)
	e := &env{t: t, srv: srv, url: natstest.URL(srv), ca: testcert.NewCA(t)}
	var err error
	if e.nc, err = nats.Connect(e.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, wire.StreamConfig(wire.StreamOptions{})); err != nil {
		t.Fatalf("creating stream: %v", err)
	}
	if e.key, err = crypto.GenerateSigningKey(); err != nil {
		t.Fatal(err)
	}
	if e.id, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	return e
}

// issue makes a leaf valid from ago before now, valid for 90 days.
func (e *env) issue(ago time.Duration) *testcert.Cert {
	return e.ca.Issue(e.t, testcert.Options{NotBefore: time.Now().Add(-ago)})
}

func bundleOf(name string, c *testcert.Cert) *crypto.Bundle {
	return &crypto.Bundle{
		Name: name, Version: uint64(c.Leaf.NotBefore.Unix()),
		Cert: c.Cert, Chain: c.Chain, FullChain: c.FullChain, PrivKey: c.PrivKey,
	}
}

// seal seals c as certificate name with the env's key to the env's node.
func (e *env) seal(name string, c *testcert.Cert) []byte {
	return e.sealWith(bundleOf(name, c), e.key, e.id.Recipient())
}

func (e *env) sealWith(b *crypto.Bundle, key *crypto.SigningKey, to ...age.Recipient) []byte {
	e.t.Helper()
	data, err := crypto.Seal(b, key, to)
	if err != nil {
		e.t.Fatalf("sealing %q: %v", b.Name, err)
	}
	return data
}

// liveDir is where a node of the env's (e.node) installs certificate
// name: in a folder beside its stage folder.
func liveDir(stageDir, name string) string {
	return filepath.Join(stageDir+".live", name)
}

// publishSealed publishes c as certificate name the way a publisher does:
// sealed by the env's key to the env's node, with c's headers. It returns
// the stream sequence.
func (e *env) publishSealed(name string, c *testcert.Cert) uint64 {
	e.t.Helper()
	return e.publish(name, e.seal(name, c), c)
}

// publish puts data on certificate name's subject with the contract's
// headers (those it can give for c, which may be nil) and returns its
// stream sequence.
func (e *env) publish(name string, data []byte, c *testcert.Cert) uint64 {
	e.t.Helper()
	m := nats.NewMsg(wire.Subject(name))
	m.Data = data
	m.Header.Set(wire.HeaderName, name)
	m.Header.Set(wire.HeaderFormat, strconv.Itoa(crypto.Format))
	if c != nil {
		m.Header.Set(wire.HeaderSerial, c.Leaf.SerialNumber.Text(16))
		m.Header.Set(wire.HeaderNotBefore, c.Leaf.NotBefore.UTC().Format(time.RFC3339))
		m.Header.Set(wire.HeaderNotAfter, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		m.Header.Set(wire.HeaderVersion, strconv.FormatInt(c.Leaf.NotBefore.Unix(), 10))
	}
	// The id makes a retry after a lost acknowledgement a no-op, while
	// two calls with the same data publish twice.
	e.published++
	sum := sha256.Sum256(data)
	m.Header.Set(wire.HeaderMsgID, fmt.Sprintf("%s-%d", hex.EncodeToString(sum[:8]), e.published))
	// Right after a server restart a publish may go unanswered: retry.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ack, err := e.js.PublishMsg(ctx, m)
		cancel()
		if err == nil {
			e.unsynced++
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("publishing on %s: %v", m.Subject, err)
		}
	}
}

// testNode is a Node under test with its captured log and stage events.
type testNode struct {
	*Node
	env    *env
	logs   *logtest.Buffer
	mu     sync.Mutex
	staged []Staged
}

func (tn *testNode) stagedVersions() []uint64 {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	var vs []uint64
	for _, s := range tn.staged {
		vs = append(vs, s.Version)
	}
	return vs
}

// node makes a Node for the env with certificates certs, staging into
// stageDir.
func (e *env) node(stageDir string, certs ...string) *testNode {
	e.t.Helper()
	var cs []Certificate
	for _, c := range certs {
		// Installed beside the stage folder, in the test's temporary folder.
		cs = append(cs, Certificate{Name: c, InstallDir: liveDir(stageDir, c)})
	}
	return e.nodeWith(stageDir, nil, cs...)
}

// nodeWith makes a Node for the env with certificates certs and the clock
// now (nil: time.Now), staging into stageDir.
func (e *env) nodeWith(stageDir string, now func() time.Time, certs ...Certificate) *testNode {
	e.t.Helper()
	cfg := Config{
		Now:        now,
		Node:       nodeName,
		NATS:       natsconn.Options{URL: e.url},
		Identities: []age.Identity{e.id},
		Trusted:    []crypto.PublicKey{e.key.Public()},
		StageDir:   stageDir,
		Version:    "test",
	}
	cfg.Certificates = map[string]Certificate{}
	for _, c := range certs {
		cfg.Certificates[c.Name] = c
	}
	logs := &logtest.Buffer{}
	n, err := New(cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	tn := &testNode{Node: n, env: e, logs: logs}
	n.onStaged = func(s *Staged) {
		tn.mu.Lock()
		tn.staged = append(tn.staged, *s)
		tn.mu.Unlock()
	}
	return tn
}

func (tn *testNode) sync(t *testing.T) *Report {
	t.Helper()
	tn.env.waitPending()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := tn.Sync(ctx)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return rep
}

// waitPending waits until the node's consumer, if it exists, counts the
// messages published since the last sync as pending. The server counts
// them a moment after it acknowledged the publish; a sync within that
// moment would rightly leave them for the next one.
func (e *env) waitPending() {
	e.t.Helper()
	want := e.unsynced
	e.unsynced = 0
	if want == 0 {
		return
	}
	natstest.WaitFor(e.t, 10*time.Second, fmt.Sprintf("%d messages pending on the consumer", want), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := e.js.Consumer(ctx, wire.Stream, wire.ConsumerName(nodeName))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return true // the node creates it, counting what is there
		}
		return err == nil && cons.CachedInfo().NumPending >= want
	})
}

// status reads the node's status record for cert.
func (e *env) status(cert string) wire.Status {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.js.KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		e.t.Fatalf("status bucket: %v", err)
	}
	entry, err := kv.Get(ctx, wire.StatusKey(nodeName, cert))
	if err != nil {
		e.t.Fatalf("status of %s: %v", cert, err)
	}
	var st wire.Status
	if err := json.Unmarshal(entry.Value(), &st); err != nil {
		e.t.Fatalf("status of %s: %v", cert, err)
	}
	return st
}

// expectOnly checks that rep holds exactly the outcomes want, in any order.
func expectOnly(t *testing.T, rep *Report, want ...Outcome) {
	t.Helper()
	count := map[Outcome]int{}
	for _, o := range want {
		count[o]++
	}
	for o, c := range count {
		if got := rep.Count(o); got != c {
			t.Errorf("report has %d %s, want %d: %+v", got, o, c, rep.Results)
		}
	}
	if len(rep.Results) != len(want) {
		t.Fatalf("report has %d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
}

// checkNoSecret fails if the private key of c shows in text.
func checkNoSecret(t *testing.T, what, text string, certs ...*testcert.Cert) {
	t.Helper()
	if strings.Contains(text, "PRIVATE KEY") {
		t.Errorf("%s mentions a PRIVATE KEY", what)
	}
	for _, c := range certs {
		if c == nil {
			continue
		}
		for line := range strings.Lines(string(c.PrivKey)) {
			line = strings.TrimSpace(line)
			if len(line) > 20 && !strings.HasPrefix(line, "-----") && strings.Contains(text, line) {
				t.Errorf("%s holds private key material", what)
			}
		}
	}
}

func TestSyncStagesBundle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	c := e.issue(time.Hour)
	seq := e.publishSealed("example.com", c)

	n := e.node(stageDir, "example.com")
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeStaged)
	if rep.Failed() || rep.Results[0].Sequence != seq || rep.Results[0].Name != "example.com" {
		t.Errorf("report %+v", rep.Results)
	}
	b := bundleOf("example.com", c)
	meta, err := n.Stage().Read("example.com")
	if err != nil {
		t.Fatal(err)
	}
	checkStaged(t, n.Stage(), b, meta)
	if meta.Serial != c.Leaf.SerialNumber.Text(16) || meta.Sequence != seq || meta.Signer != e.key.Public().String() ||
		!meta.NotAfter.Equal(c.Leaf.NotAfter) || !strings.HasPrefix(meta.Fingerprint.String(), "sha256:") {
		t.Errorf("staged record %+v does not describe the bundle", meta)
	}

	// The node created its consumer on this open server.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := e.js.Consumer(ctx, wire.Stream, wire.ConsumerName(nodeName))
	if err != nil {
		t.Fatalf("node's consumer: %v", err)
	}
	// The stream holds the rollout subjects: the filter has the
	// certificate's (see TestBindCreatesConsumerWithRollouts).
	if got := info.CachedInfo().Config.FilterSubjects; len(got) != 2 || got[0] != wire.Subject("example.com") || got[1] != wire.RolloutSubject("example.com") {
		t.Errorf("consumer filter %q", got)
	}

	st := e.status("example.com")
	if st.State != wire.StateInstalled || st.StagedVersion != b.Version || st.StagedFingerprint != meta.Fingerprint.String() ||
		st.Error != "" || st.Version != "test" || st.LastSeen.IsZero() {
		t.Errorf("status %+v", st)
	}
	// The node created the bucket on this open server: protected like the
	// management side's, so a put with Nats-Rollup: all wipes nothing.
	kvs, err := e.js.Stream(ctx, wire.StatusStream)
	if err != nil {
		t.Fatal(err)
	}
	if c := kvs.CachedInfo().Config; c.AllowRollup || !c.DenyPurge || !c.DenyDelete {
		t.Errorf("bucket the node created: allow_rollup %v, deny_purge %v, deny_delete %v", c.AllowRollup, c.DenyPurge, c.DenyDelete)
	}
	rollup := nats.NewMsg(wire.StatusSubjectPrefix + wire.StatusKey(nodeName, "other.example"))
	rollup.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
	if _, err := e.js.PublishMsg(ctx, rollup); err == nil || !strings.Contains(err.Error(), "rollup not permitted") {
		t.Errorf("a roll-up of the bucket: %v, want it refused", err)
	}
	if e.status("example.com").LastSeen.IsZero() {
		t.Error("the record is gone")
	}

	// Nothing pending: a second pass does nothing.
	expectOnly(t, n.sync(t))
	if got := n.stagedVersions(); len(got) != 1 {
		t.Errorf("staged %d times, want once", len(got))
	}
	checkNoSecret(t, "log", n.logs.String(), c)
}

func TestSyncSameBundleAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.issue(time.Hour)
	data := e.seal("example.com", c)
	e.publish("example.com", data, c)
	n := e.node(t.TempDir(), "example.com")
	expectOnly(t, n.sync(t), OutcomeStaged)
	before, err := n.Stage().Read("example.com")
	if err != nil {
		t.Fatal(err)
	}

	// The same envelope again, then the same bundle sealed again (as
	// republish does when recipients change): nothing is staged again.
	e.publish("example.com", data, c)
	expectOnly(t, n.sync(t), OutcomeUnchanged)
	e.publishSealed("example.com", c)
	expectOnly(t, n.sync(t), OutcomeUnchanged)

	after, err := n.Stage().Read("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("record changed: %+v, was %+v", after, before)
	}
	if got := n.stagedVersions(); len(got) != 1 {
		t.Errorf("staged %d times, want once", len(got))
	}
	if st := e.status("example.com"); st.State != wire.StateInstalled || st.Error != "" {
		t.Errorf("status %+v", st)
	}
}

// TestSyncAwayAcrossRenewals: a node away while a certificate was renewed
// three times stages only the newest, once, and never opens the others.
func TestSyncAwayAcrossRenewals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c1 := e.issue(4 * time.Hour)
	e.publishSealed("example.com", c1)
	n := e.node(t.TempDir(), "example.com", "other.example")
	expectOnly(t, n.sync(t), OutcomeStaged)
	if st := e.status("other.example"); st.State != wire.StateMissing || st.StagedVersion != 0 {
		t.Errorf("status of a certificate never received: %+v", st)
	}

	var last *testcert.Cert
	for i := 3; i >= 1; i-- {
		last = e.issue(time.Duration(i) * time.Hour)
		e.publishSealed("example.com", last)
	}
	o := e.issue(time.Hour)
	e.publishSealed("other.example", o)

	// A new Node on the same stage folder: the node restarted.
	n2 := e.node(n.Stage().Dir(), "example.com", "other.example")
	rep := n2.sync(t)
	expectOnly(t, rep, OutcomeStaged, OutcomeStaged, OutcomeSuperseded, OutcomeSuperseded)
	if got := n2.stagedVersions(); len(got) != 2 {
		t.Fatalf("staged %v, want the newest of each certificate once", got)
	}
	meta, b, err := n2.Stage().Load("example.com")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Version != uint64(last.Leaf.NotBefore.Unix()) || !bytes.Equal(b.Cert, last.Cert) || !bytes.Equal(b.PrivKey, last.PrivKey) {
		t.Errorf("staged version %d, want the newest %d", meta.Version, last.Leaf.NotBefore.Unix())
	}
	if got := len(n2.logs.Events("bundle_superseded")); got != 2 {
		t.Errorf("%d bundle_superseded events, want 2", got)
	}
	expectOnly(t, n2.sync(t))
}

// TestSyncRefusals: each bad message is refused, terminated and reported,
// changes nothing staged, and a valid bundle published after it still
// arrives.
func TestSyncRefusals(t *testing.T) {
	t.Parallel()
	const name = "example.com"
	type bad struct {
		name string // subject's certificate; default name
		data []byte
		cert *testcert.Cert
	}
	tests := []struct {
		what string
		make func(e *env) bad
		want error
	}{
		{"untrusted signer", func(e *env) bad {
			other, err := crypto.GenerateSigningKey()
			if err != nil {
				e.t.Fatal(err)
			}
			c := e.issue(time.Hour)
			return bad{data: e.sealWith(bundleOf(name, c), other, e.id.Recipient()), cert: c}
		}, crypto.ErrUntrustedSigner},
		{"not a recipient", func(e *env) bad {
			stranger := testkeys.X25519(e.t)
			c := e.issue(time.Hour)
			return bad{data: e.sealWith(bundleOf(name, c), e.key, stranger.Recipient()), cert: c}
		}, crypto.ErrNotRecipient},
		{"garbage", func(e *env) bad {
			return bad{data: []byte("certsync? no, just garbage\x00\x01\x02")}
		}, crypto.ErrMalformed},
		{"empty", func(e *env) bad { return bad{data: []byte{}} }, crypto.ErrMalformed},
		{"oversized", func(e *env) bad {
			return bad{data: bytes.Repeat([]byte{'A'}, crypto.MaxEnvelopeSize+1)}
		}, ErrTooLarge},
		{"tampered", func(e *env) bad {
			c := e.issue(time.Hour)
			data := e.seal(name, c)
			data[len(data)-100] ^= 1
			return bad{data: data, cert: c}
		}, crypto.ErrBadSignature},
		{"moved to another certificate's subject", func(e *env) bad {
			c := e.issue(time.Hour)
			return bad{data: e.seal("other.example", c), cert: c}
		}, ErrWrongSubject},
		{"a name like ../../etc", func(e *env) bad {
			c := e.issue(time.Hour)
			return bad{data: e.sealWith(bundleOf("../../etc", c), e.key, e.id.Recipient()), cert: c}
		}, ErrWrongSubject},
		{"certificate not configured", func(e *env) bad {
			c := e.issue(time.Hour)
			return bad{name: "unknown.example", data: e.seal("unknown.example", c), cert: c}
		}, ErrUnknownCertificate},
		{"key does not match", func(e *env) bad {
			c := e.issue(time.Hour).WithKeyOf(e.issue(time.Hour))
			return bad{data: e.seal(name, c), cert: c}
		}, ErrInvalidBundle},
		// An expired certificate is held back, not refused: see
		// TestSyncClockHoldsBack.
		{"expired, with a key that does not match", func(e *env) bad {
			c := e.ca.Issue(e.t, testcert.Options{NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour}).WithKeyOf(e.issue(time.Hour))
			return bad{data: e.seal(name, c), cert: c}
		}, ErrInvalidBundle},
		{"format 1, signed version is not the certificate's", func(e *env) bad {
			// Format 2 versions are the publisher's; format 1 ones must
			// be the leaf's NotBefore.
			c := e.issue(time.Hour)
			b := bundleOf(name, c)
			b.Version++
			return bad{data: asFormat1(e.t, e.sealWith(b, e.key, e.id.Recipient()), e.key), cert: c}
		}, ErrInvalidBundle},
		{"same version, another certificate", func(e *env) bad {
			// A leaf from the same second as the staged one.
			c := e.ca.Issue(e.t, testcert.Options{NotBefore: time.Unix(int64(e.baseline), 0)})
			return bad{data: e.seal(name, c), cert: c}
		}, ErrConflict},
	}
	for _, tc := range tests {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.t = t
			// The management side made this consumer for more certificates
			// than the node's configuration holds.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := e.js.CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig(nodeName, []string{name, "other.example", "unknown.example"}, true)); err != nil {
				t.Fatal(err)
			}
			base := e.issue(72 * time.Hour)
			e.baseline = uint64(base.Leaf.NotBefore.Unix())
			e.publishSealed(name, base)
			n := e.node(t.TempDir(), name, "other.example")
			expectOnly(t, n.sync(t), OutcomeStaged)
			baseMeta, err := n.Stage().Read(name)
			if err != nil {
				t.Fatal(err)
			}

			b := tc.make(e)
			subject := cmp.Or(b.name, name)
			seq := e.publish(subject, b.data, b.cert)
			rep := n.sync(t)
			expectOnly(t, rep, OutcomeRefused)
			r := rep.Results[0]
			if !errors.Is(r.Err, tc.want) || !IsPermanent(r.Err) || r.Sequence != seq || r.Name != subject {
				t.Errorf("result %+v, want a permanent %v", r, tc.want)
			}
			// What was being done is said once (not "verifying … seq N:
			// verifying envelope …").
			for _, doing := range []string{"verifying", "opening"} {
				if r.Err != nil && strings.Count(r.Err.Error(), doing+" ") > 1 {
					t.Errorf("error says %q twice: %v", doing, r.Err)
				}
			}
			if !rep.Failed() || !errors.Is(rep.Err(), tc.want) {
				t.Errorf("report Failed %v, Err %v", rep.Failed(), rep.Err())
			}
			// Nothing staged changed.
			checkStaged(t, n.Stage(), bundleOf(name, base), baseMeta)
			if len(n.stagedVersions()) != 1 {
				t.Errorf("staged %v", n.stagedVersions())
			}
			refusals := n.logs.Events("bundle_refused")
			if len(refusals) != 1 || refusals[0]["name"] != subject || refusals[0]["seq"] != float64(seq) || refusals[0]["reason"] == "" {
				t.Errorf("bundle_refused log: %v", refusals)
			}
			// The refusal shows in the status record, with what is still held.
			if subject == name {
				st := e.status(name)
				if st.State != wire.StateFailed || st.Error == "" || st.ErrorTime.IsZero() || st.StagedVersion != baseMeta.Version {
					t.Errorf("status after refusal %+v", st)
				}
				checkNoSecret(t, "status error", st.Error, base, b.cert)
			}
			checkNoSecret(t, "report", rep.Err().Error(), base, b.cert)

			// The message was terminated: it does not come back.
			expectOnly(t, n.sync(t))

			// A valid bundle after it still arrives.
			next := e.issue(time.Hour)
			e.publishSealed(name, next)
			rep = n.sync(t)
			expectOnly(t, rep, OutcomeStaged)
			if rep.Failed() {
				t.Errorf("report failed: %v", rep.Err())
			}
			meta, err := n.Stage().Read(name)
			if err != nil || meta.Version != uint64(next.Leaf.NotBefore.Unix()) {
				t.Errorf("after the valid bundle: staged %+v, %v", meta, err)
			}
			if st := e.status(name); st.State != wire.StateInstalled || st.Error != "" || st.StagedVersion != meta.Version {
				t.Errorf("status after the valid bundle %+v", st)
			}
			checkNoSecret(t, "log", n.logs.String(), base, next, b.cert)
		})
	}
}

// TestSyncDowngradeAfterRestart: an older certificate, validly signed, is
// refused by a node that staged a newer one before it restarted.
func TestSyncDowngradeAfterRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	older, newer := e.issue(3*time.Hour), e.issue(2*time.Hour)
	e.publishSealed("example.com", newer)
	expectOnly(t, e.node(stageDir, "example.com").sync(t), OutcomeStaged)

	n := e.node(stageDir, "example.com") // restarted
	seq := e.publishSealed("example.com", older)
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeRefused)
	if r := rep.Results[0]; !errors.Is(r.Err, ErrDowngrade) || !IsPermanent(r.Err) || r.Sequence != seq {
		t.Errorf("result %+v, want a permanent ErrDowngrade", r)
	}
	meta, b, err := n.Stage().Load("example.com")
	if err != nil || meta.Version != uint64(newer.Leaf.NotBefore.Unix()) || !bytes.Equal(b.PrivKey, newer.PrivKey) {
		t.Fatalf("staged %+v, %v; want the newer bundle kept", meta, err)
	}
	if st := e.status("example.com"); st.State != wire.StateFailed || !strings.Contains(st.Error, "older than the version held") ||
		st.ErrorKind != wire.ErrorKindBundle {
		t.Errorf("status %+v", st)
	}

	// The refusal stays in the status across another restart, until a
	// later bundle arrives.
	n = e.node(stageDir, "example.com")
	expectOnly(t, n.sync(t))
	if st := e.status("example.com"); st.State != wire.StateFailed {
		t.Errorf("status after restart %+v, want the refusal kept", st)
	}
	next := e.issue(time.Hour)
	e.publishSealed("example.com", next)
	expectOnly(t, n.sync(t), OutcomeStaged)
	if st := e.status("example.com"); st.State != wire.StateInstalled || st.Error != "" {
		t.Errorf("status %+v", st)
	}
}

// TestStatusInstallFailureNotKept: a failure to install (here, to read the
// install state) is recorded as an install's, whatever its text, and is not
// taken back from the status bucket by a restarted node: the install state
// on disk says whether it still holds.
func TestStatusInstallFailureNotKept(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stageDir := t.TempDir()
	c := e.issue(time.Hour)
	e.publishSealed("example.com", c)
	n := e.node(stageDir, "example.com")
	expectOnly(t, n.sync(t), OutcomeStaged)

	state := filepath.Join(liveDir(stageDir, ".certsync"), "example.com", "state.json")
	treetest.WriteFile(t, state, []byte("{not json"), 0o600)
	expectOnly(t, n.sync(t))
	if st := e.status("example.com"); st.State != wire.StateFailed || st.ErrorKind != wire.ErrorKindInstall ||
		!strings.HasPrefix(st.Error, "reading install state ") {
		t.Fatalf("status with a corrupt state.json: %+v, want failed, of kind install", st)
	}

	if err := os.Remove(state); err != nil {
		t.Fatal(err)
	}
	n = e.node(stageDir, "example.com") // restarted
	expectOnly(t, n.sync(t))
	if st := e.status("example.com"); st.State != wire.StateInstalled || st.Error != "" || st.ErrorKind != "" {
		t.Errorf("status after the fix and a restart: %+v, want installed, no error", st)
	}
}

// TestSyncNewestRefusedOlderStaged: when the newest bundle of a batch is
// refused, the next older one is tried, and the refusal stays reported.
func TestSyncNewestRefusedOlderStaged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c1 := e.issue(4 * time.Hour)
	e.publishSealed("example.com", c1)
	n := e.node(t.TempDir(), "example.com")
	expectOnly(t, n.sync(t), OutcomeStaged)

	good, badKey := e.issue(2*time.Hour), e.issue(time.Hour).WithKeyOf(c1)
	e.publishSealed("example.com", good)
	e.publishSealed("example.com", badKey)
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeRefused, OutcomeStaged)
	if !rep.Failed() {
		t.Error("report not failed")
	}
	if meta, err := n.Stage().Read("example.com"); err != nil || meta.Version != uint64(good.Leaf.NotBefore.Unix()) {
		t.Errorf("staged %+v, %v", meta, err)
	}
	if st := e.status("example.com"); st.State != wire.StateFailed || st.StagedVersion != uint64(good.Leaf.NotBefore.Unix()) {
		t.Errorf("status %+v, want failed holding the older good bundle", st)
	}
}

// TestSyncTransientFailure: a stage folder that cannot be written fails the
// bundle for now; it comes back and stages once the folder is fixed.
func TestSyncTransientFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node(t.TempDir(), "example.com")
	c := e.issue(time.Hour)
	e.publishSealed("example.com", c)
	// A corrupt record stands for a local fault the operator must fix.
	treetest.MkdirAll(t, n.Stage().Path("example.com"), 0o700)
	treetest.WriteFile(t, filepath.Join(n.Stage().Path("example.com"), crypto.FileRecord), []byte("{"), 0o600)
	rep := n.sync(t)
	expectOnly(t, rep, OutcomeFailed)
	if r := rep.Results[0]; IsPermanent(r.Err) || !rep.Failed() {
		t.Errorf("result %+v, want a transient failure", r)
	}
	if st := e.status("example.com"); st.State != wire.StateFailed || st.Error == "" {
		t.Errorf("status %+v", st)
	}
	if err := os.RemoveAll(n.Stage().Path("example.com")); err != nil {
		t.Fatal(err)
	}
	// The message comes back after its delay (5s for a first delivery).
	natstest.WaitFor(t, 30*time.Second, "the bundle to be staged after the fix", func() bool {
		rep := n.sync(t)
		return rep.Count(OutcomeStaged) == 1
	})
	if st := e.status("example.com"); st.State != wire.StateInstalled || st.Error != "" {
		t.Errorf("status %+v", st)
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		delivered uint64
		want      time.Duration
	}{{0, 5 * time.Second}, {1, 5 * time.Second}, {2, 10 * time.Second}, {4, 40 * time.Second}, {7, 5 * time.Minute}, {1000, 5 * time.Minute}} {
		if got := backoff(tc.delivered, retryBase, retryMax); got != tc.want {
			t.Errorf("backoff(%d, %v, %v) = %v, want %v", tc.delivered, retryBase, retryMax, got, tc.want)
		}
	}
}

// TestSyncNoConsumerLeastPrivilege: a node that may read its consumer but
// not create it fails with ErrNoConsumer when the consumer is missing.
func TestSyncNoConsumerLeastPrivilege(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	consumer := wire.ConsumerName(nodeName)
	opts.Users = []*server.User{
		{Username: "admin", Password: "admin"},
		{Username: nodeName, Password: "node", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{
				"$JS.API.CONSUMER.INFO." + wire.Stream + "." + consumer,
				"$JS.API.CONSUMER.MSG.NEXT." + wire.Stream + "." + consumer,
				"$JS.ACK." + wire.Stream + "." + consumer + ".>",
			}},
			// Its replies on its own inbox, which New gives it.
			Subscribe: &server.SubjectPermission{Allow: []string{wire.NodeInboxPrefix(nodeName) + ".>"}},
		}},
	}
	srv := natstest.Start(t, opts)
	nc, err := nats.Connect(natstest.URL(srv), nats.UserInfo("admin", "admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, wire.StreamConfig(wire.StreamOptions{})); err != nil {
		t.Fatal(err)
	}
	id, _ := age.GenerateX25519Identity()
	key, _ := crypto.GenerateSigningKey()
	logs := &logtest.Buffer{}
	n, err := New(Config{
		Node:         nodeName,
		NATS:         natsconn.Options{URL: natstest.URL(srv), User: nodeName, Password: "node"},
		Identities:   []age.Identity{id},
		Trusted:      []crypto.PublicKey{key.Public()},
		StageDir:     t.TempDir(),
		Certificates: map[string]Certificate{"example.com": {Name: "example.com", InstallDir: filepath.Join(t.TempDir(), "example.com")}},
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer scancel()
	_, err = n.Sync(sctx)
	if !errors.Is(err, ErrNoConsumer) || !strings.Contains(err.Error(), "republish") {
		t.Fatalf("Sync: %v, want ErrNoConsumer with a hint", err)
	}
	if _, err := js.Consumer(ctx, wire.Stream, consumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("consumer lookup: %v, want not found", err)
	}

	// Once the management side made the consumer, the node receives and
	// stages with these rights alone. It may not reach the status bucket:
	// it warns once and goes on.
	if _, err := js.CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig(nodeName, []string{"example.com"}, true)); err != nil {
		t.Fatal(err)
	}
	c := testcert.NewCA(t).Issue(t, testcert.Options{})
	data, err := crypto.Seal(bundleOf("example.com", c), key, []age.Recipient{id.Recipient()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, wire.Subject("example.com"), data); err != nil {
		t.Fatal(err)
	}
	sctx, scancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	rep, err := n.Sync(sctx)
	if err != nil {
		t.Fatalf("Sync with least privilege: %v", err)
	}
	expectOnly(t, rep, OutcomeStaged)
	if got := len(logs.Events("status_unavailable")); got != 1 {
		t.Errorf("%d status_unavailable warnings, want 1", got)
	}
	ictx, icancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer icancel()
	ci, err := js.Consumer(ictx, wire.Stream, consumer)
	if err != nil || ci.CachedInfo().NumAckPending != 0 || ci.CachedInfo().NumPending != 0 {
		t.Errorf("consumer after Sync: %v, want nothing pending", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	id, _ := age.GenerateX25519Identity()
	key, _ := crypto.GenerateSigningKey()
	good := func() Config {
		return Config{
			Node: nodeName, Identities: []age.Identity{id}, Trusted: []crypto.PublicKey{key.Public()},
			StageDir: t.TempDir(), Certificates: map[string]Certificate{"example.com": {Name: "example.com"}},
		}
	}
	if _, err := New(good(), nil); err != nil {
		t.Fatalf("New with a good config: %v", err)
	}
	for what, change := range map[string]func(*Config){
		"bad node name":   func(c *Config) { c.Node = "web.1" },
		"no certificates": func(c *Config) { c.Certificates = nil },
		"bad cert name":   func(c *Config) { c.Certificates = map[string]Certificate{"../etc": {}} },
		"name mismatch":   func(c *Config) { c.Certificates = map[string]Certificate{"a.example": {Name: "b.example"}} },
		"no identity":     func(c *Config) { c.Identities = nil },
		"no trusted key":  func(c *Config) { c.Trusted = nil },
		// The rules node.yaml's reader had alone, now New's (Validate's).
		"group-writable cert_mode": func(c *Config) { c.Certificates = map[string]Certificate{"example.com": {CertMode: 0o664}} },
		"keep 51":                  func(c *Config) { c.Certificates = map[string]Certificate{"example.com": {Keep: 51}} },
		"negative expiry deadline": func(c *Config) { c.Certificates = map[string]Certificate{"example.com": {ExpiryDeadline: -time.Hour}} },
		"shared install_dir": func(c *Config) {
			c.Certificates = map[string]Certificate{"a.example": {InstallDir: "/srv/tls"}, "b.example": {InstallDir: "/srv/tls"}}
		},
		"install_dir in stage_dir": func(c *Config) {
			c.Certificates = map[string]Certificate{"example.com": {InstallDir: filepath.Join(c.StageDir, "example.com")}}
		},
		"stage_dir is the install store": func(c *Config) {
			parent := filepath.Dir(c.StageDir)
			c.StageDir = filepath.Join(parent, ".certsync")
			c.Certificates = map[string]Certificate{"example.com": {InstallDir: filepath.Join(parent, "example.com")}}
		},
		"status_interval 1ms": func(c *Config) { c.StatusInterval = time.Millisecond },
	} {
		cfg := good()
		change(&cfg)
		if _, err := New(cfg, nil); err == nil {
			t.Errorf("New with %s: no error", what)
		}
	}

	// An unsafe stage folder makes a Node that only reports the refusal:
	// Sync fails with it (after trying, briefly, to tell the status bucket).
	cfg := good()
	cfg.StageDir = filepath.Join(t.TempDir(), "f")
	treetest.WriteFile(t, cfg.StageDir, nil, 0o600)
	cfg.NATS.URL = fmt.Sprintf("nats://127.0.0.1:%d", loopback.FreePort(t))
	n, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New with a stage folder that is a file: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := n.Sync(ctx); !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), cfg.StageDir) {
		t.Errorf("Sync with a stage folder that is a file = %v, want ErrUnsafePath naming it", err)
	}
}

// TestRunSurvivesServerRestart: the daemon stages what arrives, skips
// superseded versions that piled up while it was away, keeps going across a
// restart of the server, and stops cleanly.
func TestRunSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.Port = loopback.FreePort(t)
	e := startEnv(t, opts)
	stageDir := t.TempDir()

	c1 := e.issue(5 * time.Hour)
	e.publishSealed("example.com", c1)
	expectOnly(t, e.node(stageDir, "example.com").sync(t), OutcomeStaged)

	// Three renewals while the node is away.
	var c4 *testcert.Cert
	for i := 4; i >= 2; i-- {
		c4 = e.issue(time.Duration(i) * time.Hour)
		e.publishSealed("example.com", c4)
	}

	n := e.node(stageDir, "example.com")
	n.cfg.StatusInterval = 200 * time.Millisecond
	stop := startRun(t, n)
	waitStaged(t, n, uint64(c4.Leaf.NotBefore.Unix()))
	natstest.WaitFor(t, 10*time.Second, "the older two acknowledged as superseded", func() bool {
		return len(n.logs.Events("bundle_superseded")) >= 2
	})
	if got := n.stagedVersions(); len(got) != 1 {
		t.Errorf("staged %v, want only the newest once", got)
	}
	if got := len(n.logs.Events("bundle_superseded")); got != 2 {
		t.Errorf("%d bundle_superseded events, want 2", got)
	}

	// The status is refreshed on its interval.
	first := e.status("example.com").LastSeen
	natstest.WaitFor(t, 10*time.Second, "a status refresh", func() bool {
		return e.status("example.com").LastSeen.After(first)
	})

	// Restart the server on the same port and store.
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.srv = natstest.Start(t, opts)
	natstest.WaitFor(t, 10*time.Second, "the test's client to reconnect", e.nc.IsConnected)
	c5 := e.issue(time.Hour)
	e.publishSealed("example.com", c5)
	waitStaged(t, n, uint64(c5.Leaf.NotBefore.Unix()))
	if got := n.stagedVersions(); len(got) != 2 {
		t.Errorf("staged %v, want two stagings in all", got)
	}

	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

func waitStaged(t *testing.T, n *testNode, version uint64) {
	t.Helper()
	natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("version %d staged", version), func() bool {
		return slices.Contains(n.stagedVersions(), version)
	})
	if m, err := n.Stage().Read("example.com"); err != nil || m.Version != version {
		t.Fatalf("staged %+v, %v; want version %d", m, err, version)
	}
}

// TestSyncRightAfterPublish: a sync started the moment a publish is
// acknowledged still receives the bundle, although the server counts it as
// pending on the consumer only a little later.
func TestSyncRightAfterPublish(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := e.node(t.TempDir(), "example.com")
	for i := 20; i >= 1; i-- {
		c := e.issue(time.Duration(i) * time.Minute)
		e.publishSealed("example.com", c)
		e.unsynced = 0 // no waiting for the server: that is the point
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rep, err := n.Sync(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if got := rep.Count(OutcomeStaged); got != 1 {
			t.Fatalf("round %d: %d staged, want the bundle just published", 21-i, got)
		}
	}
}
