// Package strictyaml reads a configuration file strictly: exactly one YAML
// document whose top level is a mapping, no anchors or aliases, no
// duplicate keys, no unknown keys, every value of the type the key wants.
// Every error is one line that starts with the line it is about:
//
//	line 7: certificates.example.com: unknown key "instal_dir" (did you mean "install_dir"?)
//
// It knows nothing of certsync's settings: the command line walks the
// mappings it expects with [Walk], reads each value with a typed getter
// ([String], [Int], [Duration], [Bool], [AbsPath], [List], [Scalar]) and
// hands the result to the library that validates it. A getter's error names
// the type it found, never a string's value, which may be a password; the
// getters of paths, durations and integers quote what they could not read.
//
//	root, err := strictyaml.Parse(data)
//	err = strictyaml.Walk(root, "", []string{"name", "timeout"}, func(key string, k, v *yaml.Node) error {
//		switch key {
//		case "timeout":
//			cfg.Timeout, err = strictyaml.Duration(v, key, 1)
//		}
//		return err
//	})
package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/internal/field"
)

// MaxDuration bounds every duration (a hundred years).
const MaxDuration = 100 * 365 * 24 * time.Hour

// Error is an error at a line of the document, about the key at Path
// (dotted, empty for the top level).
type Error struct {
	Line int
	Path string
	Err  error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: %s: %v", e.Line, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// At returns err as an Error at n's line about path.
func At(n *yaml.Node, path string, err error) error {
	return &Error{Line: n.Line, Path: path, Err: err}
}

// Errorf returns an Error at n's line about path.
func Errorf(n *yaml.Node, path, format string, args ...any) error {
	return At(n, path, fmt.Errorf(format, args...))
}

// Join appends key to a dotted key path, quoting a key that is not a plain
// name; it is [field.Join], so both kinds of error name a setting alike.
func Join(path, key string) string { return field.Join(path, key) }

// Parse parses data as exactly one YAML document whose top level is a
// mapping, refusing anchors and aliases anywhere, and returns that mapping.
func Parse(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, Errorf(&next, "", "a second YAML document: the configuration is one document")
	}
	if err := refuseAliases(&doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty configuration")
	}
	root := doc.Content[0]
	if IsNull(root) {
		return nil, errors.New("empty configuration")
	}
	if root.Kind != yaml.MappingNode {
		return nil, Errorf(root, "", "want a mapping of keys at the top level, got %s", Describe(root))
	}
	return root, nil
}

// syntaxError turns a YAML syntax error into one line starting with its line.
func syntaxError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return errors.New(msg)
}

// refuseAliases refuses anchors and aliases anywhere in n.
func refuseAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return Errorf(n, "", "anchors and aliases (& and *) are not supported; use defaults for shared settings")
	}
	for _, c := range n.Content {
		if err := refuseAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// IsNull reports whether n is an empty value (null, ~ or nothing).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// maxTagLen bounds how much of an unknown tag an error repeats.
const maxTagLen = 32

// Describe names n's type for an error message, never its value.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		case "!!timestamp":
			return "a timestamp"
		default:
			// The tag is the document's text: quoted, so that a line
			// break or a control character in it cannot break the one
			// line of the error, and cut short.
			if len(tag) > maxTagLen {
				tag = tag[:maxTagLen] + "…"
			}
			return fmt.Sprintf("a value tagged %q", tag)
		}
	}
	return "an unsupported YAML node"
}

// Walk calls fn for every key of the mapping n at path, in order, after
// refusing a non-mapping, a non-scalar or empty key, a duplicate key, and,
// when known is not nil, a key not in known (suggesting the closest known
// key). A null n is an empty mapping. fn's error stops the walk.
func Walk(n *yaml.Node, path string, known []string, fn func(key string, k, v *yaml.Node) error) error {
	if IsNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return Errorf(n, path, "want a mapping, got %s", Describe(n))
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || IsNull(k) || k.Value == "" {
			return Errorf(k, path, "want a name as key, got %s", Describe(k))
		}
		key := k.Value
		if known != nil && !slices.Contains(known, key) {
			if s := suggest(key, known); s != "" {
				return Errorf(k, path, "unknown key %q (did you mean %q?)", key, s)
			}
			return Errorf(k, path, "unknown key %q", key)
		}
		if first, ok := seen[key]; ok {
			return Errorf(k, path, "duplicate key %q (first on line %d)", key, first)
		}
		seen[key] = k.Line
		if err := fn(key, k, v); err != nil {
			return err
		}
	}
	return nil
}

