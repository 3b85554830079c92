package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/crypto/hkdf"
)

// sameOpen fails unless the two results of opening one envelope, by the
// fast path and by age's, agree: both the same header and bundle, or both
// refused for the same documented reason (sentinel, and FormatError field).
func sameOpen(t testing.TB, what string, fh *Header, fb *Bundle, ferr error, ah *Header, ab *Bundle, aerr error) {
	t.Helper()
	if (ferr == nil) != (aerr == nil) {
		t.Fatalf("%s: the fast path gives %v, age's path %v", what, ferr, aerr)
	}
	if ferr != nil {
		for _, s := range []error{ErrMalformed, ErrBadSignature, ErrUntrustedSigner, ErrNotRecipient} {
			if errors.Is(ferr, s) != errors.Is(aerr, s) {
				t.Fatalf("%s: the fast path gives %v, age's path %v", what, ferr, aerr)
			}
		}
		var fe, ae *FormatError
		if errors.As(ferr, &fe) != errors.As(aerr, &ae) || fe != nil && (fe.Part != ae.Part || fe.Field != ae.Field) {
			t.Fatalf("%s: the fast path gives %v, age's path %v", what, ferr, aerr)
		}
		return
	}
	if !reflect.DeepEqual(fh, ah) || !reflect.DeepEqual(fb, ab) {
		t.Fatalf("%s: the fast path opens %+v, age's path %+v", what, fh, ah)
	}
}

// openBothWays opens env by the fast path (Open) and by age's, checks they
// agree, and returns Open's result.
func openBothWays(t testing.TB, what string, env []byte, trusted []PublicKey, ids []age.Identity) (*Header, *Bundle, error) {
	t.Helper()
	fh, fb, ferr := Open(env, trusted, ids)
	ah, ab, aerr := open(env, trusted, ids, false)
	sameOpen(t, what, fh, fb, ferr, ah, ab, aerr)
	return fh, fb, ferr
}

// TestOpenBothWaysVectors opens every vector by the fast path and by age's.
func TestOpenBothWaysVectors(t *testing.T) {
	t.Parallel()
	for file, v := range readVectors(t) {
		trusted, ids, err := v.keys()
		if err != nil {
			t.Fatal(err)
		}
		openBothWays(t, file, v.envelope, trusted, ids)
	}
}

// TestOpenBothWaysRandom opens fresh envelopes, X25519 and SSH recipients
// mixed, by the fast path and by age's: as each recipient, as all of them,
// and as a stranger with a recipient.
func TestOpenBothWaysRandom(t *testing.T) {
	t.Parallel()
	rs, texts, ids := mixedFleet(t, 15, true)
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	trusted := []PublicKey{key.Public()}
	_, strangerFile := x25519Pair(t)
	stranger := mustIdentities(t, strangerFile)
	for round := range 3 {
		env, err := Seal(b, key, rs, WithRecipientsDigest(RecipientsDigest(texts)))
		if err != nil {
			t.Fatal(err)
		}
		for i, id := range ids {
			if _, got, err := openBothWays(t, fmt.Sprintf("round %d, recipient %d", round, i+1), env, trusted, []age.Identity{id}); err != nil || !bytes.Equal(got.PrivKey, b.PrivKey) {
				t.Fatalf("round %d, recipient %d: Open = %v", round, i+1, err)
			}
		}
		if _, _, err := openBothWays(t, "every identity", env, trusted, ids); err != nil {
			t.Fatalf("every identity: Open = %v", err)
		}
		if _, _, err := openBothWays(t, "stranger then recipient", env, trusted, append(stranger, ids[len(ids)-1])); err != nil {
			t.Fatalf("stranger then recipient: Open = %v", err)
		}
		if _, _, err := openBothWays(t, "stranger", env, trusted, stranger); !errors.Is(err, ErrNotRecipient) {
			t.Fatalf("stranger: Open = %v, want ErrNotRecipient", err)
		}
	}
}

