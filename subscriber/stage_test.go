package subscriber

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/treetest"

	"github.com/certsync/certsync/crypto"
)

// fakeBundle is a bundle whose four files all name its version, so a reader
// can tell a mixed set. The stage does not parse certificates.
func fakeBundle(name string, version uint64, tag string) (*crypto.Bundle, *Staged) {
	f := func(file string) []byte {
		return fmt.Appendf(nil, "%s %s version %d %s\n%s", name, file, version, tag, bytes.Repeat([]byte{'x'}, 2000))
	}
	b := &crypto.Bundle{Name: name, Version: version, Cert: f("cert"), Chain: f("chain"), FullChain: f("fullchain"), PrivKey: f("privkey")}
	m := &Staged{
		Name: name, Release: crypto.Release{Version: version, Serial: fmt.Sprintf("%x", version), Fingerprint: testFingerprint(fmt.Sprintf("%d%s", version, tag)), NotBefore: time.Unix(int64(version), 0).UTC(), NotAfter: time.Unix(int64(version)+3600, 0).UTC()},
		Signer: "certsync-ed25519:test", StagedAt: time.Unix(1700000000, 0).UTC(), Sequence: version,
	}
	return b, m
}

// syncWatch holds what syncDir synced below the folders tests watch.
var syncWatch struct {
	sync.Mutex
	synced map[string]map[string]bool // watched folder -> folders synced at or below it
}

func openTestStage(t *testing.T, dir string) *Stage {
	t.Helper()
	s, err := OpenStage(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("OpenStage: %v", err)
	}
	return s
}

func TestStagePutLoad(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "live")
	s := openTestStage(t, dir)
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("stage folder: %v, mode %v, want 0700", err, st.Mode().Perm())
	}
	if _, err := s.Read("example.com"); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("Read before any Put: %v, want ErrNotStaged", err)
	}
	b, m := fakeBundle("example.com", 100, "a")
	changed, err := s.Put(b, m)
	if err != nil || !changed {
		t.Fatalf("Put: %v, %v", changed, err)
	}
	checkStaged(t, s, b, m)

	// The same version and fingerprint again: nothing changes.
	if changed, err := s.Put(b, m); err != nil || changed {
		t.Fatalf("Put same: %v, %v; want false, nil", changed, err)
	}
	// A newer one replaces it.
	b2, m2 := fakeBundle("example.com", 200, "b")
	if changed, err := s.Put(b2, m2); err != nil || !changed {
		t.Fatalf("Put newer: %v, %v", changed, err)
	}
	checkStaged(t, s, b2, m2)

	// Going back is refused and changes nothing.
	for _, tc := range []struct {
		version uint64
		tag     string
		want    error
	}{
		{100, "a", ErrDowngrade},
		{199, "c", ErrDowngrade},
		{200, "other", ErrConflict},
	} {
		b3, m3 := fakeBundle("example.com", tc.version, tc.tag)
		changed, err := s.Put(b3, m3)
		if !errors.Is(err, tc.want) || changed {
			t.Errorf("Put version %d %s: %v, %v; want %v", tc.version, tc.tag, changed, err, tc.want)
		}
		checkStaged(t, s, b2, m2)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "example.com" && e.Name() != lockFile {
			t.Errorf("stage folder holds %q after the puts", e.Name())
		}
	}
}

// checkStaged checks that s holds b and m exactly, with the right modes.
func checkStaged(t *testing.T, s *Stage, b *crypto.Bundle, m *Staged) {
	t.Helper()
	dir := s.Path(b.Name)
	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("staged folder %s: %v %v, want a 0700 folder", dir, err, st.Mode())
	}
	for file, want := range map[string][]byte{crypto.FileCert: b.Cert, crypto.FileChain: b.Chain, crypto.FileFullChain: b.FullChain, crypto.FileKey: b.PrivKey} {
		path := filepath.Join(dir, file)
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, content differs from the bundle", path, err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", path, st.Mode().Perm())
		}
	}
	gm, gb, err := s.Load(b.Name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if *gm != *m {
		t.Errorf("Load record %+v, want %+v", gm, m)
	}
	if gb.Name != b.Name || gb.Version != b.Version || !bytes.Equal(gb.Cert, b.Cert) || !bytes.Equal(gb.PrivKey, b.PrivKey) ||
		!bytes.Equal(gb.Chain, b.Chain) || !bytes.Equal(gb.FullChain, b.FullChain) {
		t.Errorf("Load bundle differs from what was put")
	}
}

func TestStageRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStage(t, dir)
	// Names that would leave the stage folder, called directly, not
	// through the node (which checks them first): nothing is written.
	outside := treetest.Snapshot(t, filepath.Dir(dir))
	for _, name := range []string{"../etc", "..", "../../etc", ".", ".hidden", "a/b", "/etc", "a\\x00", ""} {
		b, m := fakeBundle(name, 1, "")
		if _, err := s.Put(b, m); err == nil {
			t.Errorf("Put %q: no error", name)
		}
		if _, err := s.Read(name); err == nil || errors.Is(err, ErrNotStaged) {
			t.Errorf("Read %q: %v, want a name error", name, err)
		}
		if _, _, err := s.Load(name); err == nil || errors.Is(err, ErrNotStaged) {
			t.Errorf("Load %q: %v, want a name error", name, err)
		}
	}
	treetest.Unchanged(t, "refused names", outside, filepath.Dir(dir))
	b, m := fakeBundle("example.com", 1, "")
	m.Version = 2
	if _, err := s.Put(b, m); err == nil {
		t.Error("Put with a record of another version: no error")
	}
	// Something that is not a folder where the certificate's folder goes.
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, "link.example")); err != nil {
		t.Fatal(err)
	}
	b, m = fakeBundle("link.example", 1, "")
	if _, err := s.Put(b, m); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Put over a symbolic link: %v, want ErrUnsafePath", err)
	}
	if _, err := s.Read("link.example"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Read through a symbolic link leading out of the stage: %v, want ErrUnsafePath", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 { // the lock and the link
		t.Errorf("stage folder holds %d entries after refusals, want 2", len(entries))
	}
}

func TestStageCorruptRecord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		what    string
		corrupt func(dir string) error
	}{
		{"garbage", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, crypto.FileRecord), []byte("{not json"), 0o600)
		}},
		{"empty", func(dir string) error { return os.WriteFile(filepath.Join(dir, crypto.FileRecord), nil, 0o600) }},
		{"other name", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, crypto.FileRecord), []byte(`{"name":"x.org","version":5,"fingerprint":"sha256:5"}`), 0o600)
		}},
		{"no version", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, crypto.FileRecord), []byte(`{"name":"example.com","fingerprint":"sha256:5"}`), 0o600)
		}},
		{"huge", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, crypto.FileRecord), bytes.Repeat([]byte(" "), maxMetaSize+1), 0o600)
		}},
		{"missing", func(dir string) error { return os.Remove(filepath.Join(dir, crypto.FileRecord)) }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			s := openTestStage(t, t.TempDir())
			b, m := fakeBundle("example.com", 5, "")
			if _, err := s.Put(b, m); err != nil {
				t.Fatal(err)
			}
			if err := tc.corrupt(s.Path("example.com")); err != nil {
				t.Fatal(err)
			}
			_, err := s.Read("example.com")
			if err == nil || errors.Is(err, ErrNotStaged) {
				t.Fatalf("Read: %v, want an error other than ErrNotStaged", err)
			}
			// A corrupt record is never taken for "nothing staged".
			b1, m1 := fakeBundle("example.com", 1, "")
			if changed, err := s.Put(b1, m1); err == nil || changed {
				t.Errorf("Put over a corrupt record: %v, %v; want an error", changed, err)
			}
		})
	}
}

func TestStageCleansLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTestStage(t, dir)
	b, m := fakeBundle("example.com", 5, "")
	if _, err := s.Put(b, m); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves: a folder half written, and an old version that
	// was exchanged but not yet removed.
	half := filepath.Join(dir, tmpPrefix+"example.com-123")
	old := filepath.Join(dir, tmpPrefix+"example.com-456")
	for _, d := range []string{half, old} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	treetest.WriteFile(t, filepath.Join(half, crypto.FileCert), []byte("half"), 0o600)
	for _, f := range []string{crypto.FileCert, crypto.FileChain, crypto.FileFullChain, crypto.FileKey, crypto.FileRecord} {
		treetest.WriteFile(t, filepath.Join(old, f), []byte("old"), 0o600)
	}

	s = openTestStage(t, dir)
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != lockFile || names[1] != "example.com" {
		t.Errorf("after OpenStage the folder holds %q, want the lock and example.com", names)
	}
	checkStaged(t, s, b, m)
}

// TestStageSwapAtomic replaces a certificate's set again and again while
// readers load it: every load must be one version whole.
func TestStageSwapAtomic(t *testing.T) {
	t.Parallel()
	s := openTestStage(t, t.TempDir())
	const versions = 200
	b, m := fakeBundle("example.com", 1, "")
	if _, err := s.Put(b, m); err != nil {
		t.Fatal(err)
	}
	var done atomic.Bool
	var loads atomic.Int64
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for !done.Load() {
				gm, gb, err := s.Load("example.com")
				if err != nil {
					t.Errorf("Load during swaps: %v", err)
					return
				}
				loads.Add(1)
				want, _ := fakeBundle("example.com", gm.Version, "")
				if gb.Version != gm.Version || !bytes.Equal(gb.Cert, want.Cert) || !bytes.Equal(gb.Chain, want.Chain) ||
					!bytes.Equal(gb.FullChain, want.FullChain) || !bytes.Equal(gb.PrivKey, want.PrivKey) {
					t.Errorf("Load saw a mixed set at version %d", gm.Version)
					return
				}
			}
		})
	}
	for v := uint64(2); v <= versions; v++ {
		b, m := fakeBundle("example.com", v, "")
		if _, err := s.Put(b, m); err != nil {
			t.Fatalf("Put %d: %v", v, err)
		}
	}
	done.Store(true)
	wg.Wait()
	if loads.Load() == 0 {
		t.Error("no load happened during the swaps")
	}
	b, m = fakeBundle("example.com", versions, "")
	checkStaged(t, s, b, m)
}

