package main

// Helpers for tests that drive the real certsync command as a separate
// process, the way an operator, certbot or systemd does. TestMain (in
// main_test.go) makes the test binary answer to the name "certsync"; these
// helpers run it.
//
// Running certsync:
//
//	certsyncBin(t) string                      absolute path of the certsync command (give it to certbot as a hook)
//	certsyncCmd(t, args...) cliResult          run to completion; stdout, stderr, exit code
//	certsyncCmdEnv(t, env, args...) cliResult  the same with extra environment variables ("K=V")
//	mustCertsync(t, args...) cliResult         certsyncCmd that fails the test unless certsync exits 0
//	cliResult.errorLines() []string            its "certsync: error: …" lines
//	startCertsync(t, env, args...) *proc       run in the background (node run, server); killed when the test ends
//	(*proc).Log(), .Stop(t) int, .WaitLog(t, timeout, msg)   its output so far; SIGTERM and exit status; wait for a log event
//	startServer(t) *testServer                 `certsync server` on a free loopback port with its own store
//	startServerAt(t, addr) *testServer         the same on a chosen loopback HOST:PORT
//	(*testServer).Stop(t), .Start(t)           SIGTERM (must exit 0), then start again on the same port and store
//
// Every process gets a clean environment: the test's own, minus
// CERTSYNC_CONFIG and JOURNAL_STREAM, plus CERTSYNC_LOG_FORMAT=json so that
// logs can be read back with logEvents.
//
// Keys, certificates and configuration:
//
//	newFleet(t, fleetOptions) *fleet   signing key, node keys (age or SSH host key), publisher.yaml and each node.yaml
//	newLineages(t), newLineagesAt(t, root) *lineages   certbot-shaped lineages from a test CA: Write(name, certOptions) writes or renews one
//	(*fleet).sync(t, node) cliResult   `certsync node sync` for one node of the fleet, which must exit 0
//	keygenSigning(t, path) string      `certsync keygen signing`; returns the public key line
//	keygenNode(t, path) string         `certsync keygen node`; returns the age1… recipient
//	sshHostKey(t, path) string         an OpenSSH ed25519 private key like /etc/ssh/ssh_host_ed25519_key; returns "ssh-ed25519 …"
//	writePublisherConfig(t, path, publisherConfig)   publisher.yaml
//	writeNodeConfig(t, path, nodeConfig)             node.yaml
//	editYAML(t, path, func(map[string]any))          change a written node.yaml or publisher.yaml (haproxy_e2e_test.go)
//	commandLine(args) string                         a check or reload line from argv, each word quoted (haproxy_e2e_test.go)
//
// Reading results:
//
//	inspectBundles(t, config, names...) []inspectRow  `certsync inspect --json`
//	readStaged(t, stageDir, name) subscriber.Staged    a staged certificate's certsync.json
//	stagedFingerprint(stageDir, name) string           its fingerprint, "" when none: a condition to poll with natstest.WaitFor
//	checkStaged(t, stageDir, name, lineage)            staged files byte-identical to the lineage's, privkey 0600, folder 0700
//	logEvents(log, msg) []map[string]any               JSON log records whose msg is msg
//	natstest.JetStream(t, url, opts...)                a nats.go JetStream client, to look at streams and consumers
//	waitAcked(t, url, node, seq)                       wait until node's consumer has acknowledged stream sequence seq
//	loopback.FreeAddr(t) string                                 a loopback HOST:PORT nothing listens on (yet)
//
// Anywhere:
//
//	must(t, f, in) out                 f(in), failing the test on its error (parsePublisherFile, loadNodeConfig …)

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/subscriber"
)

// cmdTimeout bounds one certsync run to completion, and the wait for a
// background process to stop.
const cmdTimeout = 60 * time.Second

// certsyncBin returns the absolute path of the certsync command that
// TestMain put first in PATH: the test binary under the name certsync.
func certsyncBin(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("certsync")
	if err != nil {
		t.Fatalf("certsync is not in PATH (TestMain sets it up): %v", err)
	}
	if !filepath.IsAbs(p) {
		p, err = filepath.Abs(p)
		if err != nil {
			t.Fatalf("certsync path: %v", err)
		}
	}
	return p
}

