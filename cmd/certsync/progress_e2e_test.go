package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/testkeys"
)

// TestPublishProgressE2E runs the real certsync publish for certificates
// of 256 nodes (the most one envelope holds, so every consumer is counted
// once: a certificate in recipient groups checks its nodes twice) on one
// in-process server, with stderr on a terminal, on a
// terminal with TERM=dumb and in a pipe. Each run has a consumer for every
// node to create or update (a certificate added to them: one request
// each), which takes several times progressDelay (0.8 s here under
// -race, which CI uses). On a terminal the progress line shows and is gone at
// the end, leaving the summary line alone; with TERM=dumb (no way to erase
// a line) and in a pipe (certbot's hook, the journal) no progress line is
// written, and the work ends with exactly one consumers_ready line.
// Publishing again in a pipe only checks the 256 consumers: one
// consumers_ready line again.
func TestPublishProgressE2E(t *testing.T) {
	t.Parallel()
	const n = 256
	dir := t.TempDir()
	signing := filepath.Join(dir, "signing.key")
	keygenSigning(t, signing)
	nodes := make(map[string]string, n)
	names := make([]string, 0, n)
	for i := range n {
		id := testkeys.X25519(t)
		name := fmt.Sprintf("web%03d", i+1)
		nodes[name] = id.Recipient().String()
		names = append(names, name)
	}
	url := natstest.URL(natstest.RunServer(t))
	lin := newLineages(t)
	// config is publisher.yaml with certs, each to every node.
	config := func(certs ...string) string {
		c := map[string][]string{}
		for _, name := range certs {
			c[name] = names
		}
		return writePublisherConfig(t, filepath.Join(dir, certs[len(certs)-1]+".yaml"), publisherConfig{
			NATS: natsConfig{URL: url}, SigningKey: signing, Lineages: lin.Live(), Nodes: nodes, Certificates: c, Timeout: "2m",
		})
	}
	summary := func(name string) string { return "certsync: " + name + ": published, stream sequence " }

	// A terminal: the line, rewritten in place, then erased.
	a, _ := lin.Write("a.example", certOptions{})
	term := certsyncTerminalEnv(t, []string{"TERM=xterm"}, "publish", "--config", config("a.example"), "--lineage", a)
	if term.Code != 0 || term.Stdout != "" {
		t.Fatalf("publish on a terminal: exit %d, stdout %q\nstderr:\n%q", term.Code, term.Stdout, term.Stderr)
	}
	if !strings.Contains(term.Stderr, "\rconsumers: created ") || !strings.Contains(term.Stderr, fmt.Sprintf(" of %d (", n)) ||
		!strings.Contains(term.Stderr, "/s), waiting for the server's replies\x1b[K") {
		t.Errorf("publish on a terminal wrote no progress line:\n%q", term.Stderr)
	}
	if got := screen(term.Stderr); !strings.HasPrefix(got, summary("a.example")) || strings.Contains(got, "\n") {
		t.Errorf("after publish the terminal shows\n%s\nwant the summary line alone (%s…)", got, summary("a.example"))
	}
	if len(logEvents(term.Stderr, "consumers_ready")) != 0 {
		t.Errorf("publish on a terminal logged consumers_ready:\n%q", term.Stderr)
	}

	// No progress line, one consumers_ready line.
	quiet := func(what string, res cliResult, created, updated float64) {
		t.Helper()
		if res.Code != 0 || res.Stdout != "" {
			t.Fatalf("%s: exit %d, stdout %q\nstderr:\n%q", what, res.Code, res.Stdout, res.Stderr)
		}
		if strings.Contains(res.Stderr, "consumers: ") || strings.Contains(res.Stderr, "\r") || strings.Contains(res.Stderr, "\x1b") {
			t.Errorf("%s wrote a progress line:\n%q", what, res.Stderr)
		}
		events := logEvents(res.Stderr, "consumers_ready")
		if len(events) != 1 {
			t.Fatalf("%s: stderr\n%s\nwant one consumers_ready line", what, res.Stderr)
		}
		if e := events[0]; e["created"] != created || e["updated"] != updated || e["checked"] != float64(n) || e["deleted"] != 0.0 {
			t.Errorf("%s: consumers_ready %v, want created %v, updated %v, checked %d", what, e, created, updated, n)
		}
	}
	b, _ := lin.Write("b.example", certOptions{})
	dumb := certsyncTerminalEnv(t, []string{"TERM=dumb"}, "publish", "--config", config("a.example", "b.example"), "--lineage", b)
	quiet("publish on a terminal with TERM=dumb", dumb, 0, n)
	if !strings.Contains(dumb.Stderr, "\n"+summary("b.example")) {
		t.Errorf("publish on a terminal with TERM=dumb: no summary line in\n%s", dumb.Stderr)
	}
	c, _ := lin.Write("c.example", certOptions{})
	pipe := config("a.example", "b.example", "c.example")
	res := certsyncCmd(t, "publish", "--config", pipe, "--lineage", c)
	quiet("publish in a pipe", res, 0, n)
	if strings.Count(res.Stderr, "\n") != 1 {
		t.Errorf("publish in a pipe wrote\n%s\nwant the consumers_ready line alone", res.Stderr)
	}
	res = certsyncCmd(t, "publish", "--config", pipe, "--lineage", c)
	quiet("publish again in a pipe", res, 0, 0)
}