// TestStageSymlinkTricks swaps a link (or a folder others may write) into
// the stage's path: each is refused with an error naming it, nothing is
// written through it, and the stage works again once it is undone.
func TestStageSymlinkTricks(t *testing.T) {
	t.Parallel()
	const name = "example.com"
	tests := []struct {
		what string
		// trick plays on base/var/stage, with name staged at version 5,
		// and returns the path to be named, what the error says, the
		// folder that must not change and how to undo it.
		trick func(t *testing.T, base, stage string) (bad, why, target string, undo func())
		// open: refused at OpenStage (else at Put and Load).
		open bool
		// loadOnly: only loading the files is refused; Put, which reads
		// just the record, replaces the folder, link included, without
		// following the link.
		loadOnly bool
		// lock: the trick is on the lock, which OpenStage and Put take,
		// not Load.
		lock bool
	}{
		{what: "certificate folder replaced by a link", trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			// The link's target holds a copy of what is staged, so that
			// following it would look like business as usual.
			folder := filepath.Join(stage, name)
			target := filepath.Join(base, "attacker")
			if err := os.Rename(folder, filepath.Join(base, "held")); err != nil {
				t.Fatal(err)
			}
			treetest.CopyFiles(t, filepath.Join(base, "held"), target)
			return folder, `is a symbolic link to "` + target + `"`, target, treetest.SwapForLink(t, folder, target, filepath.Join(base, "held"))
		}},
		{what: "the record replaced by a link", trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			file := filepath.Join(stage, name, crypto.FileRecord)
			target := filepath.Join(base, "attacker")
			treetest.CopyFiles(t, filepath.Join(stage, name), target)
			return file, "is a symbolic link", target, treetest.SwapForLink(t, file, filepath.Join(target, crypto.FileRecord), filepath.Join(base, "held"))
		}},
		{what: "the key replaced by a link", loadOnly: true, trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			file := filepath.Join(stage, name, crypto.FileKey)
			target := filepath.Join(base, "attacker")
			treetest.CopyFiles(t, filepath.Join(stage, name), target)
			return file, "is a symbolic link", target, treetest.SwapForLink(t, file, filepath.Join(target, crypto.FileKey), filepath.Join(base, "held"))
		}},
		{what: "the lock replaced by a link", lock: true, trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			file := filepath.Join(stage, lockFile)
			target := filepath.Join(base, "attacker")
			mkdir(t, target, 0o755)
			treetest.WriteFile(t, filepath.Join(target, "passwd"), []byte("root:x:0:0"), 0o644)
			return file, "is a symbolic link", target, treetest.SwapForLink(t, file, filepath.Join(target, "passwd"), filepath.Join(base, "held"))
		}},
		{what: "stage_dir's parent a link to a world-writable folder", open: true, trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			parent := filepath.Dir(stage)
			target := mkdir(t, filepath.Join(base, "attacker"), 0o777|fs.ModeSticky)
			return parent, `is a symbolic link to "` + target + `" (configure the real path)`, target, treetest.SwapForLink(t, parent, target, filepath.Join(base, "held"))
		}},
		{what: "stage_dir's parent world-writable", open: true, trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			parent := filepath.Dir(stage)
			if err := os.Chmod(parent, 0o777); err != nil {
				t.Fatal(err)
			}
			return parent, "is writable by others", stage, func() { os.Chmod(parent, 0o755) }
		}},
		{what: "stage_dir group-writable", open: true, trick: func(t *testing.T, base, stage string) (string, string, string, func()) {
			if err := os.Chmod(stage, 0o770); err != nil {
				t.Fatal(err)
			}
			return stage, "is writable by its group", stage, func() { os.Chmod(stage, 0o700) }
		}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			stage := filepath.Join(base, "var", "stage")
			s := openTestStage(t, stage)
			b5, m5 := fakeBundle(name, 5, "")
			if _, err := s.Put(b5, m5); err != nil {
				t.Fatal(err)
			}
			bad, why, target, undo := tt.trick(t, base, stage)
			before := treetest.Snapshot(t, target)

			_, err := OpenStage(stage, slog.New(slog.DiscardHandler))
			if tt.open || tt.lock {
				wantUnsafe(t, "OpenStage", err, bad, why, `refusing stage folder "`+stage+`"`)
			} else if err != nil {
				t.Fatalf("OpenStage: %v", err)
			}
			if !tt.lock {
				_, _, err = s.Load(name)
				wantUnsafe(t, "Load", err, bad, why)
				t.Logf("refused: %v", err)
				if _, err = s.Read(name); !tt.loadOnly {
					wantUnsafe(t, "Read", err, bad, why)
				}
			}
			b6, m6 := fakeBundle(name, 6, "")
			changed, err := s.Put(b6, m6)
			if tt.loadOnly {
				if err != nil || !changed {
					t.Fatalf("Put over a folder holding a link: %v, %v", changed, err)
				}
				treetest.Unchanged(t, "the trick's target", before, target)
				checkStaged(t, s, b6, m6)
				return
			}
			if changed {
				t.Error("Put reports a change")
			}
			wantUnsafe(t, "Put", err, bad, why)
			treetest.Unchanged(t, "the trick's target", before, target)

			undo()
			s = openTestStage(t, stage)
			checkStaged(t, s, b5, m5)
			if changed, err := s.Put(b6, m6); err != nil || !changed {
				t.Fatalf("Put once undone: %v, %v", changed, err)
			}
			checkStaged(t, s, b6, m6)
		})
	}
}
