package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// WriteNewFile creates path with data and mode perm, never replacing a file:
// the data goes to a temporary file in the same folder, is synced, and is
// then linked to path, which fails if path exists; the folder is synced. A
// reader never sees a partial file, and an existing file is an error
// wrapping fs.ErrExist that names it.
func WriteNewFile(path string, data []byte, perm fs.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("writing %q: refusing to overwrite: %w", path, fs.ErrExist)
	}
	dir := filepath.Dir(path)
	tmp, err := writeTemp(path, data, perm, -1, -1)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("writing %q: refusing to overwrite: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("writing %q: %w", path, unwrapPath(err))
	}
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("writing %q: removing temporary file: %w", path, unwrapPath(err))
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("writing %q: syncing its folder: %w", path, err)
	}
	return nil
}

// ReplaceFile replaces the regular file path with data, keeping its mode,
// owner and group: the data goes to a temporary file in the same folder,
// is synced, and is renamed over path; the folder is synced. It fails,
// changing nothing, when path is a symbolic link or no longer holds old
// (someone changed it meanwhile).
func ReplaceFile(path string, data, old []byte) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("replacing %q: %w", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("replacing %q: not a regular file (%s): edit the file itself", path, fi.Mode().Type())
	}
	uid, gid := -1, -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(st.Uid), int(st.Gid)
	}
	tmp, err := writeTemp(path, data, fi.Mode().Perm(), uid, gid)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	now, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("replacing %q: %w", path, unwrapPath(err))
	}
	if !bytes.Equal(now, old) {
		return fmt.Errorf("replacing %q: it changed while certsync edited it: nothing written, run again", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replacing %q: %w", path, unwrapPath(err))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("replacing %q: syncing its folder: %w", path, err)
	}
	return nil
}

// writeTemp writes data to a new temporary file beside path, with mode perm
// and, when uid is not -1, that owner, synced, and returns its name.
func writeTemp(path string, data []byte, perm fs.FileMode, uid, gid int) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", fmt.Errorf("writing %q: %w", path, unwrapPath(err))
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		_ = f.Close()
		_ = os.Remove(tmp)
		return "", fmt.Errorf("writing %q: %w", path, unwrapPath(err))
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if uid != -1 {
		if err := f.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("writing %q: %w", path, unwrapPath(err))
	}
	return tmp, nil
}

// syncDir makes a change of a folder's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return unwrapPath(err)
	}
	defer d.Close()
	return unwrapPath(d.Sync())
}

// unwrapPath drops the *fs.PathError layer, whose message repeats the path
// the caller's error already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
