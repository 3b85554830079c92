// Version folders written and removed: build (owners and modes, every
// file synced, moved into place in one step), cleanup of what an install cut
// short left behind, and prune beyond Keep.

package subscriber

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
	"golang.org/x/sys/unix"
)

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
	if uid, err = lookupID("owner", in.c.Owner); err != nil {
		return 0, 0, fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	if gid, err = lookupID("group", in.c.Group); err != nil {
		return 0, 0, fmt.Errorf("installing %q: %w", in.c.Name, err)
	}
	return uid, gid, nil
}

// lookupID resolves an owner or a group (kind): "" is -1, the process's; a
// number is itself; anything else is a user or group name, looked up.
func lookupID(kind, s string) (int, error) {
	if s == "" {
		return -1, nil
	}
	if id, err := strconv.Atoi(s); err == nil {
		return id, nil
	}
	var id string
	if kind == "group" {
		g, err := user.LookupGroup(s)
		if err != nil {
			return 0, fmt.Errorf("group %q: %w", s, err)
		}
		id = g.Gid
	} else {
		u, err := user.Lookup(s)
		if err != nil {
			return 0, fmt.Errorf("owner %q: %w", s, err)
		}
		id = u.Uid
	}
	n, _ := strconv.Atoi(id)
	return n, nil
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
func (in *installer) build(b *crypto.Bundle, meta *Staged, rollout string) (string, error) {
	name := folderName(meta)
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("installing %q version %d: %w", in.c.Name, meta.Version, err)
	}
	uid, gid, err := in.ids()
	if err != nil {
		return "", err
	}
	certMode, keyMode, dirMode := in.modes(uid)
	rec, err := json.MarshalIndent(&Installed{Staged: *meta, InstalledAt: in.now().UTC(), Rollout: rollout}, "", "  ")
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
	slices.SortFunc(older, func(a, b version) int { return -cmp.Compare(a.v, b.v) })
	keep := in.c.Keep - 1
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
