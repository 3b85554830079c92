package subscriber

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// stagedOf is the bundle and staged record of c as certificate name.
func stagedOf(t testing.TB, name string, c *testcert.Cert) (*crypto.Bundle, *Staged) {
	t.Helper()
	b := bundleOf(name, c)
	info, err := b.Check(time.Now())
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	return b, &Staged{Name: name, Release: crypto.Release{Version: b.Version, Serial: info.Serial, Fingerprint: info.Fingerprint, NotBefore: info.NotBefore, NotAfter: info.NotAfter}, StagedAt: time.Now().UTC()}
}

// newTestInstaller makes an installer for c (defaults applied) that logs
// into the test's log.
func newTestInstaller(t testing.TB, c Certificate) *installer {
	t.Helper()
	if err := c.validate(c.Name); err != nil {
		t.Fatal(err)
	}
	return &installer{c: c, log: slog.New(slog.DiscardHandler), now: time.Now, node: nodeName}
}

// counter is a reload command that appends its CERTSYNC_FINGERPRINT to a
// file, and reads them back.
type counter struct{ script, log string }

func newCounter(t testing.TB, dir string) *counter {
	t.Helper()
	c := &counter{script: filepath.Join(dir, "reload.sh"), log: filepath.Join(dir, "reloads.log")}
	body := "#!/bin/sh\necho \"$CERTSYNC_NAME $CERTSYNC_FINGERPRINT\" >> " + c.log + "\n"
	treetest.WriteFile(t, c.script, []byte(body), 0o755)
	return c
}

func (c *counter) lines() []string {
	data, _ := os.ReadFile(c.log)
	return strings.Fields(strings.ReplaceAll(string(data), "\n", " "))
}

// reloads is the fingerprints the reloads saw, in order.
func (c *counter) reloads() []string {
	var fps []string
	for _, f := range c.lines() {
		if strings.HasPrefix(f, "sha256:") {
			fps = append(fps, f)
		}
	}
	return fps
}

func install(t *testing.T, in *installer, c *testcert.Cert, force bool) InstallResult {
	t.Helper()
	b, meta := stagedOf(t, in.c.Name, c)
	return in.install(context.Background(), b, meta, installOpts{force: force})
}

// served checks that install_dir holds one consistent set and returns its
// leaf's fingerprint: cert.pem's key is privkey.pem, fullchain.pem is
// cert.pem and chain.pem, combined.pem (if any) fullchain.pem and the key.
func served(dir string) (string, error) {
	read := func(name string) []byte {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		return data
	}
	cert, chain, full, key := read(crypto.FileCert), read(crypto.FileChain), read(crypto.FileFullChain), read(crypto.FileKey)
	kp, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return "", fmt.Errorf("%s: cert.pem and privkey.pem: %v", dir, err)
	}
	if !bytes.Equal(full, append(bytes.Clone(cert), chain...)) {
		return "", fmt.Errorf("%s: fullchain.pem is not cert.pem and chain.pem", dir)
	}
	if comb, err := os.ReadFile(filepath.Join(dir, crypto.FileCombined)); err == nil && !bytes.Equal(comb, append(bytes.Clone(full), key...)) {
		return "", fmt.Errorf("%s: combined.pem is not fullchain.pem and privkey.pem", dir)
	}
	return fingerprint(kp.Certificate[0]), nil
}