// TestOpenIndexedAllocs: with the stanza index, what Open allocates does
// not grow with the number of recipients, because it builds no stanza but
// the node's own (age's parser builds every one; allocations, unlike
// timings, are exact). The benchmarks measure the time. Not parallel:
// testing.AllocsPerRun refuses to run in a parallel test.
func TestOpenIndexedAllocs(t *testing.T) {
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	allocs := map[int]float64{}
	for _, n := range []int{1, 300} {
		var rs []age.Recipient
		var last []age.Identity
		for i := range n {
			rec, idFile := x25519Pair(t)
			rs = append(rs, mustRecipients(t, rec)...)
			if i == n-1 {
				last = mustIdentities(t, idFile)
			}
		}
		env, err := Seal(b, key, rs)
		if err != nil {
			t.Fatal(err)
		}
		allocs[n] = testing.AllocsPerRun(5, func() {
			if _, _, err := Open(env, []PublicKey{key.Public()}, last); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Logf("allocations of Open: %v", allocs)
	// Only the slice of stanza offsets grows (a few times, to 300).
	if extra := allocs[300] - allocs[1]; extra > 10 {
		t.Errorf("Open as the last of 300 recipients allocates %.0f times, of one %.0f: %.0f more, want at most 10", allocs[300], allocs[1], extra)
	}
}

// testHeaderMAC computes an age header MAC independently of ageHeaderMAC
// (x/crypto's HKDF, as age uses): what a publisher that knows the file key
// writes.
func testHeaderMAC(fileKey, header []byte) []byte {
	key := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, fileKey, nil, []byte("header")), key); err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, key)
	m.Write(header)
	return m.Sum(nil)
}

// ageFile is a sealed envelope taken apart to rewrite its age header.
type ageFile struct {
	key     *SigningKey
	env     *envelope
	header  []byte // the age header up to and including "---"
	payload []byte // what follows the closing line
	fileKey []byte // unwrapped by age itself (age.DecryptHeader)
}

// splitAgeFile takes env apart, signed by key, for id, one of its
// recipients.
func splitAgeFile(t testing.TB, env []byte, key *SigningKey, id age.Identity) *ageFile {
	t.Helper()
	e, err := parseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	ct := e.ciphertext
	footer := bytes.Index(ct, []byte("\n--- ")) + 1
	end := footer + bytes.IndexByte(ct[footer:], '\n') + 1
	fileKey, err := age.DecryptHeader(ct[:end], id)
	if err != nil {
		t.Fatal(err)
	}
	return &ageFile{key: key, env: e, header: ct[:footer+3], payload: ct[end:], fileKey: fileKey}
}

// build returns the envelope with the age header header (up to "---"), a
// closing line " "+mac+"\n" where mac is the header's MAC under the file
// key in base64, edited by footer if not nil, and the original payload,
// signed again.
func (f *ageFile) build(header []byte, footer func(mac string) string) []byte {
	mac := base64.RawStdEncoding.EncodeToString(testHeaderMAC(f.fileKey, header))
	closing := " " + mac + "\n"
	if footer != nil {
		closing = footer(mac)
	}
	e := *f.env
	e.ciphertext = append(append(bytes.Clone(header), closing...), f.payload...)
	return e.marshalSigned(f.key)
}

// headerLines is an age header (up to "---") cut into its lines, each
// without its newline.
func headerLines(header []byte) []string { return strings.Split(string(header), "\n") }

// joinLines is headerLines undone.
func joinLines(lines []string) []byte { return []byte(strings.Join(lines, "\n")) }

// nonCanonical sets an unused low bit of the last character of a base64
// text whose last character carries 2 or 4 unused bits: another text
// that a lenient decoder reads as the same bytes.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i^1])
}

