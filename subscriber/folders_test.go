package subscriber

import (
	"maps"
	"strings"
	"testing"
)

func init() {
	dirSynced = func(dir string) {
		syncWatch.Lock()
		defer syncWatch.Unlock()
		for root, seen := range syncWatch.synced {
			if dir == root || strings.HasPrefix(dir, root+"/") {
				seen[dir] = true
			}
		}
	}
}

// watchSyncs records the folders syncDir syncs at or below root until the
// test ends, and returns a function that tells them so far.
func watchSyncs(t *testing.T, root string) func() map[string]bool {
	t.Helper()
	syncWatch.Lock()
	if syncWatch.synced == nil {
		syncWatch.synced = map[string]map[string]bool{}
	}
	syncWatch.synced[root] = map[string]bool{}
	syncWatch.Unlock()
	t.Cleanup(func() {
		syncWatch.Lock()
		delete(syncWatch.synced, root)
		syncWatch.Unlock()
	})
	return func() map[string]bool {
		syncWatch.Lock()
		defer syncWatch.Unlock()
		return maps.Clone(syncWatch.synced[root])
	}
}
