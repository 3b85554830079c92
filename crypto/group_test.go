package crypto

import (
	"errors"
	"strings"
	"testing"
)

// TestGroupRecord seals an envelope with the recipient group record and
// reads it back, in the order the records go (group, hold, seal record),
// and checks what Seal refuses.
func TestGroupRecord(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env, err := Seal(s.bundle, s.key, s.to, WithGroup(2, 3), WithHold(), WithRecipientsDigest(RecipientsDigest([]string{"age1x"})))
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, err := Open(env, s.trusted, s.ids)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if hdr.Group != (Group{Index: 2, Count: 3}) || !hdr.Hold || hdr.Record.IsZero() {
		t.Errorf("Open = group %+v, hold %v, record %+v; want group 2 of 3, held, with a seal record", hdr.Group, hdr.Hold, hdr.Record)
	}
	if got := hdr.Group.String(); got != "2/3" {
		t.Errorf("Group.String() = %q, want 2/3", got)
	}
	// Without the option: no record, the zero Group.
	if hdr, err := Verify(s.env, s.trusted); err != nil || !hdr.Group.IsZero() || hdr.Group.String() != "" {
		t.Errorf("Verify of an ungrouped envelope = %+v, %v; want the zero Group", hdr, err)
	}
	for _, tc := range []struct {
		name string
		opts []SealOption
		want string
	}{
		{"one group", []SealOption{WithGroup(0, 1)}, "group count 1 is not in 2..65535"},
		{"index at count", []SealOption{WithGroup(2, 2)}, "group index 2 is not below the group count 2"},
		{"negative index", []SealOption{WithGroup(-1, 2)}, "group index -1 is not below"},
		{"count over 16 bits", []SealOption{WithGroup(0, 1<<16)}, "group count 65536 is not in 2..65535"},
		{"format 1", []SealOption{withFormat(1), WithGroup(0, 2)}, "format 1 has no recipient group record"},
	} {
		_, err := Seal(s.bundle, s.key, s.to, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Seal = %v, want one line saying %q", tc.name, err, tc.want)
		}
	}
}

// TestGroupRecordRefused checks the parser's refusals of a group record,
// each at its field and offset, and that a format 1 reader's rule holds:
// in format 1 the record is an unknown critical one.
func TestGroupRecordRefused(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	pt := marshalPlaintext(s.bundle.Name, s.bundle.Version, s.bundle)
	// The extension area starts after magic, format, name, version, signer
	// and its own length.
	area := len(envelopeMagic) + 1 + 1 + len(s.bundle.Name) + 8 + 32 + 4
	for _, tc := range []struct {
		name   string
		format uint8
		value  []byte
		field  string
		offset int
	}{
		{"count 1", 2, []byte{0, 0, 0, 1}, "extension value", area + 6},
		{"count 0", 2, []byte{0, 0, 0, 0}, "extension value", area + 6},
		{"index at count", 2, []byte{0, 3, 0, 3}, "extension value", area + 6},
		{"3 bytes", 2, []byte{0, 0, 2}, "extension length", area + 2},
		{"5 bytes", 2, []byte{0, 0, 0, 2, 0}, "extension length", area + 2},
		{"format 1", 1, []byte{0, 0, 0, 2}, "extension type", area},
	} {
		env, err := seal(s.key, tc.format, s.bundle.Name, s.bundle.Version, []extension{{typ: extRecipientGroup, value: tc.value}}, pt, s.to)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify(env, s.trusted)
		var fe *FormatError
		if !errors.As(err, &fe) || !errors.Is(err, ErrMalformed) || fe.Field != tc.field || fe.Offset != tc.offset {
			t.Errorf("%s: Verify = %#v, want a FormatError at %s, offset %d", tc.name, err, tc.field, tc.offset)
		}
	}
}
