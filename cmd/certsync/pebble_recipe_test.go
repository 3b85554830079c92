package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/natstest"
)

// installDoc is the page whose certbot and pebble recipe
// TestInstallPebbleRecipe runs.
const installDoc = "../../docs/INSTALL.md"

// pebbleRecipeHeading is the section of installDoc holding the recipe: its
// first ```bash block.
const pebbleRecipeHeading = "## Trying it with certbot and pebble"

// pebbleRecipePorts are the fixed loopback ports the recipe's pebble listens
// on (listenAddress, managementListenAddress). Its httpPort and tlsPort
// (5002, 5001) and -dnsserver (5053) are ports pebble would connect to, to
// validate a challenge or look a name up; with PEBBLE_VA_ALWAYS_VALID=1 it
// never does, so what listens there does not matter.
var pebbleRecipePorts = []string{"127.0.0.1:14000", "127.0.0.1:15000"}

// pebbleRecipeLock is a file every run of TestInstallPebbleRecipe on this
// machine locks while it runs: the recipe's ports are fixed, so two runs
// (two go test processes, two checkouts) must take turns.
var pebbleRecipeLock = filepath.Join(os.TempDir(), "certsync-pebble-recipe.lock")

// pebbleRecipeTimeout bounds the recipe: pebble's start, certbot's issue and
// renewal, and the two deploy hooks publishing.
const pebbleRecipeTimeout = 2 * time.Minute

// extractBashBlock returns the text of the first ```bash block in the
// section under heading (a "## " line) of a Markdown page: the lines between
// the fence and the closing ```. It fails when the section, the block or its
// end is missing.
func extractBashBlock(data []byte, heading string) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	inSection, inBlock := false, false
	var body strings.Builder
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case inBlock && strings.TrimSpace(line) == "```":
			return body.String(), nil
		case inBlock:
			body.WriteString(line + "\n")
		case line == heading:
			inSection = true
		case inSection && strings.HasPrefix(line, "## "):
			return "", fmt.Errorf("section %q holds no ```bash block (it ends at line %d)", heading, n)
		case inSection && line == "```bash":
			inBlock = true
		}
	}
	switch {
	case inBlock:
		return "", fmt.Errorf("the ```bash block of section %q is never closed", heading)
	case inSection:
		return "", fmt.Errorf("section %q holds no ```bash block", heading)
	}
	return "", fmt.Errorf("no section %q", heading)
}

func TestExtractBashBlock(t *testing.T) {
	t.Parallel()
	const h = "## Try"
	good := "# T\n## Other\n```bash\nno\n```\n" + h + "\ntext\n```sh\nno\n```\n```bash\necho a \\\n  b\n\necho c\n```\n```bash\nno\n```\n## Next\n"
	got, err := extractBashBlock([]byte(good), h)
	if want := "echo a \\\n  b\n\necho c\n"; err != nil || got != want {
		t.Errorf("extractBashBlock = %q, %v; want %q", got, err, want)
	}
	for _, page := range []string{
		"# T\n## Other\n```bash\necho\n```\n",       // no such section
		h + "\ntext\n## Next\n```bash\necho\n```\n", // no block in the section
		h + "\n```sh\necho\n```\n",                  // a block, but not bash
		h + "\n```bash\necho\n",                     // never closed
	} {
		if got, err := extractBashBlock([]byte(page), h); err == nil {
			t.Errorf("extractBashBlock(%q) = %q, want an error", page, got)
		}
	}
}

