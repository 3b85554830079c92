package wire

import (
	"fmt"
	"regexp"
	"strings"
)

// Limits on names, from the contract.
const (
	MaxCertNameLen = 253
	MaxNodeNameLen = 64
)

// A nameRule is what one kind of name must be: not empty, at most max
// bytes, and matching re, which allowed says in words. An error quotes at
// most shown bytes of a name too long.
type nameRule struct {
	kind    string
	max     int
	shown   int
	re      *regexp.Regexp
	allowed string
}

var (
	certName = nameRule{kind: "certificate", max: MaxCertNameLen, shown: 32,
		re: regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`), allowed: "letters, digits, '.', '_' or '-'"}
	nodeName = nameRule{kind: "node", max: MaxNodeNameLen, shown: 16,
		re: regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`), allowed: "letters, digits, '_' or '-'"}
)

// check reports why name breaks the rule, or nil.
func (r nameRule) check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid %s name %q: empty", r.kind, name)
	case len(name) > r.max:
		return fmt.Errorf("invalid %s name %q: longer than %d bytes", r.kind, name[:r.shown]+"…", r.max)
	case !r.re.MatchString(name):
		return fmt.Errorf("invalid %s name %q: want %s, starting with a letter or digit", r.kind, name, r.allowed)
	}
	return nil
}

// CheckCertName reports why name is not a valid certificate name, or nil.
// A valid name is safe as a path element and as subject tokens.
func CheckCertName(name string) error {
	if err := certName.check(name); err != nil {
		return err
	}
	switch {
	case strings.Contains(name, ".."):
		return fmt.Errorf("invalid certificate name %q: contains \"..\"", name)
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("invalid certificate name %q: ends with '.'", name)
	}
	return nil
}

// CheckNodeName reports why name is not a valid node name, or nil.
func CheckNodeName(name string) error { return nodeName.check(name) }