func wantServed(t *testing.T, dir string, c *testcert.Cert) {
	t.Helper()
	fp, err := served(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := fingerprint(c.Leaf.Raw); fp != want {
		t.Fatalf("%s holds %s, want %s", dir, fp, want)
	}
}

func TestInstallReplaceAndIdempotence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	rl := newCounter(t, dir)
	in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com"), Reload: mustCommand(t, rl.script), Keep: 2})
	certs := []*testcert.Cert{
		ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-4 * time.Hour)}),
		ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-3 * time.Hour)}),
		ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)}),
		ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-1 * time.Hour)}),
	}
	for i, c := range certs {
		if r := install(t, in, c, false); r.Outcome != InstallInstalled || r.Err != nil {
			t.Fatalf("install %d: %+v", i, r)
		}
		wantServed(t, in.c.InstallDir, c)
		// The same bundle again: nothing done, nothing reloaded.
		if r := install(t, in, c, false); r.Outcome != InstallUnchanged {
			t.Fatalf("install %d again: %+v", i, r)
		}
		if got := len(rl.reloads()); got != i+1 {
			t.Fatalf("after install %d: %d reloads, want %d", i, got, i+1)
		}
	}
	if got := rl.reloads()[3]; got != fingerprint(certs[3].Leaf.Raw) {
		t.Errorf("reload saw CERTSYNC_FINGERPRINT %s", got)
	}

	// install_dir is a link to a version folder; keep 2: the current one
	// and the one before.
	target, err := os.Readlink(in.c.InstallDir)
	_, m3 := stagedOf(t, "example.com", certs[3])
	_, m2 := stagedOf(t, "example.com", certs[2])
	if err != nil || target != ".certsync/example.com/"+folderName(m3) {
		t.Errorf("install_dir links to %q, %v", target, err)
	}
	entries, _ := os.ReadDir(in.store())
	var folders []string
	for _, e := range entries {
		if e.IsDir() {
			folders = append(folders, e.Name())
		}
	}
	if want := []string{folderName(m2), folderName(m3)}; strings.Join(folders, " ") != strings.Join(want, " ") {
		t.Errorf("version folders %v, want %v", folders, want)
	}
	inst, st, err := in.installed()
	if err != nil || inst == nil || inst.Version != m3.Version || st.Pending != nil || st.Failed != nil || inst.InstalledAt.IsZero() {
		t.Errorf("installed %+v %+v %v", inst, st, err)
	}

	// Never back to an older version.
	r := install(t, in, certs[1], false)
	if r.Outcome != InstallFailed || !errors.Is(r.Err, ErrDowngrade) {
		t.Errorf("older version: %+v", r)
	}
	wantServed(t, in.c.InstallDir, certs[3])
	if got := len(rl.reloads()); got != 4 {
		t.Errorf("%d reloads after a refused downgrade, want 4", got)
	}
}

// flagCheck is a check command, a script in dir, that fails, saying so,
// while its flag file exists.
func flagCheck(t *testing.T, dir string) (check Command, flag string) {
	t.Helper()
	script, flag := filepath.Join(dir, "check.sh"), filepath.Join(dir, "fail-check")
	body := "#!/bin/sh\nif [ -e " + flag + " ]; then echo 'emerg: cannot load certificate' >&2; exit 1; fi\n"
	treetest.WriteFile(t, script, []byte(body), 0o755)
	return mustCommand(t, script), flag
}

// flaggedInstaller is an installer of c (Name default example.com) into
// dir/live whose check is flagCheck's: it fails while flag exists.
func flaggedInstaller(t *testing.T, dir string, c Certificate) (in *installer, flag string) {
	t.Helper()
	if c.Name == "" {
		c.Name = "example.com"
	}
	c.InstallDir = filepath.Join(dir, "live", c.Name)
	c.Check, flag = flagCheck(t, dir)
	return newTestInstaller(t, c), flag
}