// suggest returns the known key closest to key, if close enough to be a typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Scalar returns the text of the scalar v if its type is one of tags
// ("!!str", "!!int" …); want says what the key wants, for the error, which
// names the type found, never the value.
func Scalar(v *yaml.Node, path, want string, tags ...string) (string, error) {
	if v.Kind == yaml.ScalarNode && slices.Contains(tags, v.ShortTag()) {
		return v.Value, nil
	}
	hint := ""
	if v.Kind == yaml.ScalarNode && !IsNull(v) && len(tags) == 1 && tags[0] == "!!str" {
		hint = " (quote it)"
	}
	return "", Errorf(v, path, "want %s, got %s%s", want, Describe(v), hint)
}

// String returns the string v, which may not be blank nor hold a NUL byte.
func String(v *yaml.Node, path string) (string, error) {
	s, err := Scalar(v, path, "a string", "!!str")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(s) == "" {
		return "", Errorf(v, path, "empty; remove the key to leave it unset")
	}
	if strings.ContainsRune(s, 0) {
		return "", Errorf(v, path, "contains a NUL byte")
	}
	return s, nil
}

// AbsPath returns the absolute path v, cleaned. The root is refused.
func AbsPath(v *yaml.Node, path string) (string, error) {
	s, err := String(v, path)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(s) {
		return "", Errorf(v, path, "want an absolute path, got %q", s)
	}
	s = filepath.Clean(s)
	if s == "/" {
		return "", Errorf(v, path, "the root folder cannot be used")
	}
	return s, nil
}

// Int returns the integer v, which must lie in [lo, hi].
func Int(v *yaml.Node, path string, lo, hi int64) (int64, error) {
	if _, err := Scalar(v, path, "an integer", "!!int"); err != nil {
		return 0, err
	}
	// The raw value is quoted: an explicitly tagged `!!int "1\n2"` holds
	// any text. An integer out of range is printed as the number it is.
	var i int64
	if err := v.Decode(&i); err != nil {
		return 0, Errorf(v, path, "want an integer from %d to %d, got %q", lo, hi, v.Value)
	}
	if i < lo || i > hi {
		return 0, Errorf(v, path, "want an integer from %d to %d, got %d", lo, hi, i)
	}
	return i, nil
}

// Bool returns the boolean v (true or false; not yes, no, on or off).
func Bool(v *yaml.Node, path string) (bool, error) {
	if _, err := Scalar(v, path, "true or false", "!!bool"); err != nil {
		return false, err
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		return false, Errorf(v, path, "want true or false, got %q", v.Value)
	}
	return b, nil
}

// Duration returns the Go duration v ("90s", "5m", "168h"; a bare 0 too),
// at least lo (positive when lo is 1ns) and at most MaxDuration.
func Duration(v *yaml.Node, path string, lo time.Duration) (time.Duration, error) {
	s, err := Scalar(v, path, `a duration such as "30s", "5m" or "168h"`, "!!str", "!!int")
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, Errorf(v, path, `want a duration such as "30s", "5m" or "168h", got %q`, s)
	}
	if d > MaxDuration {
		return 0, Errorf(v, path, "duration %s is too long", s)
	}
	if d < lo {
		if lo > 0 {
			return 0, Errorf(v, path, "want a positive duration, got %s", s)
		}
		return 0, Errorf(v, path, "want a duration of 0s or more, got %s", s)
	}
	return d, nil
}

// List returns the items of the list v; null is an empty list.
func List(v *yaml.Node, path string) ([]*yaml.Node, error) {
	if IsNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, Errorf(v, path, "want a list, got %s", Describe(v))
	}
	return v.Content, nil
}
