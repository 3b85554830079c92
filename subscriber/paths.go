package subscriber

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The rule certsync's node side follows before it writes a file (and before
// it reads one it will act on), so that nobody but root or the node's own
// user can redirect where a private key goes:
//
//   - Every component of the path to the folders it writes in (the stage
//     folder, install_dir's parent, and the .certsync/<name> folders beside
//     it), checked from / down with Lstat, must be a real folder, not a
//     symbolic link: certsync writes to the real path its configuration
//     names, never to wherever a link leads at that instant. There is no
//     exception, not even for a link owned by root: configure the real path
//     (/run/certsync, not /var/run/certsync; /srv/certsync, not a /certsync
//     link to it). A service may still read install_dir through any link.
//   - Each of those components must be owned by root or by the user certsync
//     runs as, and not writable by group or others, unless the sticky bit
//     is set (/tmp): then others may add entries but not rename or remove
//     root's or certsync's, and the next component is checked in turn.
//   - The folders certsync itself writes in (the stage folder and each
//     certificate's folder in it; install_dir's parent, its .certsync
//     folder and each certificate's folder in that) must be owned by root
//     or certsync's user and not writable by group or others, sticky bit or
//     not.
//
// Once these hold, only root and certsync's user can change the path, so
// the check cannot be raced by anyone else. Inside those folders, files
// and folders are opened with O_NOFOLLOW, new ones created with O_EXCL, and
// an entry is checked with Lstat before it is exchanged or renamed, so a
// symbolic link swapped in place of a certificate's folder, a version
// folder, state.json, .lock or a temporary file is refused, never
// followed. Names come only from wire.CheckCertName-checked certificate
// names and fixed file names, joined with filepath.Join.

// ErrUnsafePath means a folder or file certsync was to write (or read and
// act on) could be redirected: a symbolic link in its path, a component
// owned by another user, or one that others may write. Errors wrapping it
// name the path and why, on one line; nothing was written.
var ErrUnsafePath = errors.New("unsafe path")

// unsafePathError is an ErrUnsafePath: certsync refused to use subject
// (what the configuration names, e.g. the stage folder) because of path,
// one of its components or an entry inside it, for reason.
type unsafePathError struct {
	what, subject, path, reason string
}

func (e *unsafePathError) Error() string {
	return fmt.Sprintf("refusing %s %q: %q %s", e.what, e.subject, e.path, e.reason)
}

func (e *unsafePathError) Is(target error) bool { return target == ErrUnsafePath }

// checkFolders checks, with Lstat, every existing component of the path
// from / down to leaf against the rule above. top is the first folder
// certsync writes in, leaf top itself or a folder below it; components
// above top are its ancestors, top and those below it certsync's own. A
// missing component ends the walk: the rest does not exist yet, and
// certsync creates it. what and subject name what is refused in the error.
func checkFolders(what, subject, top, leaf string) error {
	top, leaf = filepath.Clean(top), filepath.Clean(leaf)
	absTop, err := filepath.Abs(top)
	if err != nil {
		return fmt.Errorf("checking %s %q: %w", what, subject, err)
	}
	absLeaf, err := filepath.Abs(leaf)
	if err != nil {
		return fmt.Errorf("checking %s %q: %w", what, subject, err)
	}
	if absLeaf != absTop && !isBelow(absLeaf, absTop) {
		// A programming error: leaf is always built from top.
		return fmt.Errorf("checking %s %q: %s is not below %s", what, subject, leaf, top)
	}
	euid := os.Geteuid()
	path := string(filepath.Separator)
	rest := strings.Split(strings.TrimPrefix(absLeaf, path), string(filepath.Separator))
	for i := -1; i < len(rest); i++ {
		if i >= 0 {
			if rest[i] == "" {
				continue
			}
			path = filepath.Join(path, rest[i])
		}
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking %s %q: %w", what, subject, err)
		}
		below := isBelow(path, absTop)
		reason := folderProblem(path, fi, below || path == absTop, euid)
		if below && fi.Mode().Type() == fs.ModeSymlink {
			// certsync made it: no configuration names it.
			reason = linkReason(path)
		}
		if reason != "" {
			return &unsafePathError{what: what, subject: subject, path: path, reason: reason}
		}
	}
	return nil
}

// isBelow reports whether the clean absolute path is strictly below the
// clean absolute folder top.
func isBelow(path, top string) bool {
	if top == string(filepath.Separator) {
		return path != top
	}
	return strings.HasPrefix(path, top+string(filepath.Separator))
}

// folderProblem says why the folder path, whose Lstat is fi, breaks the
// rule, or "" when it does not. own marks the folders certsync writes in,
// where the sticky bit excuses nothing.
func folderProblem(path string, fi fs.FileInfo, own bool, euid int) string {
	if fi.Mode().Type() == fs.ModeSymlink {
		return linkReason(path) + " (configure the real path)"
	}
	if !fi.IsDir() {
		return fmt.Sprintf("is a %s, not a folder", typeName(fi.Mode()))
	}
	if reason := ownerProblem(fi, euid); reason != "" {
		return reason
	}
	perm := fi.Mode()
	if perm&0o022 == 0 || (!own && perm&fs.ModeSticky != 0) {
		return ""
	}
	if perm&0o002 != 0 {
		return "is writable by others"
	}
	return "is writable by its group"
}