func TestInstallRollback(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	rl := newCounter(t, dir)
	in, flag := flaggedInstaller(t, dir, Certificate{Reload: mustCommand(t, rl.script)})
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-3 * time.Hour)})
	c2 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	c3 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-1 * time.Hour)})
	if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c1: %+v", r)
	}

	// The check fails: back to c1, reloaded again, the output reported.
	os.WriteFile(flag, nil, 0o600)
	r := install(t, in, c2, false)
	if r.Outcome != InstallFailed || !r.RolledBack || !strings.Contains(r.Err.Error(), "emerg: cannot load certificate") ||
		!strings.HasPrefix(r.Err.Error(), "installing ") || !strings.Contains(r.Err.Error(), "rolled back") {
		t.Fatalf("failing check: %+v", r)
	}
	checkNoSecret(t, "install error", r.Err.Error(), c1, c2)
	wantServed(t, in.c.InstallDir, c1)
	fp1, fp2 := fingerprint(c1.Leaf.Raw), fingerprint(c2.Leaf.Raw)
	if got := strings.Join(rl.reloads(), " "); got != fp1+" "+fp1 {
		t.Errorf("reloads %s, want c1 then c1 again after the rollback", got)
	}
	inst, st, _ := in.installed()
	if inst == nil || inst.Fingerprint.String() != fp1 || st.Failed == nil || st.Failed.Fingerprint.String() != fp2 {
		t.Errorf("after rollback: installed %+v, state %+v", inst, st)
	}

	// Not tried again in a loop, even once the check would pass...
	os.Remove(flag)
	if r := install(t, in, c2, false); r.Outcome != InstallSkipped {
		t.Errorf("failed version again: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c1)
	// ...but when forced (node install).
	if r := install(t, in, c2, true); r.Outcome != InstallInstalled {
		t.Errorf("failed version forced: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c2)

	// A newer bundle after a failure installs normally.
	os.WriteFile(flag, nil, 0o600)
	install(t, in, c3, false)
	os.Remove(flag)
	c4 := ca.Issue(t, testcert.Options{})
	if r := install(t, in, c4, false); r.Outcome != InstallInstalled {
		t.Errorf("newer after a failure: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c4)
	if _, st, _ := in.installed(); st.Failed != nil || st.Pending != nil {
		t.Errorf("state after success %+v", st)
	}
}

func TestInstallFirstFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	in, flag := flaggedInstaller(t, dir, Certificate{})
	c1 := ca.Issue(t, testcert.Options{})
	os.WriteFile(flag, nil, 0o600)
	r := install(t, in, c1, false)
	if r.Outcome != InstallFailed || r.RolledBack || !strings.Contains(r.Err.Error(), "nothing to roll back to") {
		t.Fatalf("first install failing: %+v", r)
	}
	// The files stay: there is nothing else to serve.
	wantServed(t, in.c.InstallDir, c1)
	if r := install(t, in, c1, false); r.Outcome != InstallSkipped {
		t.Errorf("again: %+v", r)
	}
	os.Remove(flag)
	if r := install(t, in, c1, true); r.Outcome != InstallInstalled {
		t.Errorf("forced: %+v", r)
	}
	if r := install(t, in, c1, false); r.Outcome != InstallUnchanged {
		t.Errorf("after forced: %+v", r)
	}
}

// breakLink makes the nth pointing of install_dir (counting from 1) fail:
// its temporary link is removed before it is renamed into place. It returns
// the installer's log.
func breakLink(t *testing.T, in *installer, nth int) *bytes.Buffer {
	t.Helper()
	logs := new(bytes.Buffer)
	in.log = slog.New(slog.NewJSONHandler(logs, nil))
	n := 0
	in.step = func(step string) {
		if step != "link_created" {
			return
		}
		if n++; n == nth {
			if err := os.Remove(filepath.Join(in.parent(), "."+in.base()+linkSuffix)); err != nil {
				t.Error(err)
			}
		}
	}
	return logs
}

// TestInstallRolledBackIsTrue: RolledBack says whether install_dir points
// at the previous version again, whichever step failed and whether
// pointing back worked.
func TestInstallRolledBackIsTrue(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	c2 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-1 * time.Hour)})
	for _, tc := range []struct {
		name       string
		failCheck  bool
		breakNth   int // which pointing of install_dir in c2's install fails
		rolledBack bool
		want       *testcert.Cert // what install_dir holds after
		errHas     string
	}{
		// The check fails, and so does pointing back at c1: c2 stays.
		{name: "rollback fails", failCheck: true, breakNth: 2, rolledBack: false, want: c2, errHas: "rolling back failed"},
		// Pointing at c2 fails; pointing back at c1 works.
		{name: "link fails", breakNth: 1, rolledBack: true, want: c1, errHas: "rolled back to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in, flag := flaggedInstaller(t, dir, Certificate{})
			if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
				t.Fatalf("install c1: %+v", r)
			}
			logs := breakLink(t, in, tc.breakNth)
			if tc.failCheck {
				os.WriteFile(flag, nil, 0o600)
			}
			r := install(t, in, c2, false)
			if r.Outcome != InstallFailed || r.RolledBack != tc.rolledBack || r.Err == nil || !strings.Contains(r.Err.Error(), tc.errHas) {
				t.Fatalf("install c2: %+v, want failed, rolled back %v, error with %q", r, tc.rolledBack, tc.errHas)
			}
			wantServed(t, in.c.InstallDir, tc.want)
			rolledBackLogged := strings.Contains(logs.String(), `"msg":"install_rolled_back"`)
			if rolledBackLogged != tc.rolledBack {
				t.Errorf("install_rolled_back logged %v, want %v:\n%s", rolledBackLogged, tc.rolledBack, logs)
			}
			if tc.failCheck && !strings.Contains(logs.String(), fmt.Sprintf(`"msg":"install_failed","name":"example.com","version":%d,"fingerprint":%q,"rolled_back":%v`,
				r.Version, r.Fingerprint.String(), tc.rolledBack)) {
				t.Errorf("install_failed not logged with rolled_back %v:\n%s", tc.rolledBack, logs)
			}
		})
	}
}

