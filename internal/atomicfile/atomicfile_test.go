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

// fixture is a folder holding a file "file" (content "old", mode 0644) and
// a symbolic link "link" to a file "outside" elsewhere.
type fixture struct{ dir, outside string }

func newFixture(t *testing.T) fixture {
	t.Helper()
	f := fixture{dir: t.TempDir(), outside: filepath.Join(t.TempDir(), "outside")}
	for _, err := range []error{
		os.WriteFile(f.path("file"), []byte("old"), 0o644),
		os.WriteFile(f.outside, []byte("outside"), 0o644),
		os.Symlink(f.outside, f.path("link")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f fixture) path(name string) string { return filepath.Join(f.dir, name) }

// want checks that path is a regular file holding data with mode, that the
// file outside was not written through the link, and that no temporary
// file is left.
func (f fixture) want(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	got, err := os.ReadFile(path)
	fi, lerr := os.Lstat(path)
	if err != nil || lerr != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != mode || string(got) != data {
		t.Errorf("%s: %q %v (%v, %v), want a regular file %q %v", path, got, fi.Mode(), err, lerr, data, mode)
	}
	if got, _ := os.ReadFile(f.outside); string(got) != "outside" {
		t.Errorf("written through the link: %q", got)
	}
	es, _ := os.ReadDir(f.dir)
	for _, e := range es {
		if strings.HasPrefix(e.Name(), TempPrefix) {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestWriteNew(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	// The mode is exact: 0666 is more than the usual umask lets through.
	if err := WriteNew(f.path("new"), []byte("new"), Keep, Keep, 0o666); err != nil {
		t.Fatal(err)
	}
	f.want(t, f.path("new"), "new", 0o666)
	if err := WriteNew(f.path("file"), []byte("x"), Keep, Keep, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteNew over a file: %v, want fs.ErrExist", err)
	}
	f.want(t, f.path("file"), "old", 0o644)
	if err := WriteNew(f.path("link"), []byte("x"), Keep, Keep, 0o600); err == nil {
		t.Error("WriteNew wrote through a symbolic link")
	}
	if os.Geteuid() == 0 {
		if err := WriteNew(f.path("owned"), []byte("k"), 65534, 65534, 0o640); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(f.path("owned"))
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 || fi.Mode().Perm() != 0o640 {
			t.Errorf("owned file: uid %d gid %d mode %v, want 65534 65534 0640", st.Uid, st.Gid, fi.Mode())
		}
	}
}

func TestReplace(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, name := range []string{"file", "new", "link"} { // a link is replaced, not followed
		if err := Replace(f.path(name), []byte("new"), Keep, Keep, 0o600); err != nil {
			t.Fatal(err)
		}
		f.want(t, f.path(name), "new", 0o600)
	}
	err := Replace(f.path("missing/file"), []byte("x"), Keep, Keep, 0o600)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Replace in a missing folder: %v, want an error naming it", err)
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := Create(f.path("key"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.want(t, f.path("key"), "secret", 0o600)
	for _, name := range []string{"key", "file", "link"} {
		err := Create(f.path(name), []byte("other"), 0o600)
		var pe *fs.PathError
		if !errors.Is(err, fs.ErrExist) || !errors.As(err, &pe) || pe.Path != f.path(name) {
			t.Errorf("Create over %s: %v, want fs.ErrExist naming it", name, err)
		}
	}
	f.want(t, f.path("file"), "old", 0o644)
}

func TestSyncDir(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	if err := SyncDir(f.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.dir, f.path("dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(f.path("dirlink")); err == nil {
		t.Error("SyncDir followed a symbolic link")
	}
}

// TestReadAtMost: up to the limit, all of it; one byte more, none of it and
// an error naming the limit; a read error without the path (its caller's
// message names the file).
func TestReadAtMost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		data    string
		limit   int64
		wantErr string
	}{
		{"", 0, ""},
		{"abc", 3, ""},
		{"abcd", 3, "larger than 3 bytes"},
	} {
		got, err := ReadAtMost(strings.NewReader(tc.data), tc.limit)
		switch {
		case tc.wantErr == "" && (err != nil || string(got) != tc.data):
			t.Errorf("ReadAtMost(%q, %d) = %q, %v, want all of it", tc.data, tc.limit, got, err)
		case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr || got != nil):
			t.Errorf("ReadAtMost(%q, %d) = %q, %v, want nothing and %q", tc.data, tc.limit, got, err, tc.wantErr)
		}
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, err := ReadAtMost(dir, 10); !errors.Is(err, syscall.EISDIR) || strings.Contains(err.Error(), dir.Name()) {
		t.Errorf("ReadAtMost(a folder) = %v, want EISDIR without the path", err)
	}
}