// linkReason says that path is a symbolic link, and where it leads.
func linkReason(path string) string {
	t, err := os.Readlink(path)
	if err != nil {
		return "is a symbolic link"
	}
	return fmt.Sprintf("is a symbolic link to %q", t)
}

// ownerProblem says why fi's owner may not hold certsync's files: someone
// else than root and euid.
func ownerProblem(fi fs.FileInfo, euid int) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "has no owner certsync can read"
	}
	if st.Uid != 0 && int(st.Uid) != euid {
		return fmt.Sprintf("is owned by uid %d, not root or certsync's uid %d", st.Uid, euid)
	}
	return ""
}

// typeName names a file mode's type for an error.
func typeName(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "regular file"
	case fs.ModeDir:
		return "folder"
	case fs.ModeSymlink:
		return "symbolic link"
	case fs.ModeNamedPipe:
		return "named pipe"
	case fs.ModeSocket:
		return "socket"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "device"
	}
	return m.Type().String()
}

// checkEntry refuses path, an entry inside one of certsync's checked
// folders, unless it is a real file of type want (fs.ModeDir, or 0 for a
// regular file), never a symbolic link. With owned, it must also be owned
// by root or certsync's user and, for a folder, not writable by group or
// others; the files of a version folder belong to the configured owner and
// are checked without (the folder and its record are checked as
// trustProblem says). A missing entry is fs.ErrNotExist.
func checkEntry(what, subject, path string, want fs.FileMode, owned bool) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	return entryProblem(what, subject, path, fi, want, owned)
}

// entryProblem is checkEntry for a FileInfo already in hand: from Lstat,
// or from Stat of a handle opened with O_NOFOLLOW.
func entryProblem(what, subject, path string, fi fs.FileInfo, want fs.FileMode, owned bool) error {
	reason := ""
	switch {
	case fi.Mode().Type() == fs.ModeSymlink:
		reason = linkReason(path)
	case fi.Mode().Type() != want:
		reason = fmt.Sprintf("is a %s, not a %s", typeName(fi.Mode()), typeName(want))
	case !owned:
	case want == fs.ModeDir:
		reason = folderProblem(path, fi, true, os.Geteuid())
	default:
		reason = ownerProblem(fi, os.Geteuid())
	}
	if reason == "" {
		return nil
	}
	return &unsafePathError{what: what, subject: subject, path: path, reason: reason}
}

// openNoFollow opens path with flag (and perm when it creates it), never
// through a symbolic link in its place: a link there is an ErrUnsafePath
// naming it. The opened file must be of type want (see checkEntry for
// want and owned).
func openNoFollow(what, subject, path string, flag int, perm, want fs.FileMode, owned bool) (*os.File, error) {
	if want == fs.ModeDir {
		flag |= syscall.O_DIRECTORY
	}
	// O_NONBLOCK: a named pipe in a file's place cannot hang the open; it
	// changes nothing for regular files and folders.
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, perm)
	if errors.Is(err, syscall.ELOOP) || (want == fs.ModeDir && errors.Is(err, syscall.ENOTDIR)) {
		if lerr := checkEntry(what, subject, path, want, owned); lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
			return nil, lerr
		}
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil {
		err = entryProblem(what, subject, path, fi, want, owned)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openInDir opens name, a fixed file name, in the folder dir opened with
// openNoFollow, read-only and never through a symbolic link; it must be a
// regular file, and with owned, root's or certsync's. path is dir's path,
// for errors.
func openInDir(what, subject string, dir *os.File, path, name string, owned bool) (*os.File, error) {
	full := filepath.Join(path, name)
	fd, err := openat(int(dir.Fd()), name, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK)
	if errors.Is(err, syscall.ELOOP) {
		return nil, &unsafePathError{what: what, subject: subject, path: full, reason: "is a symbolic link"}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: full, Err: err}
	}
	f := os.NewFile(uintptr(fd), full)
	fi, err := f.Stat()
	if err == nil {
		err = entryProblem(what, subject, full, fi, 0, owned)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openat is openat(2), tried again on EINTR.
func openat(dirfd int, name string, flag int) (int, error) {
	for {
		fd, err := syscall.Openat(dirfd, name, flag, 0)
		if !errors.Is(err, syscall.EINTR) {
			return fd, err
		}
	}
}

// lockIn takes the exclusive lock path, a lock file in one of certsync's
// checked folders (what and subject as for openNoFollow), creating it 0600
// if missing and never through a symbolic link, and returns its release.
// On failure doing says what failed ("opening" or "locking").
func lockIn(what, subject, path string) (unlock func(), doing string, err error) {
	f, err := openNoFollow(what, subject, path, os.O_RDWR|os.O_CREATE, 0o600, 0, true)
	if err != nil {
		return nil, "opening", err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, "locking", err
	}
	return func() { f.Close() }, "", nil // closing releases the lock
}
