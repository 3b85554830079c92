package wire

import (
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestPrintable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"installing example.com: reload \"systemctl reload nginx\" failed: exit status 1 | nginx: [emerg] …", "installing example.com: reload \"systemctl reload nginx\" failed: exit status 1 | nginx: [emerg] …"},
		{"école ünïcode 証明書 ✓ \ufffd", "école ünïcode 証明書 ✓ \ufffd"},
		{"ok\nweb2  example.com  installed", `ok\x0aweb2  example.com  installed`},
		{"\x1b[1A\x1b[2K\rerased", `\x1b[1A\x1b[2K\x0derased`},
		{"\x1b]0;title\x07", `\x1b]0;title\x07`},
		{"tab\there\x7f", `tab\x09here\x7f`},
		{"\u0085 next line, \u009b CSI", `\u0085 next line, \u009b CSI`},
		{"abc\u202edcba", `abc\u202edcba`},
		{"zero\u200bwidth\ufeff", `zero\u200bwidth\ufeff`},
		{"line\u2028sep", `line\u2028sep`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"unassigned \U000e0001 tag", `unassigned \U000e0001 tag`},
	} {
		if got := Printable(tc.in); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzPrintable: whatever the text, what Printable returns is valid UTF-8
// of printable runes only, and printable text comes back as it was.
func FuzzPrintable(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2K\r", "a\u202eb", "\xff", "\U000e0001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Printable(s)
		if !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return !unicode.IsGraphic(r) }) {
			t.Fatalf("Printable(%q) = %q, which holds what a terminal does not print", s, got)
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) }) && got != s {
			t.Fatalf("Printable(%q) = %q, want it unchanged", s, got)
		}
		if Printable(got) != got {
			t.Fatalf("Printable(%q) = %q, not printable itself", s, got)
		}
	})
}

// TestStatusMakePrintable sets every text field of a record, found by
// reflection so that a field added later is not missed, to text a terminal
// acts on, and wants each one escaped.
func TestStatusMakePrintable(t *testing.T) {
	t.Parallel()
	var st Status
	v := reflect.ValueOf(&st).Elem()
	for i := range v.NumField() {
		if v.Field(i).Kind() == reflect.String {
			v.Field(i).SetString("\x1b[2K" + v.Type().Field(i).Name)
		}
	}
	st.MakePrintable()
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() == reflect.String && f.String() != `\x1b[2K`+v.Type().Field(i).Name {
			t.Errorf("Status.%s = %q after MakePrintable, want it escaped", v.Type().Field(i).Name, f.String())
		}
	}
}
