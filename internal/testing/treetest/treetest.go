// Package treetest takes snapshots of folders in tests, to show that an
// operation refused something changed nothing on disk, byte for byte, and
// plays the tricks such operations must refuse: a path swapped for a
// symbolic link (SwapForLink) to a look-alike copy (CopyFiles). WriteFile
// and MkdirAll build the trees tests start from, failing the test on an
// error.
package treetest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// Snapshot describes every folder, file and symbolic link under the folders
// roots (which need not exist): path -> mode and content, or link target.
// Equal snapshots mean nothing under roots changed.
func Snapshot(t testing.TB, roots ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && path == root {
				return nil
			}
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(path)
				if err != nil {
					return err
				}
				out[path] = "link -> " + target
			case fi.IsDir():
				out[path] = fi.Mode().String()
			default:
				data, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				out[path] = fi.Mode().String() + " " + string(data)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("snapshot of %s: %v", root, err)
		}
	}
	return out
}

// Unchanged fails the test unless the folders roots hold exactly what
// before (a Snapshot of them) says. It names the paths that differ, never
// their content, which may be a private key.
func Unchanged(t testing.TB, what string, before map[string]string, roots ...string) {
	t.Helper()
	after := Snapshot(t, roots...)
	for path, was := range before {
		now, ok := after[path]
		switch {
		case !ok:
			t.Errorf("%s: %s was removed", what, path)
		case now != was:
			t.Errorf("%s: %s changed", what, path)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("%s: %s appeared", what, path)
		}
	}
}

// SwapForLink moves path to aside and puts a symbolic link to target in its
// place. When aside exists already, path is taken to be held there (an
// earlier swap moved it) and only the link is made. The function it returns
// removes the link and moves aside back to path.
func SwapForLink(t testing.TB, path, target, aside string) (undo func()) {
	t.Helper()
	if _, err := os.Lstat(aside); err != nil {
		if err := os.Rename(path, aside); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatalf("removing the link %s: %v", path, err)
		}
		if err := os.Rename(aside, path); err != nil {
			t.Fatal(err)
		}
	}
}

// CopyFiles copies the regular files of the folder src (following links)
// into a new folder dst (mode 0700), keeping their modes; it leaves out
// whatever else src holds.
func CopyFiles(t testing.TB, src, dst string) {
	t.Helper()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		from := filepath.Join(src, e.Name())
		fi, err := os.Stat(from)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		WriteFile(t, filepath.Join(dst, e.Name()), data, fi.Mode().Perm())
	}
}

// WriteFile writes data to the file path as os.WriteFile does (perm applies
// to a new file), or fails the test.
func WriteFile(t testing.TB, path string, data []byte, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

// MkdirAll makes the folder path and its parents as os.MkdirAll does, or
// fails the test.
func MkdirAll(t testing.TB, path string, perm fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(path, perm); err != nil {
		t.Fatal(err)
	}
}
