package migrate

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/certsync/certsync/internal/atomicfile"
)

// WriteNewFile creates path with data and mode perm, never replacing a file
// (atomicfile.Create): the data goes to a temporary file in the same
// folder, is synced, and is then linked to path, which fails if path
// exists; the folder is synced. A reader never sees a partial file, and an
// existing file is an error wrapping fs.ErrExist that names it.
func WriteNewFile(path string, data []byte, perm fs.FileMode) error {
	err := atomicfile.Create(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("writing %q: refusing to overwrite: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("writing %q: %w", path, atomicfile.Cause(err))
	}
	return nil
}

// MaxConfigSize bounds a configuration file ReplaceFile reads back: the
// 1 MiB certsync reads a configuration file up to.
const MaxConfigSize = 1 << 20

// ReplaceFile replaces the regular file path with data, keeping its mode,
// owner and group (atomicfile.Replace: a temporary file in the same folder,
// synced, renamed over path; the folder synced). It fails, changing
// nothing, when path is a symbolic link, is larger than MaxConfigSize
// bytes, or no longer holds old (someone changed it meanwhile).
func ReplaceFile(path string, data, old []byte) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("replacing %q: %w", path, atomicfile.Cause(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("replacing %q: not a regular file (%s): edit the file itself", path, fi.Mode().Type())
	}
	uid, gid := atomicfile.Keep, atomicfile.Keep
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(st.Uid), int(st.Gid)
	}
	now, err := readNow(path)
	if err != nil {
		return err
	}
	if !bytes.Equal(now, old) {
		return fmt.Errorf("replacing %q: it changed while certsync edited it: nothing written, run again", path)
	}
	if err := atomicfile.Replace(path, data, uid, gid, fi.Mode().Perm()); err != nil {
		return fmt.Errorf("replacing %q: %w", path, atomicfile.Cause(err))
	}
	return nil
}

// readNow reads what path holds now, at most MaxConfigSize bytes.
func readNow(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("replacing %q: %w", path, atomicfile.Cause(err))
	}
	defer f.Close()
	now, err := atomicfile.ReadAtMost(f, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("replacing %q: %w: nothing written", path, err)
	}
	return now, nil
}