// procEnv is the environment of every certsync process: the test's, without
// what would make certsync read another configuration or log differently,
// with extra ("K=V") added last.
func procEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CERTSYNC_CONFIG", "JOURNAL_STREAM", "CERTSYNC_LOG_FORMAT", "RENEWED_LINEAGE", "CERTSYNC_LISTEN", "CERTSYNC_STORE",
			adminNKeyEnv, adminCredsEnv:
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CERTSYNC_LOG_FORMAT=json")
	return append(env, extra...)
}

// cliResult is what one certsync run left.
type cliResult struct {
	Stdout, Stderr string
	// Code is the exit status.
	Code int
}

// errorLines returns the "certsync: error: " lines of stderr.
func (r cliResult) errorLines() []string {
	var lines []string
	for l := range strings.Lines(r.Stderr) {
		if strings.HasPrefix(l, "certsync: error: ") {
			lines = append(lines, strings.TrimSuffix(l, "\n"))
		}
	}
	return lines
}

// certsyncCmd runs certsync with args to completion (bounded by cmdTimeout)
// and returns what it printed and its exit status. It fails the test only
// when certsync cannot run or runs too long.
func certsyncCmd(t testing.TB, args ...string) cliResult {
	t.Helper()
	return certsyncCmdEnv(t, nil, args...)
}

// certsyncCmdEnv is certsyncCmd with extra environment variables ("K=V").
func certsyncCmdEnv(t testing.TB, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, certsyncBin(t), args...)
	cmd.Env = procEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{Stdout: stdout.String(), Stderr: stderr.String()}
	res.setCode(t, ctx, args, err)
	return res
}

// setCode sets r.Code from err, what running certsync args returned, and
// fails the test if ctx ended first (it was still running) or certsync did
// not run.
func (r *cliResult) setCode(t testing.TB, ctx context.Context, args []string, err error) {
	t.Helper()
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("certsync %s: still running after %v\nstderr:\n%s", strings.Join(args, " "), cmdTimeout, r.Stderr)
	case errors.As(err, &exit):
		r.Code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run certsync %s: %v", strings.Join(args, " "), err)
	}
}

// mustCertsync runs certsync and fails the test unless it exits 0.
func mustCertsync(t testing.TB, args ...string) cliResult {
	t.Helper()
	res := certsyncCmd(t, args...)
	if res.Code != 0 {
		t.Fatalf("certsync %s: exit status %d\nstderr:\n%s", strings.Join(args, " "), res.Code, res.Stderr)
	}
	return res
}

// proc is a certsync process running in the background. It is killed when
// the test ends if it still runs.
type proc struct {
	args []string
	cmd  *exec.Cmd
	out  logtest.Buffer
	done chan struct{}
	code int
}

// startCertsync starts certsync with args in the background, with extra
// environment variables env ("K=V"); its stdout and stderr go to its log.
func startCertsync(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{args: args, done: make(chan struct{})}
	p.cmd = exec.Command(certsyncBin(t), args...)
	p.cmd.Env = procEnv(env)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start certsync %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		err := p.cmd.Wait()
		var exit *exec.ExitError
		switch {
		case errors.As(err, &exit):
			p.code = exit.ExitCode()
		case err != nil:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("log of certsync %s:\n%s", strings.Join(p.args, " "), p.Log())
		}
	})
	return p
}

// Log is everything the process printed so far.
func (p *proc) Log() string { return p.out.String() }

// exited tells whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits for the process to end (bounded by cmdTimeout)
// and returns its exit status.
func (p *proc) Stop(t testing.TB) int {
	t.Helper()
	if !p.exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("signal certsync %s: %v", strings.Join(p.args, " "), err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(cmdTimeout):
		t.Fatalf("certsync %s still running %v after SIGTERM\n%s", strings.Join(p.args, " "), cmdTimeout, p.Log())
	}
	return p.code
}

// WaitLog waits until the process has logged a JSON record whose msg is
// msg, and returns it. It fails the test if the process ends first or
// timeout passes.
func (p *proc) WaitLog(t testing.TB, timeout time.Duration, msg string) map[string]any {
	t.Helper()
	var rec map[string]any
	natstest.WaitFor(t, timeout, "certsync "+strings.Join(p.args, " ")+" to log "+msg, func() bool {
		if ev := logEvents(p.Log(), msg); len(ev) > 0 {
			rec = ev[0]
			return true
		}
		if p.exited() {
			t.Fatalf("certsync %s exited with status %d before logging %s:\n%s", strings.Join(p.args, " "), p.code, msg, p.Log())
		}
		return false
	})
	return rec
}

