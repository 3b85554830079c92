package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/wire"
)

// operationsDoc is the page whose recipes TestOperationsRecipes runs.
const operationsDoc = "../../docs/OPERATIONS.md"

// recipe is one ```sh block of docs/OPERATIONS.md with the directives in
// the HTML comments right above it.
type recipe struct {
	line    int      // line of the opening fence
	heading string   // the section it is in
	script  string   // the block's text
	expects []string // <!-- expect: TEXT -->: each must be in its output
	// untilStopped is set by <!-- runs-until-stopped -->: the recipe runs
	// until Ctrl-C (nats kv watch); the test stops it once its output holds
	// every expected text.
	untilStopped bool
}

var directiveRE = regexp.MustCompile(`^<!-- (expect: (.+?)|runs-until-stopped) -->$`)

// parseRecipes returns the ```sh blocks of a Markdown page. Every block
// must have at least one expect directive, and every directive must be
// followed by a block; other fenced blocks are not recipes.
func parseRecipes(data []byte) ([]recipe, error) {
	var out []recipe
	var pending recipe
	var directives bool
	heading := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := directiveRE.FindStringSubmatch(line); m != nil {
			directives = true
			if m[1] == "runs-until-stopped" {
				pending.untilStopped = true
			} else {
				pending.expects = append(pending.expects, m[2])
			}
			continue
		}
		if strings.HasPrefix(line, "```") {
			lang := strings.TrimPrefix(line, "```")
			var body strings.Builder
			start := n
			closed := false
			for n++; sc.Scan(); n++ {
				if strings.TrimSpace(sc.Text()) == "```" {
					closed = true
					break
				}
				body.WriteString(sc.Text() + "\n")
			}
			if !closed {
				return nil, fmt.Errorf("line %d: fenced block never closed", start)
			}
			if lang != "sh" {
				if directives {
					return nil, fmt.Errorf("line %d: directives above a %q block, which is not run", start, lang)
				}
				continue
			}
			if len(pending.expects) == 0 {
				return nil, fmt.Errorf("line %d: sh block without an <!-- expect: … --> line above it", start)
			}
			pending.line, pending.heading, pending.script = start, heading, body.String()
			out = append(out, pending)
			pending, directives = recipe{}, false
			continue
		}
		if directives && strings.TrimSpace(line) != "" {
			return nil, fmt.Errorf("line %d: directives not followed by a sh block", n)
		}
		if h, ok := strings.CutPrefix(line, "## "); ok {
			heading = h
		}
	}
	if directives {
		return nil, errors.New("directives at the end of the page, with no block")
	}
	return out, sc.Err()
}

