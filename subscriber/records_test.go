package subscriber

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// The records nodes already hold, byte for byte as certsync wrote them
// before the bundle's identity became crypto.Release: they must read the
// same, and what certsync writes now must be the same bytes. An installed
// version's certsync.json is the staged one and installed_at.
const (
	oldStagedJSON = `{
  "name": "example.com",
  "version": 1735689600,
  "serial": "3f2a",
  "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
  "not_before": "2025-01-01T00:00:00Z",
  "not_after": "2025-04-01T00:00:00Z",
  "signer": "certsync-ed25519:AAAA",
  "staged_at": "2025-01-01T00:05:00Z",
  "stream_sequence": 42
}`
	oldStateJSON = `{
  "pending": {
    "version": 1735689600,
    "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "previous": ".certsync/example.com/1735000000-aaaaaaaaaaaa"
  },
  "failed": {
    "version": 1735689600,
    "fingerprint": "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "error": "installing \"example.com\" version 1735689600: check failed",
    "at": "2025-01-01T03:00:00Z",
    "attempts": 2
  }
}`
)

func TestOldRecordsRead(t *testing.T) {
	t.Parallel()
	fp, err := crypto.ParseFingerprint("sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0")
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rel := crypto.Release{Version: 1735689600, Serial: "3f2a", Fingerprint: fp, NotBefore: day, NotAfter: day.AddDate(0, 3, 0)}
	staged := Staged{Name: "example.com", Release: rel, Signer: "certsync-ed25519:AAAA",
		StagedAt: day.Add(5 * time.Minute), Sequence: 42}

	var gotStaged Staged
	if err := json.Unmarshal([]byte(oldStagedJSON), &gotStaged); err != nil || !reflect.DeepEqual(gotStaged, staged) {
		t.Errorf("old certsync.json read as %+v, %v; want %+v", gotStaged, err, staged)
	}
	if err := gotStaged.check("example.com"); err != nil {
		t.Errorf("old certsync.json refused: %v", err)
	}
	if raw, _ := json.MarshalIndent(&staged, "", "  "); string(raw) != oldStagedJSON {
		t.Errorf("certsync.json written as\n%s\nwant\n%s", raw, oldStagedJSON)
	}

	oldInstalledJSON := strings.TrimSuffix(oldStagedJSON, "\n}") + ",\n  \"installed_at\": \"2025-01-01T03:00:00Z\"\n}"
	installed := Installed{Staged: staged, InstalledAt: day.Add(3 * time.Hour)}
	var gotInstalled Installed
	if err := json.Unmarshal([]byte(oldInstalledJSON), &gotInstalled); err != nil || !reflect.DeepEqual(gotInstalled, installed) {
		t.Errorf("old installed certsync.json read as %+v, %v; want %+v", gotInstalled, err, installed)
	}
	if raw, _ := json.MarshalIndent(&installed, "", "  "); string(raw) != oldInstalledJSON {
		t.Errorf("installed certsync.json written as\n%s\nwant\n%s", raw, oldInstalledJSON)
	}

	id := crypto.Release{Version: rel.Version, Fingerprint: fp}
	state := installState{
		Pending: &pendingInstall{Release: id, Previous: ".certsync/example.com/1735000000-aaaaaaaaaaaa"},
		Failed: &failedInstall{Release: id, Error: `installing "example.com" version 1735689600: check failed`,
			At: day.Add(3 * time.Hour), Attempts: 2},
	}
	var gotState installState
	if err := json.Unmarshal([]byte(oldStateJSON), &gotState); err != nil || !reflect.DeepEqual(gotState, state) {
		t.Errorf("old state.json read as %+v %+v, %v; want %+v %+v", gotState.Pending, gotState.Failed, err, state.Pending, state.Failed)
	}
	if raw, _ := json.MarshalIndent(&state, "", "  "); string(raw) != oldStateJSON {
		t.Errorf("state.json written as\n%s\nwant\n%s", raw, oldStateJSON)
	}
	if !gotState.Failed.is(&staged) {
		t.Error("the failed install of an old state.json is not the staged version")
	}
}