// logEvents returns the JSON log records (CERTSYNC_LOG_FORMAT=json) in log
// whose msg is msg, in order.
func logEvents(log, msg string) []map[string]any { return logtest.Events(log, msg) }

// testServer is `certsync server` running as a subprocess on loopback.
type testServer struct {
	// Addr is the client listen address, HOST:PORT; URL is nats://Addr.
	Addr, URL string
	// Store is the JetStream store folder, kept across restarts.
	Store string

	proc *proc
}

// serverReady bounds how long a server may take to accept clients.
const serverReady = 30 * time.Second

// startServer runs `certsync server` on a free loopback port with a store
// in a new temporary folder, waits until it is ready, and stops it when the
// test ends. Stop and Start restart it on the same address and store.
func startServer(t testing.TB) *testServer {
	t.Helper()
	s := &testServer{Store: filepath.Join(t.TempDir(), "nats")}
	// The port is free when chosen but may be taken before the server
	// binds it; then the server exits and another port is tried.
	for attempt := 0; ; attempt++ {
		s.Addr = loopback.FreeAddr(t)
		s.URL = "nats://" + s.Addr
		if s.start(t) {
			return s
		}
		if attempt == 2 {
			t.Fatalf("certsync server did not start:\n%s", s.proc.Log())
		}
	}
}

// startServerAt runs `certsync server` on addr (a loopback HOST:PORT) with
// a store in a new temporary folder, as startServer does.
func startServerAt(t testing.TB, addr string) *testServer {
	t.Helper()
	s := &testServer{Addr: addr, URL: "nats://" + addr, Store: filepath.Join(t.TempDir(), "nats")}
	s.Start(t)
	return s
}

// Start starts the server again on the same address and store after Stop.
func (s *testServer) Start(t testing.TB) {
	t.Helper()
	if !s.start(t) {
		t.Fatalf("certsync server did not start again on %s:\n%s", s.Addr, s.proc.Log())
	}
}

// start runs the server and reports whether it became ready.
func (s *testServer) start(t testing.TB) bool {
	t.Helper()
	s.proc = startCertsync(t, nil, "server", "--listen", s.Addr, "--store", s.Store)
	ready := false
	natstest.WaitFor(t, serverReady, "certsync server on "+s.Addr+" to be ready", func() bool {
		ready = len(logEvents(s.proc.Log(), "server_ready")) > 0
		return ready || s.proc.exited()
	})
	return ready
}

// Stop stops the server with SIGTERM and fails the test unless it exits 0
// after logging server_stopped.
func (s *testServer) Stop(t testing.TB) {
	t.Helper()
	if code := s.proc.Stop(t); code != 0 {
		t.Fatalf("certsync server exited with status %d after SIGTERM:\n%s", code, s.proc.Log())
	}
	if len(logEvents(s.proc.Log(), "server_stopped")) != 1 {
		t.Fatalf("certsync server did not log server_stopped:\n%s", s.proc.Log())
	}
}

// keygenSigning runs `certsync keygen signing --out path` and returns the
// public key it printed (the line nodes list in trusted_publishers).
func keygenSigning(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSuffix(mustCertsync(t, "keygen", "signing", "--out", path).Stdout, "\n")
}

// keygenNode runs `certsync keygen node --out path` and returns the age
// recipient it printed.
func keygenNode(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSuffix(mustCertsync(t, "keygen", "node", "--out", path).Stdout, "\n")
}

// sshHostKey writes a new OpenSSH ed25519 private key to path (0600, as
// sshd's host keys are) and returns its public key as an authorized_keys
// line without comment: "ssh-ed25519 AAAA…".
func sshHostKey(t testing.TB, path string) string {
	t.Helper()
	k := testkeys.Ed25519(t)
	treetest.WriteFile(t, path, k.PEM, 0o600)
	return k.Line
}

