package acmetest

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// lineageFiles are the four symlinks certbot keeps in a live folder.
var lineageFiles = []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"}

var wildcard = []string{"*.example.test", "example.test"}

// TestObtainRenewWildcard proves the harness end to end: real pebble, real
// certbot, a wildcard lineage, a deploy hook that sees certbot's
// environment, a forced renewal, and a failing hook certbot shrugs off.
func TestObtainRenewWildcard(t *testing.T) {
	t.Parallel()
	p := StartPebble(t)
	cb := NewCertbot(t, p)
	dir := t.TempDir()
	hookLog := filepath.Join(dir, "hook.log")
	hook := writeHook(t, dir, hookLog)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.IssuerRoots(t)) {
		t.Fatal("pebble issuing root does not parse")
	}

	lineage, res := cb.ObtainWildcard(t, "example", wildcard, hook)
	if want := filepath.Join(cb.ConfigDir, "live", "example"); lineage != want {
		t.Fatalf("lineage = %q, want %q", lineage, want)
	}
	if strings.Contains(res.Output, DeployHookFailed) {
		t.Fatalf("certonly reports a failed hook:\n%s", res.Output)
	}
	first := checkLineage(t, cb, "example", 1, roots)
	checkHookRuns(t, hookLog, lineage, 1)

	res = cb.Renew(t, "")
	if strings.Contains(res.Output, DeployHookFailed) {
		t.Fatalf("renew reports a failed hook:\n%s", res.Output)
	}
	second := checkLineage(t, cb, "example", 2, roots)
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Fatalf("renewal kept serial %x", first.SerialNumber)
	}
	// The hook given at issuance is saved and runs again at renewal.
	checkHookRuns(t, hookLog, lineage, 2)

	// A deploy hook that fails: certbot still exits 0 (Renew fails the
	// test otherwise) and only says so in its output.
	res = cb.Renew(t, "/bin/false")
	if !strings.Contains(res.Output, DeployHookFailed+" 1") {
		t.Fatalf("renew output lacks %q:\n%s", DeployHookFailed+" 1", res.Output)
	}
	checkLineage(t, cb, "example", 3, roots)
	checkHookRuns(t, hookLog, lineage, 2)

	// certbot saved the hook given to renew in place of the one given at
	// issuance: the next plain renewal fails the same way.
	res = cb.Renew(t, "")
	if !strings.Contains(res.Output, DeployHookFailed+" 1") {
		t.Fatalf("renew with the saved hook lacks %q:\n%s", DeployHookFailed+" 1", res.Output)
	}
	checkLineage(t, cb, "example", 4, roots)
	checkHookRuns(t, hookLog, lineage, 2)
}

// writeHook writes a deploy hook script that appends certbot's
// RENEWED_LINEAGE and RENEWED_DOMAINS to logFile, one line per run.
func writeHook(t *testing.T, dir, logFile string) string {
	t.Helper()
	path := filepath.Join(dir, "deploy-hook")
	script := fmt.Sprintf("#!/bin/sh\nprintf '%%s|%%s\\n' \"$RENEWED_LINEAGE\" \"$RENEWED_DOMAINS\" >>'%s'\n", logFile)
	if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
		t.Fatalf("write hook: %v", err)
	}
	return path
}

// checkHookRuns checks the hook ran runs times, each time with the lineage
// and the wildcard's domains in its environment.
func checkHookRuns(t *testing.T, logFile, lineage string, runs int) {
	t.Helper()
	data, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("read hook log: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != runs {
		t.Fatalf("hook ran %d times, want %d:\n%s", len(lines), runs, data)
	}
	want := lineage + "|" + strings.Join(wildcard, " ")
	for i, line := range lines {
		if line != want {
			t.Errorf("hook run %d saw %q, want %q", i+1, line, want)
		}
	}
}

// checkLineage checks the live folder of name holds the four symlinks into
// archive/<name>/ at version n, the private key is 0600, and the leaf chains
// through chain.pem to pebble's issuing root for both wildcard names. It
// returns the leaf.
func checkLineage(t *testing.T, cb *Certbot, name string, n int, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	live := cb.Lineage(name)
	archive := filepath.Join(cb.ConfigDir, "archive", name)
	for _, f := range lineageFiles {
		path := filepath.Join(live, f)
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatalf("lineage file: %v", err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s is %v, want a symlink", path, fi.Mode())
		}
		target, err := filepath.EvalSymlinks(path)
		if err != nil {
			t.Fatalf("resolve %s: %v", path, err)
		}
		base := strings.TrimSuffix(f, ".pem")
		if want := filepath.Join(archive, fmt.Sprintf("%s%d.pem", base, n)); target != want {
			t.Errorf("%s -> %s, want %s", path, target, want)
		}
	}
	keyInfo, err := os.Stat(filepath.Join(live, "privkey.pem"))
	if err != nil {
		t.Fatalf("stat private key: %v", err)
	}
	if perm := keyInfo.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("private key mode %v, want no group or other access", perm)
	}

	leaf := readCerts(t, filepath.Join(live, "cert.pem"))[0]
	chain := readCerts(t, filepath.Join(live, "chain.pem"))
	full := readCerts(t, filepath.Join(live, "fullchain.pem"))
	if len(full) != 1+len(chain) || !full[0].Equal(leaf) || !full[1].Equal(chain[0]) {
		t.Errorf("fullchain.pem is not cert.pem followed by chain.pem")
	}
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	for _, host := range []string{"www.example.test", "example.test"} {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter})
		if err != nil {
			t.Errorf("leaf does not verify for %s: %v", host, err)
		}
	}
	return leaf
}

