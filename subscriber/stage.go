package subscriber

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/wire"
)

// A staged certificate's folder holds the bundle's four PEM files
// (crypto.Bundle.Files), byte for byte those the publisher read from
// certbot's lineage, and its record, crypto.FileRecord.
const (
	// maxMetaSize bounds certsync.json; the real one is a few hundred bytes.
	maxMetaSize = 64 << 10
	// loadAttempts bounds how often Load starts again when the folder it
	// was reading was replaced under it.
	loadAttempts = 10
)

// Staged is the non-secret record of a staged bundle, kept beside its files
// as certsync.json. It is the node's persisted version: what the downgrade
// check compares with, across restarts.
type Staged struct {
	// Name is the certificate name, equal to the folder's name.
	Name string `json:"name"`
	// Release is the bundle's signed version (assigned by the publisher;
	// in format 1 the leaf's NotBefore in Unix seconds; a bundle with a
	// lower one is a downgrade) and its leaf's serial, fingerprint and
	// validity.
	crypto.Release
	// Signer is the publisher key that signed the bundle.
	Signer string `json:"signer"`
	// StagedAt is when this node staged the bundle.
	StagedAt time.Time `json:"staged_at"`
	// Sequence is the bundle's sequence number in the CERTSYNC stream.
	Sequence uint64 `json:"stream_sequence"`
	// Hold says the envelope carried the hold record (crypto.Header.Hold):
	// the bundle installs only once a rollout record releases it to this
	// node (see rollout.go), or under its expiry deadline.
	Hold bool `json:"hold,omitempty"`
}

// check reports why a record read from disk cannot be trusted, or nil.
func (m *Staged) check(name string) error {
	switch {
	case m.Name != name:
		return fmt.Errorf("names certificate %q", m.Name)
	case m.Version == 0:
		return errors.New("no version")
	case m.Fingerprint.IsZero():
		return errors.New("no fingerprint")
	}
	return nil
}

// Stage is the folder where a node keeps the newest verified bundle of each
// of its certificates, one sub-folder per certificate:
//
//	<dir>/<name>/  0700: cert.pem chain.pem fullchain.pem privkey.pem certsync.json (0600)
//	<dir>/.rollout/<name>.json  0600: the rollout records kept for it (rollout.go)
//
// A certificate's set of files changes all at once: Put builds the new set
// in a temporary folder beside it, syncs it, and exchanges the two folders
// with one renameat2(RENAME_EXCHANGE). Load reads a set through a handle on
// its folder, so it sees one version whole even while Put replaces it.
//
// Writers in several processes take turns through a lock file. Methods are
// safe for concurrent use. Names must have passed wire.CheckCertName; Stage
// checks them again and never takes a path from anywhere else.
//
// OpenStage, Put, Read and Load first check the path to the stage folder
// and the certificate's folder as paths.go says (no symbolic link, owned by
// root or certsync's user, not writable by others), and every file is
// opened with O_NOFOLLOW: a folder or file swapped for a link is refused
// with an error wrapping ErrUnsafePath and never followed.
type Stage struct {
	dir string
	log *slog.Logger
}

