package treetest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestSwapForLinkAndCopyFiles: a folder copied file by file (a link
// followed, a subfolder left out, modes kept), swapped for a link to the
// copy and back; a second swap onto the same aside keeps what it holds.
func TestSwapForLinkAndCopyFiles(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	src := filepath.Join(base, "src")
	for _, dir := range []string{src, filepath.Join(src, "sub")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	treetest.WriteFile(t, filepath.Join(src, "key"), []byte("k"), 0o600)
	treetest.WriteFile(t, filepath.Join(base, "elsewhere"), []byte("e"), 0o644)
	if err := os.Symlink(filepath.Join(base, "elsewhere"), filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	before := treetest.Snapshot(t, src)

	dst := filepath.Join(base, "copy")
	treetest.CopyFiles(t, src, dst)
	want := map[string]string{
		dst:                        "drwx------",
		filepath.Join(dst, "key"):  "-rw------- k",
		filepath.Join(dst, "link"): "-rw-r--r-- e",
	}
	got := treetest.Snapshot(t, dst)
	if len(got) != len(want) {
		t.Errorf("the copy holds %v, want %v", got, want)
	}
	for path, w := range want {
		if got[path] != w {
			t.Errorf("the copy's %s: %q, want %q", path, got[path], w)
		}
	}

	aside := filepath.Join(base, "held")
	undo := treetest.SwapForLink(t, src, dst, aside)
	if target, err := os.Readlink(src); err != nil || target != dst {
		t.Fatalf("after the swap %s links to %q (%v), want %s", src, target, err, dst)
	}
	treetest.Unchanged(t, "the folder held aside", renamed(before, src, aside), aside)
	undo()
	treetest.Unchanged(t, "the folder put back", before, src)

	// aside holds the folder already: only the link is made.
	if err := os.Rename(src, aside); err != nil {
		t.Fatal(err)
	}
	undo = treetest.SwapForLink(t, src, dst, aside)
	if target, err := os.Readlink(src); err != nil || target != dst {
		t.Fatalf("after the second swap %s links to %q (%v), want %s", src, target, err, dst)
	}
	undo()
	treetest.Unchanged(t, "the folder put back after the second swap", before, src)
}

// renamed is snapshot s of folder from as it reads under the name to.
func renamed(s map[string]string, from, to string) map[string]string {
	out := make(map[string]string, len(s))
	for path, v := range s {
		rel, _ := filepath.Rel(from, path)
		out[filepath.Join(to, rel)] = v
	}
	return out
}