// writeRealFolder writes c into dir as a plain folder, as the old cron did.
func writeRealFolder(t testing.TB, dir string, c *testcert.Cert) {
	t.Helper()
	treetest.MkdirAll(t, dir, 0o755)
	for name, data := range map[string][]byte{crypto.FileCert: c.Cert, crypto.FileChain: c.Chain, crypto.FileFullChain: c.FullChain, crypto.FileKey: c.PrivKey} {
		treetest.WriteFile(t, filepath.Join(dir, name), data, 0o600)
	}
}

func backups(t testing.TB, installDir string) []string {
	t.Helper()
	b, err := filepath.Glob(installDir + backupInfix + "*")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInstallMovesRealFolderAside(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	in, flag := flaggedInstaller(t, dir, Certificate{})
	old := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	writeRealFolder(t, in.c.InstallDir, old)

	// A failing first install rolls back to the old folder, moved aside.
	os.WriteFile(flag, nil, 0o600)
	c1 := ca.Issue(t, testcert.Options{})
	if r := install(t, in, c1, false); r.Outcome != InstallFailed || !r.RolledBack {
		t.Fatalf("failing install over a real folder: %+v", r)
	}
	wantServed(t, in.c.InstallDir, old)
	b := backups(t, in.c.InstallDir)
	if len(b) != 1 {
		t.Fatalf("backups %v", b)
	}
	wantServed(t, b[0], old)
	if fi, err := os.Lstat(b[0]); err != nil || !fi.IsDir() {
		t.Fatalf("backup %s: %v %v", b[0], fi, err)
	}

	os.Remove(flag)
	if r := install(t, in, c1, true); r.Outcome != InstallInstalled {
		t.Fatalf("install: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c1)
	if got := backups(t, in.c.InstallDir); len(got) != 1 || got[0] != b[0] {
		t.Errorf("backups %v, want %v kept", got, b)
	}
	wantServed(t, b[0], old)
}

func TestInstallOwnerModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	c := Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com"),
		CertMode: 0o640, KeyMode: 0o640, Combined: true}
	root := os.Geteuid() == 0
	if root {
		c.Owner, c.Group = "65534", "65534"
	} else {
		t.Log("not root: ownership is not changed, only modes are checked")
	}
	in := newTestInstaller(t, c)
	c1 := ca.Issue(t, testcert.Options{})
	if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
		t.Fatalf("install: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c1)
	// The files are the owner's and the group's; the version folder and
	// the record are root's (the group may enter the folder, the owner
	// pass through it), so the owner cannot change what certsync trusts.
	folderMode := fs.ModeDir | 0o750
	if root {
		folderMode = fs.ModeDir | 0o751
	}
	self, me := uint32(os.Geteuid()), uint32(os.Getegid())
	for _, f := range []struct {
		name     string
		mode     fs.FileMode
		uid, gid uint32 // as root; not root, every file is the test's
	}{
		{crypto.FileCert, 0o640, 65534, 65534}, {crypto.FileChain, 0o640, 65534, 65534}, {crypto.FileFullChain, 0o640, 65534, 65534},
		{crypto.FileKey, 0o640, 65534, 65534}, {crypto.FileCombined, 0o640, 65534, 65534},
		{crypto.FileRecord, 0o644, self, me},
		{".", folderMode, self, 65534},
	} {
		fi, err := os.Stat(filepath.Join(in.c.InstallDir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.name, fi.Mode(), f.mode)
		}
		st := fi.Sys().(*syscall.Stat_t)
		wantUID, wantGID := self, me
		if root {
			wantUID, wantGID = f.uid, f.gid
		}
		if st.Uid != wantUID || st.Gid != wantGID {
			t.Errorf("%s: owner %d:%d, want %d:%d", f.name, st.Uid, st.Gid, wantUID, wantGID)
		}
	}
	// The store folders: anyone may pass through, only root lists them.
	for _, dir := range []string{filepath.Dir(in.store()), in.store()} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode() != fs.ModeDir|0o711 {
			t.Errorf("%s: %v %v, want %v", dir, fi.Mode(), err, fs.ModeDir|0o711)
		}
	}
	// The state file may hold a command's output: the node's alone.
	if fi, err := os.Stat(filepath.Join(in.store(), fileState)); err != nil || fi.Mode() != 0o600 {
		t.Errorf("state file: %v %v", fi, err)
	}

	// Default modes: the key 0600, the rest 0644, the folder open.
	dflt := newTestInstaller(t, Certificate{Name: "example.org", InstallDir: filepath.Join(dir, "live", "example.org")})
	if r := install(t, dflt, c1, false); r.Outcome != InstallInstalled {
		t.Fatalf("install: %+v", r)
	}
	for name, mode := range map[string]fs.FileMode{crypto.FileCert: 0o644, crypto.FileKey: 0o600, ".": fs.ModeDir | 0o755} {
		if fi, err := os.Stat(filepath.Join(dflt.c.InstallDir, name)); err != nil || fi.Mode() != mode {
			t.Errorf("default %s: %v %v, want %v", name, fi.Mode(), err, mode)
		}
	}

	// An unknown owner fails before anything changes.
	bad := newTestInstaller(t, Certificate{Name: "example.net", InstallDir: filepath.Join(dir, "live", "example.net"), Owner: "no-such-user-certsync"})
	if r := install(t, bad, c1, false); r.Outcome != InstallFailed || !strings.Contains(r.Err.Error(), "no-such-user-certsync") {
		t.Errorf("unknown owner: %+v", r)
	}
	if _, err := os.Lstat(bad.c.InstallDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unknown owner: install_dir %v", err)
	}
}

// TestInstallerIDs: owner and group resolve the same way: unset keeps the
// process's (-1), a number is taken as it is, a name is looked up, and an
// unknown name is an error naming the certificate, which one and the name.
func TestInstallerIDs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		owner, group string
		uid, gid     int
		err          string
	}{
		{"", "", -1, -1, ""},
		{"65534", "1234", 65534, 1234, ""},
		{"root", "root", 0, 0, ""},
		{"no-such-user-certsync", "root", 0, 0, `installing "example.com": owner "no-such-user-certsync": `},
		{"root", "no-such-group-certsync", 0, 0, `installing "example.com": group "no-such-group-certsync": `},
	} {
		in := &installer{c: Certificate{Name: "example.com", Owner: tc.owner, Group: tc.group}}
		uid, gid, err := in.ids()
		if tc.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
				t.Errorf("ids(%q, %q) = %v, want an error starting %q", tc.owner, tc.group, err, tc.err)
			}
			continue
		}
		if err != nil || uid != tc.uid || gid != tc.gid {
			t.Errorf("ids(%q, %q) = %d, %d, %v; want %d, %d", tc.owner, tc.group, uid, gid, err, tc.uid, tc.gid)
		}
	}
}

