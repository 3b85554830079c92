package field

import (
	"errors"
	"io"
	"testing"
)

func TestError(t *testing.T) {
	t.Parallel()
	p := Item(Join(Join("", "certificates"), "example.com"), 1)
	err := Errorf(p, "unknown node %q", "web9")
	if got, want := err.Error(), `certificates.example.com[1]: unknown node "web9"`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var fe *Error
	if !errors.As(Wrap("nodes", io.EOF), &fe) || fe.Path != "nodes" || !errors.Is(fe, io.EOF) {
		t.Errorf("Wrap: %v", fe)
	}
	if Wrap("x", nil) != nil || (&Error{Err: io.EOF}).Error() != "EOF" {
		t.Error("Wrap of nil, or an Error without a path")
	}
}

func TestJoinQuotesWhatIsNotAName(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"example.com": "certificates.example.com",
		"a b":         `certificates."a b"`,
		"b:([\n\n2":   `certificates."b:([\n\n2"`,
		"":            `certificates.""`,
		`x"y`:         `certificates."x\"y"`,
	} {
		if got := Join("certificates", key); got != want {
			t.Errorf("Join(%q) = %q, want %q", key, got, want)
		}
	}
}