func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read certificates: %v", err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parse %s: %v", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return certs
}

// TestRequireTool checks a present tool is found and a missing one skips, or
// fails under CI, with the install hint.
func TestRequireTool(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		tool       string
		ci         bool
		wantPath   bool
		wantSkip   bool
		wantFail   bool
		wantInText string
	}{
		{name: "present", tool: "sh", wantPath: true},
		{name: "present in ci", tool: "sh", ci: true, wantPath: true},
		{name: "missing skips", tool: "certsync-no-such-tool", wantSkip: true, wantInText: "certsync-no-such-tool not found"},
		{name: "missing fails in ci", tool: "certsync-no-such-tool", ci: true, wantFail: true, wantInText: "CI=true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := &recordTB{TB: t}
			var path string
			done := make(chan struct{})
			go func() {
				defer close(done)
				path = requireTool(rec, tt.tool, tt.ci)
			}()
			<-done
			if got := path != ""; got != tt.wantPath {
				t.Errorf("path = %q, want a path: %v", path, tt.wantPath)
			}
			if tt.wantPath && !filepath.IsAbs(path) {
				t.Errorf("path %q is not absolute", path)
			}
			if rec.skipped != tt.wantSkip || rec.failed != tt.wantFail {
				t.Errorf("skipped, failed = %v, %v; want %v, %v", rec.skipped, rec.failed, tt.wantSkip, tt.wantFail)
			}
			if !strings.Contains(rec.msg, tt.wantInText) {
				t.Errorf("message %q lacks %q", rec.msg, tt.wantInText)
			}
		})
	}
}

func TestMissingToolHints(t *testing.T) {
	t.Parallel()
	tests := []struct{ tool, want string }{
		{"pebble", "apt-get install -y pebble"},
		{"certbot", "apt-get install -y certbot"},
		{"nginx", "apt-get install -y nginx"},
		{"nats", "go install github.com/nats-io/natscli/nats@v0.5.0"},
		{"haproxy", "apt-get install -y haproxy"},
		{"promtool", "apt-get install -y prometheus"},
		{"kill", "apt-get install -y procps"},
		{"puppet", "apt-get install -y puppet"},
		{"puppet-lint", "apt-get install -y puppet-lint"},
		{"rspec", "apt-get install -y ruby-rspec-puppet"},
		{"other", "install it"},
	}
	for _, tt := range tests {
		if got := missingTool(tt.tool); !strings.HasPrefix(got, tt.tool+" not found") || !strings.HasSuffix(got, tt.want) {
			t.Errorf("missingTool(%q) = %q, want it to end with %q", tt.tool, got, tt.want)
		}
	}
}

// TestCIInstallsEveryTool: each Debian package an install hint names is on
// the apt-get line of .ci/run, so that under CI=true no test fails for a
// tool CI did not install.
func TestCIInstallsEveryTool(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	var installed []string
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "apt-get install -y "); ok {
			installed = append(installed, strings.Fields(rest)...)
		}
	}
	if len(installed) == 0 {
		t.Fatal(".ci/run has no apt-get install -y line")
	}
	for tool, hint := range installHints {
		if pkg, ok := strings.CutPrefix(hint, "apt-get install -y "); ok && !slices.Contains(installed, pkg) {
			t.Errorf(".ci/run does not install %s, which %s comes from", pkg, tool)
		}
	}
}

// recordTB records Skip and Fatalf instead of acting on them, and ends the
// calling goroutine as the real ones do.
type recordTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// BenchmarkPebbleStart measures starting pebble until its directory
// answers.
func BenchmarkPebbleStart(b *testing.B) {
	for b.Loop() {
		StartPebble(b)
	}
}

// BenchmarkIssueRenew measures what an end-to-end test pays for ACME once
// pebble runs: a new account and wildcard issuance, then a forced renewal.
func BenchmarkIssueRenew(b *testing.B) {
	p := StartPebble(b)
	for b.Loop() {
		cb := NewCertbot(b, p)
		cb.ObtainWildcard(b, "example", wildcard, "")
		cb.Renew(b, "")
	}
}