// TestInstallPebbleRecipe runs the bash block of docs/INSTALL.md's section
// "Trying it with certbot and pebble" exactly as printed, as a user pastes
// it: in an empty folder holding only the publisher.yaml the text after the
// block describes, with bash -e and the certsync command first in PATH. Its
// pebble is on the fixed ports the page gives, so the test skips (fails
// under CI=true) when they are taken, and runs of it on this machine take
// turns. certbot exits 0 even when its deploy hook fails, so what counts is
// what the hooks did: the stream holds the issued certificate and its
// renewal, and a node syncs the renewal byte for byte.
func TestInstallPebbleRecipe(t *testing.T) {
	t.Parallel()
	bash := acmetest.RequireTool(t, "bash")
	for _, tool := range []string{"pebble", "certbot", "openssl"} {
		acmetest.RequireTool(t, tool)
	}
	data, err := os.ReadFile(installDoc)
	if err != nil {
		t.Fatal(err)
	}
	script, err := extractBashBlock(data, pebbleRecipeHeading)
	if err != nil {
		t.Fatalf("%s: %v", installDoc, err)
	}
	lockPebbleRecipe(t)
	for _, addr := range pebbleRecipePorts {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			msg := fmt.Sprintf("the recipe's pebble needs %s, which is taken: %v", addr, err)
			if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
				t.Fatalf("%s (CI=true: the port must be free)", msg)
			}
			t.Skip(msg)
		}
		l.Close()
	}

	const cert, node = "example.com", "web1"
	srv := startServer(t)
	// The fleet's folder is the user's folder: publisher.yaml, where the
	// deploy hook finds it ($PWD/publisher.yaml), and le/, which certbot
	// makes (the signing key and the node's folder sit beside them).
	f := newFleet(t, fleetOptions{URL: srv.URL, Certificates: map[string][]string{cert: {node}}})
	f.PublisherConfig.Lineages = filepath.Join(f.Dir, "le", "live")
	writePublisherConfig(t, f.Publisher, f.PublisherConfig)

	out := runPebbleRecipe(t, bash, f.Dir, script)
	if strings.Contains(out, acmetest.DeployHookFailed) {
		t.Errorf("%s: certbot's deploy hook failed:\n%s", installDoc, out)
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("%s: the recipe printed a PRIVATE KEY", installDoc)
	}

	rows := inspectBundles(t, f.Publisher, cert)
	if len(rows) != 2 {
		t.Fatalf("the stream holds %d bundles of %s after the recipe, want 2 (the issue and the renewal): %+v\nrecipe output:\n%s",
			len(rows), cert, rows, out)
	}
	if rows[0].Serial == rows[1].Serial || rows[1].Version < rows[0].Version || rows[1].Sequence <= rows[0].Sequence {
		t.Errorf("the two bundles of %s are not an issue and its renewal: %+v", cert, rows)
	}
	f.sync(t, node)
	n := f.Nodes[node]
	if got, want := stagedFingerprint(n.StageDir, cert), rows[1].Fingerprint; got != want {
		t.Errorf("node %s staged fingerprint %q, want the renewal's %q", node, got, want)
	}
	checkStaged(t, n.StageDir, cert, filepath.Join(f.Dir, "le", "live", cert))
}

// lockPebbleRecipe waits (a bounded time) for the machine-wide lock of the
// recipe's fixed ports and holds it until the test ends.
func lockPebbleRecipe(t *testing.T) {
	t.Helper()
	lock, err := os.OpenFile(pebbleRecipeLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatalf("open lock %q: %v", pebbleRecipeLock, err)
	}
	t.Cleanup(func() { lock.Close() }) // closing releases the lock
	natstest.WaitFor(t, 2*pebbleRecipeTimeout, "another run of the pebble recipe to end (lock "+pebbleRecipeLock+")", func() bool {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != nil && !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Fatalf("lock %q: %v", pebbleRecipeLock, err)
		}
		return err == nil
	})
}

// runPebbleRecipe runs script with bash -e in dir, in a process group of its
// own, and returns what it printed; it fails the test unless bash exits 0
// within pebbleRecipeTimeout. The recipe leaves pebble running in the
// background: the whole group is killed as soon as bash ends, and when the
// test ends if it stopped before that.
func runPebbleRecipe(t *testing.T, bash, dir, script string) string {
	t.Helper()
	// The output goes to a file, not a pipe: pebble inherits it and
	// outlives bash, and Wait would wait for a pipe to close.
	outFile, err := os.Create(filepath.Join(t.TempDir(), "recipe.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pebbleRecipeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "-e", "-c", script)
	cmd.Dir = dir
	// The user's environment, with the certsync under test first in PATH.
	// pebble is on loopback: certbot never goes to it through a proxy.
	env := []string{"PATH=" + filepath.Dir(certsyncBin(t)) + string(os.PathListSeparator) + os.Getenv("PATH"),
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}
	for _, kv := range procEnv(nil) {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "PATH", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE", "CERTSYNC_LOG_FORMAT":
		default:
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outFile, outFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var once sync.Once
	killGroup := func() error {
		once.Do(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
		return nil
	}
	cmd.Cancel = killGroup
	if err := cmd.Start(); err != nil {
		t.Fatalf("start bash: %v", err)
	}
	t.Cleanup(func() { _ = killGroup() })
	runErr := cmd.Wait()
	_ = killGroup()
	printed, err := os.ReadFile(outFile.Name())
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%s: the recipe still ran after %v\nscript:\n%s\noutput:\n%s", installDoc, pebbleRecipeTimeout, script, printed)
	case runErr != nil:
		t.Fatalf("%s: the recipe failed: %v\nscript:\n%s\noutput:\n%s", installDoc, runErr, script, printed)
	}
	return string(printed)
}
