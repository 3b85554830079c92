package subscriber

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/wire"
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

// Installed is the non-secret record of an installed version, kept in its
// version folder as certsync.json: the staged record it was installed from
// and when.
type Installed struct {
	Staged
	// InstalledAt is when the version folder was written.
	InstalledAt time.Time `json:"installed_at"`
}

// installState is what a certificate's state.json holds.
type installState struct {
	// Pending is an install whose version is (or is about to be) linked
	// but not yet checked, reloaded and verified. A crash leaves it set;
	// the next install completes it.
	Pending *pendingInstall `json:"pending,omitempty"`
	// Failed is the last version whose install failed. It is tried again
	// on its own only under the expiry deadline (see retryDue); a newer
	// bundle or `node install` tries again.
	Failed *failedInstall `json:"failed,omitempty"`
}

type pendingInstall struct {
	// Release is the version being installed.
	crypto.Release
	// Previous is the link target to roll back to ("" when nothing was
	// in place).
	Previous string `json:"previous"`
}

type failedInstall struct {
	// Release is the version that failed.
	crypto.Release
	Error string    `json:"error"`
	At    time.Time `json:"at"` // the last failure
	// Attempts counts the failed installs of this version in a row, for
	// the retry's backoff (0 in a state.json from before: one).
	Attempts int `json:"attempts,omitempty"`
	// Permanent is set when trying again cannot help (a downgrade, a
	// conflict with the installed version): never retried on its own.
	Permanent bool `json:"permanent,omitempty"`
}

func (f *failedInstall) is(m *Staged) bool {
	return f != nil && m != nil && crypto.Compare(f.Release, m.Release) == crypto.Same
}

