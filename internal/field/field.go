// Package field is the error of a configuration setting, shared by the
// libraries that validate their configuration (subscriber.Config,
// publisher.Config) and the command line that reads it from YAML.
//
// A library names the setting at fault by its path in the configuration
// file's terms ("certificates.example.com.keep", "nodes.web2", a list item
// "certificates.example.com[1]"), so a caller that read the setting from a
// file can say on which line it was written. The libraries export the type
// under their own names (subscriber.FieldError, publisher.FieldError).
//
//	cfg.Validate() // "certificates.example.com.keep: want an integer from 1 to 50, got 51"
package field

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Error is a refused setting: Path names it, Err says why. Err never holds
// a secret (a password, a private key).
type Error struct {
	// Path is the dotted path of the setting, a list item followed by its
	// index in brackets; empty for the configuration as a whole.
	Path string
	// Err says what is wrong.
	Err error
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return e.Path + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an Error at path whose Err is fmt.Errorf(format, args...).
func Errorf(path, format string, args ...any) error {
	return &Error{Path: path, Err: fmt.Errorf(format, args...)}
}

// Wrap returns err as an Error at path, or nil when err is nil.
func Wrap(path string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Path: path, Err: err}
}

// Join appends key to the dotted path. A key that is not a plain name (one
// with a space, a quote, a control character, or empty) is quoted, so that a
// key taken from a file cannot break an error's line or pass for another.
func Join(path, key string) string {
	if key == "" || strings.ContainsFunc(key, notPlain) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func notPlain(r rune) bool {
	return !unicode.IsGraphic(r) || unicode.IsSpace(r) || r == '"' || r == '\\'
}

// Item is the path of item i of the list at path.
func Item(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }
