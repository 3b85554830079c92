package publisher

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/wire"
)

// fixture is a management host: a CA, certbot's folder, a signing key,
// node identities and a configuration.
type fixture struct {
	t      testing.TB
	url    string
	ca     *testcert.CA
	root   string // certbot's folder, holding live/ and archive/
	signer *crypto.SigningKey
	ids    map[string]*age.X25519Identity
	cfg    Config
	logs   *logtest.Buffer
}

// newProxiedFixture is newFixture on a new server whose publisher goes
// through a natstest.Proxy, to cut its connection or act as it sends; the
// test's own client goes around the proxy.
func newProxiedFixture(t testing.TB, certs map[string][]string) (*fixture, *natstest.Proxy) {
	t.Helper()
	srv := natstest.RunServer(t)
	proxy := natstest.StartProxy(t, srv.Addr().String())
	f := newFixture(t, proxy.URL, certs)
	f.url = natstest.URL(srv)
	return f, proxy
}

// newFixture configures nodes and certificates (name -> nodes) against the
// NATS server(s) at url.
func newFixture(t testing.TB, url string, certs map[string][]string) *fixture {
	t.Helper()
	signer, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{
		t:      t,
		url:    url,
		ca:     testcert.NewCA(t),
		root:   t.TempDir(),
		signer: signer,
		ids:    map[string]*age.X25519Identity{},
		logs:   &logtest.Buffer{},
	}
	f.cfg = Config{
		NATS:         natsconn.Options{URL: url, Name: "certsync-publisher-test"},
		SigningKey:   signer,
		Nodes:        map[string]string{},
		Certificates: map[string][]string{},
		Timeout:      20 * time.Second,
	}
	f.cfg.Lineages = f.root + "/live"
	for name, nodes := range certs {
		f.cfg.Certificates[name] = nodes
		for _, n := range nodes {
			f.addNode(n)
		}
	}
	return f
}

// addNode gives a node a fresh identity (replacing any earlier one).
func (f *fixture) addNode(node string) {
	f.t.Helper()
	id := testkeys.X25519(f.t)
	f.ids[node] = id
	f.cfg.Nodes[node] = id.Recipient().String()
}