// natsConfig is the nats: section of both configuration files.
type natsConfig struct {
	URL   string         `yaml:"url"`
	NKey  string         `yaml:"nkey,omitempty"`
	Creds string         `yaml:"creds,omitempty"`
	TLS   *natsTLSConfig `yaml:"tls,omitempty"`
}

// natsTLSConfig is the nats.tls: section.
type natsTLSConfig struct {
	CA   string `yaml:"ca,omitempty"`
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
}

// streamConfig is publisher.yaml's stream: section.
type streamConfig struct {
	Replicas         int `yaml:"replicas,omitempty"`
	ConsumerReplicas int `yaml:"consumer_replicas,omitempty"`
	History          int `yaml:"history,omitempty"`
}

// publisherConfig is publisher.yaml, as writePublisherConfig writes it.
// Empty optional fields are left out, so certsync's defaults apply.
type publisherConfig struct {
	NATS         natsConfig          `yaml:"nats"`
	SigningKey   string              `yaml:"signing_key"`
	Lineages     string              `yaml:"lineages,omitempty"`
	Nodes        map[string]string   `yaml:"nodes"`
	Certificates map[string][]string `yaml:"certificates"`
	Rollout      map[string]any      `yaml:"rollout,omitempty"`
	Stream       *streamConfig       `yaml:"stream,omitempty"`
	Timeout      string              `yaml:"timeout,omitempty"`
}

// nodeConfig is node.yaml, as writeNodeConfig writes it. Each certificate
// takes the defaults except its install_dir, which it puts under the stage
// folder's parent so that nothing reaches /etc.
type nodeConfig struct {
	Name              string                       `yaml:"name"`
	NATS              natsConfig                   `yaml:"nats"`
	Identity          string                       `yaml:"identity"`
	TrustedPublishers []string                     `yaml:"trusted_publishers"`
	StageDir          string                       `yaml:"stage_dir"`
	Certificates      map[string]map[string]string `yaml:"certificates"`
}

// writePublisherConfig writes c as YAML to path and returns path.
func writePublisherConfig(t testing.TB, path string, c publisherConfig) string {
	t.Helper()
	return writeYAML(t, path, c)
}

// writeNodeConfig writes c as YAML to path and returns path. A certificate
// without install_dir gets one beside the stage folder.
func writeNodeConfig(t testing.TB, path string, c nodeConfig) string {
	t.Helper()
	for name, settings := range c.Certificates {
		if settings == nil {
			settings = map[string]string{}
			c.Certificates[name] = settings
		}
		if settings["install_dir"] == "" {
			settings["install_dir"] = filepath.Join(filepath.Dir(c.StageDir), "installed", name)
		}
	}
	return writeYAML(t, path, c)
}

func writeYAML(t testing.TB, path string, v any) string {
	t.Helper()
	data, err := yaml.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %s: %v", path, err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return path
}

