// Creating and syncing folders, for the stage and the install layout
// alike (makeFolders, syncDir), and the names both use: the lock file and
// the temporary prefix.

package subscriber

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/certsync/certsync/internal/atomicfile"
)

const (
	// lockFile serialises writers (node run, node sync, node install) in
	// one stage folder. It starts with a dot, so no certificate name
	// collides with it.
	lockFile = ".lock"
	// tmpPrefix starts every folder being built, every old folder being
	// removed, and every temporary file (atomicfile's). Such entries are
	// crash leftovers when no writer holds the lock.
	tmpPrefix = atomicfile.TempPrefix
)

// syncDir is atomicfile.SyncDir, which tests watch (dirSynced). dir is a
// checked folder; a symbolic link in its place is not followed.
func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return err
	}
	if dirSynced != nil {
		dirSynced(dir)
	}
	return nil
}

// dirSynced, when set, is told of every folder syncDir made durable. Tests
// set it once, before any test runs, to see that a new folder is synced
// into its parent.
var dirSynced func(dir string)

// makeFolders creates the folders of the clean absolute path dir that are
// missing, from the top down: each one above dir with mode parentMode, dir
// itself with mode. Each is made 0700, then given its mode explicitly, so
// the process's umask (0077 under the shipped unit) decides nothing, and is
// synced into the folder that holds it, so that a crash cannot lose a
// folder certsync has written files in. Folders that exist are left as they
// are. The caller has checked the path (paths.go).
func makeFolders(dir string, parentMode, mode fs.FileMode) error {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		_, err := os.Lstat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		p, m := missing[i], parentMode
		if p == dir {
			m = mode
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue // made by another certsync process a moment ago
			}
			return fmt.Errorf("creating %s: %w", p, err)
		}
		if err := os.Chmod(p, m); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
		if err := syncDir(filepath.Dir(p)); err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
	}
	return nil
}