// The crash test: a helper process installs a bundle and kills itself with
// SIGKILL after its Nth durable step, for every N; after each kill,
// install_dir holds one consistent set, and the next run completes the
// install, reload included.

const (
	crashEnv      = "CERTSYNC_TEST_CRASH_DIR"
	crashAtEnv    = "CERTSYNC_TEST_CRASH_AT"
	crashBundle   = "bundle.json"
	crashExitFail = 3
)

// crashJob is what the helper process installs.
type crashJob struct {
	Cert   Certificate
	Bundle crypto.Bundle
	Meta   Staged
	// StageDir, when set, is opened with OpenStage before the install.
	StageDir string
}

// umaskEnv sets the helper process's umask (octal) before it does anything.
const umaskEnv = "CERTSYNC_TEST_UMASK"

// TestInstallCrashHelper is the helper process; it does nothing in a normal
// test run.
func TestInstallCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("helper process of TestInstallCrash")
	}
	raw, err := os.ReadFile(filepath.Join(dir, crashBundle))
	if err != nil {
		t.Fatal(err)
	}
	var job crashJob
	if err := json.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	if m := os.Getenv(umaskEnv); m != "" {
		mask, err := strconv.ParseUint(m, 8, 32)
		if err != nil {
			t.Fatal(err)
		}
		syscall.Umask(int(mask))
	}
	if job.StageDir != "" {
		if _, err := OpenStage(job.StageDir, slog.New(slog.DiscardHandler)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(crashExitFail)
		}
	}
	killAt, _ := strconv.Atoi(os.Getenv(crashAtEnv))
	in := newTestInstaller(t, job.Cert)
	steps := 0
	in.step = func(string) {
		steps++
		if steps == killAt {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is on its way
		}
	}
	r := in.install(context.Background(), &job.Bundle, &job.Meta, installOpts{})
	if r.Outcome != InstallInstalled && r.Outcome != InstallUnchanged {
		fmt.Fprintln(os.Stderr, r.Err)
		os.Exit(crashExitFail)
	}
}

