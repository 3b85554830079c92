package subscriber

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestInstallRepairsStoreModes: .certsync and .certsync/<name> made 0700 (by
// an older certsync under UMask=0077) get 0711 at the next install, or a
// group named in group could not reach its key.
func TestInstallRepairsStoreModes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testcert.NewCA(t)
	in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "live", "example.com"), KeyMode: 0o640})
	treetest.MkdirAll(t, in.store(), 0o700)
	for _, d := range []string{filepath.Dir(in.store()), in.store()} {
		os.Chmod(d, 0o700)
	}
	if r := install(t, in, ca.Issue(t, testcert.Options{}), false); r.Outcome != InstallInstalled {
		t.Fatalf("install: %+v", r)
	}
	for _, d := range []string{filepath.Dir(in.store()), in.store()} {
		if fi, err := os.Stat(d); err != nil || fi.Mode() != fs.ModeDir|0o711 {
			t.Errorf("%s: %v %v, want %v", d, fi.Mode(), err, fs.ModeDir|0o711)
		}
	}
}

// TestInstallSymlinkTricks swaps a link, a foreign owner or a folder
// others may write into the install paths: each install is refused with an
// error naming it, nothing is written through it, what is served stays, and
// installs work again once it is undone.
func TestInstallSymlinkTricks(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c1 := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	c2 := ca.Issue(t, testcert.Options{})
	// attacker is a folder outside the node's, holding a copy of what
	// install_dir serves, so that following a link would look normal.
	attacker := func(t *testing.T, in *installer) string {
		dir := filepath.Join(t.TempDir(), "attacker")
		treetest.CopyFiles(t, in.c.InstallDir, dir)
		return dir
	}
	tests := []struct {
		what     string
		rootOnly bool
		// lock: the trick is on the lock, which installing takes, not
		// reading what is installed.
		lock bool
		// trick plays on in, with c1 installed, and returns the path to
		// be named, what the error says, the folder that must not change
		// and how to undo it.
		trick func(t *testing.T, in *installer) (bad, why, target string, undo func())
	}{
		{what: "install_dir's parent owned by another user", rootOnly: true, trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			if err := os.Chown(in.parent(), 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return in.parent(), "is owned by uid 65534", in.parent(), func() { os.Chown(in.parent(), 0, 0) }
		}},
		{what: "install_dir's parent is a link", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			target := filepath.Join(t.TempDir(), "attacker")
			mkdir(t, target, 0o755)
			return in.parent(), `is a symbolic link to "` + target + `" (configure the real path)`, target,
				treetest.SwapForLink(t, in.parent(), target, in.parent()+".held")
		}},
		{what: "install_dir's parent writable by others, sticky", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			if err := os.Chmod(in.parent(), 0o777|fs.ModeSticky); err != nil {
				t.Fatal(err)
			}
			return in.parent(), "is writable by others", in.parent(), func() { os.Chmod(in.parent(), 0o755) }
		}},
		{what: ".certsync is a link", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			path := filepath.Join(in.parent(), storeDir)
			target := filepath.Join(t.TempDir(), "attacker")
			copyTreeDeep(t, path, target)
			return path, `is a symbolic link to "` + target + `"`, target, treetest.SwapForLink(t, path, target, path+".held")
		}},
		{what: "install_dir a link to a folder elsewhere", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			target := attacker(t, in)
			return in.c.InstallDir, `is a symbolic link to "` + target + `", not one certsync made`, target,
				relink(t, in.c.InstallDir, target)
		}},
		{what: "install_dir a link to another certificate's version", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			cur, _, _ := in.target()
			other := filepath.Join(mkdir(t, filepath.Join(in.parent(), storeDir, "other.example"), 0o755), strings.TrimPrefix(cur, in.linkPrefix()))
			copyTreeDeep(t, filepath.Join(in.parent(), cur), other)
			t.Cleanup(func() { os.RemoveAll(filepath.Dir(other)) })
			link := storeDir + "/other.example/" + filepath.Base(other)
			return in.c.InstallDir, `is a symbolic link to "` + link + `", not one certsync made`, filepath.Dir(other),
				relink(t, in.c.InstallDir, link)
		}},
		{what: "install_dir a link with .. in it", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			target := attacker(t, in)
			link := in.linkPrefix() + "../../../" + strings.TrimPrefix(target, "/")
			return in.c.InstallDir, "not one certsync made", target, relink(t, in.c.InstallDir, link)
		}},
		{what: "the version in service replaced by a link", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			cur, _, _ := in.target()
			path := filepath.Join(in.parent(), cur)
			target := filepath.Join(t.TempDir(), "attacker")
			copyTreeDeep(t, path, target)
			return path, `is a symbolic link to "` + target + `"`, target, treetest.SwapForLink(t, path, target, filepath.Join(t.TempDir(), "held"))
		}},
		{what: "state.json replaced by a link", trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			path := filepath.Join(in.store(), fileState)
			target := filepath.Join(t.TempDir(), "attacker")
			mkdir(t, target, 0o755)
			// What it holds would have certsync roll back to /etc.
			treetest.WriteFile(t, filepath.Join(target, fileState), []byte(`{"pending":{"version":1,"fingerprint":"sha256:00","previous":"/etc"}}`), 0o600)
			return path, "is a symbolic link", target, treetest.SwapForLink(t, path, filepath.Join(target, fileState), filepath.Join(t.TempDir(), "held"))
		}},
		{what: ".lock replaced by a link", lock: true, trick: func(t *testing.T, in *installer) (string, string, string, func()) {
			path := filepath.Join(in.store(), lockFile)
			target := filepath.Join(t.TempDir(), "attacker")
			mkdir(t, target, 0o755)
			treetest.WriteFile(t, filepath.Join(target, "passwd"), []byte("root:x:0:0"), 0o644)
			return path, "is a symbolic link", target, treetest.SwapForLink(t, path, filepath.Join(target, "passwd"), filepath.Join(t.TempDir(), "held"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			t.Parallel()
			if tt.rootOnly {
				acmetest.RequireRoot(t, "gives a folder to uid 65534")
			}
			dir := t.TempDir()
			rl := newCounter(t, dir)
			in := newTestInstaller(t, Certificate{Name: "example.com", InstallDir: filepath.Join(dir, "etc", "live", "example.com"), Reload: mustCommand(t, rl.script)})
			if r := install(t, in, c1, false); r.Outcome != InstallInstalled {
				t.Fatalf("install c1: %+v", r)
			}
			reloads := len(rl.reloads())
			bad, why, target, undo := tt.trick(t, in)
			before := treetest.Snapshot(t, target)

			r := install(t, in, c2, true)
			if r.Outcome != InstallFailed || r.RolledBack {
				t.Errorf("install: %+v, want failed, nothing rolled back", r)
			}
			wantUnsafe(t, "install", r.Err, bad, why, `refusing install_dir "`+in.c.InstallDir+`"`)
			if r.Err != nil && !strings.HasPrefix(r.Err.Error(), "installing ") {
				t.Errorf("install error %q does not start with %q", r.Err, "installing ")
			}
			t.Logf("refused: %v", r.Err)
			if _, _, err := in.installed(); !tt.lock {
				wantUnsafe(t, "installed", err, bad, why)
			}
			treetest.Unchanged(t, "the trick's target", before, target)
			if n := len(rl.reloads()); n != reloads {
				t.Errorf("%d reloads after the refusal, want none", n-reloads)
			}

			undo()
			wantServed(t, in.c.InstallDir, c1)
			if r := install(t, in, c2, false); r.Outcome != InstallInstalled {
				t.Fatalf("install once undone: %+v", r)
			}
			wantServed(t, in.c.InstallDir, c2)
		})
	}
}