// TestInstallRecordIsRoots: the user named in owner gets the certificate and
// key files, never the version folder or its certsync.json, so it cannot
// change the record that the downgrade check, the status, the expiry
// deadline and the metrics trust. A version folder as an older certsync
// left it (the owner's, with a record the owner could rewrite, here
// forged) is not believed: it holds no known version, its forged version
// blocks no install, and installing that version again rebuilds it root's.
func TestInstallRecordIsRoots(t *testing.T) {
	t.Parallel()
	acmetest.RequireRoot(t, "gives the installed files to another owner")
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	rl := newCounter(t, dir)
	in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com"),
		Owner: "65534", Group: "65534", KeyMode: 0o640, Reload: mustCommand(t, rl.script)})
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	c2 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	_, m1 := stagedOf(t, "example.com", c1)
	_, m2 := stagedOf(t, "example.com", c2)
	owner := func(path string) uint32 {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Uid
	}
	// legacy gives folder and its record to the owner, as an older
	// certsync did, with a record the owner forged: a far higher version,
	// valid for a century.
	legacy := func(m *Staged) {
		t.Helper()
		folder := filepath.Join(in.store(), folderName(m))
		forged := Installed{Staged: *m, InstalledAt: time.Now().UTC()}
		forged.Version, forged.Serial, forged.NotAfter = m.Version+1<<32, "f0f0", time.Now().AddDate(100, 0, 0).UTC()
		raw, _ := json.Marshal(&forged)
		meta := filepath.Join(folder, crypto.FileRecord)
		treetest.WriteFile(t, meta, raw, 0o644)
		for _, p := range []string{folder, meta} {
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	wantRecord := func(what string, m *Staged) {
		t.Helper()
		inst, _, err := in.installed()
		if err != nil || inst == nil || inst.Version != m.Version || inst.Serial != m.Serial || !inst.NotAfter.Equal(m.NotAfter) {
			t.Fatalf("%s: installed record %+v, %v; want version %d serial %s", what, inst, err, m.Version, m.Serial)
		}
	}

	if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c1: %+v", r)
	}
	folder1 := filepath.Join(in.store(), folderName(m1))
	if owner(folder1) != 0 || owner(filepath.Join(folder1, crypto.FileRecord)) != 0 || owner(filepath.Join(folder1, crypto.FileKey)) != 65534 {
		t.Errorf("version folder owned by %d, record by %d, key by %d; want 0, 0, 65534",
			owner(folder1), owner(filepath.Join(folder1, crypto.FileRecord)), owner(filepath.Join(folder1, crypto.FileKey)))
	}
	wantRecord("after c1", m1)

	// The owner's folder with a forged record: nothing known is in
	// service, and the forged version refuses nothing.
	legacy(m1)
	if inst, _, err := in.installed(); err != nil || inst != nil {
		t.Fatalf("a record the owner holds was read: %+v, %v", inst, err)
	}
	if r := install(t, in, c2, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c2 after a forged record: %+v", r)
	}
	wantRecord("after c2", m2)

	// The version in service in the owner's hands: installed again,
	// rebuilt root's in one exchange, reloaded; served throughout.
	legacy(m2)
	if r := install(t, in, c2, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c2 over its own forged folder: %+v", r)
	}
	wantServed(t, in.c.InstallDir, c2)
	wantRecord("after c2's rebuild", m2)
	folder2 := filepath.Join(in.store(), folderName(m2))
	if owner(folder2) != 0 || owner(filepath.Join(folder2, crypto.FileRecord)) != 0 {
		t.Errorf("rebuilt folder owned by %d, record by %d; want root's", owner(folder2), owner(filepath.Join(folder2, crypto.FileRecord)))
	}
	if got := len(rl.reloads()); got != 3 {
		t.Errorf("%d reloads, want 3 (c1, c2, c2 rebuilt)", got)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(in.store(), tmpPrefix+"*")); len(leftovers) > 0 {
		t.Errorf("leftovers %v", leftovers)
	}
	// And now it is settled.
	if r := install(t, in, c2, false); r.Outcome != InstallUnchanged {
		t.Errorf("install c2 once more: %+v", r)
	}
}

// TestInstallStatePreviousElsewhere: state.json is the node's, but a
// pending install's version to roll back to is taken only where certsync
// would put it, never a path it names.
func TestInstallStatePreviousElsewhere(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	c2 := ca.Issue(t, testcert.Options{})
	dir := t.TempDir()
	in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com")})
	if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c1: %+v", r)
	}
	for _, previous := range []string{"/etc", "../../etc", storeDir + "/other.example/1-0123456789ab", "example.com.certsync-backup-/x"} {
		raw := fmt.Sprintf(`{"pending":{"version":1,"fingerprint":"sha256:00","previous":%q}}`, previous)
		treetest.WriteFile(t, filepath.Join(in.store(), fileState), []byte(raw), 0o600)
		if r := install(t, in, c2, true); r.Outcome != InstallFailed || r.Err == nil || !strings.Contains(r.Err.Error(), "corrupt") {
			t.Errorf("previous %q: %+v, want failed: corrupt", previous, r)
		}
		wantServed(t, in.c.InstallDir, c1)
	}
	os.Remove(filepath.Join(in.store(), fileState))
	if r := install(t, in, c2, false); r.Outcome != InstallInstalled {
		t.Fatalf("install c2: %+v", r)
	}
}