// runCrashHelper installs job in a helper process killed after step killAt
// (0: never) and reports whether it was killed. env ("K=V") is added to
// the helper's environment.
func runCrashHelper(t *testing.T, dir string, job *crashJob, killAt int, env ...string) bool {
	t.Helper()
	raw, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	treetest.WriteFile(t, filepath.Join(dir, crashBundle), raw, 0o600)
	cmd := exec.Command(os.Args[0], "-test.run=^TestInstallCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir, crashAtEnv+"="+strconv.Itoa(killAt))
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	if err != nil {
		t.Fatalf("helper (kill at %d): %v\n%s", killAt, err, out)
	}
	return false
}

func TestInstallCrash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("spawns dozens of processes")
	}
	ca := testcert.NewCA(t)
	old := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	c2 := ca.Issue(t, testcert.Options{})
	for _, scenario := range []string{"first over a real folder", "renewal"} {
		kills := 0
		for killAt := 1; ; killAt++ {
			dir := t.TempDir()
			rl := newCounter(t, dir)
			c := Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com"),
				Reload: mustCommand(t, rl.script), Combined: true, Keep: 2}
			before, target := old, c1
			if scenario == "renewal" {
				before, target = c1, c2
				in := newTestInstaller(t, c)
				if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
					t.Fatalf("install c1: %+v", r)
				}
			} else {
				writeRealFolder(t, c.InstallDir, old)
			}
			b, meta := stagedOf(t, "example.com", target)
			job := &crashJob{Cert: c, Bundle: *b, Meta: *meta}
			if !runCrashHelper(t, dir, job, killAt) {
				if killAt < 5 {
					t.Fatalf("%s: helper never killed: only %d steps", scenario, killAt-1)
				}
				break // past the last step
			}
			kills++
			fp, err := served(c.InstallDir)
			if err != nil {
				t.Fatalf("%s, killed after step %d: %v", scenario, killAt, err)
			}
			if fp != fingerprint(before.Leaf.Raw) && fp != fingerprint(target.Leaf.Raw) {
				t.Fatalf("%s, killed after step %d: install_dir holds %s", scenario, killAt, fp)
			}
			// The old folder is never lost: at install_dir or moved aside.
			if scenario != "renewal" && fp != fingerprint(old.Leaf.Raw) {
				if bs := backups(t, c.InstallDir); len(bs) != 1 {
					t.Fatalf("killed after step %d: backups %v", killAt, bs)
				} else if _, err := served(bs[0]); err != nil {
					t.Fatalf("killed after step %d: %v", killAt, err)
				}
			}

			// The next run completes the install, reload included.
			runCrashHelper(t, dir, job, 0)
			wantServed(t, c.InstallDir, target)
			reloads := rl.reloads()
			if len(reloads) == 0 || reloads[len(reloads)-1] != fingerprint(target.Leaf.Raw) {
				t.Fatalf("%s, killed after step %d: reloads %v end without the new version", scenario, killAt, reloads)
			}
			in := newTestInstaller(t, c)
			if _, st, err := in.installed(); err != nil || st.Pending != nil || st.Failed != nil {
				t.Fatalf("%s, killed after step %d: state %+v %v", scenario, killAt, st, err)
			}
			leftovers, _ := filepath.Glob(filepath.Join(in.store(), tmpPrefix+"*"))
			links, _ := filepath.Glob(filepath.Join(in.parent(), ".*"+linkSuffix))
			if len(leftovers)+len(links) > 0 {
				t.Fatalf("%s, killed after step %d: leftovers %v %v", scenario, killAt, leftovers, links)
			}
		}
		t.Logf("%s: killed at %d points, each recovered", scenario, kills)
	}
}

