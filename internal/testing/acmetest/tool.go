package acmetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// installHints says how to install each outside tool the end-to-end tests
// use, in the words CI uses (.ci/run).
var installHints = map[string]string{
	"certbot":    "apt-get install -y certbot",
	"pebble":     "apt-get install -y pebble",
	"nginx":      "apt-get install -y nginx",
	"nats":       "go install github.com/nats-io/natscli/nats@v0.5.0",
	"openssl":    "apt-get install -y openssl",
	"ssh-keygen": "apt-get install -y openssh-client",
	// The node unit's tests: its score and its mount namespace.
	"systemd-analyze": "apt-get install -y systemd",
	"unshare":         "apt-get install -y util-linux",
	"setpriv":         "apt-get install -y util-linux",
	"groupadd":        "apt-get install -y passwd",
	"groupdel":        "apt-get install -y passwd",
	// HAProxy and the metrics checks.
	"haproxy":  "apt-get install -y haproxy",
	"promtool": "apt-get install -y prometheus",
	"kill":     "apt-get install -y procps",
	// The Puppet module's checks (deploy/puppet/certsync).
	"puppet":      "apt-get install -y puppet",
	"puppet-lint": "apt-get install -y puppet-lint",
	"rspec":       "apt-get install -y ruby-rspec-puppet",
}

// sbinDirs are searched after PATH: Debian installs nginx in /usr/sbin, which
// is not in an ordinary user's PATH.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// RequireTool returns the absolute path of the named program, looked up in
// PATH and then in /usr/sbin and /sbin. When it is missing the test skips
// with a hint saying how to install it; under CI=true (where a missing tool
// is a broken setup, not a choice) the test fails with the same hint.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	return requireTool(t, name, inCI())
}

func requireTool(t testing.TB, name string, ci bool) string {
	t.Helper()
	if path, ok := findTool(name); ok {
		return path
	}
	msg := missingTool(name)
	if ci {
		t.Fatalf("%s (CI=true: a missing tool fails the test)", msg)
	}
	t.Skip(msg)
	return ""
}

// findTool looks name up in PATH, then in sbinDirs.
func findTool(name string) (string, bool) {
	if path, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(path); err == nil {
			return abs, true
		}
		return path, true
	}
	for _, dir := range sbinDirs {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return path, true
		}
	}
	return "", false
}

// missingTool says that name is missing and how to install it.
func missingTool(name string) string {
	hint, ok := installHints[name]
	if !ok {
		hint = "install it"
	}
	return name + " not found in PATH, /usr/sbin or /sbin: " + hint
}

// inCI reports whether the CI environment variable is set to a true value.
func inCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// RequireRoot skips the test unless it runs as root, saying why it needs
// root; under CI=true (which runs as root) it fails instead.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "needs root: " + why
	if inCI() {
		t.Fatalf("%s (CI=true: CI runs as root)", msg)
	}
	t.Skip(msg)
}
