// The install folder layout of one certificate: the names in it (the store
// .certsync/<name>, state.json, the version folders' <version>-<fp12>), which
// link targets of install_dir certsync makes, creating the store and taking
// its lock, and changing install_dir's link (target, point, moveAside).
// What the store's files hold is in records.go; writing and removing
// version folders in versions.go; the installer itself in installer.go.

package subscriber

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/certsync/certsync/internal/wire"
	"golang.org/x/sys/unix"
)

// Names in the install layout.
const (
	// storeDir, beside install_dir, holds the installed versions of each
	// certificate: <parent>/.certsync/<name>/<version>-<fp12>/.
	storeDir = ".certsync"
	// fileState is the install state of a certificate in its store
	// folder: an install under way, the last failed version.
	fileState = "state.json"
	// backupInfix names the old real folder moved aside:
	// <install_dir>.certsync-backup-<UTC time>.
	backupInfix = ".certsync-backup-"
	// linkSuffix names the symbolic link made before it is renamed over
	// install_dir: <parent>/.<base>.certsync-link.
	linkSuffix = ".certsync-link"
	// fpLen is how many hex digits of the fingerprint a version folder's
	// name holds.
	fpLen = 12
	// maxStateSize bounds state.json.
	maxStateSize = 1 << 20
	// storeMode is the mode of .certsync and .certsync/<name>, set on
	// every install whatever the umask: anyone may pass through to a
	// version folder, whose own mode says who gets in; only root lists
	// them.
	storeMode fs.FileMode = 0o711
	// parentMode is the mode of install_dir's parent, and of the folders
	// above it, when certsync creates them: what mkdir -p gives with
	// umask 022.
	parentMode fs.FileMode = 0o755
	// recordMode is the mode of certsync.json, root's (certsync's user's)
	// alone whatever the owner: it is not secret, and it is what the
	// downgrade check, the status, the expiry deadline and the metrics
	// trust.
	recordMode fs.FileMode = 0o644
)

// InstallStore is the folder certsync keeps beside installDir for the
// installed versions of every certificate installed in the same parent
// folder: <parent>/.certsync. The stage folder may not overlap it.
func InstallStore(installDir string) string {
	return filepath.Join(filepath.Dir(installDir), storeDir)
}

func (in *installer) parent() string { return filepath.Dir(in.c.InstallDir) }
func (in *installer) base() string   { return filepath.Base(in.c.InstallDir) }

// store is the folder of this certificate's versions.
func (in *installer) store() string {
	return filepath.Join(in.parent(), storeDir, in.c.Name)
}

// linkPrefix is what install_dir's link target starts with when certsync
// put it there.
func (in *installer) linkPrefix() string { return storeDir + "/" + in.c.Name + "/" }

// installWhat names install_dir in errors.
const installWhat = "install_dir"

