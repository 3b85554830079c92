// What the install layout's files hold, read and written: a version
// folder's certsync.json ([Installed], believed only when root's alone) and
// a certificate's state.json (installState: an install under way, the last
// failed version).

package subscriber

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
)

// Installed is the non-secret record of an installed version, kept in its
// version folder as certsync.json: the staged record it was installed from
// and when.
type Installed struct {
	Staged
	// InstalledAt is when the version folder was written.
	InstalledAt time.Time `json:"installed_at"`
	// Rollout is how a held bundle went into service: wire.RolloutReleased
	// (its rollout released this node) or wire.RolloutExpiry (the expiry
	// deadline overrode the hold); "" when not held, or installed by
	// `node install` while not released.
	Rollout string `json:"rollout,omitempty"`
}

// installState is what a certificate's state.json holds.
type installState struct {
	// Pending is an install whose version is (or is about to be) linked
	// but not yet checked, reloaded and verified. A crash leaves it set;
	// the next install completes it.
	Pending *pendingInstall `json:"pending,omitempty"`
	// Failed is the last version whose install failed. It is tried again
	// on its own only under the expiry deadline (see retryDue), or, held,
	// once a later rollout generation releases it (holdDue); a newer
	// bundle or `node install` tries again.
	Failed *failedInstall `json:"failed,omitempty"`
	// Verified is the last version that passed the served-certificate
	// check (verify:) at the end of its install, and at which address;
	// nil when none did (or before it was recorded).
	Verified *verifiedInstall `json:"verified,omitempty"`
}

type verifiedInstall struct {
	crypto.Release
	Address string    `json:"address"`
	At      time.Time `json:"at"`
}

// is reports whether v says m's version passed the check at address.
func (v *verifiedInstall) is(m *Staged, address string) bool {
	return v != nil && m != nil && address != "" && v.Address == address && crypto.Compare(v.Release, m.Release) == crypto.Same
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
	// Generation is the rollout record's generation the install of a
	// held bundle failed under (0: not held, or none): a record of a
	// later generation that releases the node tries it again.
	Generation uint64 `json:"rollout_generation,omitempty"`
}

func (f *failedInstall) is(m *Staged) bool {
	return f != nil && m != nil && crypto.Compare(f.Release, m.Release) == crypto.Same
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
	if err != nil {
		return fail(in.scoped(err))
	}
	defer f.Close()
	ffi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if reason := trustProblem(ffi); reason != "" {
		return untrusted(path, reason)
	}
	raw, err := atomicfile.ReadAtMost(f, maxMetaSize)
	if err != nil {
		return nil, fmt.Errorf("reading installed %q: %s: %w", in.c.Name, path, err)
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
		return nil, in.scoped(err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading install state %s: %w", path, err)
	}
	defer f.Close()
	raw, err := atomicfile.ReadAtMost(f, maxStateSize)
	if err != nil {
		return nil, fmt.Errorf("reading install state %s: %w", path, err)
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
