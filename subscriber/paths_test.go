package subscriber

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// wantUnsafe fails the test unless err is one line wrapping ErrUnsafePath
// that names path and says each of why.
func wantUnsafe(t testing.TB, what string, err error, path string, why ...string) {
	t.Helper()
	if !errors.Is(err, ErrUnsafePath) {
		t.Errorf("%s: %v, want an error wrapping ErrUnsafePath", what, err)
		return
	}
	msg := err.Error()
	if !strings.Contains(msg, `"`+path+`"`) || strings.Contains(msg, "\n") {
		t.Errorf("%s: %q does not name %q on one line", what, msg, path)
	}
	for _, w := range why {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: %q does not say %q", what, msg, w)
		}
	}
}

// mkdir makes dir with exactly mode (umask aside).
func mkdir(t testing.TB, dir string, mode fs.FileMode) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCheckFolders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// setup makes the folders under base and returns top and leaf.
		setup    func(t *testing.T, base string) (top, leaf string)
		rootOnly bool
		// bad is the component refused (relative to base), "" when none.
		bad string
		why string
	}{
		{name: "t.TempDir, nothing created yet", setup: func(t *testing.T, base string) (string, string) {
			return filepath.Join(base, "stage"), filepath.Join(base, "stage", "a.example")
		}},
		{name: "existing 0700 and 0755 folders", setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "srv"), 0o755)
			mkdir(t, filepath.Join(base, "srv", "stage"), 0o700)
			mkdir(t, filepath.Join(base, "srv", "stage", "a.example"), 0o700)
			return filepath.Join(base, "srv", "stage"), filepath.Join(base, "srv", "stage", "a.example")
		}},
		{name: "ancestor world-writable with the sticky bit (/tmp)", setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "tmp"), 0o777|fs.ModeSticky)
			mkdir(t, filepath.Join(base, "tmp", "stage"), 0o700)
			return filepath.Join(base, "tmp", "stage"), filepath.Join(base, "tmp", "stage")
		}},
		{name: "ancestor is a symbolic link", bad: "link", why: `is a symbolic link to "`, setup: func(t *testing.T, base string) (string, string) {
			real := mkdir(t, filepath.Join(base, "real"), 0o755)
			if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(base, "link", "stage"), filepath.Join(base, "link", "stage")
		}},
		{name: "ancestor world-writable without the sticky bit", bad: "open", why: "is writable by others", setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "open"), 0o777)
			return filepath.Join(base, "open", "stage"), filepath.Join(base, "open", "stage")
		}},
		{name: "ancestor group-writable", bad: "team", why: "is writable by its group", setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "team"), 0o775)
			return filepath.Join(base, "team", "stage"), filepath.Join(base, "team", "stage")
		}},
		{name: "the folder itself world-writable with the sticky bit", bad: "stage", why: "is writable by others", setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "stage"), 0o777|fs.ModeSticky)
			return filepath.Join(base, "stage"), filepath.Join(base, "stage", "a.example")
		}},
		{name: "the folder itself is a link", bad: "stage", why: "(configure the real path)", setup: func(t *testing.T, base string) (string, string) {
			real := mkdir(t, filepath.Join(base, "real"), 0o700)
			if err := os.Symlink(real, filepath.Join(base, "stage")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(base, "stage"), filepath.Join(base, "stage")
		}},
		{name: "a folder below it is a link", bad: "stage/a.example", why: `is a symbolic link to "`, setup: func(t *testing.T, base string) (string, string) {
			mkdir(t, filepath.Join(base, "stage"), 0o700)
			other := mkdir(t, filepath.Join(base, "other"), 0o700)
			if err := os.Symlink(other, filepath.Join(base, "stage", "a.example")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(base, "stage"), filepath.Join(base, "stage", "a.example")
		}},
		{name: "a file where a folder goes", bad: "stage", why: "is a regular file, not a folder", setup: func(t *testing.T, base string) (string, string) {
			treetest.WriteFile(t, filepath.Join(base, "stage"), nil, 0o600)
			return filepath.Join(base, "stage"), filepath.Join(base, "stage", "a.example")
		}},
		{name: "ancestor owned by another user", rootOnly: true, bad: "theirs", why: "is owned by uid 65534", setup: func(t *testing.T, base string) (string, string) {
			dir := mkdir(t, filepath.Join(base, "theirs"), 0o755)
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "stage"), filepath.Join(dir, "stage")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.rootOnly {
				acmetest.RequireRoot(t, "gives a folder to uid 65534")
			}
			base := t.TempDir()
			top, leaf := tt.setup(t, base)
			err := checkFolders("stage folder", top, top, leaf)
			if tt.bad == "" {
				if err != nil {
					t.Fatalf("checkFolders: %v", err)
				}
				return
			}
			bad := filepath.Join(base, tt.bad)
			wantUnsafe(t, "checkFolders", err, bad, tt.why, `refusing stage folder "`+top+`"`)
		})
	}
}

func TestOpenNoFollow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "state.json")
	treetest.WriteFile(t, file, []byte("real"), 0o600)
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	treetest.WriteFile(t, elsewhere, []byte("not certsync's"), 0o600)
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(elsewhere, link); err != nil {
		t.Fatal(err)
	}
	dirLink := filepath.Join(dir, "folder-link")
	if err := os.Symlink(t.TempDir(), dirLink); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	f, err := openNoFollow("stage folder", dir, file, os.O_RDONLY, 0, 0, true)
	if err != nil {
		t.Fatalf("a real file: %v", err)
	}
	f.Close()
	for _, tc := range []struct {
		path string
		flag int
		want fs.FileMode
		why  string
	}{
		{link, os.O_RDONLY, 0, "is a symbolic link"},
		{link, os.O_RDWR | os.O_CREATE, 0, "is a symbolic link"},
		{dirLink, os.O_RDONLY, fs.ModeDir, "is a symbolic link"},
		{file, os.O_RDONLY, fs.ModeDir, "is a regular file, not a folder"},
		{fifo, os.O_RDONLY, 0, "is a named pipe, not a regular file"}, // and the open does not hang
	} {
		f, err := openNoFollow("stage folder", dir, tc.path, tc.flag, 0o600, tc.want, true)
		if err == nil {
			f.Close()
		}
		wantUnsafe(t, tc.path, err, tc.path, tc.why)
	}
	if data, _ := os.ReadFile(elsewhere); string(data) != "not certsync's" {
		t.Errorf("the link's target was changed: %q", data)
	}

	// openInDir, through a folder handle.
	d, err := openNoFollow("stage folder", dir, dir, os.O_RDONLY, 0, fs.ModeDir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if f, err := openInDir("stage folder", dir, d, dir, "state.json", true); err != nil {
		t.Errorf("openInDir a real file: %v", err)
	} else {
		f.Close()
	}
	for name, why := range map[string]string{"link.json": "is a symbolic link", "pipe": "is a named pipe"} {
		f, err := openInDir("stage folder", dir, d, dir, name, true)
		if err == nil {
			f.Close()
		}
		wantUnsafe(t, "openInDir "+name, err, filepath.Join(dir, name), why)
	}
	if _, err := openInDir("stage folder", dir, d, dir, "missing", true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("openInDir a missing file: %v, want fs.ErrNotExist", err)
	}
}
