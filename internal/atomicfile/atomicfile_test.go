package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// wantFile checks path's content and mode.
func wantFile(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode || string(got) != data {
		t.Errorf("%s: %v %q, want a regular file %v %q", path, fi.Mode(), got, mode, data)
	}
}

// symlinkTo makes path a symbolic link to a file outside dir and returns
// that file.
func symlinkTo(t *testing.T, path string) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, []byte("target"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return target
}

func TestWriteNew(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	// The mode is exact: 0666 is more than the usual umask lets through.
	if err := WriteNew(path, []byte("one"), Keep, Keep, 0o666); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, "one", 0o666)
	if err := WriteNew(path, []byte("two"), Keep, Keep, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteNew over a file: %v, want fs.ErrExist", err)
	}
	wantFile(t, path, "one", 0o666)

	link := filepath.Join(dir, "link")
	target := symlinkTo(t, link)
	if err := WriteNew(link, []byte("two"), Keep, Keep, 0o600); err == nil {
		t.Error("WriteNew wrote through a symbolic link")
	}
	wantFile(t, target, "target", 0o644)

	if os.Geteuid() == 0 {
		owned := filepath.Join(dir, "owned")
		if err := WriteNew(owned, []byte("k"), 65534, 65534, 0o640); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(owned)
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o640 {
			t.Errorf("owned file: uid %d gid %d mode %v, want 65534 65534 0640", st.Uid, st.Gid, fi.Mode())
		}
	}
}

func TestReplace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := Replace(path, []byte("one"), Keep, Keep, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Replace(path, []byte("two"), Keep, Keep, 0o644); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, "two", 0o644)
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("folder holds %q, want state.json alone", names)
	}

	// A symbolic link in the file's place is replaced, not followed.
	link := filepath.Join(dir, "link")
	target := symlinkTo(t, link)
	if err := Replace(link, []byte("new"), Keep, Keep, 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, link, "new", 0o600)
	wantFile(t, target, "target", 0o644)

	// A folder that is not there: an error naming the file, nothing left.
	if err := Replace(filepath.Join(dir, "missing", "f"), []byte("x"), Keep, Keep, 0o600); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Replace in a missing folder: %v", err)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := Create(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantFile(t, path, "secret", 0o600)
	err := Create(path, []byte("other"), 0o600)
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrExist) || !errors.As(err, &pe) || pe.Path != path {
		t.Errorf("Create over a file: %v, want fs.ErrExist naming it", err)
	}
	wantFile(t, path, "secret", 0o600)

	link := filepath.Join(dir, "link")
	target := symlinkTo(t, link)
	if err := Create(link, []byte("other"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create over a symbolic link: %v, want fs.ErrExist", err)
	}
	wantFile(t, target, "target", 0o644)
	for _, name := range entries(t, dir) {
		if strings.HasPrefix(name, TempPrefix) {
			t.Errorf("temporary file %s left behind", name)
		}
	}
}

func TestSyncDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(link); err == nil {
		t.Error("SyncDir followed a symbolic link")
	}
}
