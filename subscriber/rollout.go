// The rollout records a node keeps: what releases a held bundle
// (Staged.Hold) to it. keepRollout stores a verified record in the stage,
// rollout reads back the one for a staged version; released is the rule of
// what a kept record releases. When a held bundle installs is the
// scheduler's (holdDue, scheduler.go).

package subscriber

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
)

// The stage keeps the rollout records of each certificate in one file,
//
//	<stage>/.rollout/           0700
//	<stage>/.rollout/<name>.json 0600, root's (certsync's user's)
//
// holding each record exactly as the publisher signed it, with when this
// node kept it. The folder's name starts with a dot, which no certificate
// name does (wire.CheckCertName), so it never meets a certificate's folder.
//
// Why the signed bytes, verified again on every read, rather than a record
// the node trusts as it trusts certsync.json: a record is an authorisation,
// not a fact about what the node holds. Kept signed, a release rests on the
// publisher's signature every time it is used, never on a file alone, and
// a key taken out of trusted_publishers stops releasing what it signed, as
// it stops a bundle. Verifying is cheap (one Ed25519 check per record) and
// the file is bounded.
const (
	// rolloutDir is the stage's folder of kept rollout records.
	rolloutDir = ".rollout"
	// maxKeptRollouts bounds the records kept per certificate: one per
	// version and fingerprint, the highest versions first. The staged
	// version's and one that arrived before its bundle are what matter.
	maxKeptRollouts = 4
	// maxRolloutFile bounds the file: maxKeptRollouts records, in base64,
	// with their times.
	maxRolloutFile = maxKeptRollouts * (crypto.MaxRolloutSize*4/3 + 256)
)

// keptRollout is one kept record.
type keptRollout struct {
	// Record is the rollout record as the publisher signed it.
	Record []byte `json:"record"`
	// Received is when this node kept this record (its clock).
	Received time.Time `json:"received"`
	// Released is when a record for this version and fingerprint first
	// released this node (its clock): where its schedule starts, as a
	// bundle's starts when it is staged. Zero while none has.
	Released time.Time `json:"released,omitzero"`
}

// rolloutFile is what <name>.json holds.
type rolloutFile struct {
	Records []keptRollout `json:"records"`
}

// heldRelease is what a node holds of the rollout of one staged version:
// the newest kept record for it, verified, and when the node was first
// released. A nil *heldRelease is no record.
type heldRelease struct {
	*crypto.RolloutRecord
	Received, Released time.Time
}

// record is h's record, nil for a nil h.
func (h *heldRelease) record() *crypto.RolloutRecord {
	if h == nil {
		return nil
	}
	return h.RolloutRecord
}

// released reports whether r releases node: a record for the version (the
// caller looked it up by version and fingerprint) that names node, or
// releases all, and is not aborted (an aborted rollout releases nothing
// more, whatever it listed).
func released(r *crypto.RolloutRecord, node string) bool {
	return r != nil && r.State != crypto.RolloutAborted && r.Releases(node)
}

// newer reports whether a supersedes b, both for one version and
// fingerprint: a later generation, or the same one written later (a pause
// or an abort of the same wave).
func newer(a, b *crypto.RolloutRecord) bool {
	return cmp.Or(cmp.Compare(a.Generation, b.Generation), a.Time.Compare(b.Time)) > 0
}

// rolloutPath is the file of certificate name's kept records.
func (s *Stage) rolloutPath(name string) string {
	return filepath.Join(s.dir, rolloutDir, name+".json")
}

// Rollout outcomes of keepRollout.
const (
	rolloutKept       = "kept"       // a new record, or a newer one for its version
	rolloutUnchanged  = "unchanged"  // this record, or a newer one, is kept already
	rolloutSuperseded = "superseded" // for a version below the staged one
)

