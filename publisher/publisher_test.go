package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"

	"filippo.io/age"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
)

func TestPublishLineage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{
		"example.com": {"web1", "web2"},
		"example.org": {"web1"},
	})
	c := f.issue("example.com", time.Time{})
	b := f.lineage("example.com", c)
	res := f.publish(b)
	if res.Action != Published || res.Sequence == 0 {
		t.Fatalf("result %+v, want published", res)
	}
	if n := f.count("example.com"); n != 1 {
		t.Fatalf("%d messages on the subject, want 1", n)
	}
	msg := f.last("example.com")
	// The publisher assigns the version: its clock in milliseconds.
	version := res.Version
	if now := uint64(time.Now().UnixMilli()); version > now || version+60_000 < now {
		t.Errorf("version %d, want the clock in Unix milliseconds (%d)", version, now)
	}
	wantHeaders := map[string]string{
		wire.HeaderName:        "example.com",
		wire.HeaderSerial:      c.Leaf.SerialNumber.Text(16),
		wire.HeaderFingerprint: res.Fingerprint.String(),
		wire.HeaderNotBefore:   c.Leaf.NotBefore.UTC().Format(time.RFC3339),
		wire.HeaderNotAfter:    c.Leaf.NotAfter.UTC().Format(time.RFC3339),
		wire.HeaderFormat:      strconv.Itoa(crypto.Format),
		wire.HeaderVersion:     strconv.FormatUint(version, 10),
		wire.HeaderRecipients:  RecipientsDigest([]string{f.cfg.Nodes["web2"], f.cfg.Nodes["web1"]}),
	}
	for k, want := range wantHeaders {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if fp := res.Fingerprint.String(); !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 {
		t.Errorf("fingerprint %q", res.Fingerprint)
	}
	if id := msg.Header.Get(wire.HeaderMsgID); !strings.HasPrefix(id, "example.com/"+strings.TrimPrefix(res.Fingerprint.String(), "sha256:")+"/") {
		t.Errorf("Nats-Msg-Id %q does not start with the name and fingerprint", id)
	}
	for k, v := range msg.Header {
		f.checkNoSecrets("header "+k, strings.Join(v, " "), c.PrivKey)
	}
	for _, node := range []string{"web1", "web2"} {
		h, got := f.open(msg, node)
		if h.Name != "example.com" || h.Version != version || h.Signer != f.signer.Public() {
			t.Errorf("node %s: envelope header %+v", node, h)
		}
		if !bytes.Equal(got.Cert, c.Cert) || !bytes.Equal(got.Chain, c.Chain) ||
			!bytes.Equal(got.FullChain, c.FullChain) || !bytes.Equal(got.PrivKey, c.PrivKey) {
			t.Errorf("node %s: opened files differ from the lineage's", node)
		}
	}
	if _, ok := msg.Header[wire.HeaderHold]; ok || res.Hold {
		t.Errorf("no rollout policy, but the bundle is held (%v) or says so in its headers", res.Hold)
	}
	// Consumers exist with the subjects of all of each node's
	// certificates: their bundles and rollout records.
	for node, want := range map[string][]string{
		"web1": {"certsync.bundle.example.com", "certsync.bundle.example.org", "certsync.rollout.example.com", "certsync.rollout.example.org"},
		"web2": {"certsync.bundle.example.com", "certsync.rollout.example.com"},
	} {
		cc := f.consumer(node)
		if cc == nil {
			t.Fatalf("no consumer for %s", node)
		}
		if got := filterSubjects(*cc); !slices.Equal(got, want) {
			t.Errorf("consumer of %s filters %v, want %v", node, got, want)
		}
		if cc.DeliverPolicy != jetstream.DeliverLastPerSubjectPolicy || cc.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("consumer of %s: deliver %v, ack %v", node, cc.DeliverPolicy, cc.AckPolicy)
		}
	}
	f.checkNoSecrets("logs", f.logs.String(), c.PrivKey)
}

func TestPublishTwicePublishesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	c := f.issue("example.com", time.Time{})
	first := f.publish(f.lineage("example.com", c))
	b, err := ReadLineage(f.root+"/live/example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	second := f.publish(b)
	if second.Action != Unchanged || second.Sequence != first.Sequence {
		t.Errorf("second run %+v, want unchanged at sequence %d", second, first.Sequence)
	}
	if n := f.count("example.com"); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	if !strings.Contains(f.logs.String(), "bundle_unchanged") {
		t.Error("no bundle_unchanged log")
	}
	// A renewal is published.
	third := f.publish(f.lineage("example.com", f.issue("example.com", time.Now())))
	if third.Action != Published || third.Version <= first.Version {
		t.Errorf("renewal %+v, want published with a higher version than %d", third, first.Version)
	}
	if n := f.count("example.com"); n != 2 {
		t.Errorf("%d messages after renewal, want 2", n)
	}
}

func TestPublishRefusals(t *testing.T) {
	t.Parallel()
	now := time.Now()
	tests := []struct {
		name string
		// bundle returns the bundle to publish; it may publish others first.
		bundle func(f *fixture) *crypto.Bundle
		want   string
		is     error
		stored uint64 // messages left on example.com
	}{
		{
			name:   "unknown certificate",
			bundle: func(f *fixture) *crypto.Bundle { return f.lineage("other.com", f.issue("other.com", time.Time{})) },
			want:   `refusing to publish certificate "other.com": not in the configuration`,
			is:     ErrUnknownCertificate,
		},
		{
			name: "invalid name",
			bundle: func(f *fixture) *crypto.Bundle {
				b := f.lineage("example.com", f.issue("example.com", time.Time{}))
				b.Name = "../../etc"
				return b
			},
			want: `invalid certificate name "../../etc"`,
		},
		{
			name: "key does not match",
			bundle: func(f *fixture) *crypto.Bundle {
				c := f.issue("example.com", time.Time{})
				return f.lineage("example.com", c.WithKeyOf(f.issue("example.com", time.Time{})))
			},
			want: "privkey.pem: the private key does not match",
		},
		{
			name: "expired",
			bundle: func(f *fixture) *crypto.Bundle {
				c := f.ca.Issue(t, testcert.Options{NotBefore: now.Add(-2 * time.Hour), Validity: time.Hour})
				return f.lineage("example.com", c)
			},
			want: "certificate expired at",
		},
		{
			name: "an earlier certificate of the history",
			bundle: func(f *fixture) *crypto.Bundle {
				first := f.issue("example.com", now.Add(-time.Hour))
				f.publish(f.lineage("example.com", first))
				f.publish(f.lineage("example.com", f.issue("example.com", now.Add(-time.Minute))))
				return f.lineage("example.com", first)
			},
			want:   "is an earlier certificate of the stream's history",
			is:     ErrEarlier,
			stored: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Each case has its own server: "nothing published" is then
			// checked on a stream no other case touches.
			f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
			b := tt.bundle(f)
			res, err := f.publisher().Publish(context.Background(), b)
			if err == nil {
				t.Fatalf("published %+v, want a refusal", res)
			}
			f.wantRefused(err, tt.want, tt.is, "example.com", tt.stored, b.PrivKey)
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "nats://127.0.0.1:1", map[string][]string{"example.com": {"web1"}})
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"unknown node", func(c *Config) { c.Certificates["example.com"] = []string{"web1", "web9"} }, `certificates.example.com[1]: unknown node "web9"`},
		{"invalid node name", func(c *Config) { c.Nodes["web 1"] = c.Nodes["web1"] }, `invalid node name "web 1"`},
		{"bad recipient", func(c *Config) { c.Nodes["web1"] = "age1nope" }, `nodes.web1: parsing recipient`},
		{"no nodes", func(c *Config) { c.Certificates["example.com"] = nil }, `certificates.example.com: no nodes`},
		{"invalid certificate name", func(c *Config) { c.Certificates["../../etc"] = []string{"web1"} }, `invalid certificate name "../../etc"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := f.cfg
			cfg.Nodes = maps.Clone(f.cfg.Nodes)
			cfg.Certificates = map[string][]string{}
			for k, v := range f.cfg.Certificates {
				cfg.Certificates[k] = slices.Clone(v)
			}
			tt.change(&cfg)
			_, err := New(cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestPublishWhileNATSDownThenRepublish(t *testing.T) {
	t.Parallel()
	port := loopback.FreePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	f := newFixture(t, url, map[string][]string{"example.com": {"web1"}})
	f.cfg.Timeout = time.Second
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	_, err := f.publisher().Publish(context.Background(), b)
	if err == nil {
		t.Fatal("published with NATS down")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{`publishing certificate "example.com"`, url, "no success within the 1s timeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want it to contain %q", err, want)
		}
	}

	// The server comes back on that port: republish delivers, once.
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	natstest.Start(t, opts)
	f.cfg.Timeout = 20 * time.Second
	p := f.publisher()
	for i, want := range []Action{Published, Unchanged} {
		report, err := p.Republish(context.Background(), nil)
		if err != nil {
			t.Fatalf("republish %d: %v", i+1, err)
		}
		if len(report.Results) != 1 || report.Results[0].Action != want {
			t.Errorf("republish %d: %+v, want one %s", i+1, report.Results, want)
		}
	}
	if n := f.count("example.com"); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	f.open(f.last("example.com"), "web1")
}

func TestRepublishRecipients(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1", "web2"}})
	c := f.issue("example.com", time.Time{})
	f.lineage("example.com", c)
	ctx := context.Background()
	if _, err := f.publisher().Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// Unchanged: nothing happens.
	report, err := f.publisher().Republish(ctx, []string{"example.com"})
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Unchanged {
		t.Fatalf("republish unchanged: %+v, %v", report, err)
	}
	if n := f.count("example.com"); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
	// web2 gets a new key: sealed again, the old key no longer opens it.
	old := f.ids["web2"]
	f.addNode("web2")
	report, err = f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published {
		t.Fatalf("republish after key change: %+v, %v", report, err)
	}
	msg := f.last("example.com")
	f.open(msg, "web2")
	f.open(msg, "web1")
	if _, _, err := crypto.Open(msg.Data, []crypto.PublicKey{f.signer.Public()}, []age.Identity{old}); !errors.Is(err, crypto.ErrNotRecipient) {
		t.Errorf("old key of web2 opening the new bundle: %v, want ErrNotRecipient", err)
	}
	if n := f.count("example.com"); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
	// A new node joins: the bundle is sealed again, and its new consumer
	// starts at that bundle, which it can open.
	f.addNode("web3")
	f.cfg.Certificates["example.com"] = []string{"web1", "web2", "web3"}
	report, err = f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Results) != 1 || report.Results[0].Action != Published {
		t.Fatalf("republish after adding web3: %+v, %v", report, err)
	}
	f.openFirstDelivery("web3")
}

func TestRepublishNodeRemoval(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{
		"a.example": {"web1", "web2"},
		"b.example": {"web1", "web2"},
		"c.example": {"web1"},
	})
	for _, name := range []string{"a.example", "b.example", "c.example"} {
		f.lineage(name, f.issue(name, time.Time{}))
	}
	ctx := context.Background()
	if _, err := f.publisher().Republish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// web2 reported holding a certificate that is no longer routed to it.
	kv, err := f.js().KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, wire.StatusKey("web2", "old.example"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// web2 leaves; web1 stops receiving c.example.
	delete(f.cfg.Nodes, "web2")
	f.cfg.Certificates = map[string][]string{"a.example": {"web1"}, "b.example": {"web1"}, "c.example": {"web3"}}
	f.addNode("web3")
	report, err := f.publisher().Republish(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Dropped{
		{Node: "web1", Certificates: []string{"c.example"}},
		{Node: "web2", Certificates: []string{"a.example", "b.example", "old.example"}, Removed: true},
	}
	if fmt.Sprint(report.Dropped) != fmt.Sprint(want) {
		t.Errorf("dropped %+v, want %+v", report.Dropped, want)
	}
	if f.consumer("web2") != nil {
		t.Error("consumer of web2 still exists")
	}
	if got := filterSubjects(*f.consumer("web1")); !slices.Equal(got, subjectsOf([]string{"a.example", "b.example"}, true)) {
		t.Errorf("consumer of web1 filters %v", got)
	}
	if got := filterSubjects(*f.consumer("web3")); !slices.Equal(got, subjectsOf([]string{"c.example"}, true)) {
		t.Errorf("consumer of web3 filters %v", got)
	}
	// Every certificate was sealed again to its new recipients.
	for _, r := range report.Results {
		if r.Action != Published {
			t.Errorf("%s: %s, want published", r.Name, r.Action)
		}
	}
	// A second pass has nothing to do or report.
	report, err = f.publisher().Republish(ctx, nil)
	if err != nil || len(report.Dropped) != 0 {
		t.Errorf("second pass: dropped %+v, %v", report.Dropped, err)
	}
}

func TestPublishExtendsConsumerAndRepublishes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"a.example": {"web1"}, "b.example": {"web1"}})
	f.publish(f.lineage("a.example", f.issue("a.example", time.Time{})))
	// Someone narrows web1's consumer: the next publish of a.example, even
	// unchanged, must restore the subject and publish again, since a
	// consumer gaining a subject does not deliver its earlier messages.
	cc := *f.consumer("web1")
	cc.FilterSubjects = []string{wire.Subject("b.example")}
	if _, err := f.js().UpdateConsumer(context.Background(), wire.Stream, cc); err != nil {
		t.Fatal(err)
	}
	b, err := ReadLineage(f.root+"/live/a.example", "")
	if err != nil {
		t.Fatal(err)
	}
	if res := f.publish(b); res.Action != Published {
		t.Errorf("publish after the subject was restored: %s, want published", res.Action)
	}
	if got := filterSubjects(*f.consumer("web1")); !slices.Equal(got, subjectsOf([]string{"a.example", "b.example"}, true)) {
		t.Errorf("consumer filters %v", got)
	}
}

func TestRepublishContinuesPastFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{
		"a.example": {"web1"}, "b.example": {"web1"}, "missing.example": {"web1"},
	})
	f.lineage("a.example", f.issue("a.example", time.Time{}))
	f.lineage("b.example", f.ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour), Validity: time.Hour}))
	report, err := f.publisher().Republish(context.Background(), nil)
	if err == nil {
		t.Fatal("no error for an expired and a missing lineage")
	}
	for _, want := range []string{`"b.example"`, "expired", `"missing.example"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if len(report.Results) != 1 || report.Results[0].Name != "a.example" || report.Results[0].Action != Published {
		t.Errorf("results %+v, want a.example published", report.Results)
	}
	if _, err := f.publisher().Republish(context.Background(), []string{"nope.example"}); !errors.Is(err, ErrUnknownCertificate) {
		t.Errorf("republish of an unknown name: %v", err)
	}
}

func TestPublishCluster(t *testing.T) {
	t.Parallel()
	_, urls := natstest.RunCluster(t, 3)
	f := newFixture(t, urls, map[string][]string{"example.com": {"web1", "web2"}})
	f.cfg.Stream.Replicas = 3
	c := f.issue("example.com", time.Time{})
	res := f.publish(f.lineage("example.com", c))
	if res.Action != Published {
		t.Fatalf("result %+v", res)
	}
	st, err := f.js().Stream(context.Background(), wire.Stream)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 3 {
		t.Errorf("stream replicas %d, want 3", r)
	}
	_, got := f.open(f.last("example.com"), "web2")
	if !bytes.Equal(got.PrivKey, c.PrivKey) {
		t.Error("opened key differs")
	}
	if again := f.publish(f.lineage("example.com", c)); again.Action != Unchanged {
		t.Errorf("second publish %s, want unchanged", again.Action)
	}
}

// TestPublishClusterConsumerReplicas: on a cluster with the stream on 3
// servers, the node consumers the publisher creates are on one
// (stream.consumer_replicas' default), or on as many as it says.
func TestPublishClusterConsumerReplicas(t *testing.T) {
	t.Parallel()
	_, urls := natstest.RunCluster(t, 3)
	for _, tc := range []struct {
		name       string
		set, want  int
		cert, node string
	}{
		{"default", 0, 1, "example.com", "web1"},
		{"three", 3, 3, "example.org", "web2"},
	} {
		f := newFixture(t, urls, map[string][]string{tc.cert: {tc.node}})
		f.cfg.Stream.Replicas = 3
		f.cfg.Stream.ConsumerReplicas = tc.set
		if res := f.publish(f.lineage(tc.cert, f.issue(tc.cert, time.Time{}))); res.Action != Published {
			t.Fatalf("%s: result %+v", tc.name, res)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cons, err := f.js().Consumer(ctx, wire.Stream, wire.ConsumerName(tc.node))
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		info := cons.CachedInfo()
		peers := 1
		if info.Cluster != nil {
			peers += len(info.Cluster.Replicas)
		}
		if info.Config.Replicas != tc.want || peers != tc.want {
			t.Errorf("%s: consumer on %d servers (replicas %d), want %d", tc.name, peers, info.Config.Replicas, tc.want)
		}
	}
}

func TestBundles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"a.example": {"web1"}, "b.example": {"web1"}})
	p := f.publisher()
	ctx := context.Background()
	if got, err := p.Bundles(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("bundles before any stream: %v, %v", got, err)
	}
	now := time.Now()
	a1 := f.publish(f.lineage("a.example", f.issue("a.example", now.Add(-time.Hour))))
	b1 := f.publish(f.lineage("b.example", f.issue("b.example", time.Time{})))
	a2 := f.publish(f.lineage("a.example", f.issue("a.example", now)))
	// Something that is not a bundle is listed too, with what it carries.
	if _, err := f.js().Publish(ctx, wire.Subject("c.example"), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	got, err := p.Bundles(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []*Result{a1, a2, b1}
	if len(got) != 4 {
		t.Fatalf("%d bundles, want 4: %+v", len(got), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || g.Sequence != w.Sequence || g.Serial != w.Serial || g.Fingerprint != w.Fingerprint ||
			g.Version != w.Version || !g.NotAfter.Equal(w.NotAfter) || g.Format != crypto.Format ||
			g.Subject != wire.Subject(w.Name) || g.Size == 0 || g.Published.IsZero() || g.Recipients != w.Recipients {
			t.Errorf("bundle %d: %+v, want %+v", i, g, w)
		}
	}
	if g := got[3]; g.Name != "c.example" || g.Size != len("garbage") || g.Version != 0 {
		t.Errorf("garbage message: %+v", g)
	}
	only, err := p.Bundles(ctx, []string{"b.example"})
	if err != nil || len(only) != 1 || only[0].Sequence != b1.Sequence {
		t.Errorf("bundles of b.example: %+v, %v", only, err)
	}
	if _, err := p.Bundles(ctx, []string{"../x"}); err == nil {
		t.Error("no error for an invalid name")
	}
}

func TestPublishRefusesBeforeConnecting(t *testing.T) {
	t.Parallel()
	// Nothing listens at this URL: a refusal must come before any attempt
	// to connect, or the error would be about connecting.
	f := newFixture(t, fmt.Sprintf("nats://127.0.0.1:%d", loopback.FreePort(t)), map[string][]string{"example.com": {"web1"}})
	f.cfg.Timeout = 5 * time.Second
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))

	noKey := f.cfg
	noKey.SigningKey = nil
	p, err := New(noKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(context.Background(), b); err == nil || !strings.Contains(err.Error(), "no signing key") {
		t.Errorf("no signing key: %v", err)
	}
	if _, err := p.Republish(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "no signing key") {
		t.Errorf("republish without a signing key: %v", err)
	}

	// A certificate without nodes is refused by New (TestNewRefusesBadConfig).
	// More nodes than one envelope holds are sealed in recipient groups
	// (groups_test.go).
}

func TestPublishConcurrentHooksStoreOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, runServer(t), map[string][]string{"example.com": {"web1"}})
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	p := f.publisher()
	const n = 4
	results := make(chan *Result, n)
	errs := make(chan error, n)
	for range n {
		go func() {
			res, err := p.Publish(context.Background(), b)
			results <- res
			errs <- err
		}()
	}
	published := 0
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if res := <-results; res != nil && res.Action == Published {
			published++
		}
	}
	if published != 1 {
		t.Errorf("%d calls published, want 1", published)
	}
	if c := f.count("example.com"); c != 1 {
		t.Errorf("%d messages, want 1", c)
	}
}

func TestPublishWaitsForNATS(t *testing.T) {
	t.Parallel()
	port := loopback.FreePort(t)
	f := newFixture(t, fmt.Sprintf("nats://127.0.0.1:%d", port), map[string][]string{"example.com": {"web1"}})
	b := f.lineage("example.com", f.issue("example.com", time.Time{}))
	done := f.goPublish(b)
	// Once the publisher has failed to connect, the server starts.
	natstest.WaitFor(t, 10*time.Second, "a failed connection attempt", func() bool {
		return strings.Contains(f.logs.String(), "nats_connect_failed")
	})
	opts := natstest.Options(t.TempDir())
	opts.Port = port
	natstest.Start(t, opts)
	o := <-done
	if o.err != nil || o.res.Action != Published {
		t.Fatalf("publish: %+v, %v", o.res, o.err)
	}
	f.open(f.last("example.com"), "web1")
}