// threeRecipients seals a fresh bundle with the stanza index to two other
// X25519 recipients and, last, the returned identity's.
func threeRecipients(t testing.TB) (*ageFile, []PublicKey, []age.Identity) {
	t.Helper()
	var rs []age.Recipient
	var ids []age.Identity
	for range 3 {
		rec, idFile := x25519Pair(t)
		rs, ids = append(rs, mustRecipients(t, rec)...), mustIdentities(t, idFile)
	}
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	env, err := Seal(b, key, rs)
	if err != nil {
		t.Fatal(err)
	}
	return splitAgeFile(t, env, key, ids[0]), []PublicKey{key.Public()}, ids
}

// ageHeaderEdit is one rewrite of an age header of three X25519 stanzas,
// lines [intro, open 1, body 1, open 2, body 2, open 3, body 3, "---"], the
// third the identity's; the MAC is computed again under the file key, so
// the rewrite alone decides whether age accepts the header.
type ageHeaderEdit struct {
	name   string
	lines  func(l []string) []string
	footer func(mac string) string
	ok     bool // whether age's parser accepts the header
}

var ageHeaderEdits = []ageHeaderEdit{
	{name: "unchanged", lines: func(l []string) []string { return l }, ok: true},
	{name: "another stanza of 129 fields, empty body", ok: true, lines: func(l []string) []string {
		l[1], l[2] = "-> grease"+strings.Repeat(" a", 128), ""
		return l
	}},
	{name: "another stanza of 48 body bytes: a full line, then an empty one", ok: true, lines: func(l []string) []string {
		l[1], l[2] = "-> grease", base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 48))+"\n"
		return l
	}},
	{name: "another stanza of 100 body bytes", ok: true, lines: func(l []string) []string {
		s := base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 100))
		l[1], l[2] = "-> grease x", s[:64]+"\n"+s[64:128]+"\n"+s[128:]
		return l
	}},
	{name: "the identity's body not canonical base64", lines: func(l []string) []string {
		l[6] = nonCanonical(l[6])
		return l
	}},
	{name: "another body not canonical base64", lines: func(l []string) []string {
		l[2] = nonCanonical(l[2])
		return l
	}},
	{name: "another argument not canonical base64 (age's parser does not decode it)", ok: true, lines: func(l []string) []string {
		l[1] = nonCanonical(l[1])
		return l
	}},
	{name: "another stanza of 130 fields", lines: func(l []string) []string {
		l[1], l[2] = "-> grease"+strings.Repeat(" a", 129), ""
		return l
	}},
	{name: "two spaces between fields", lines: func(l []string) []string {
		l[3] = strings.Replace(l[3], " ", "  ", 2)
		return l
	}},
	{name: "a space at the end of an opening line", lines: func(l []string) []string {
		l[3] += " "
		return l
	}},
	{name: "a tab in an opening line", lines: func(l []string) []string {
		l[3] = strings.Replace(l[3], "X25519 ", "X25519\t", 1)
		return l
	}},
	{name: "a byte above 126 in an opening line", lines: func(l []string) []string {
		l[3] += "\xc3\xa9"
		return l
	}},
	{name: "no space after the arrow", lines: func(l []string) []string {
		l[3] = "->" + l[3][3:]
		return l
	}},
	{name: "an arrow alone", lines: func(l []string) []string {
		l[3] = "->"
		return l
	}},
	{name: "a CR ending a body line", lines: func(l []string) []string {
		l[4] += "\r"
		return l
	}},
	{name: "a body of 48 bytes without its short line", lines: func(l []string) []string {
		l[1], l[2] = "-> grease", base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 48))
		return l
	}},
	{name: "a body line of 65 characters", lines: func(l []string) []string {
		l[1], l[2] = "-> grease", base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 48))+"A"
		return l
	}},
	{name: "a body wrapped before 64 columns", lines: func(l []string) []string {
		l[4] = l[4][:20] + "\n" + l[4][20:]
		return l
	}},
	{name: "a body line of one character", lines: func(l []string) []string {
		l[2] = "A"
		return l
	}},
	{name: "no stanza", lines: func(l []string) []string { return []string{l[0], l[7]} }},
	{name: "1,025 stanzas", lines: func(l []string) []string {
		return append(append([]string{l[0]}, strings.Split(strings.Repeat("-> a\n\n", 1025), "\n")[:2050]...), l[7])
	}},
	{name: "another intro", lines: func(l []string) []string {
		l[0] = "age-encryption.org/v2"
		return l
	}},
	{name: "an intro with a CR", lines: func(l []string) []string {
		l[0] += "\r"
		return l
	}},
	{name: "the MAC not canonical base64", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + nonCanonical(mac) + "\n" }},
	{name: "the MAC altered", lines: func(l []string) []string { return l }, footer: func(mac string) string {
		if mac[0] == 'A' {
			return " B" + mac[1:] + "\n"
		}
		return " A" + mac[1:] + "\n"
	}},
	{name: "the MAC padded", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + mac + "=\n" }},
	{name: "the MAC followed by a field", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + mac + " x\n" }},
	{name: "two spaces before the MAC", lines: func(l []string) []string { return l }, footer: func(mac string) string { return "  " + mac + "\n" }},
	{name: "the closing line without a newline", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + mac }},
	{name: "the closing line ending in CRLF", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + mac + "\r\n" }},
	{name: "a truncated MAC", lines: func(l []string) []string { return l }, footer: func(mac string) string { return " " + mac[:42] + "\n" }},
	{name: "no closing line", lines: func(l []string) []string { return l[:7] }, footer: func(string) string { return "" }},
}