// TestInstallModesWhateverUmask: under the node unit's UMask=0077, and under
// a umask that takes everything away, every folder certsync makes gets its
// own mode: the folders above install_dir and the stage folder like mkdir
// -p with umask 022, .certsync and .certsync/<name> 0711, the version
// folder open as its files' modes say, the stage folder 0700.
func TestInstallModesWhateverUmask(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c1 := ca.Issue(t, testcert.Options{})
	for _, umask := range []string{"0077", "0777"} {
		dir := t.TempDir()
		c := Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "etc", "live", "example.com"), KeyMode: 0o640}
		if err := c.validate(c.Name); err != nil {
			t.Fatal(err)
		}
		b, meta := stagedOf(t, "example.com", c1)
		stage := filepath.Join(dir, "certsync", "live")
		job := &crashJob{Cert: c, Bundle: *b, Meta: *meta, StageDir: stage}
		runCrashHelper(t, dir, job, 0, umaskEnv+"="+umask)
		in := newTestInstaller(t, c)
		version := filepath.Join(in.store(), folderName(meta))
		for path, want := range map[string]fs.FileMode{
			filepath.Join(dir, "etc"):                 fs.ModeDir | 0o755,
			in.parent():                               fs.ModeDir | 0o755,
			filepath.Dir(in.store()):                  fs.ModeDir | 0o711,
			in.store():                                fs.ModeDir | 0o711,
			version:                                   fs.ModeDir | 0o755, // cert.pem is 0644
			filepath.Join(version, crypto.FileKey):    0o640,
			filepath.Join(version, crypto.FileCert):   0o644,
			filepath.Join(version, crypto.FileRecord): 0o644,
			filepath.Join(in.store(), fileState):      0o600,
			filepath.Join(dir, "certsync"):            fs.ModeDir | 0o755,
			stage:                                     fs.ModeDir | 0o700,
		} {
			fi, err := os.Lstat(path)
			if err != nil {
				t.Errorf("umask %s: %v", umask, err)
				continue
			}
			if fi.Mode() != want {
				t.Errorf("umask %s: %s has mode %v, want %v", umask, path, fi.Mode(), want)
			}
		}
		wantServed(t, c.InstallDir, c1)
	}
}

// TestFirstInstallSyncsNewFolders: every folder a first install creates
// (install_dir's parent and what is missing above it, .certsync,
// .certsync/<name>) and the stage folder (and the folders above it that
// OpenStage creates) is synced into the folder that holds it, so that a
// power cut after the install cannot lose the folder with the keys in it.
func TestFirstInstallSyncsNewFolders(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synced := watchSyncs(t, dir)
	ca := testcert.NewCA(t)
	in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "a", "b", "live", "example.com")})
	if r := install(t, in, ca.Issue(t, testcert.Options{}), false); r.Outcome != InstallInstalled {
		t.Fatalf("install: %+v", r)
	}
	openTestStage(t, filepath.Join(dir, "s", "t", "stage"))
	got := synced()
	for _, parent := range []string{
		dir, filepath.Join(dir, "a"), filepath.Join(dir, "a", "b"), // a, b and live
		in.parent(),                                           // .certsync, and install_dir's link
		filepath.Dir(in.store()),                              // .certsync/<name>
		in.store(),                                            // the version folder
		filepath.Join(dir, "s"), filepath.Join(dir, "s", "t"), // t and stage
	} {
		if !got[parent] {
			t.Errorf("%s was never synced after a folder was made in it", parent)
		}
	}
}

// fingerprint is the text form of der's fingerprint, as in the headers.
func fingerprint(der []byte) string { return crypto.FingerprintOf(der).String() }

// testFingerprint is a made-up fingerprint, one for each label.
func testFingerprint(label string) crypto.Fingerprint {
	return crypto.FingerprintOf([]byte(label))
}
