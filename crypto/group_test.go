package crypto

import (
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
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

// groupVectors returns the vectors of the recipient group record (format
// 2, version V+5000), drawn after every other vector so that those stay
// byte for byte what they were. signer, id, ca, n and others are
// writeVectors'.
func groupVectors(t *testing.T, signer *SigningKey, id *age.X25519Identity, ca *testCA, n time.Time, others func() []age.Recipient) map[string]*vector {
	trusted := []string{signer.Public().String()}
	ids := []string{id.String()}
	version := uint64(n.AddDate(0, 1, 0).UnixMilli()) + 123 + 5_000
	b := vectorBundle(t, ca, n, n, 4001, version)
	info, err := b.Check(vectorNow)
	if err != nil {
		t.Fatal(err)
	}
	three := append(others(), id.Recipient()) // the identity last
	var texts []string
	for _, r := range three {
		text, _ := canonicalRecipient(r)
		texts = append(texts, text)
	}
	digest := RecipientsDigest(texts)
	grouped, err := Seal(b, signer, three, WithRecipientsDigest(digest), WithGroup(1, 3))
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := parseEnvelope(grouped)
	if err != nil {
		t.Fatal(err)
	}
	_, groupOff := parsed.extension(extRecipientGroup)
	_, indexOff := parsed.extension(extStanzaIndex)
	flip := func(i int) []byte {
		e := slices.Clone(grouped)
		e[i] ^= 0x01
		return e
	}
	failure := func(expect, field string, env []byte, comment ...string) *vector {
		return &vector{comment: comment, expect: expect, field: field, trusted: trusted, identity: ids, envelope: env}
	}
	// malformed seals b to three with exactly the records exts, past
	// Seal's checks.
	malformed := func(field string, exts []extension, comment ...string) *vector {
		env, err := seal(signer, 2, b.Name, b.Version, exts, marshalPlaintext(b.Name, b.Version, b), three)
		if err != nil {
			t.Fatal(err)
		}
		return failure(expectMalformed, field, env, comment...)
	}
	record := func(k, count uint16) extension {
		return extension{typ: extRecipientGroup, value: binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, k), count)}
	}
	return map[string]*vector{
		"success_group.txt": {comment: []string{
			"A valid format 2 envelope of recipient group 1 of 3 (record 0x0001, critical: the group index 1 and the count 3,",
			"16 bits each), sealed to three X25519 recipients (the identity last) with the seal record and the stanza index,",
			"version V+5000: Verify returns the group. Crypto accepts it; a node accepts it only from the subject",
			"certsync.group.1.example.com, and refuses it from certsync.bundle.example.com or another group's subject (as",
			"from the wrong subject). That a node is in one group only cannot be seen in one envelope: the publisher checks it.",
		}, expect: expectSuccess, format: 2, trusted: trusted, identity: ids, name: b.Name, version: b.Version,
			fingerprint: info.Fingerprint.String(), record: SealRecord{Fingerprint: info.Fingerprint, Recipients: digest},
			group: Group{Index: 1, Count: 3}, sums: fileSums(b), envelope: grouped},
		"bad_signature_group.txt": failure(expectBadSignature, "", flip(groupOff+1),
			"success_group.txt with its group index changed from 1 to 0: the record is signed, so a body cannot be made to",
			"match another group's subject."),
		"bad_signature_group_index.txt": failure(expectBadSignature, "", flip(indexOff+indexSaltSize),
			"success_group.txt with a bit of the stanza index's first entry flipped: the index is signed like every other byte."),
		"malformed_group_count_1.txt": malformed("extension value", []extension{record(0, 1)},
			"A recipient group record of group 0 of 1: one group is written as no record, so a count is at least 2."),
		"malformed_group_count_0.txt": malformed("extension value", []extension{record(0, 0)},
			"A recipient group record with the count 0."),
		"malformed_group_index.txt": malformed("extension value", []extension{record(3, 3)},
			"A recipient group record of group 3 of 3: the group index is below the count."),
		"malformed_group_length.txt": malformed("extension length", []extension{{typ: extRecipientGroup, value: []byte{0, 1, 0, 3, 0}}},
			"A recipient group record of 5 bytes: its value is exactly 4."),
		"malformed_group_repeated.txt": malformed("extension type", []extension{record(0, 2), record(1, 2)},
			"Two recipient group records (0 of 2, then 1 of 2): each record's type is above the previous one's, so a type",
			"appears once and an envelope is of one group."),
		"malformed_group_unknown_critical.txt": malformed("extension type", []extension{record(1, 3), {typ: 0x0007, value: []byte{}}},
			"A valid recipient group record followed by record 0x0007, critical and not defined in format 2: refused."),
	}
}

// TestParseGroup: the Certsync-Group header reads back as the group String
// wrote; anything a record could not hold, or another spelling, is no
// group.
func TestParseGroup(t *testing.T) {
	t.Parallel()
	for _, g := range []Group{{0, 2}, {1, 2}, {44, 45}, {0, 65535}} {
		if got, ok := ParseGroup(g.String()); !ok || got != g {
			t.Errorf("ParseGroup(%q) = %v, %v; want %v", g.String(), got, ok, g)
		}
	}
	for _, s := range []string{"", "3", "0/1", "2/2", "-1/3", "0/65536", "01/3", "+1/3", "1/03", " 1/3", "1/3/4", "a/b"} {
		if g, ok := ParseGroup(s); ok {
			t.Errorf("ParseGroup(%q) = %v, want no group", s, g)
		}
	}
}

// FuzzParseGroup: whatever the header, ParseGroup never panics, and a group
// it returns is one a record holds, written back as the same text.
func FuzzParseGroup(f *testing.F) {
	for _, s := range []string{"0/2", "44/45", "0/1", "-1/3", "1/3/4", "99999999999999999999/2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, ok := ParseGroup(s)
		if ok && (g.check() != "" || g.String() != s) {
			t.Fatalf("ParseGroup(%q) = %v", s, g)
		}
		if !ok && !g.IsZero() {
			t.Fatalf("ParseGroup(%q) = %v and false", s, g)
		}
	})
}