// keepRollout keeps r, verified from data by the caller, for certificate
// r.Name, under the stage's lock: unless its version is below the staged
// one (it can release nothing), or a newer record for its version and
// fingerprint is kept. It drops what can release nothing any more (records
// below the staged version, records trusted no more) and keeps at most
// maxKeptRollouts, the highest versions. node and now say when the node
// was first released. It returns one of rolloutKept, rolloutUnchanged,
// rolloutSuperseded.
func (s *Stage) keepRollout(data []byte, r *crypto.RolloutRecord, trusted []crypto.PublicKey, node string, now time.Time) (string, error) {
	name := r.Name
	if err := s.check(name); err != nil {
		return "", err
	}
	unlock, err := s.lock()
	if err != nil {
		return "", err
	}
	defer unlock()

	var floor uint64 // the staged version
	cur, err := s.Read(name)
	switch {
	case errors.Is(err, ErrNotStaged):
	case err != nil:
		return "", err
	default:
		floor = cur.Version
	}
	if r.Version < floor {
		return rolloutSuperseded, nil
	}
	kept, err := s.readRollouts(name, trusted)
	if err != nil {
		return "", err
	}
	entry := keptRollout{Record: slices.Clone(data), Received: now.UTC()}
	if released(r, node) {
		entry.Released = entry.Received
	}
	found := false
	for i, k := range kept {
		if !k.rec.For(r.Version, r.Fingerprint) {
			continue
		}
		found = true
		if !newer(r, k.rec) {
			return rolloutUnchanged, nil
		}
		if !k.Released.IsZero() {
			entry.Released = k.Released // released first then, not now
		}
		kept[i] = parsedRollout{keptRollout: entry, rec: r}
	}
	if !found {
		kept = append(kept, parsedRollout{keptRollout: entry, rec: r})
	}
	kept = slices.DeleteFunc(kept, func(k parsedRollout) bool { return k.rec.Version < floor })
	slices.SortStableFunc(kept, func(a, b parsedRollout) int {
		return cmp.Compare(b.rec.Version, a.rec.Version)
	})
	kept = kept[:min(len(kept), maxKeptRollouts)]

	f := rolloutFile{Records: make([]keptRollout, 0, len(kept))}
	for _, k := range kept {
		f.Records = append(f.Records, k.keptRollout)
	}
	raw, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		return "", fmt.Errorf("keeping rollout record %q: %w", name, err)
	}
	dir := filepath.Join(s.dir, rolloutDir)
	if err := checkFolders(stageWhat, s.dir, s.dir, dir); err != nil {
		return "", err
	}
	if err := makeFolders(dir, 0o700, 0o700); err != nil {
		return "", fmt.Errorf("keeping rollout record %q: %w", name, err)
	}
	path := s.rolloutPath(name)
	if err := checkEntry(stageWhat, s.dir, path, 0, true); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := atomicfile.Replace(path, append(raw, '\n'), atomicfile.Keep, atomicfile.Keep, 0o600); err != nil {
		return "", fmt.Errorf("keeping rollout record %q: %w", name, err)
	}
	return rolloutKept, nil
}

// parsedRollout is a kept record with its verified content.
type parsedRollout struct {
	keptRollout
	rec *crypto.RolloutRecord
}

// readRollouts reads the kept records of name, each verified against
// trusted and checked to be for name; one that is not (signed by a key the
// node trusts no more) is left out. No file is no record.
func (s *Stage) readRollouts(name string, trusted []crypto.PublicKey) ([]parsedRollout, error) {
	if err := checkFolders(stageWhat, s.dir, s.dir, filepath.Join(s.dir, rolloutDir)); err != nil {
		return nil, err
	}
	path := s.rolloutPath(name)
	f, err := openNoFollow(stageWhat, s.dir, path, os.O_RDONLY, 0, 0, true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		if errors.Is(err, ErrUnsafePath) {
			return nil, err
		}
		return nil, fmt.Errorf("reading rollout records %q: %w", name, err)
	}
	defer f.Close()
	raw, err := atomicfile.ReadAtMost(f, maxRolloutFile)
	if err != nil {
		return nil, fmt.Errorf("reading rollout records %q: %s: %w", name, path, err)
	}
	var file rolloutFile
	if err := json.Unmarshal(raw, &file); err != nil {
		return nil, fmt.Errorf("reading rollout records %q: corrupt %s (remove it: the next record the publisher writes is kept again): %v", name, path, err)
	}
	var out []parsedRollout
	for _, k := range file.Records {
		r, _, err := crypto.VerifyRollout(k.Record, trusted)
		if err != nil || r.Name != name {
			continue
		}
		out = append(out, parsedRollout{keptRollout: k, rec: r})
	}
	return out, nil
}

// rollout returns what the node holds of the rollout of the staged bundle
// meta: the kept record for its version and fingerprint, or nil when none
// is kept (or meta is not held).
func (s *Stage) rollout(meta *Staged, trusted []crypto.PublicKey) (*heldRelease, error) {
	if meta == nil || !meta.Hold {
		return nil, nil
	}
	kept, err := s.readRollouts(meta.Name, trusted)
	if err != nil {
		return nil, err
	}
	for _, k := range kept {
		if k.rec.For(meta.Version, meta.Fingerprint) {
			return &heldRelease{RolloutRecord: k.rec, Received: k.Received, Released: k.Released}, nil
		}
	}
	return nil, nil
}

// removeRolloutLeftovers removes the temporary files a crash left in the
// stage's rollout folder. The caller holds the stage's lock.
func (s *Stage) removeRolloutLeftovers() error {
	dir := filepath.Join(s.dir, rolloutDir)
	if err := checkFolders(stageWhat, s.dir, s.dir, dir); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading stage folder %q: %w", dir, err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("removing leftover %q: %w", path, err)
		}
		s.log.Info("stage_leftover_removed", "path", path)
	}
	return nil
}