// TestAgeHeaderRules rewrites the age header of a three-recipient envelope
// (MAC computed again, envelope signed again) and checks that the fast
// path and age's path both open it, or both refuse it as malformed, never
// as not a recipient.
func TestAgeHeaderRules(t *testing.T) {
	t.Parallel()
	f, trusted, ids := threeRecipients(t)
	if n := len(headerLines(f.header)); n != 8 {
		t.Fatalf("age header of %d lines, want 8", n)
	}
	for _, tc := range ageHeaderEdits {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := f.build(joinLines(tc.lines(headerLines(f.header))), tc.footer)
			_, _, err := openBothWays(t, tc.name, env, trusted, ids)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("Open = %v, want success", err)
			case !tc.ok && !errors.Is(err, ErrMalformed):
				t.Fatalf("Open = %v, want ErrMalformed", err)
			}
			var fe *FormatError
			if !tc.ok && (!errors.As(err, &fe) || fe.Field != "ciphertext") {
				t.Errorf("Open = %v, want a ciphertext FormatError", err)
			}
		})
	}
}

// TestAgeHeaderStanzaParse: the stanza the fast path builds is the one age's
// parser hands an identity, for each stanza of a mixed header.
func TestAgeHeaderStanzaParse(t *testing.T) {
	t.Parallel()
	f, _, _ := threeRecipients(t)
	l := headerLines(f.header)
	s := base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 100))
	l[1], l[2] = "-> grease x y", s[:64]+"\n"+s[64:128]+"\n"+s[128:]
	l[3], l[4] = "-> empty", ""
	header := joinLines(l)
	ct := append(append(bytes.Clone(header), " "+base64.RawStdEncoding.EncodeToString(testHeaderMAC(f.fileKey, header))+"\n"...), f.payload...)
	var seen []*age.Stanza
	if _, err := age.Decrypt(bytes.NewReader(ct), identityFunc(func(ss []*age.Stanza) ([]byte, error) {
		seen = ss
		return nil, age.ErrIncorrectIdentity
	})); err == nil {
		t.Fatal("age.Decrypt succeeded with an identity that opens nothing")
	}
	h, err := scanAgeHeader(ct)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.stanzas) != len(seen) {
		t.Fatalf("scanAgeHeader found %d stanzas, age %d", len(h.stanzas), len(seen))
	}
	for k := range seen {
		if got, want := h.stanza(ct, k), seen[k]; !reflect.DeepEqual(got, want) {
			t.Errorf("stanza %d: parsed %+v, age %+v", k, got, want)
		}
	}
	if h.payload != len(ct)-len(f.payload) || h.macEnd != len(header) {
		t.Errorf("scanAgeHeader: payload at %d, MAC over %d bytes; want %d and %d", h.payload, h.macEnd, len(ct)-len(f.payload), len(header))
	}
}

