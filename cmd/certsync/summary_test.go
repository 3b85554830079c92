package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a new pseudo-terminal and returns its two sides: the
// controller to read from, the terminal to give a process. Both are closed
// when the test ends.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no pseudo-terminal (/dev/ptmx): %v", err)
		}
		t.Skipf("no pseudo-terminal here (/dev/ptmx, the kernel's devpts): %v", err)
	}
	t.Cleanup(func() { controller.Close() })
	fd := int(controller.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pseudo-terminal number: %v", err)
	}
	terminal, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pseudo-terminal %d: %v", n, err)
	}
	t.Cleanup(func() { terminal.Close() })
	return controller, terminal
}

// certsyncTerminal runs certsync with args as certsyncCmd does, but with
// stderr on a pseudo-terminal, as when a person runs it in a shell (stdout
// stays a pipe). Stderr comes back with the terminal's "\r\n" as "\n".
func certsyncTerminal(t *testing.T, args ...string) cliResult {
	t.Helper()
	return certsyncTerminalEnv(t, nil, args...)
}

// certsyncTerminalEnv is certsyncTerminal with extra environment variables
// ("K=V").
func certsyncTerminalEnv(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	controller, terminal := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, certsyncBin(t), args...)
	cmd.Env = procEnv(env)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, terminal
	if err := cmd.Start(); err != nil {
		t.Fatalf("start certsync %s: %v", strings.Join(args, " "), err)
	}
	terminal.Close() // the child holds its own copy
	var stderr bytes.Buffer
	read := make(chan struct{})
	go func() {
		// Reading ends with EIO once no process holds the terminal.
		_, _ = io.Copy(&stderr, controller)
		close(read)
	}()
	err := cmd.Wait()
	<-read
	res := cliResult{Stdout: stdout.String(), Stderr: strings.ReplaceAll(stderr.String(), "\r\n", "\n")}
	res.setCode(t, ctx, args, err)
	return res
}

// TestSummaryLinesOnTerminal: auth, publish, republish and node sync tell
// a person at a terminal what they did, one line per certificate (one for
// auth) on stderr, and stay quiet when stderr is not a terminal (cron,
// systemd, certbot's deploy hook), with nothing on stdout either way.
func TestSummaryLinesOnTerminal(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	lin := newLineages(t)
	f := newFleet(t, fleetOptions{URL: srv.URL, Lineages: lin.Live(), Certificates: map[string][]string{
		"example.com": {"web1", "web2"},
		"example.org": {"web1"},
	}})
	live, leaf := lin.Write("example.com", certOptions{})
	lin.Write("example.org", certOptions{})
	serial := fmt.Sprintf("%x", leaf.Leaf.SerialNumber)
	auth := filepath.Join(f.Dir, "auth")

	check := func(what string, res cliResult, want ...string) {
		t.Helper()
		if res.Code != 0 || res.Stdout != "" {
			t.Fatalf("%s: exit %d, stdout %q; want 0 and nothing on stdout\nstderr:\n%s", what, res.Code, res.Stdout, res.Stderr)
		}
		lines := strings.Split(strings.TrimSuffix(res.Stderr, "\n"), "\n")
		if res.Stderr == "" {
			lines = nil
		}
		if len(lines) != len(want) {
			t.Fatalf("%s: stderr has %d lines, want %d:\n%s", what, len(lines), len(want), res.Stderr)
		}
		for i, w := range want {
			if !regexp.MustCompile(`\A` + w + `\z`).MatchString(lines[i]) {
				t.Errorf("%s: line %d is\n  %s\nwant it to match\n  %s", what, i+1, lines[i], w)
			}
		}
	}
	q := regexp.QuoteMeta

	check("auth on a terminal", certsyncTerminal(t, "auth", "--config", f.Publisher, "--out", auth),
		`certsync: auth: wrote `+q(filepath.Join(auth, "auth.conf"))+` and `+q(filepath.Join(auth, "leaf-auth.conf"))+
			` for the publisher, the admin, the leaf link and 2 nodes \(web1, web2\); created publisher\.nk, admin\.nk, leaf\.nk, web1\.nk, web2\.nk`)
	check("auth in a pipe", certsyncCmd(t, "auth", "--config", f.Publisher, "--out", auth))

	check("publish on a terminal", certsyncTerminal(t, "publish", "--config", f.Publisher, "--lineage", live),
		`certsync: example\.com: published, stream sequence \d+: serial `+serial+`, not after \d{4}-\d\d-\d\d, sealed to 2 nodes \(web1, web2\)`)
	check("publish in a pipe (certbot's hook)", certsyncCmd(t, "publish", "--config", f.Publisher, "--lineage", live))
	check("republish on a terminal", certsyncTerminal(t, "republish", "--config", f.Publisher),
		`certsync: example\.com: unchanged, stream sequence \d+: serial `+serial+`, not after \S+, sealed to 2 nodes \(web1, web2\)`,
		`certsync: example\.org: published, stream sequence \d+: serial [0-9a-f]+, not after \S+, sealed to node web1`)
	check("republish in a pipe (its timer)", certsyncCmd(t, "republish", "--config", f.Publisher))

	check("node sync on a terminal", certsyncTerminal(t, "node", "sync", "--config", f.Nodes["web1"].Config, "--timeout", "30s"),
		`certsync: example\.com: installed sha256:[0-9a-f]{16}…`,
		`certsync: example\.org: installed sha256:[0-9a-f]{16}…`)
	check("node sync again on a terminal", certsyncTerminal(t, "node", "sync", "--config", f.Nodes["web1"].Config, "--timeout", "30s"),
		`certsync: example\.com: nothing new`,
		`certsync: example\.org: nothing new`)
	check("node sync in a pipe (cron)", certsyncCmd(t, "node", "sync", "--config", f.Nodes["web2"].Config, "--timeout", "30s"))
	checkStaged(t, f.Nodes["web2"].StageDir, "example.com", live)
}