// OpenStage opens the stage folder dir, creating it 0700 if missing (and
// synced into its parent, as every folder above it that it creates), and
// removes what a crash may have left behind: folders half built, or old
// ones not yet removed. It refuses, before creating anything, a dir whose
// path could redirect what is written (see paths.go), with an error
// wrapping ErrUnsafePath.
func OpenStage(dir string, log *slog.Logger) (*Stage, error) {
	if dir == "" {
		return nil, errors.New("opening stage folder: no folder given")
	}
	if err := checkFolders(stageWhat, dir, dir, dir); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("creating stage folder %q: %w", dir, err)
	}
	// The stage folder 0700 (the keys wait here), folders above it made
	// like mkdir -p would with umask 022.
	if err := makeFolders(abs, 0o755, 0o700); err != nil {
		return nil, fmt.Errorf("creating stage folder %q: %w", dir, err)
	}
	s := &Stage{dir: dir, log: log}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading stage folder %q: %w", dir, err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(path); err != nil {
			return nil, fmt.Errorf("removing leftover %q: %w", path, err)
		}
		log.Info("stage_leftover_removed", "path", path)
	}
	if err := s.removeRolloutLeftovers(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the stage folder.
func (s *Stage) Dir() string { return s.dir }

// Path is the folder of certificate name.
func (s *Stage) Path(name string) string { return filepath.Join(s.dir, name) }

// stageWhat names the stage folder in errors.
const stageWhat = "stage folder"

// check checks name and the path from / to its folder (see paths.go).
func (s *Stage) check(name string) error {
	if err := wire.CheckCertName(name); err != nil {
		return err
	}
	return checkFolders(stageWhat, s.dir, s.dir, s.Path(name))
}

// lock takes the stage's exclusive lock and returns its release.
func (s *Stage) lock() (func(), error) {
	path := filepath.Join(s.dir, lockFile)
	unlock, doing, err := lockIn(stageWhat, s.dir, path)
	switch {
	case errors.Is(err, ErrUnsafePath):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%s stage lock %q: %w", doing, path, err)
	}
	return unlock, nil
}

// Read returns the record of the bundle staged for name, or an error
// wrapping ErrNotStaged when there is none. A record that cannot be read or
// makes no sense is an error, never taken for "nothing staged": the
// downgrade check depends on it.
func (s *Stage) Read(name string) (*Staged, error) {
	meta, _, err := s.load(name, false)
	return meta, err
}

// Load returns the bundle staged for name and its record, all of one
// version even while another writer replaces it. It fails with an error
// wrapping ErrNotStaged when nothing is staged.
func (s *Stage) Load(name string) (*Staged, *crypto.Bundle, error) {
	return s.load(name, true)
}

func (s *Stage) load(name string, files bool) (*Staged, *crypto.Bundle, error) {
	if err := s.check(name); err != nil {
		return nil, nil, err
	}
	for attempt := 1; ; attempt++ {
		meta, b, err := s.loadOnce(name, files)
		// A file missing from a folder that was there a moment ago means
		// Put replaced it and removed the old one while it was read.
		if errors.Is(err, errReplaced) && attempt < loadAttempts {
			continue
		}
		return meta, b, err
	}
}

// errReplaced is a file missing from a staged folder: the folder was replaced
// while it was read, or, when it lasts, someone removed the file.
var errReplaced = errors.New("missing")

func (s *Stage) loadOnce(name string, files bool) (*Staged, *crypto.Bundle, error) {
	// The certificate's folder is opened without following a link in its
	// place; the handle keeps pointing at this version's folder after a
	// swap, and its files are opened through it.
	path := s.Path(name)
	dir, err := openNoFollow(stageWhat, s.dir, path, os.O_RDONLY, 0, fs.ModeDir, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("reading staged %q: %w", name, ErrNotStaged)
	}
	if errors.Is(err, ErrUnsafePath) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("opening staged %q: %w", name, err)
	}
	defer dir.Close()
	read := func(file string, limit int64) ([]byte, error) {
		return readBounded(stageWhat, s.dir, dir, path, file, limit)
	}

	raw, err := read(crypto.FileRecord, maxMetaSize)
	if errors.Is(err, ErrUnsafePath) {
		return nil, nil, err
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading staged %q: %w", name, err)
	}
	meta := new(Staged)
	if err := json.Unmarshal(raw, meta); err != nil {
		return nil, nil, fmt.Errorf("reading staged %q: corrupt %s (remove %s to start over): %v", name, crypto.FileRecord, s.Path(name), err)
	}
	if err := meta.check(name); err != nil {
		return nil, nil, fmt.Errorf("reading staged %q: corrupt %s (remove %s to start over): %v", name, crypto.FileRecord, s.Path(name), err)
	}
	if !files {
		return meta, nil, nil
	}
	b := &crypto.Bundle{Name: meta.Name, Version: meta.Version}
	for _, f := range b.Files() {
		*f.Data, err = read(f.Name, crypto.MaxFileSize)
		if errors.Is(err, ErrUnsafePath) {
			return nil, nil, err
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading staged %q: %w", name, err)
		}
	}
	return meta, b, nil
}