// installer puts the bundles of one certificate into its install_dir:
//
//	<parent>/<base>                -> .certsync/<name>/<version>-<fp12>   (install_dir, a symbolic link)
//	<parent>/.certsync/<name>/<version>-<fp12>/  cert.pem chain.pem fullchain.pem privkey.pem [combined.pem] certsync.json
//	<parent>/.certsync/<name>/state.json          (0600) an install under way, the last failed version
//	<parent>/.certsync/<name>/.lock               serialises installers of this certificate
//
// .certsync and .certsync/<name> are storeMode; the version folders and
// their certsync.json are root's (certsync's user's) alone, and only the
// certificate and key files in them are the configured owner's (see build
// and record).
//
// A version folder is built under a temporary name, every file synced, and
// renamed into place once complete; install_dir only ever points at a
// complete one, and changes with one rename of a new link over it. So a
// reader sees all of one version, and a crash at any instant leaves
// install_dir at one complete version. What a crash leaves behind (a
// temporary folder or link) is removed by the next install.
//
// Before each install, and before reading what is installed, the path to
// install_dir's parent, .certsync and .certsync/<name> is checked as
// paths.go says. install_dir must be missing, a real folder (moved aside),
// or a link certsync made: to one of this certificate's version folders,
// or to the folder it moved aside. state.json, .lock, certsync.json and
// the version folders are never followed through a link.
type installer struct {
	c    Certificate
	log  *slog.Logger
	now  func() time.Time
	node string // for the splay offset and logs

	// step, when set (tests), is called after each durable step of an
	// install, with its name.
	step func(string)
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
	err := checkEntry(installWhat, in.c.InstallDir, path, want, owned)
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

func (in *installer) did(step string) {
	if in.step != nil {
		in.step(step)
	}
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

// errUntrusted marks a version folder whose record certsync does not trust:
// the folder or its certsync.json is not root's (or certsync's user's)
// alone. An older certsync gave version folders to the configured owner,
// who could then rewrite the record; a folder like that counts as holding
// no known version, and installing that version again rebuilds it.
var errUntrusted = errors.New("not root's alone")

// trustProblem says why the folder or file path, whose Lstat is fi, cannot
// hold a record certsync trusts, or "": it must be owned by root or
// certsync's user and writable by nobody else.
func trustProblem(fi fs.FileInfo) string {
	if reason := ownerProblem(fi, os.Geteuid()); reason != "" {
		return reason
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Sprintf("has mode %04o, writable by others than its owner", fi.Mode().Perm())
	}
	return ""
}

// record reads the record of the version folder that link target t names,
// or returns nil when t is "" or the folder moved aside. The folder t
// names must be a real folder, and certsync.json a real file. Either not
// root's alone (see trustProblem) is an error wrapping errUntrusted: the
// record is not read.
func (in *installer) record(t string) (*Installed, error) {
	folder, err := in.checkTarget(t)
	if err != nil || t == "" {
		return nil, err
	}
	fail := func(err error) (*Installed, error) {
		if errors.Is(err, ErrUnsafePath) {
			return nil, err
		}
		return nil, fmt.Errorf("reading installed %q: %w", in.c.Name, err)
	}
	if folder == "" {
		// The real folder moved aside: it must still be one.
		if err := in.entry(filepath.Join(in.parent(), t), fs.ModeDir, false); err != nil {
			return fail(err)
		}
		return nil, nil
	}
	dir := filepath.Join(in.store(), folder)
	if err := in.entry(dir, fs.ModeDir, false); err != nil {
		return fail(err)
	}
	untrusted := func(path, reason string) (*Installed, error) {
		return nil, fmt.Errorf("reading installed %q: %s %s: %w", in.c.Name, path, reason, errUntrusted)
	}
	// The folder first: once it is root's alone, nobody else can replace
	// the record in it.
	dfi, err := os.Lstat(dir)
	if err != nil {
		return fail(err)
	}
	if reason := trustProblem(dfi); reason != "" {
		return untrusted(dir, reason)
	}
	path := filepath.Join(dir, crypto.FileRecord)
	f, err := openNoFollow(installWhat, in.c.InstallDir, path, os.O_RDONLY, 0, 0, false)
	if errors.Is(err, ErrUnsafePath) {
		return nil, fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	ffi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if reason := trustProblem(ffi); reason != "" {
		return untrusted(path, reason)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxMetaSize+1))
	if err != nil || len(raw) > maxMetaSize {
		return nil, fmt.Errorf("reading installed %q: %s: too large or unreadable (%v)", in.c.Name, path, err)
	}
	m := new(Installed)
	if err := json.Unmarshal(raw, m); err != nil {
		return nil, fmt.Errorf("reading installed %q: corrupt %s: %v", in.c.Name, path, err)
	}
	if err := m.check(in.c.Name); err != nil {
		return nil, fmt.Errorf("reading installed %q: corrupt %s: %v", in.c.Name, path, err)
	}
	return m, nil
}

// installed returns the version in service and the install state: the
// version install_dir points at, or, while an install is pending (or was
// cut short by a crash), the version it would roll back to. It is nil when
// no version of certsync's is in service, or when that version's record is
// not root's alone (errUntrusted).
func (in *installer) installed() (*Installed, *installState, error) {
	if err := in.check(); err != nil {
		return nil, nil, err
	}
	st, err := in.readState()
	if err != nil {
		return nil, nil, err
	}
	t, _, err := in.target()
	if err != nil {
		return nil, st, err
	}
	if st.Pending != nil {
		t = st.Pending.Previous
	}
	m, err := in.record(t)
	if errors.Is(err, errUntrusted) {
		// No version known to be in service: the next install (at once,
		// as for a first install) rebuilds the folder.
		return nil, st, nil
	}
	return m, st, err
}

// readState reads state.json; missing is the empty state.
func (in *installer) readState() (*installState, error) {
	path := filepath.Join(in.store(), fileState)
	f, err := openNoFollow(installWhat, in.c.InstallDir, path, os.O_RDONLY, 0, 0, true)
	if errors.Is(err, fs.ErrNotExist) {
		return &installState{}, nil
	}
	if errors.Is(err, ErrUnsafePath) {
		return nil, fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading install state %s: %w", path, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil || len(raw) > maxStateSize {
		return nil, fmt.Errorf("reading install state %s: too large or unreadable (%v)", path, err)
	}
	st := new(installState)
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("reading install state %s: corrupt (remove it to start over): %v", path, err)
	}
	if st.Pending != nil {
		// Rolling back points install_dir at Previous: only where
		// certsync would.
		if _, err := in.checkTarget(st.Pending.Previous); err != nil {
			return nil, fmt.Errorf("reading install state %s: corrupt (remove it to start over): previous %q is not a version certsync installed", path, st.Pending.Previous)
		}
	}
	return st, nil
}

// writeState replaces state.json, 0600 (atomicfile.Replace: temp file,
// sync, rename, sync folder; a temporary file a crash leaves is cleanup's).
func (in *installer) writeState(st *installState) error {
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(in.store(), fileState)
	if err := atomicfile.Replace(path, append(raw, '\n'), atomicfile.Keep, atomicfile.Keep, 0o600); err != nil {
		return fmt.Errorf("writing install state %s: %w", path, err)
	}
	return nil
}

// cleanup removes what an install cut short left behind: version folders
// being built, the new link not yet renamed, a link made to move a real
// folder aside. The caller holds the lock.
func (in *installer) cleanup() error {
	entries, err := os.ReadDir(in.store())
	if err != nil {
		return fmt.Errorf("installing %q: reading %s: %w", in.c.Name, in.store(), err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			path := filepath.Join(in.store(), e.Name())
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("installing %q: removing leftover %s: %w", in.c.Name, path, err)
			}
			in.log.Info("install_leftover_removed", "name", in.c.Name, "path", path)
		}
	}
	// Only symbolic links are ours to remove here: a real folder under a
	// backup name is the old folder, moved aside, and stays.
	links := []string{filepath.Join(in.parent(), "."+in.base()+linkSuffix)}
	backups, _ := filepath.Glob(filepath.Join(in.parent(), globEscape(in.base()+backupInfix)+"*"))
	links = append(links, backups...)
	for _, path := range links {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == fs.ModeSymlink {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("installing %q: removing leftover %s: %w", in.c.Name, path, err)
			}
			in.log.Info("install_leftover_removed", "name", in.c.Name, "path", path)
		}
	}
	return nil
}