func TestParseRecipes(t *testing.T) {
	t.Parallel()
	good := "# T\n## One\n<!-- expect: a b -->\n<!-- expect: c -->\n```sh\necho a b c\n```\n\n```yaml\nx: 1\n```\n" +
		"## Two\n<!-- expect: x -->\n<!-- runs-until-stopped -->\n```sh\nnats kv watch b\n```\n"
	got, err := parseRecipes([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].heading != "One" || got[0].script != "echo a b c\n" || len(got[0].expects) != 2 ||
		got[0].expects[0] != "a b" || got[0].untilStopped || !got[1].untilStopped || got[1].line != 15 {
		t.Errorf("parsed %+v", got)
	}
	for _, bad := range []string{
		"```sh\necho\n```\n",                                // no expect
		"<!-- expect: x -->\ntext\n```sh\necho x\n```\n",    // directive not right above
		"<!-- expect: x -->\n```yaml\nx: 1\n```\n",          // directive on a block that is not run
		"<!-- expect: x -->\n```sh\necho x\n",               // never closed
		"<!-- expect: x -->\n",                              // no block
		"<!-- runs-until-stopped -->\n```sh\necho x\n```\n", // nothing to wait for
	} {
		if _, err := parseRecipes([]byte(bad)); err == nil {
			t.Errorf("parsed %q without error", bad)
		}
	}
}

// TestOperationsRecipes runs every recipe of docs/OPERATIONS.md, in order,
// with bash and the real nats CLI, against a server populated by the real
// certsync: a published certificate, a node that synced, and the record
// of a node that left. The server grants what `certsync auth` writes: the
// nats CLI runs as the admin (NATS_NKEY), certsync as the publisher, the
// node with its own nkey, so the recipes need no more than that. Each must exit 0 (or run until stopped, for a
// recipe that runs until stopped) and print what its expect lines say.
func TestOperationsRecipes(t *testing.T) {
	t.Parallel()
	natsBin := acmetest.RequireTool(t, "nats")
	bash := acmetest.RequireTool(t, "bash")
	if _, err := exec.LookPath("certsync"); err != nil {
		t.Fatalf("certsync is not in PATH (TestMain puts the test binary there): %v", err)
	}
	data, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	recipes, err := parseRecipes(data)
	if err != nil {
		t.Fatalf("%s: %v", operationsDoc, err)
	}
	if len(recipes) < 8 {
		t.Fatalf("%s holds %d recipes; the page lost some", operationsDoc, len(recipes))
	}

	const cert, node, gone = "shop.example.net", "edge7", "old3"
	f := newAuthFleetFixture(t, map[string][]string{cert: {node}})
	if nc, err := nats.Connect(f.url); err == nil {
		nc.Close()
		t.Fatal("the server accepts a client without credentials: auth.conf is not in force")
	}
	c := f.publish(cert, 0)
	f.mustSync(node)
	if _, err := f.kv().Put(context.Background(), wire.StatusKey(gone, cert), []byte(`{"state":"staged"}`)); err != nil {
		t.Fatal(err)
	}
	placeholders := map[string]string{
		"nats://mgmt.example.net:4222": f.url,
		"/etc/certsync/publisher.yaml": f.publisher,
		"example.com":                  cert,
		"web1":                         node,
		"web9":                         gone,
	}
	var pairs []string
	for from, to := range placeholders {
		if !bytes.Contains(data, []byte("| `"+from+"` |")) {
			t.Errorf("placeholder %q is not in the page's table of placeholders", from)
		}
		pairs = append(pairs, from, to)
	}
	subst := strings.NewReplacer(pairs...)

	home := t.TempDir() // the nats CLI keeps its contexts under $HOME
	env := []string{"HOME=" + home, "NATS_URL=" + f.url, "NATS_NKEY=" + f.nkey("admin"),
		"PATH=" + filepath.Dir(natsBin) + string(os.PathListSeparator) + os.Getenv("PATH")}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "PATH" && k != configEnv && !strings.HasPrefix(k, "NATS_") {
			env = append(env, kv)
		}
	}
	for _, r := range recipes {
		script := subst.Replace(r.script)
		var expects []string
		for _, e := range r.expects {
			expects = append(expects, subst.Replace(e))
		}
		out := runRecipe(t, bash, env, script, r, expects)
		for _, want := range expects {
			if !strings.Contains(out, want) {
				t.Errorf("%s:%d (%s): output lacks %q\nscript:\n%s\noutput:\n%s", operationsDoc, r.line, r.heading, want, script, out)
			}
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("%s:%d (%s) printed a PRIVATE KEY", operationsDoc, r.line, r.heading)
		}
	}

	// What the recipes did: the replay left the newest bundle pending for
	// the node, and the forced republish a fresh copy of it, which a sync
	// takes; the record of the node that left is gone.
	ctx := context.Background()
	if _, err := f.kv().Get(ctx, wire.StatusKey(gone, cert)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("record of %s after the recipe deleting it: %v", gone, err)
	}
	cons, err := f.js().Consumer(ctx, wire.Stream, wire.ConsumerName(node))
	if err != nil {
		t.Fatalf("consumer of %s after the replay: %v", node, err)
	}
	if info := cons.CachedInfo(); info.NumPending != 2 || info.Delivered.Stream != 0 {
		t.Errorf("replayed consumer: %d pending, delivered up to %d; want the newest bundle and its forced copy pending", info.NumPending, info.Delivered.Stream)
	}
	f.mustSync(node)
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.AckFloor.Stream == 0 {
		t.Errorf("consumer after the node took the replay: %d pending, %d unacknowledged, ack floor %d",
			info.NumPending, info.NumAckPending, info.AckFloor.Stream)
	}
	rows, code := f.statusJSON()
	if r := rows[node+"/"+cert]; code != 0 || r["healthy"] != true || r["not_after"] != c.Leaf.NotAfter.UTC().Format(time.RFC3339) {
		t.Errorf("status after the recipes: exit %d, %v", code, r)
	}
}

// runRecipe runs script with bash -eo pipefail and returns its combined
// output. A recipe that runs until stopped is stopped with SIGINT, as a
// person stops it with Ctrl-C, once its output holds every expected text;
// it must not end on its own before. Any other recipe must exit 0 within a
// minute.
func runRecipe(t *testing.T, bash string, env []string, script string, r recipe, expects []string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-eo", "pipefail", "-c", script)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	out := &logtest.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting bash: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if !r.untilStopped {
		if err := <-done; err != nil {
			t.Errorf("%s:%d (%s): %v\nscript:\n%s\noutput:\n%s", operationsDoc, r.line, r.heading, err, script, out)
		}
		return out.String()
	}
	var ended error
	exited := false
	natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("the output of %s:%d (%s)", operationsDoc, r.line, r.heading), func() bool {
		select {
		case ended = <-done:
			exited = true
			return true
		default:
		}
		have := out.String()
		for _, e := range expects {
			if !strings.Contains(have, e) {
				return false
			}
		}
		return true
	})
	if exited {
		t.Errorf("%s:%d (%s): ended before it was stopped (%v)\nscript:\n%s\noutput:\n%s",
			operationsDoc, r.line, r.heading, ended, script, out)
		return out.String()
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Errorf("stopping %s:%d: %v", operationsDoc, r.line, err)
	}
	<-done
	return out.String()
}
