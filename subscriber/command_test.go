package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestParseCommand(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want []string // nil: refused
	}{
		{"nginx -t", []string{"nginx", "-t"}},
		{"  systemctl\treload   nginx  ", []string{"systemctl", "reload", "nginx"}},
		{`/usr/bin/env 'a b' "c d"`, []string{"/usr/bin/env", "a b", "c d"}},
		{`sh -c 'nginx -t && systemctl reload nginx'`, []string{"sh", "-c", "nginx -t && systemctl reload nginx"}},
		{`echo "it's" 'say "hi"'`, []string{"echo", "it's", `say "hi"`}},
		{`a\ b c\\d`, []string{"a b", `c\d`}},
		{`"a\"b" "c\\d" "e\f" "\$x"`, []string{`a"b`, `c\d`, `e\f`, `$x`}},
		{`'a\b'`, []string{`a\b`}},
		{`x""y ''`, []string{"xy", ""}},
		{"a \\\nb", []string{"a", "b"}},
		{`"semi;colon" 'pipe|d'`, []string{"semi;colon", "pipe|d"}},
		{"", nil},
		{"   ", nil},
		{`"unbalanced`, nil},
		{`'unbalanced`, nil},
		{`trailing\`, nil},
		{"nginx -t && systemctl reload nginx", nil},
		{"nginx -t; reload", nil},
		{"cat < x", nil},
		{"echo $HOME", nil},
		{"echo `id`", nil},
		{"a | b", nil},
	} {
		cmd, err := ParseCommand(tc.line)
		got := cmd.Args()
		if tc.want == nil {
			if err == nil || !errors.Is(err, ErrBadCommand) || !cmd.IsZero() {
				t.Errorf("ParseCommand(%q) = %q, %v; want ErrBadCommand", tc.line, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) || cmd.String() != tc.line || cmd.IsZero() {
			t.Errorf("ParseCommand(%q) = %q (%q), %v; want %q", tc.line, got, cmd, err, tc.want)
		}
	}
}

// mustCommand parses line, which must be valid.
func mustCommand(t testing.TB, line string) Command {
	t.Helper()
	c, err := ParseCommand(line)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCommandRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := func(name, body string) string {
		path := filepath.Join(dir, name)
		treetest.WriteFile(t, path, []byte("#!/bin/sh\n"+body), 0o755)
		return path
	}
	env := []string{EnvName + "=example.com", EnvFingerprint + "=sha256:ab"}

	// The environment reaches the command; success is nil.
	out := filepath.Join(dir, "env.out")
	ok := command{what: "reload", cmd: mustCommand(t, script("env.sh", `echo "$CERTSYNC_NAME $CERTSYNC_FINGERPRINT" > "$1"`)+" "+out), timeout: 10 * time.Second, env: env}
	if err := ok.run(context.Background()); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, _ := os.ReadFile(out); string(got) != "example.com sha256:ab\n" {
		t.Errorf("command saw %q", got)
	}

	// A failure names the command and ends with its output on one line.
	failing := command{what: "check", cmd: mustCommand(t, script("fail.sh", "echo first line\necho 'second: bad' >&2\nexit 3\n")), timeout: 10 * time.Second}
	err := failing.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `check "`) || !strings.Contains(err.Error(), "exit status 3") ||
		!strings.HasSuffix(err.Error(), "first line | second: bad") || strings.Contains(err.Error(), "\n") {
		t.Errorf("failing command: %v", err)
	}

	// Long output keeps only its end.
	noisy := command{what: "check", cmd: mustCommand(t, script("noisy.sh", "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done; exit 1\n")), timeout: 10 * time.Second}
	err = noisy.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "…") || !strings.HasSuffix(err.Error(), "line 1999") || len(err.Error()) > 2*outputTail {
		t.Errorf("noisy command: %d bytes: %.200v", len(err.Error()), err)
	}

	// A hung command, with a child holding its output open, times out and
	// says so; the run's context ending does not cut it short.
	hung := command{what: "reload", cmd: mustCommand(t, script("hang.sh", "echo started\nsleep 60 &\nsleep 60\n")), timeout: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = hung.run(ctx)
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") || !strings.HasSuffix(err.Error(), "started") {
		t.Errorf("hung command: %v", err)
	}

	// A command that cannot start.
	missing := command{what: "reload", cmd: mustCommand(t, filepath.Join(dir, "nope")), timeout: time.Second}
	if err := missing.run(context.Background()); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing command: %v", err)
	}
}

// TestCommandText: a Command goes through JSON (or any text encoding) as
// its line, parsed again on the way in.
func TestCommandText(t *testing.T) {
	t.Parallel()
	type wrap struct{ C Command }
	for _, line := range []string{"", `nginx -t -c '/etc/nginx/a b.conf'`} {
		raw, err := json.Marshal(wrap{mustCommandOrZero(t, line)})
		if err != nil {
			t.Fatal(err)
		}
		var got wrap
		if err := json.Unmarshal(raw, &got); err != nil || got.C.String() != line {
			t.Errorf("%q through JSON (%s) = %q, %v", line, raw, got.C, err)
		}
	}
	var w wrap
	if err := json.Unmarshal([]byte(`{"C": "a | b"}`), &w); !errors.Is(err, ErrBadCommand) {
		t.Errorf("a bad command through JSON: %v, want ErrBadCommand", err)
	}
}

func mustCommandOrZero(t *testing.T, line string) Command {
	if line == "" {
		return Command{}
	}
	return mustCommand(t, line)
}