// globEscape escapes the characters filepath.Match treats specially.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`).Replace(s)
}

// ids resolves the configured owner and group; -1 keeps the process's.
func (in *installer) ids() (uid, gid int, err error) {
	uid, gid = -1, -1
	if o := in.c.Owner; o != "" {
		if uid, err = strconv.Atoi(o); err != nil {
			u, lerr := user.Lookup(o)
			if lerr != nil {
				return 0, 0, fmt.Errorf("installing %q: owner %q: %w", in.c.Name, o, lerr)
			}
			uid, _ = strconv.Atoi(u.Uid)
		}
	}
	if g := in.c.Group; g != "" {
		if gid, err = strconv.Atoi(g); err != nil {
			gr, lerr := user.LookupGroup(g)
			if lerr != nil {
				return 0, 0, fmt.Errorf("installing %q: group %q: %w", in.c.Name, g, lerr)
			}
			gid, _ = strconv.Atoi(gr.Gid)
		}
	}
	return uid, gid, nil
}

// modes returns the modes of the certificate files, the key files and the
// version folder, for files owned by uid (-1: certsync's user). The folder
// is root's (certsync's user's) and lets in whoever may read a file in it:
// its group (Group, when set) where a mode grants the group reading,
// others where cert_mode grants others reading, and an owner other than
// certsync's user, who is none of these, may pass through (x, not r) to
// its files.
func (in *installer) modes(uid int) (certMode, keyMode, dirMode fs.FileMode) {
	certMode, keyMode = fs.FileMode(in.c.CertMode), fs.FileMode(in.c.KeyMode)
	dirMode = 0o700
	if (certMode|keyMode)&0o040 != 0 {
		dirMode |= 0o050
	}
	if certMode&0o004 != 0 {
		dirMode |= 0o005
	}
	if uid >= 0 && uid != os.Geteuid() {
		dirMode |= 0o001
	}
	return certMode, keyMode, dirMode
}

