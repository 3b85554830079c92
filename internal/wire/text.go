package wire

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable is s as certsync shows text that came over NATS from someone
// else (a node's status record, a message's headers): every rune that a
// terminal acts on or hides instead of printing replaced by its Go escape
// (\x1b, \u202e). Those are the control characters (C0, DEL, C1: a line
// break, a carriage return, an escape sequence that moves the cursor,
// erases a line or sets the window title), the Unicode format characters
// (bidirectional overrides, zero-width marks), line and paragraph
// separators, unassigned code points and bytes that are not UTF-8. So a
// record cannot rewrite another line of `certsync status`, hide a failure
// or forge a row. Text certsync writes itself holds none of them and comes
// back unchanged.
func Printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !unprintable(r):
			b.WriteString(s[i : i+n])
		case r < utf8.RuneSelf:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r <= 0xffff:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			fmt.Fprintf(&b, `\U%08x`, r)
		}
		i += n
	}
	return b.String()
}

// unprintable tells the runes Printable escapes: all but letters, marks,
// numbers, punctuation, symbols and spaces (unicode.IsGraphic). A byte
// that is not UTF-8 decodes as utf8.RuneError, a symbol: Printable tells
// those bytes apart itself.
func unprintable(r rune) bool { return !unicode.IsGraphic(r) }

// MakePrintable makes every text field of s Printable: a record is
// written by its node, which certsync does not trust to write only what
// certsync would.
func (s *Status) MakePrintable() {
	for _, f := range []*string{
		&s.Node, &s.Certificate, &s.State,
		&s.StagedSerial, &s.StagedFingerprint, &s.InstalledSerial, &s.InstalledFingerprint,
		&s.Rollout, &s.FailedFingerprint, &s.Schedule, &s.Splay, &s.ExpiryDeadline,
		&s.Error, &s.ErrorKind, &s.Version,
	} {
		*f = Printable(*f)
	}
}
