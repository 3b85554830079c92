package subscriber

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/nginxtest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
	"github.com/certsync/certsync/internal/wire"
)

// startRun runs n.Run until the test ends (or stop is called) and returns
// stop, which reports Run's error.
func startRun(t *testing.T, n *testNode) func() error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return errors.New("Run did not stop after its context ended")
		}
	})
	t.Cleanup(func() { stop() })
	return stop
}

// tryStatus reads the node's status record for cert, if there is one.
func (e *env) tryStatus(cert string) (wire.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st wire.Status
	kv, err := e.js.KeyValue(ctx, wire.StatusBucket)
	if err != nil {
		return st, false
	}
	entry, err := kv.Get(ctx, wire.StatusKey(nodeName, cert))
	if err != nil {
		return st, false
	}
	return st, json.Unmarshal(entry.Value(), &st) == nil
}

// shellQuote quotes s for ParseCommand and for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// TestRunInstallsIntoNginx: real nginx serves install_dir. The daemon
// installs a published bundle over the old cron's folder (moved aside),
// checks with nginx -t, reloads once and verifies the new leaf is served.
// A failing check, then a reload that does nothing (so verify never sees the
// new leaf), roll back to the served certificate and are reported; the
// next good bundle installs normally.
func TestRunInstallsIntoNginx(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	dir := t.TempDir()
	stageDir := filepath.Join(dir, "stage")
	installDir := filepath.Join(dir, "letsencrypt", "live", "example.com")
	ca := e.ca
	issue := func(ago time.Duration) *testcert.Cert {
		return ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-ago)})
	}
	old := issue(5 * time.Hour)
	writeRealFolder(t, installDir, old)
	ngx := nginxtest.StartNginx(t, nginxtest.TLSFiles(filepath.Join(installDir, crypto.FileFullChain), filepath.Join(installDir, crypto.FileKey)))
	if got := nginxtest.ServedLeaf(t, ngx.Addr, "example.com"); fingerprint(got.Raw) != fingerprint(old.Leaf.Raw) {
		t.Fatal("nginx does not serve the old certificate")
	}

	// Wrappers around the real commands: the check fails while fail-check
	// exists; the reload counts itself and does nothing while noop-reload
	// exists.
	failCheck, noopReload, reloads := filepath.Join(dir, "fail-check"), filepath.Join(dir, "noop-reload"), filepath.Join(dir, "reloads.log")
	check := filepath.Join(dir, "check.sh")
	reload := filepath.Join(dir, "reload.sh")
	writeScript := func(path, body string) {
		treetest.WriteFile(t, path, []byte("#!/bin/sh\n"+body), 0o755)
	}
	writeScript(check, "if [ -e "+shellQuote(failCheck)+" ]; then echo 'nginx: [emerg] cannot load certificate (test)' >&2; exit 1; fi\nexec "+shellLine(ngx.Command("-t", "-q"))+"\n")
	writeScript(reload, "echo \"$CERTSYNC_FINGERPRINT\" >> "+shellQuote(reloads)+"\n[ -e "+shellQuote(noopReload)+" ] && exit 0\nexec "+shellLine(ngx.Command("-s", "reload"))+"\n")
	countReloads := func() int {
		data, _ := os.ReadFile(reloads)
		return strings.Count(string(data), "\n")
	}

	n := e.nodeWith(stageDir, nil, Certificate{
		Name: "example.com", InstallDir: installDir,
		Check: mustCommand(t, check), Reload: mustCommand(t, reload), Verify: ngx.Addr, VerifyTimeout: 3 * time.Second,
	})
	n.cfg.StatusInterval = time.Hour
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", n.logs.String())
		}
	})
	startRun(t, n)

	// nginx applies a reload a moment after `nginx -s reload` returns.
	waitServed := func(c *testcert.Cert) {
		t.Helper()
		nginxtest.WaitServes(t, ngx.Addr, "example.com", c.Leaf, 10*time.Second)
	}
	installed := func(c *testcert.Cert) func() bool {
		return func() bool {
			st, ok := e.tryStatus("example.com")
			return ok && st.State == wire.StateInstalled && st.InstalledFingerprint == fingerprint(c.Leaf.Raw)
		}
	}
	failedWith := func(c *testcert.Cert) func() bool {
		return func() bool {
			st, ok := e.tryStatus("example.com")
			return ok && st.State == wire.StateFailed && st.StagedFingerprint == fingerprint(c.Leaf.Raw)
		}
	}

	// 1. Installed, served, verified, reloaded once; the old folder kept.
	c1 := issue(4 * time.Hour)
	e.publishSealed("example.com", c1)
	natstest.WaitFor(t, 30*time.Second, "c1 installed", installed(c1))
	waitServed(c1) // nginx to serve c1 after its install
	wantServed(t, installDir, c1)
	if got := countReloads(); got != 1 {
		t.Errorf("%d reloads for one install, want 1", got)
	}
	if b := backups(t, installDir); len(b) != 1 {
		t.Errorf("backups %v", b)
	} else {
		wantServed(t, b[0], old)
	}
	if len(n.logs.Events("install_verify_passed")) != 1 {
		t.Error("no install_verify_passed event")
	}
	if st := e.status("example.com"); !st.Verified {
		t.Errorf("status after a verified install: %+v, want verified", st)
	}

	// 2a. A failing check: rolled back, reloaded again, reported.
	os.WriteFile(failCheck, nil, 0o600)
	c2 := issue(3 * time.Hour)
	e.publishSealed("example.com", c2)
	natstest.WaitFor(t, 30*time.Second, "c2's install reported failed", failedWith(c2))
	st := e.status("example.com")
	if !strings.Contains(st.Error, "cannot load certificate (test)") || st.InstalledFingerprint != fingerprint(c1.Leaf.Raw) {
		t.Errorf("status after the failed check: %+v", st)
	}
	checkNoSecret(t, "status error", st.Error, c1, c2)
	if !st.Verified || st.FailedFingerprint != fingerprint(c2.Leaf.Raw) || st.FailedVersion != st.StagedVersion {
		t.Errorf("status after the rollback: %+v, want c1 verified still and c2 failed", st)
	}
	wantServed(t, installDir, c1)
	if got := countReloads(); got != 2 {
		t.Errorf("%d reloads, want 2 (the rollback's)", got)
	}
	// nginx applies a reload a moment after `nginx -s reload` returns, and
	// serves c1 all along: wait until it has taken the rollback's reload,
	// or it could still be reconfiguring, and read c3's files, in step 2b.
	natstest.WaitFor(t, 10*time.Second, "nginx to take the rollback's reload", func() bool {
		// Once at start, then once per reload, after the new files are read.
		return strings.Count(ngx.ErrorLogText(), "start worker processes") >= 3
	})
	waitServed(c1) // nginx to serve c1 after the rollback
	os.Remove(failCheck)

	// 2b. A reload that does nothing: verify never sees c3; rolled back.
	os.WriteFile(noopReload, nil, 0o600)
	c3 := issue(2 * time.Hour)
	e.publishSealed("example.com", c3)
	natstest.WaitFor(t, 30*time.Second, "c3's install reported failed", failedWith(c3))
	st = e.status("example.com")
	if !strings.Contains(st.Error, "verify") || !strings.Contains(st.Error, "served "+fingerprint(c1.Leaf.Raw)) {
		t.Errorf("status after the failed verify: %+v", st)
	}
	wantServed(t, installDir, c1)
	waitServed(c1) // nginx to serve c1 after the second rollback
	os.Remove(noopReload)

	// 3. The next good bundle installs normally.
	c4 := issue(time.Hour)
	e.publishSealed("example.com", c4)
	natstest.WaitFor(t, 30*time.Second, "c4 installed", installed(c4))
	waitServed(c4) // nginx to serve c4
	wantServed(t, installDir, c4)
	if got := len(n.logs.Events("install_failed")); got != 2 {
		t.Errorf("%d install_failed events, want 2", got)
	}
	checkNoSecret(t, "log", n.logs.String(), old, c1, c2, c3, c4)
}
