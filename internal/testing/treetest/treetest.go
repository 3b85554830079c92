// Package treetest takes snapshots of folders in tests, to show that an
// operation refused something changed nothing on disk, byte for byte.
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