// check checks the certificate's name and the path from / to its store
// folder (see paths.go).
func (in *installer) check() error {
	if err := wire.CheckCertName(in.c.Name); err != nil {
		return err
	}
	if err := checkFolders(installWhat, in.c.InstallDir, in.parent(), in.store()); err != nil {
		return fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	return nil
}

// unsafe is an ErrUnsafePath for path, in install_dir or beside it.
func (in *installer) unsafe(path, reason string) error {
	return fmt.Errorf("installing %q: %w", in.c.Name, &unsafePathError{what: installWhat, subject: in.c.InstallDir, path: path, reason: reason})
}

// entry is checkEntry for an entry in install_dir's parent or the store.
func (in *installer) entry(path string, want fs.FileMode, owned bool) error {
	return in.scoped(checkEntry(installWhat, in.c.InstallDir, path, want, owned))
}

// scoped names the certificate in err when err is an ErrUnsafePath from
// checkEntry or openNoFollow (which name install_dir and the path, not the
// certificate); any other err is returned as it is.
func (in *installer) scoped(err error) error {
	if errors.Is(err, ErrUnsafePath) {
		return fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	return err
}

// checkTarget refuses a link target of install_dir that certsync does not
// make: it is either "" (nothing), .certsync/<name>/<version folder>, or
// the name of the folder moved aside, <base>.certsync-backup-<time>, in
// install_dir's parent. It returns the version folder's name, or "" for
// the others.
func (in *installer) checkTarget(t string) (string, error) {
	if t == "" {
		return "", nil
	}
	if folder, ok := strings.CutPrefix(t, in.linkPrefix()); ok {
		if _, _, ok := parseFolderName(folder); ok && !strings.ContainsRune(folder, '/') {
			return folder, nil
		}
	}
	if rest, ok := strings.CutPrefix(t, in.base()+backupInfix); ok && rest != "" && !strings.ContainsRune(rest, '/') {
		return "", nil
	}
	return "", in.unsafe(in.c.InstallDir, fmt.Sprintf("is a symbolic link to %q, not one certsync made (remove it, or put the real folder there)", t))
}

// folderName names the version folder of m.
func folderName(m *Staged) string {
	return fmt.Sprintf("%d-%s", m.Version, m.Fingerprint.Hex()[:fpLen])
}

// lock checks the path to the store folder, creates what is missing of it
// (each new folder synced into its parent), gives .certsync and
// .certsync/<name> their mode, and takes this certificate's install lock.
func (in *installer) lock() (func(), error) {
	if err := in.check(); err != nil {
		return nil, err
	}
	if err := in.makeStore(); err != nil {
		return nil, fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	path := filepath.Join(in.store(), lockFile)
	unlock, doing, err := lockIn(installWhat, in.c.InstallDir, path)
	switch {
	case errors.Is(err, ErrUnsafePath):
		return nil, fmt.Errorf("installing %q: %w", in.c.Name, err)
	case err != nil:
		return nil, fmt.Errorf("installing %q: %s lock %s: %w", in.c.Name, doing, path, err)
	}
	return unlock, nil
}

// makeStore creates install_dir's parent (parentMode, as the folders above
// it) and the store folders (storeMode) where missing, and sets the store
// folders' mode where it differs: a folder an older certsync made under a
// umask such as 0077 would keep a group named in Group out. The path has
// been checked: these folders are root's or certsync's.
func (in *installer) makeStore() error {
	parent, err := filepath.Abs(in.parent())
	if err != nil {
		return err
	}
	if err := makeFolders(parent, parentMode, parentMode); err != nil {
		return err
	}
	for _, dir := range []string{filepath.Join(parent, storeDir), filepath.Join(parent, storeDir, in.c.Name)} {
		if err := makeFolders(dir, storeMode, storeMode); err != nil {
			return err
		}
		if err := checkEntry(installWhat, in.c.InstallDir, dir, fs.ModeDir, true); err != nil {
			return err
		}
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm() != storeMode {
			if err := os.Chmod(dir, storeMode); err != nil {
				return fmt.Errorf("setting the mode of %s: %w", dir, err)
			}
		}
	}
	return nil
}

// target returns install_dir's link target, "" when install_dir does not
// exist, and whether install_dir is a real folder (not yet certsync's). A
// link certsync did not make is an ErrUnsafePath.
func (in *installer) target() (string, bool, error) {
	fi, err := os.Lstat(in.c.InstallDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("reading install_dir %s: %w", in.c.InstallDir, err)
	case fi.IsDir():
		return "", true, nil
	case fi.Mode().Type() != fs.ModeSymlink:
		return "", false, in.unsafe(in.c.InstallDir, fmt.Sprintf("is a %s, not a folder or a symbolic link", typeName(fi.Mode())))
	}
	t, err := os.Readlink(in.c.InstallDir)
	if err != nil {
		return "", false, fmt.Errorf("reading install_dir %s: %w", in.c.InstallDir, err)
	}
	if _, err := in.checkTarget(t); err != nil {
		return "", false, err
	}
	return t, false, nil
}

// parseFolderName reads "<version>-<fp12>".
func parseFolderName(s string) (uint64, string, bool) {
	v, fp, ok := strings.Cut(s, "-")
	if !ok || len(fp) != fpLen {
		return 0, "", false
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return n, fp, true
}

// moveAside moves the real folder at install_dir aside, once: install_dir
// becomes a link to the folder's new name, in one atomic exchange, so a
// reader sees the old files throughout. It returns the link target.
func (in *installer) moveAside() (string, error) {
	backup := in.base() + backupInfix + in.now().UTC().Format("20060102T150405Z")
	path := filepath.Join(in.parent(), backup)
	// The link is made where the folder goes, pointing at its own name:
	// once exchanged with the folder, install_dir points at the folder.
	if err := os.Symlink(backup, path); err != nil {
		return "", fmt.Errorf("installing %q: moving %s aside: %w", in.c.Name, in.c.InstallDir, err)
	}
	in.did("backup_link_created")
	if err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, in.c.InstallDir, unix.RENAME_EXCHANGE); err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("installing %q: moving %s aside: %w", in.c.Name, in.c.InstallDir, err)
	}
	if err := syncDir(in.parent()); err != nil {
		return "", fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	in.did("moved_aside")
	in.log.Warn("install_dir_moved_aside", "name", in.c.Name, "install_dir", in.c.InstallDir, "moved_to", path,
		"hint", "the old files are kept there; remove them once the service runs on certsync's")
	return backup, nil
}

// point makes install_dir a link to target: a new link is made under a
// temporary name and renamed over install_dir, then the folder is synced.
func (in *installer) point(target string) error {
	tmp := filepath.Join(in.parent(), "."+in.base()+linkSuffix)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	in.did("link_created")
	if err := os.Rename(tmp, in.c.InstallDir); err != nil {
		return fmt.Errorf("installing %q: pointing %s at %s: %w", in.c.Name, in.c.InstallDir, target, err)
	}
	if err := syncDir(in.parent()); err != nil {
		return fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	in.did("linked")
	return nil
}