// TestInstallNamesNeverEscape calls the installer directly (the node checks
// names first) with names that would leave the store folder: each is
// refused and nothing is created.
func TestInstallNamesNeverEscape(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c1 := ca.Issue(t, testcert.Options{})
	dir := t.TempDir()
	live := mkdir(t, filepath.Join(dir, "etc"), 0o755)
	before := treetest.Snapshot(t, dir)
	for _, name := range []string{"..", "../../etc", "../etc", ".", ".certsync", "a/b", "/etc", ""} {
		// No validate: it is the installer's own check under test.
		in := &installer{c: Certificate{Name: name, InstallDir: filepath.Join(live, "example.com"), CertMode: DefaultCertMode, KeyMode: DefaultKeyMode},
			log: slog.New(slog.DiscardHandler), now: time.Now, node: nodeName}
		b, meta := stagedOf(t, "example.com", c1)
		b.Name, meta.Name = name, name
		if r := in.install(context.Background(), b, meta, installOpts{force: true}); r.Outcome != InstallFailed || r.Err == nil {
			t.Errorf("install %q: %+v, want failed", name, r)
		}
		if _, _, err := in.installed(); err == nil {
			t.Errorf("installed %q: no error", name)
		}
	}
	treetest.Unchanged(t, "the install folders", before, dir)
}

// relink points the link path at target; the function it returns points it
// back where it pointed.
func relink(t *testing.T, path, target string) func() {
	t.Helper()
	old, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	set := func(to string) {
		tmp := path + ".relink"
		if err := os.Symlink(to, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	set(target)
	return func() { set(old) }
}

// copyTreeDeep copies folder src, its folders and regular files, into a
// new folder dst, keeping modes.
func copyTreeDeep(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(to, fi.Mode().Perm())
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(to, data, fi.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
