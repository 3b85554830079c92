package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportRules: imports point one way. cmd -> publisher, subscriber ->
// crypto, internal; publisher and subscriber never import each other;
// crypto knows no NATS; internal packages never import the packages above
// them; nothing imports cmd; and no shipped package imports a test rig
// (internal/testing/...), which only _test.go files may use.
func TestImportRules(t *testing.T) {
	t.Parallel()
	const mod = "github.com/certsync/certsync/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{join .Imports " "}}`, mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := func(pkg string) []string {
		p := strings.TrimPrefix(pkg, mod)
		rules := []string{mod + "cmd/", mod + "internal/testing/"}
		switch {
		case strings.HasPrefix(p, "internal/testing/"):
			return []string{mod + "cmd/"}
		case p == "crypto" || strings.HasPrefix(p, "crypto/"):
			rules = append(rules, mod+"publisher", mod+"subscriber", mod+"internal/wire", "github.com/nats-io/")
		case p == "publisher":
			rules = append(rules, mod+"subscriber")
		case p == "subscriber":
			rules = append(rules, mod+"publisher")
		case strings.HasPrefix(p, "internal/"):
			rules = append(rules, mod+"publisher", mod+"subscriber")
		}
		return rules
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, "|")
		seen++
		for _, imp := range strings.Fields(imports) {
			for _, bad := range forbidden(pkg) {
				if imp == strings.TrimSuffix(bad, "/") || strings.HasPrefix(imp, bad) {
					t.Errorf("%s imports %s", strings.TrimPrefix(pkg, mod), imp)
				}
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found %d packages:\n%s", seen, out)
	}
}

// maxSourceLines is the most lines a non-test Go file may have (issue 9,
// "One place for each rule"): a file that grows past it holds more than one
// job, and is split by job.
const maxSourceLines = 500

// TestSourceFileSize: no non-test Go file the repository ships is above
// maxSourceLines lines (counted as wc -l does). It walks the module's
// folders, not go list's packages, so that a file no build includes (a
// build tag, an ignored tool) counts too. _test.go files and testdata
// folders do not count; the rigs under internal/testing do: they are only
// for tests, but their non-test files are code like any other.
func TestSourceFileSize(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/certsync/certsync").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -m: %v\n%s", err, out)
	}
	root := strings.TrimSpace(string(out))
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (name == "testdata" || name == ".git") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		seen++
		lines := bytes.Count(data, []byte("\n"))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			lines++
		}
		if lines > maxSourceLines {
			rel, _ := filepath.Rel(root, path)
			t.Errorf("%s: %d lines, above %d: split it by job", filepath.ToSlash(rel), lines, maxSourceLines)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if seen < 50 {
		t.Fatalf("found %d non-test Go files under %s", seen, root)
	}
}