// identityFunc is an age.Identity of a function.
type identityFunc func([]*age.Stanza) ([]byte, error)

func (f identityFunc) Unwrap(ss []*age.Stanza) ([]byte, error) { return f(ss) }

// FuzzAgeHeader rewrites the age header of a three-recipient envelope with
// the fuzzer's bytes (the MAC computed again under the file key, the
// envelope signed again), so that the fuzzer explores age's header rules
// behind the signature and the MAC: the fast path and age's path must give
// the same result.
func FuzzAgeHeader(f *testing.F) {
	file, trusted, ids := threeRecipients(f)
	for _, tc := range ageHeaderEdits {
		f.Add(joinLines(tc.lines(headerLines(file.header))))
	}
	f.Fuzz(func(t *testing.T, header []byte) {
		if len(header) > 64<<10 {
			return
		}
		openBothWays(t, "fuzzed header", file.build(header, nil), trusted, ids)
	})
}

// ageHeaderVectors returns the vectors of an age header that Open's fast
// path checks itself: sealed with Seal (the stanza index) to two other
// X25519 recipients and, last, the identity, then the age header rewritten
// and the envelope signed again. Made after every other vector, so that
// those draw the same randomness as before.
func ageHeaderVectors(t *testing.T, signer *SigningKey, id *age.X25519Identity, current *Bundle, others func() []age.Recipient) map[string]*vector {
	trusted := []string{signer.Public().String()}
	rewrite := func(edit ageHeaderEdit, comment ...string) *vector {
		env, err := Seal(current, signer, append(others(), id.Recipient()))
		if err != nil {
			t.Fatal(err)
		}
		f := splitAgeFile(t, env, signer, id)
		return &vector{comment: comment, expect: expectBadAgeHeader, format: 2, trusted: trusted, identity: []string{id.String()},
			name: current.Name, version: current.Version, envelope: f.build(joinLines(edit.lines(headerLines(f.header))), edit.footer)}
	}
	edit := func(name string) ageHeaderEdit {
		for _, e := range ageHeaderEdits {
			if e.name == name {
				return e
			}
		}
		t.Fatalf("no age header edit %q", name)
		return ageHeaderEdit{}
	}
	return map[string]*vector{
		"bad_age_header_mac.txt": rewrite(edit("the MAC altered"),
			"A format 2 envelope with the stanza index (version N, as downgrade_1_newer.txt's bundle), sealed to three X25519",
			"recipients (the identity last), signed after its age header MAC was altered (still 43 characters of canonical",
			"base64): the identity unwraps its stanza, but the MAC does not verify under the file key, so Open refuses the",
			"envelope as malformed (field ciphertext), never as not a recipient."),
		"bad_age_header_stanza_encoding.txt": rewrite(edit("the identity's body not canonical base64"),
			"As bad_age_header_mac.txt, but the header's only fault is the encoding of the identity's own stanza: its body's",
			"last base64 character has an unused low bit set, which a lenient decoder reads as the same bytes. The header",
			"MAC is computed again over these bytes under the file key, so it verifies: Open refuses the header as malformed",
			"because age's format allows one encoding only."),
		"bad_age_header_other_stanza_encoding.txt": rewrite(edit("another body not canonical base64"),
			"As bad_age_header_stanza_encoding.txt, with the first stanza's body (another recipient's) so encoded: Open",
			"refuses the header as malformed although the identity's own stanza is valid, as age's parser does, which",
			"reads every stanza."),
	}
}
