package authconf_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// fleet is a management host and its nodes on a real server that runs the
// configuration `certsync auth` would generate for them.
type fleet struct {
	t      *testing.T
	dir    string // the credentials folder
	url    string
	ca     *testcert.CA
	root   string // certbot's folder
	signer *crypto.SigningKey
	ids    map[string]*age.X25519Identity
	certs  map[string][]string
	stream wire.StreamOptions // publisher.yaml's stream: settings
	// rollout is publisher.yaml's rollout: policy, every certificate's.
	rollout *publisher.RolloutPolicy
	logs    *logtest.Buffer // the publisher's and setup's logs
}

// newFleet writes the credentials of the nodes of certs (certificate ->
// nodes), starts a server whose configuration includes auth.conf, plus
// extra (more server configuration), has the admin set up the stream and
// the bucket, and returns the fleet. The same over TLS runs through the
// command line: TestAuthTLSPipelineE2E in cmd/certsync.
func newFleet(t *testing.T, certs map[string][]string, extra string) *fleet {
	t.Helper()
	f := newFleetWithoutSetup(t, certs, extra)
	// The first setup, as docs/SECURITY.md has it: the admin creates the
	// stream and the bucket, which the publisher may not.
	if err := f.setup(authconf.AdminUser); err != nil {
		t.Fatalf("setup with the admin's credential: %v", err)
	}
	return f
}

// newFleetWithoutSetup is newFleet on a server without the stream and the
// bucket.
func newFleetWithoutSetup(t *testing.T, certs map[string][]string, extra string) *fleet {
	t.Helper()
	signer, err := crypto.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{
		t:      t,
		dir:    filepath.Join(t.TempDir(), "auth"),
		ca:     testcert.NewCA(t),
		root:   t.TempDir(),
		signer: signer,
		ids:    map[string]*age.X25519Identity{},
		certs:  certs,
		logs:   &logtest.Buffer{},
	}
	var nodes []string
	for _, ns := range certs {
		for _, n := range ns {
			if _, ok := f.ids[n]; ok {
				continue
			}
			id := testkeys.X25519(t)
			f.ids[n] = id
			nodes = append(nodes, n)
		}
	}
	if _, err := authconf.Write(authconf.Config{Dir: f.dir, Nodes: nodes}, nil); err != nil {
		t.Fatalf("Write: %v", err)
	}
	srv := startServer(t, filepath.Dir(f.dir), "include ./auth/auth.conf\n"+extra)
	f.url = srv.ClientURL()
	return f
}