// readBounded reads file name in dir (opened from path, in the folder
// subject), never through a symbolic link, refusing more than limit bytes.
// A missing file is errReplaced: every staged folder holds all its files.
func readBounded(what, subject string, dir *os.File, path, name string, limit int64) ([]byte, error) {
	f, err := openInDir(what, subject, dir, path, name, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %w", name, errReplaced)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := atomicfile.ReadAtMost(f, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// Put stages b with its record meta, replacing what is staged for the same
// name in one step, unless that would go backwards. Under the stage's lock it
// compares meta with the staged record (crypto.CheckOrder): a lower version
// fails with ErrDowngrade, the same version with another fingerprint with
// ErrConflict, the same version and fingerprint changes nothing and returns
// false, unless it comes from a later stream message with another hold
// (the publisher sealed the same certificate again with or without the hold
// record): then the record is rewritten with the new hold. It returns true
// when b was staged.
func (s *Stage) Put(b *crypto.Bundle, meta *Staged) (bool, error) {
	name := b.Name
	if err := s.check(name); err != nil {
		return false, err
	}
	if meta.Name != name || meta.Version != b.Version {
		return false, fmt.Errorf("staging %q: record is for %q version %d, bundle is version %d", name, meta.Name, meta.Version, b.Version)
	}
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()

	cur, err := s.Read(name)
	switch {
	case errors.Is(err, ErrNotStaged):
	case err != nil:
		return false, err
	default:
		if err := crypto.CheckOrder(cur.Release, meta.Release); err != nil {
			return false, fmt.Errorf("staging %q version %d: %s: %w", name, meta.Version, heldAs("staged", cur.Release, meta.Release), err)
		}
		if crypto.Compare(cur.Release, meta.Release) == crypto.Same && (cur.Hold == meta.Hold || meta.Sequence <= cur.Sequence) {
			return false, nil
		}
	}
	if err := s.write(b, meta); err != nil {
		return false, err
	}
	return true, nil
}

// write replaces the folder of b.Name with b and meta. The caller holds the lock.
func (s *Stage) write(b *crypto.Bundle, meta *Staged) error {
	name := b.Name
	rawMeta, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return fmt.Errorf("staging %q: %w", name, err)
	}
	rawMeta = append(rawMeta, '\n')

	// The temporary name carries the certificate name for whoever looks,
	// cut short so that it stays within NAME_MAX.
	tmp, err := os.MkdirTemp(s.dir, tmpPrefix+name[:min(len(name), 200)]+"-")
	if err != nil {
		return fmt.Errorf("staging %q: %w", name, err)
	}
	defer func() {
		// After the exchange tmp holds the old version; before it, the
		// unfinished new one. Either way it goes. A failure here leaves a
		// leftover that the next OpenStage removes.
		if err := os.RemoveAll(tmp); err != nil {
			s.log.Warn("stage_cleanup_failed", "name", name, "path", tmp, "error", err)
		}
	}()
	// MkdirTemp's 0700 is subject to the umask; the folder's mode is not.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("staging %q: %w", name, err)
	}
	files := append(b.Files(), crypto.BundleFile{Name: crypto.FileRecord, Data: &rawMeta})
	for _, f := range files {
		if err := atomicfile.WriteNew(filepath.Join(tmp, f.Name), *f.Data, atomicfile.Keep, atomicfile.Keep, 0o600); err != nil {
			return fmt.Errorf("staging %q: %w", name, err)
		}
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("staging %q: %w", name, err)
	}

	// What is exchanged must be the certificate's real folder: a link
	// swapped in its place is refused, not exchanged (which would leave
	// the link's target in service on the next swap).
	final := s.Path(name)
	err = checkEntry(stageWhat, s.dir, final, fs.ModeDir, true)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	case errors.Is(err, ErrUnsafePath):
		return err
	case err == nil:
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
	}
	if err != nil {
		return fmt.Errorf("staging %q: replacing %s: %w", name, final, err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("staging %q: %w", name, err)
	}
	return nil
}
