// Package atomicfile is certsync's one way to write a file that a reader
// depends on (a key, a configuration, a node's records and certificates),
// so that a reader sees the old file or the whole new one, never a part,
// and a crash loses neither:
//
//   - [WriteNew] creates a file that must not exist, not even as a symbolic
//     link (O_CREAT|O_EXCL|O_NOFOLLOW), 0600 while it is written, then gives
//     it its owner and, last, its exact mode (whatever the umask), and
//     syncs it. It is the step the others build on, and what writes the
//     files of a folder built under a temporary name and renamed into place
//     whole (a node's staged and installed versions).
//   - [Replace] writes a temporary file beside the target with WriteNew,
//     renames it over the target, and syncs the folder.
//   - [Create] does the same but never replaces anything: the temporary
//     file is linked to the target, which fails if the target exists. Key
//     files are created this way.
//   - [SyncDir] makes a folder's entries durable; it never follows a
//     symbolic link in the folder's place.
//
// Reading such a file back is bounded: [ReadAtMost] reads an opened file to
// its end and refuses one larger than the limit its reader allows, the one
// rule every file certsync parses is read under.
//
// Temporary files are named [TempPrefix] followed by the target's name and
// a random suffix, in the target's folder, so whoever cleans up after a
// crash knows them. Errors are *fs.PathError naming the file ([Cause]
// drops that layer for a message that names it already); a failed write
// removes its temporary file. The package checks no path: callers
// that must not be redirected (the node side) check the folders first.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// TempPrefix starts the name of every temporary file this package makes.
const TempPrefix = ".tmp-"

// Keep, as a uid or gid, keeps the process's own.
const Keep = -1

// WriteNew creates path with data, owned by uid and gid (Keep keeps the
// process's) and with exactly mode. path must not exist, not even as a
// symbolic link, and is never followed. The file is 0600 until its data is
// written and synced, and its mode is set last, so a secret is never
// readable by others, even for a moment. Its folder is not synced (see
// SyncDir). On failure the partial file is removed.
func WriteNew(path string, data []byte, uid, gid int, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	fail := func(op string, err error) error {
		_ = f.Close()
		_ = os.Remove(path)
		return &fs.PathError{Op: op, Path: path, Err: Cause(err)}
	}
	if _, err := f.Write(data); err != nil {
		return fail("write", err)
	}
	if uid != Keep || gid != Keep {
		if err := f.Chown(uid, gid); err != nil {
			return fail("chown", err)
		}
	}
	// The umask may have cleared bits of 0600 but never adds any; Chmod
	// makes the mode exactly mode whatever the umask.
	if err := f.Chmod(mode); err != nil {
		return fail("chmod", err)
	}
	if err := f.Sync(); err != nil {
		return fail("sync", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return &fs.PathError{Op: "close", Path: path, Err: Cause(err)}
	}
	return nil
}

// Replace writes data to path, with mode and, unless Keep, owner uid and
// gid: to a temporary file in path's folder first (WriteNew), which is then
// renamed over path (a symbolic link at path is replaced, not followed),
// and the folder is synced.
func Replace(path string, data []byte, uid, gid int, mode fs.FileMode) error {
	tmp, err := writeTemp(path, data, uid, gid, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return &fs.PathError{Op: "rename", Path: path, Err: Cause(err)}
	}
	return SyncDir(filepath.Dir(path))
}

// Create writes data to path with mode (owned by the process), never
// replacing anything: to a temporary file in path's folder first
// (WriteNew), which is then linked to path, and the folder is synced. A
// reader never sees a partial file. When path exists, even as a symbolic
// link, the error wraps fs.ErrExist and nothing changes.
func Create(path string, data []byte, mode fs.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
	}
	tmp, err := writeTemp(path, data, Keep, Keep, mode)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
		}
		return &fs.PathError{Op: "create", Path: path, Err: Cause(err)}
	}
	if err := os.Remove(tmp); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of the folder dir durable: a file created,
// renamed or removed in it survives a crash once it returns. A symbolic
// link in dir's place is not followed.
func SyncDir(dir string) error {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return &fs.PathError{Op: "sync", Path: dir, Err: Cause(err)}
	}
	return nil
}

// writeTemp writes data with WriteNew to a new temporary file beside path
// and returns its name.
func writeTemp(path string, data []byte, uid, gid int, mode fs.FileMode) (string, error) {
	dir, base := filepath.Split(path)
	// The name keeps within NAME_MAX whatever the target's.
	base = base[:min(len(base), 200)]
	for range 100 {
		var r [6]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", fmt.Errorf("naming a temporary file for %q: %w", path, err)
		}
		tmp := filepath.Join(dir, TempPrefix+base+"-"+hex.EncodeToString(r[:]))
		err := WriteNew(tmp, data, uid, gid, mode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return tmp, err
	}
	return "", &fs.PathError{Op: "create", Path: filepath.Join(dir, TempPrefix+base+"-*"), Err: fs.ErrExist}
}

// Cause is the error beneath a *fs.PathError or *os.LinkError, for a
// caller whose message names the path already (`writing %q: %w`).
func Cause(err error) error {
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

// ReadAtMost reads r to its end and returns what it holds, or, when that is
// more than limit bytes, none of it and an error saying so ("larger than
// LIMIT bytes"). A read error comes without its *fs.PathError layer
// (Cause): the caller's message names the file.
func ReadAtMost(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, Cause(err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}
