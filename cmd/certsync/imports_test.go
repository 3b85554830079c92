package main

import (
	"os/exec"
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