func (f *fixture) publisher() *Publisher {
	f.t.Helper()
	p, err := New(f.cfg, slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	return p
}

// issue makes a leaf for name, valid from notBefore (zero: a minute ago).
func (f *fixture) issue(name string, notBefore time.Time) *testcert.Cert {
	return f.ca.Issue(f.t, testcert.Options{Names: []string{name, "*." + name}, NotBefore: notBefore})
}

// lineage writes c as lineage name (renewing it when it exists) and reads
// it back.
func (f *fixture) lineage(name string, c *testcert.Cert) *crypto.Bundle {
	f.t.Helper()
	var live string
	if _, err := ReadLineage(f.root+"/live/"+name, ""); err == nil {
		live, _ = testcert.RenewLineage(f.t, f.root, name, c)
	} else {
		live = testcert.WriteLineage(f.t, f.root, name, c)
	}
	b, err := ReadLineage(live, "")
	if err != nil {
		f.t.Fatalf("ReadLineage: %v", err)
	}
	return b
}

func (f *fixture) publish(b *crypto.Bundle) *Result {
	f.t.Helper()
	res, err := f.publisher().Publish(context.Background(), b)
	if err != nil {
		f.t.Fatalf("Publish: %v", err)
	}
	return res
}

// open decrypts a message's body as node.
func (f *fixture) open(msg *jetstream.RawStreamMsg, node string) (*crypto.Header, *crypto.Bundle) {
	f.t.Helper()
	h, b, err := crypto.Open(msg.Data, []crypto.PublicKey{f.signer.Public()}, []age.Identity{f.ids[node]})
	if err != nil {
		f.t.Fatalf("node %s opening sequence %d: %v", node, msg.Sequence, err)
	}
	return h, b
}

// js connects a test client.
func (f *fixture) js() jetstream.JetStream {
	f.t.Helper()
	return natstest.JetStream(f.t, f.url)
}

// count is the number of messages on a certificate's subject (countOn).
func (f *fixture) count(name string) uint64 {
	f.t.Helper()
	return f.countOn(wire.Subject(name))
}

// stream is the CERTSYNC stream, nil when it does not exist.
func (f *fixture) stream() jetstream.Stream {
	f.t.Helper()
	st, err := f.js().Stream(context.Background(), wire.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// countOn is the number of messages on subject; 0 when the stream does not
// exist.
func (f *fixture) countOn(subject string) uint64 {
	f.t.Helper()
	st := f.stream()
	if st == nil {
		return 0
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// last is the newest message on a certificate's subject (lastOn).
func (f *fixture) last(name string) *jetstream.RawStreamMsg {
	f.t.Helper()
	return f.lastOn(wire.Subject(name))
}

// lastOn is the newest message on subject; the test fails when there is
// none.
func (f *fixture) lastOn(subject string) *jetstream.RawStreamMsg {
	f.t.Helper()
	js := f.js()
	var msg *jetstream.RawStreamMsg
	var err error
	// A loaded cluster may leave a request unanswered for a while (the
	// stream's leader is busy): ask again until the deadline.
	natstest.WaitFor(f.t, 30*time.Second, "the newest message on "+subject, func() bool {
		var st jetstream.Stream
		if st, err = js.Stream(context.Background(), wire.Stream); err == nil {
			msg, err = st.GetLastMsgForSubject(context.Background(), subject)
		}
		return err == nil || errors.Is(err, jetstream.ErrMsgNotFound)
	})
	if err != nil {
		f.t.Fatalf("newest message on %s: %v", subject, err)
	}
	return msg
}

// openFirstDelivery opens, as node, the first message node's consumer
// delivers.
func (f *fixture) openFirstDelivery(node string) (*crypto.Header, *crypto.Bundle) {
	f.t.Helper()
	cons, err := f.js().Consumer(context.Background(), wire.Stream, wire.ConsumerName(node))
	if err != nil {
		f.t.Fatalf("consumer of %s: %v", node, err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		f.t.Fatalf("first delivery to %s: %v", node, err)
	}
	h, b, err := crypto.Open(m.Data(), []crypto.PublicKey{f.signer.Public()}, []age.Identity{f.ids[node]})
	if err != nil {
		f.t.Fatalf("%s opening its first delivery: %v", node, err)
	}
	return h, b
}

// consumer returns a node's consumer configuration, or nil.
func (f *fixture) consumer(node string) *jetstream.ConsumerConfig {
	f.t.Helper()
	c, err := f.js().Consumer(context.Background(), wire.Stream, wire.ConsumerName(node))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		f.t.Fatalf("consumer of %s: %v", node, err)
	}
	cfg := c.CachedInfo().Config
	return &cfg
}

// checkNoSecrets fails if s holds any part of a private key file.
func (f *fixture) checkNoSecrets(what, s string, keys ...[]byte) {
	f.t.Helper()
	if strings.Contains(s, "PRIVATE KEY") {
		f.t.Errorf("%s mentions a PRIVATE KEY block", what)
	}
	for _, k := range keys {
		for _, line := range bytes.Split(k, []byte("\n")) {
			if len(line) > 16 && !bytes.HasPrefix(line, []byte("-----")) && strings.Contains(s, string(line)) {
				f.t.Errorf("%s holds key material", what)
			}
		}
	}
}

// wantRefused checks a refusal of a call on certificate name: one line
// that contains want, matches is (when set) and holds no part of keys, and
// name's subject left holding stored messages.
func (f *fixture) wantRefused(err error, want string, is error, name string, stored uint64, keys ...[]byte) {
	f.t.Helper()
	f.t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		f.t.Errorf("error %q, want one line containing %q", err, want)
	}
	if is != nil && !errors.Is(err, is) {
		f.t.Errorf("error %q is not %v", err, is)
	}
	f.checkNoSecrets("error", err.Error(), keys...)
	if n := f.count(name); n != stored {
		f.t.Errorf("%d messages on the subject, want %d", n, stored)
	}
}

// runServer starts one test server and returns its URL.
func runServer(t *testing.T) string {
	t.Helper()
	return natstest.URL(natstest.RunServer(t))
}

// publishOutcome is what a Publish started by goPublish returned.
type publishOutcome struct {
	res *Result
	err error
}

// goPublish publishes b with the fixture's publisher in the background;
// the channel receives its outcome.
func (f *fixture) goPublish(b *crypto.Bundle) <-chan publishOutcome {
	done := make(chan publishOutcome, 1)
	go func() {
		res, err := f.publisher().Publish(context.Background(), b)
		done <- publishOutcome{res, err}
	}()
	return done
}