// build writes the version folder of b and returns its name. The folder and
// certsync.json are root's (certsync's user's) alone; only the certificate
// and key files are given to Owner and Group, and the folder to Group, so
// that neither can change the record certsync trusts. A folder of that name
// already there is replaced in one exchange: it may hold a version that
// failed, written with other settings, or one whose record is not trusted
// (errUntrusted), in service.
func (in *installer) build(b *crypto.Bundle, meta *Staged) (string, error) {
	name := folderName(meta)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("installing %q version %d: %w", in.c.Name, meta.Version, err)
	}
	uid, gid, err := in.ids()
	if err != nil {
		return "", err
	}
	certMode, keyMode, dirMode := in.modes(uid)
	rec, err := json.MarshalIndent(&Installed{Staged: *meta, InstalledAt: in.now().UTC()}, "", "  ")
	if err != nil {
		return fail(err)
	}
	tmp, err := os.MkdirTemp(in.store(), tmpPrefix+name+"-")
	if err != nil {
		return fail(err)
	}
	// MkdirTemp's 0700 is subject to the umask; 0700 while it is written.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fail(err)
	}
	in.did("folder_created")
	type file struct {
		name     string
		data     []byte
		uid, gid int
		mode     fs.FileMode
	}
	var files []file
	for _, f := range b.Files() {
		mode := certMode
		if f.Name == crypto.FileKey {
			mode = keyMode
		}
		files = append(files, file{f.Name, *f.Data, uid, gid, mode})
	}
	if in.c.Combined {
		files = append(files, file{crypto.FileCombined, slices.Concat(b.FullChain, b.PrivKey), uid, gid, keyMode})
	}
	files = append(files, file{crypto.FileRecord, append(rec, '\n'), -1, -1, recordMode})
	for _, f := range files {
		if err := atomicfile.WriteNew(filepath.Join(tmp, f.name), f.data, f.uid, f.gid, f.mode); err != nil {
			return fail(err)
		}
		in.did("file_written")
	}
	if err := os.Chown(tmp, -1, gid); err != nil {
		return fail(err)
	}
	if err := os.Chmod(tmp, dirMode); err != nil {
		return fail(err)
	}
	if err := syncDir(tmp); err != nil {
		return fail(err)
	}
	// Into place in one step: renamed when the name is free, exchanged
	// with what holds it otherwise (which then goes, under tmp's name, so
	// a crash leaves it to cleanup). install_dir may point at that name:
	// it sees one whole folder or the other.
	final := filepath.Join(in.store(), name)
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	exchanged := false
	if errors.Is(err, unix.EEXIST) {
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
		exchanged = err == nil
	}
	if err != nil {
		return fail(fmt.Errorf("renaming %s to %s: %w", tmp, final, err))
	}
	if err := syncDir(in.store()); err != nil {
		return fail(err)
	}
	if exchanged {
		if err := os.RemoveAll(tmp); err != nil {
			in.log.Warn("install_cleanup_failed", "name", in.c.Name, "path", tmp, "error", err)
		}
	}
	in.did("folder_complete")
	return name, nil
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

// prune removes the version folders beyond Keep: it keeps the one in
// service and the newest older ones, and removes the rest (a newer version
// that failed included). Folders moved aside are never touched.
func (in *installer) prune(current string) {
	entries, err := os.ReadDir(in.store())
	if err != nil {
		in.log.Warn("install_prune_failed", "name", in.c.Name, "error", err)
		return
	}
	curVersion, _, _ := parseFolderName(current)
	type version struct {
		name string
		v    uint64
	}
	var older []version
	for _, e := range entries {
		v, _, ok := parseFolderName(e.Name())
		if !ok || !e.IsDir() || e.Name() == current {
			continue
		}
		if v < curVersion {
			older = append(older, version{e.Name(), v})
			continue
		}
		in.remove(e.Name())
	}
	slices.SortFunc(older, func(a, b version) int { return -cmpUint(a.v, b.v) })
	keep := max(in.c.Keep, 1) - 1
	for _, o := range older[min(keep, len(older)):] {
		in.remove(o.name)
	}
}