// inspectRow is one bundle of `certsync inspect --json`.
type inspectRow struct {
	Sequence    uint64    `json:"sequence"`
	Name        string    `json:"name"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
	Version     uint64    `json:"version"`
	Recipients  string    `json:"recipients"`
	Published   time.Time `json:"published"`
}

// inspectBundles runs `certsync inspect --json --config config [names…]`
// and returns the bundles it lists.
func inspectBundles(t testing.TB, config string, names ...string) []inspectRow {
	t.Helper()
	res := mustCertsync(t, append([]string{"inspect", "--json", "--config", config}, names...)...)
	var rows []inspectRow
	if err := json.Unmarshal([]byte(res.Stdout), &rows); err != nil {
		t.Fatalf("certsync inspect --json printed no JSON array: %v\n%s", err, res.Stdout)
	}
	return rows
}

// readStaged reads the certsync.json record of certificate name in the
// stage folder.
func readStaged(t testing.TB, stageDir, name string) subscriber.Staged {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(stageDir, name, "certsync.json"))
	if err != nil {
		t.Fatalf("read staged record: %v", err)
	}
	var s subscriber.Staged
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("parse staged record of %q: %v", name, err)
	}
	return s
}

// stagedFingerprint is the fingerprint staged for name, or "" when nothing
// is staged: a condition to poll.
func stagedFingerprint(stageDir, name string) string {
	data, err := os.ReadFile(filepath.Join(stageDir, name, "certsync.json"))
	if err != nil {
		return ""
	}
	var s subscriber.Staged
	if json.Unmarshal(data, &s) != nil {
		return ""
	}
	return s.Fingerprint.String()
}

// checkStaged checks that the stage folder holds certificate name exactly
// as the certbot lineage (its live folder) does now: the four PEM files
// byte-identical to what the symlinks point at, privkey.pem 0600 and the
// folder 0700.
func checkStaged(t testing.TB, stageDir, name, lineage string) {
	t.Helper()
	dir := filepath.Join(stageDir, name)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("staged folder: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("staged folder %s has mode %v, want 0700", dir, perm)
	}
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, err := os.ReadFile(filepath.Join(lineage, f))
		if err != nil {
			t.Fatalf("read lineage file: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("read staged file: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("staged %s of %q differs from the lineage's", f, name)
		}
	}
	ki, err := os.Stat(filepath.Join(dir, "privkey.pem"))
	if err != nil {
		t.Fatalf("staged private key: %v", err)
	}
	if perm := ki.Mode().Perm(); perm != 0o600 {
		t.Errorf("staged privkey.pem of %q has mode %v, want 0600", name, perm)
	}
}

// lineages is a certbot configuration folder (like /etc/letsencrypt) whose
// lineages a test CA issues.
type lineages struct {
	// Root is the configuration folder; Live() is Root/live, publisher.yaml's
	// lineages.
	Root string

	tb       testing.TB
	ca       *testcert.CA
	versions map[string]time.Time
}

// newLineages returns an empty certbot configuration folder in a new
// temporary folder, with its own CA.
func newLineages(t testing.TB) *lineages {
	t.Helper()
	return newLineagesAt(t, t.TempDir())
}

// newLineagesAt is newLineages with the configuration folder root.
func newLineagesAt(t testing.TB, root string) *lineages {
	t.Helper()
	return &lineages{Root: root, tb: t, ca: testcert.NewCA(t), versions: map[string]time.Time{}}
}

// Live is the folder holding every lineage's live folder.
func (l *lineages) Live() string { return filepath.Join(l.Root, "live") }

// certOptions vary a leaf written by lineages.Write.
type certOptions struct {
	// Expired makes a leaf whose validity ended ten days ago.
	Expired bool
	// BadKey pairs the leaf with another key.
	BadKey bool
}

// Write issues a leaf for name and *.name and writes it as a new lineage,
// or as the next version of an existing one, as certbot renew does. Each
// version's NotBefore (certsync's bundle version) is later than the one
// before. It returns the lineage's live folder and the leaf.
func (l *lineages) Write(name string, o certOptions) (string, *testcert.Cert) {
	l.tb.Helper()
	notBefore := time.Now().Add(-time.Minute).Truncate(time.Second)
	last, renew := l.versions[name]
	if renew && !notBefore.After(last) {
		notBefore = last.Add(time.Second)
	}
	opts := testcert.Options{Names: []string{name, "*." + name}, NotBefore: notBefore}
	if o.Expired {
		opts.NotBefore, opts.Validity = notBefore.Add(-100*24*time.Hour), 90*24*time.Hour
	}
	leaf := l.ca.Issue(l.tb, opts)
	if o.BadKey {
		leaf = leaf.WithKeyOf(l.ca.Issue(l.tb, testcert.Options{Names: opts.Names}))
	}
	var live string
	if renew {
		live, _ = testcert.RenewLineage(l.tb, l.Root, name, leaf)
	} else {
		live = testcert.WriteLineage(l.tb, l.Root, name, leaf)
	}
	if opts.NotBefore.After(last) {
		l.versions[name] = opts.NotBefore
	}
	return live, leaf
}

// fleetOptions describe a management host and its nodes.
type fleetOptions struct {
	// URL is the NATS URL, several comma-separated, for all.
	URL string
	// Lineages is publisher.yaml's lineages.
	Lineages string
	// Certificates maps each certificate to its nodes. Every node named
	// here gets a node.yaml listing its certificates.
	Certificates map[string][]string
	// SSHNodes are the nodes whose identity is an OpenSSH ed25519 host key;
	// the others get an age key from `certsync keygen node`.
	SSHNodes []string
	// Timeout is publisher.yaml's timeout, Replicas its stream.replicas
	// and ConsumerReplicas its stream.consumer_replicas; empty or zero
	// leave certsync's defaults.
	Timeout          string
	Replicas         int
	ConsumerReplicas int
}

// fleet is the files of a management host and its nodes, in one
// temporary folder: signing.key, publisher.yaml, and for each node a
// folder with its key, node.yaml and stage folder.
type fleet struct {
	// Dir holds everything.
	Dir string
	// Signing is the publisher's public key, as trusted by the nodes.
	Signing string
	// Publisher is publisher.yaml's path, and PublisherConfig what it says.
	Publisher       string
	PublisherConfig publisherConfig
	// Nodes are the nodes by name.
	Nodes map[string]*fleetNode
}

// fleetNode is one node of a fleet.
type fleetNode struct {
	Name string
	// Recipient is what publisher.yaml lists for it: age1… or ssh-ed25519 ….
	Recipient string
	// Config is its node.yaml; StageDir its stage folder.
	Config, StageDir string
}

// newFleet makes keys with the certsync command (and an SSH host key for
// SSHNodes), and writes publisher.yaml and every node.yaml.
func newFleet(t testing.TB, o fleetOptions) *fleet {
	t.Helper()
	f := &fleet{Dir: t.TempDir(), Nodes: map[string]*fleetNode{}}
	f.Signing = keygenSigning(t, filepath.Join(f.Dir, "signing.key"))
	certsOf := map[string]map[string]map[string]string{}
	for cert, nodes := range o.Certificates {
		for _, n := range nodes {
			if certsOf[n] == nil {
				certsOf[n] = map[string]map[string]string{}
			}
			certsOf[n][cert] = nil
		}
	}
	recipients := map[string]string{}
	for name, certs := range certsOf {
		dir := filepath.Join(f.Dir, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("node folder: %v", err)
		}
		n := &fleetNode{Name: name, StageDir: filepath.Join(dir, "stage")}
		identity := filepath.Join(dir, "node.key")
		if slices.Contains(o.SSHNodes, name) {
			identity = filepath.Join(dir, "ssh_host_ed25519_key")
			n.Recipient = sshHostKey(t, identity)
		} else {
			n.Recipient = keygenNode(t, identity)
		}
		n.Config = writeNodeConfig(t, filepath.Join(dir, "node.yaml"), nodeConfig{
			Name: name, NATS: natsConfig{URL: o.URL}, Identity: identity,
			TrustedPublishers: []string{f.Signing}, StageDir: n.StageDir, Certificates: certs,
		})
		recipients[name] = n.Recipient
		f.Nodes[name] = n
	}
	f.PublisherConfig = publisherConfig{
		NATS: natsConfig{URL: o.URL}, SigningKey: filepath.Join(f.Dir, "signing.key"), Lineages: o.Lineages,
		Nodes: recipients, Certificates: o.Certificates, Timeout: o.Timeout,
	}
	if o.Replicas != 0 {
		f.PublisherConfig.Stream = &streamConfig{Replicas: o.Replicas, ConsumerReplicas: o.ConsumerReplicas}
	}
	f.Publisher = writePublisherConfig(t, filepath.Join(f.Dir, "publisher.yaml"), f.PublisherConfig)
	return f
}

// sync runs `certsync node sync` for node and fails the test unless it
// exits 0.
func (f *fleet) sync(t testing.TB, node string) cliResult {
	t.Helper()
	return mustCertsync(t, "node", "sync", "--config", f.Nodes[node].Config, "--timeout", "30s")
}

// waitAcked waits until the durable consumer of node has acknowledged every
// message up to stream sequence seq: a node stages a bundle before it
// acknowledges it, so a staged file alone does not say the server knows.
func waitAcked(t testing.TB, url, node string, seq uint64) {
	t.Helper()
	js := natstest.JetStream(t, url)
	natstest.WaitFor(t, 30*time.Second, "consumer "+wire.ConsumerName(node)+" to acknowledge sequence "+strconv.FormatUint(seq, 10), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName(node))
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0
	})
}

// must returns what f makes of in, failing the test on f's error.
func must[In, Out any](t testing.TB, f func(In) (Out, error), in In) Out {
	t.Helper()
	out, err := f(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