// setup runs the publisher's Setup (certsync setup) with user's credential.
func (f *fleet) setup(user string) error {
	f.t.Helper()
	p, err := publisher.New(publisher.Config{NATS: f.natsOptions(user), Stream: f.stream, Timeout: 20 * time.Second}, f.log())
	if err != nil {
		f.t.Fatalf("publisher.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.Setup(ctx)
}

// startServer writes a server configuration into dir, with body after the
// loopback listener and JetStream settings, and starts it.
func startServer(t *testing.T, dir, body string) *server.Server {
	t.Helper()
	conf := filepath.Join(dir, "server.conf")
	text := "host: 127.0.0.1\nport: -1\nserver_name: certsync-auth-test\n" +
		"jetstream {\n  store_dir: " + strings.ReplaceAll(filepath.Join(dir, "js"), `\`, `/`) + "\n}\n" + body
	treetest.WriteFile(t, conf, []byte(text), 0o600)
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("loading server configuration with the generated auth.conf: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	return natstest.Start(t, opts)
}

// seed is the seed file of a user.
func (f *fleet) seed(user string) string { return filepath.Join(f.dir, user+authconf.SeedExt) }

// natsOptions are a user's connection options, as the configuration loader
// builds them: its seed file and inbox prefix.
func (f *fleet) natsOptions(user string) natsconn.Options {
	o := natsconn.Options{URL: f.url, NKey: f.seed(user), Name: "test " + user}
	switch user {
	case authconf.PublisherUser:
		o.InboxPrefix = wire.PublisherInboxPrefix
	case authconf.AdminUser:
		o.InboxPrefix = wire.AdminInboxPrefix
	default:
		o.InboxPrefix = wire.NodeInboxPrefix(user)
	}
	return o
}

// connect connects as user; the connection closes when the test ends.
func (f *fleet) connect(user string) (*natsconn.Conn, jetstream.JetStream) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, f.natsOptions(user), slog.New(slog.DiscardHandler))
	if err != nil {
		f.t.Fatalf("connecting as %s: %v", user, err)
	}
	f.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc.Conn)
	if err != nil {
		f.t.Fatal(err)
	}
	return nc, js
}

// log is the logger of the publisher and setup, into f.logs.
func (f *fleet) log() *slog.Logger {
	return slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// publisher is the real publisher with the publisher's credential.
func (f *fleet) publisher() *publisher.Publisher {
	f.t.Helper()
	nodes := map[string]string{}
	for n, id := range f.ids {
		nodes[n] = id.Recipient().String()
	}
	p, err := publisher.New(publisher.Config{
		NATS:         f.natsOptions(authconf.PublisherUser),
		SigningKey:   f.signer,
		Lineages:     filepath.Join(f.root, "live"),
		Nodes:        nodes,
		Certificates: f.certs,
		Stream:       f.stream,
		Rollout:      f.rollout,
		Timeout:      20 * time.Second,
	}, f.log())
	if err != nil {
		f.t.Fatalf("publisher.New: %v", err)
	}
	return p
}

// publish issues a new leaf for name, writes it as the lineage's next
// version and publishes it with the publisher's credential.
func (f *fleet) publish(name string, notBefore time.Time) *testcert.Cert {
	f.t.Helper()
	c, res, err := f.tryPublish(name, notBefore)
	if err != nil {
		f.t.Fatalf("publishing %s with the publisher's credential: %v", name, err)
	}
	if res.Action != publisher.Published {
		f.t.Fatalf("publishing %s: %s, want published", name, res.Action)
	}
	return c
}

// tryPublish is publish, returning what Publish did.
func (f *fleet) tryPublish(name string, notBefore time.Time) (*testcert.Cert, *publisher.Result, error) {
	f.t.Helper()
	c := f.ca.Issue(f.t, testcert.Options{Names: []string{name}, NotBefore: notBefore})
	live := filepath.Join(f.root, "live", name)
	if _, err := os.Stat(live); err == nil {
		testcert.RenewLineage(f.t, f.root, name, c)
	} else {
		testcert.WriteLineage(f.t, f.root, name, c)
	}
	b, err := publisher.ReadLineage(live, "")
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := f.publisher().Publish(ctx, b)
	return c, res, err
}

// node is the real subscriber of a node with the node's credential,
// staging and installing into the test's temporary folders, logging to logs.
func (f *fleet) node(name string, logs *logtest.Buffer) *subscriber.Node {
	f.t.Helper()
	installRoot := f.t.TempDir()
	certs := map[string]subscriber.Certificate{}
	for cert, nodes := range f.certs {
		if slices.Contains(nodes, name) {
			// Never the default install_dir: that is the machine's own
			// /etc/letsencrypt.
			certs[cert] = subscriber.Certificate{Name: cert, InstallDir: filepath.Join(installRoot, cert)}
		}
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := subscriber.New(subscriber.Config{
		Node:         name,
		NATS:         f.natsOptions(name),
		Identities:   []age.Identity{f.ids[name]},
		Trusted:      []crypto.PublicKey{f.signer.Public()},
		StageDir:     filepath.Join(f.t.TempDir(), "stage"),
		Certificates: certs,
		Version:      "test",
	}, log)
	if err != nil {
		f.t.Fatalf("subscriber.New: %v", err)
	}
	return n
}

// natsCLI runs the nats command line tool as user with a short timeout and
// no context or configuration of the machine's user.
func (f *fleet) natsCLI(tool, user string, args ...string) (stdout, stderr string, err error) {
	f.t.Helper()
	o := f.natsOptions(user)
	full := []string{"--server", f.url, "--nkey", o.NKey, "--timeout", "2s"}
	if o.InboxPrefix != wire.AdminInboxPrefix {
		full = append(full, "--inbox-prefix", o.InboxPrefix)
	}
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, full...)
	home := f.t.TempDir()
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH")}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}