func (in *installer) remove(folder string) {
	path := filepath.Join(in.store(), folder)
	if err := os.RemoveAll(path); err != nil {
		in.log.Warn("install_prune_failed", "name", in.c.Name, "path", path, "error", err)
		return
	}
	in.log.Info("install_version_removed", "name", in.c.Name, "path", path)
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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

// install puts the bundle b, staged as meta, in service. Unless force, a
// version that failed before is skipped. See Node.Install for the steps.
func (in *installer) install(ctx context.Context, b *crypto.Bundle, meta *Staged, force bool) InstallResult {
	res := InstallResult{Name: in.c.Name, Release: meta.Release}
	fail := func(err error) InstallResult {
		res.Outcome, res.Err = InstallFailed, err
		return res
	}
	unlock, err := in.lock() // checks the name and the paths
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if err := in.cleanup(); err != nil {
		return fail(err)
	}
	st, err := in.readState()
	if err != nil {
		return fail(err)
	}
	cur, real, err := in.target()
	if err != nil {
		return fail(err)
	}
	curRec, err := in.record(cur)
	untrusted := errors.Is(err, errUntrusted)
	if untrusted {
		// Its record cannot be believed: no downgrade check against it
		// (the stage's still holds), and this version's folder, if it is
		// that one, is built again, root's.
		in.log.Warn("install_record_untrusted", "name", in.c.Name, "error", err,
			"hint", "the version folder is rebuilt, root's, with the staged bundle")
		curRec, err = nil, nil
	}
	if err != nil {
		return fail(err)
	}
	folder := folderName(meta)
	inService := cur == in.linkPrefix()+folder
	failedBefore := st.Failed.is(meta)

	// Settled: what is in service is this bundle, and it went well.
	if st.Pending == nil && inService && !untrusted && !failedBefore {
		res.Outcome = InstallUnchanged
		return res
	}
	if st.Pending == nil && curRec != nil && !inService {
		if err := crypto.CheckOrder(curRec.Release, meta.Release); err != nil {
			return in.failed(st, meta, res, permanent(fmt.Errorf("installing %q version %d: %s: %w",
				in.c.Name, meta.Version, heldAs("installed", curRec.Release, meta.Release), err)))
		}
	}
	if failedBefore && !force {
		res.Outcome = InstallSkipped
		res.Err = fmt.Errorf("installing %q version %d: failed before (%s); a newer bundle, certsync node install, or a retry under expiry_deadline tries again", in.c.Name, meta.Version, st.Failed.Error)
		return res
	}

	// The version to roll back to: what was in service before the
	// install under way, if one was cut short.
	previous := cur
	switch {
	case st.Pending != nil:
		previous = st.Pending.Previous
	case inService:
		// A first install that failed, its files left in place, or this
		// version's folder about to be rebuilt: nothing else to go back to.
		previous = ""
	case real:
		if previous, err = in.moveAside(); err != nil {
			return fail(err)
		}
	}
	if !inService || untrusted {
		if _, err := in.build(b, meta); err != nil {
			return fail(err)
		}
	}
	st.Pending = &pendingInstall{Release: meta.Release, Previous: previous}
	if err := in.writeState(st); err != nil {
		return fail(err)
	}
	in.did("pending_written")
	if err := in.point(in.linkPrefix() + folder); err != nil {
		return fail(in.rollback(ctx, st, previous, err))
	}
	in.log.Info("install_linked", "name", in.c.Name, "version", meta.Version, "fingerprint", meta.Fingerprint,
		"install_dir", in.c.InstallDir, "previous", previous)

	if err := in.activate(ctx, b, meta); err != nil {
		res.RolledBack = previous != ""
		err = fmt.Errorf("installing %q version %d: %w", in.c.Name, meta.Version, err)
		return in.failed(st, meta, res, in.rollback(ctx, st, previous, err))
	}
	st.Pending, st.Failed = nil, nil
	if err := in.writeState(st); err != nil {
		return fail(err)
	}
	in.did("done")
	in.prune(folder)
	in.log.Info("install_done", "name", in.c.Name, "version", meta.Version, "serial", meta.Serial,
		"fingerprint", meta.Fingerprint, "not_after", meta.NotAfter)
	res.Outcome = InstallInstalled
	return res
}

// failed records err as the failure of meta's install (one more in a row
// when the same version failed before; permanent when err is), clears any
// pending install, and returns res failed with err.
func (in *installer) failed(st *installState, meta *Staged, res InstallResult, err error) InstallResult {
	attempts := 1
	if st.Failed.is(meta) {
		attempts = max(st.Failed.Attempts, 1) + 1
	}
	st.Pending = nil
	st.Failed = &failedInstall{Release: meta.Release, Error: err.Error(), At: in.now().UTC(),
		Attempts: attempts, Permanent: IsPermanent(err)}
	if werr := in.writeState(st); werr != nil {
		err = fmt.Errorf("%w (and recording the failure: %v)", err, werr)
	}
	in.log.Warn("install_failed", "name", in.c.Name, "version", meta.Version, "fingerprint", meta.Fingerprint,
		"rolled_back", res.RolledBack, "attempts", attempts, "error", err)
	res.Outcome, res.Err = InstallFailed, err
	return res
}

// rollback points install_dir back at previous and reloads again, after
// cause made the install fail. With no previous version the new one stays
// in place: a service without files cannot be rolled back to anything. It
// returns cause, with what rolling back did or why it failed.
func (in *installer) rollback(ctx context.Context, st *installState, previous string, cause error) error {
	if previous == "" {
		return fmt.Errorf("%w; nothing to roll back to, the new files stay in place", cause)
	}
	if err := in.point(previous); err != nil {
		return fmt.Errorf("%w; rolling back failed: %v", cause, err)
	}
	in.did("rolled_back")
	in.log.Warn("install_rolled_back", "name", in.c.Name, "install_dir", in.c.InstallDir, "to", previous, "reason", cause)
	if !in.c.Reload.IsZero() {
		// The environment names the version rolled back to, if certsync's.
		env := []string{EnvName + "=" + in.c.Name, EnvInstallDir + "=" + in.c.InstallDir}
		if rec, _ := in.record(previous); rec != nil {
			env = append(env, EnvSerial+"="+rec.Serial, EnvFingerprint+"="+rec.Fingerprint.String())
		}
		cmd := command{what: "reload", cmd: in.c.Reload, timeout: in.commandTimeout(), env: env}
		if err := cmd.run(ctx); err != nil {
			return fmt.Errorf("%w; rolled back to %s, but reloading then failed: %v", cause, previous, err)
		}
		in.did("reloaded_previous")
	}
	return fmt.Errorf("%w; rolled back to %s", cause, previous)
}

func (in *installer) commandTimeout() time.Duration {
	if in.c.CommandTimeout > 0 {
		return in.c.CommandTimeout
	}
	return DefaultCommandTimeout
}

// activate runs check, reload and verify for the version just linked.
func (in *installer) activate(ctx context.Context, b *crypto.Bundle, meta *Staged) error {
	env := []string{
		EnvName + "=" + in.c.Name,
		EnvInstallDir + "=" + in.c.InstallDir,
		EnvSerial + "=" + meta.Serial,
		EnvFingerprint + "=" + meta.Fingerprint.String(),
	}
	for _, c := range []command{
		{what: "check", cmd: in.c.Check},
		{what: "reload", cmd: in.c.Reload},
	} {
		if c.cmd.IsZero() {
			continue
		}
		c.timeout, c.env = in.commandTimeout(), env
		if err := c.run(ctx); err != nil {
			return err
		}
		in.did(c.what + "_done")
		in.log.Info("install_"+c.what+"_passed", "name", in.c.Name, "command", c.cmd.String())
	}
	if in.c.Verify == "" {
		return nil
	}
	sni := ""
	if blk, _ := pem.Decode(b.Cert); blk != nil {
		if leaf, err := x509.ParseCertificate(blk.Bytes); err == nil {
			sni = serverName(leaf)
		}
	}
	timeout := in.c.VerifyTimeout
	if timeout <= 0 {
		timeout = DefaultVerifyTimeout
	}
	if err := verifyServed(context.WithoutCancel(ctx), in.c.Verify, sni, meta.Fingerprint, timeout); err != nil {
		return err
	}
	in.did("verify_done")
	in.log.Info("install_verify_passed", "name", in.c.Name, "address", in.c.Verify, "sni", sni)
	return nil
}
