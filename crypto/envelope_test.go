package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/certsync/certsync/internal/testing/testkeys"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind string
		pair func(testing.TB) (string, []byte)
	}{
		{"x25519", x25519Pair},
		{"ssh-ed25519", sshEd25519Pair},
		{"ssh-rsa", sshRSAPair},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
			key := mustSigningKey(t)
			other, _ := x25519Pair(t)
			rec, idFile := tc.pair(t)
			env, err := Seal(b, key, mustRecipients(t, other, rec))
			if err != nil {
				t.Fatal(err)
			}
			hdr, got, err := Open(env, []PublicKey{key.Public()}, mustIdentities(t, idFile))
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Name != b.Name || hdr.Version != b.Version || hdr.Signer != key.Public() || hdr.Format != Format {
				t.Errorf("header = %+v, want name %q version %d", hdr, b.Name, b.Version)
			}
			if got.Name != b.Name || got.Version != b.Version || !bytes.Equal(got.Cert, b.Cert) || !bytes.Equal(got.Chain, b.Chain) ||
				!bytes.Equal(got.FullChain, b.FullChain) || !bytes.Equal(got.PrivKey, b.PrivKey) {
				t.Errorf("opened bundle differs from the sealed one")
			}
			if _, err := got.Check(time.Now()); err != nil {
				t.Errorf("opened bundle: %v", err)
			}
		})
	}
}

// sealed is one envelope with what it takes to open it.
type sealed struct {
	bundle  *Bundle
	key     *SigningKey
	to      []age.Recipient
	ids     []age.Identity
	trusted []PublicKey
	env     []byte
}

// newSealed seals a fresh bundle to one fresh X25519 recipient.
func newSealed(t testing.TB) *sealed {
	t.Helper()
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	rec, idFile := x25519Pair(t)
	to := mustRecipients(t, rec)
	env, err := Seal(b, key, to)
	if err != nil {
		t.Fatal(err)
	}
	return &sealed{bundle: b, key: key, to: to, ids: mustIdentities(t, idFile), trusted: []PublicKey{key.Public()}, env: env}
}

// sealRaw seals plaintext pt with extensions exts under s's bundle name and
// version, by s's key to s's recipient, past Seal's checks: for envelopes
// whose inside Seal would never write.
func (s *sealed) sealRaw(t testing.TB, exts []extension, pt []byte) []byte {
	t.Helper()
	env, err := seal(s.key, Format, s.bundle.Name, s.bundle.Version, exts, pt, s.to)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestVerifyDoesNotDecrypt(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	hdr, err := Verify(s.env, s.trusted)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Name != s.bundle.Name || hdr.Version != s.bundle.Version || hdr.Signer != s.key.Public() {
		t.Errorf("Verify = %+v, want %q version %d", hdr, s.bundle.Name, s.bundle.Version)
	}
	// Opening with no identity is refused after verification.
	if _, _, err := Open(s.env, s.trusted, nil); err == nil {
		t.Error("Open with no identities succeeded")
	}
}

func TestOpenRefusesSigner(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	other := mustSigningKey(t).Public()
	for _, tc := range []struct {
		name    string
		trusted []PublicKey
	}{
		{"none trusted", nil},
		{"other key trusted", []PublicKey{other}},
		{"zero key trusted", []PublicKey{{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Verify(s.env, tc.trusted); !errors.Is(err, ErrUntrustedSigner) {
				t.Errorf("Verify = %v, want ErrUntrustedSigner", err)
			}
			if _, _, err := Open(s.env, tc.trusted, s.ids); !errors.Is(err, ErrUntrustedSigner) {
				t.Errorf("Open = %v, want ErrUntrustedSigner", err)
			}
		})
	}
	// Rotation: one of several trusted keys is enough.
	if _, _, err := Open(s.env, []PublicKey{other, s.key.Public()}, s.ids); err != nil {
		t.Errorf("Open with the signer second of two trusted keys: %v", err)
	}
}

func TestOpenRefusesBadSignature(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	// An attacker signs with their own key but names a trusted signer.
	attacker := mustSigningKey(t)
	env, err := parseEnvelope(s.env)
	if err != nil {
		t.Fatal(err)
	}
	env.marshalSigned(attacker)
	forged := env.marshal() // signed by attacker
	trusted := s.key.Public()
	copy(forged[signerOffset(env):], trusted.key[:])
	if _, _, err := Open(forged, s.trusted, s.ids); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Open(forged) = %v, want ErrBadSignature", err)
	}
	// The same signature under another domain does not verify either.
	msg := append([]byte("other context\x00"), s.env[:len(s.env)-signatureSize]...)
	other := slices.Clone(s.env)
	copy(other[len(other)-signatureSize:], s.key.sign(msg))
	if _, err := Verify(other, s.trusted); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(other domain) = %v, want ErrBadSignature", err)
	}
}

// signerOffset returns the offset of the signer field.
func signerOffset(e *envelope) int {
	return len(envelopeMagic) + 1 + 1 + len(e.name) + 8
}

func TestOpenRefusesEveryFlippedByte(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env, err := parseEnvelope(s.env)
	if err != nil {
		t.Fatal(err)
	}
	signer := signerOffset(env)
	ct := env.ciphertextOffset()
	sig := len(s.env) - signatureSize
	for i := range s.env {
		var want []error
		switch {
		case i < signer-8: // magic, format, name length, name
			want = []error{ErrMalformed, ErrBadSignature}
		case i < signer: // version
			want = []error{ErrMalformed, ErrBadSignature}
		case i < signer+32:
			want = []error{ErrUntrustedSigner}
		case i < signer+36: // extensions length
			want = []error{ErrMalformed}
		case i < ct-4: // the records (the stanza index): framing or signed bytes
			want = []error{ErrMalformed, ErrBadSignature}
		case i < ct: // ciphertext length
			want = []error{ErrMalformed}
		case i < sig:
			want = []error{ErrMalformed, ErrBadSignature}
		default:
			want = []error{ErrBadSignature}
		}
		for _, bit := range []byte{0x01, 0x80} {
			mod := slices.Clone(s.env)
			mod[i] ^= bit
			_, _, err := Open(mod, s.trusted, s.ids)
			if !isOneOf(err, want) {
				t.Fatalf("byte %d ^ %#x: Open = %v, want one of %v", i, bit, err, want)
			}
		}
	}
}

func isOneOf(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func TestOpenRefusesTruncated(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	for n := range len(s.env) {
		_, _, err := Open(s.env[:n], s.trusted, s.ids)
		var fe *FormatError
		if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) {
			t.Fatalf("truncated to %d of %d bytes: Open = %v, want a FormatError", n, len(s.env), err)
		}
	}
}

func TestOpenRefusesTrailingBytes(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	for _, extra := range [][]byte{{0}, []byte("\n"), s.env} {
		_, _, err := Open(append(slices.Clone(s.env), extra...), s.trusted, s.ids)
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(fe.Reason, "trailing") {
			t.Errorf("%d trailing bytes: Open = %v, want a trailing-bytes FormatError", len(extra), err)
		}
	}
}

func TestOpenRefusesOversize(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	big := append(slices.Clone(s.env), make([]byte, MaxEnvelopeSize)...)
	if _, err := Verify(big, s.trusted); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("Verify(%d bytes) = %v, want a size error", len(big), err)
	}
}

func TestOpenRefusesWrongIdentity(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	_, x25519File := x25519Pair(t)
	_, edFile := sshEd25519Pair(t)
	_, rsaFile := sshRSAPair(t)
	ids := slices.Concat(mustIdentities(t, x25519File), mustIdentities(t, edFile), mustIdentities(t, rsaFile))
	if _, _, err := Open(s.env, s.trusted, ids); !errors.Is(err, ErrNotRecipient) {
		t.Errorf("Open = %v, want ErrNotRecipient", err)
	}
}

func TestOpenRefusesPlaintextMismatch(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	b := s.bundle
	for _, tc := range []struct {
		name      string
		plainName string
		plainVer  uint64
		field     string
	}{
		{"other name", "other.example.com", b.Version, "name"},
		{"lower version", b.Name, b.Version - 1, "version"},
		{"higher version", b.Name, b.Version + 1, "version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := s.sealRaw(t, nil, marshalPlaintext(tc.plainName, tc.plainVer, b))
			if _, err := Verify(env, s.trusted); err != nil {
				t.Fatalf("Verify: %v", err)
			}
			_, _, err := Open(env, s.trusted, s.ids)
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Part != "plaintext" || fe.Field != tc.field {
				t.Errorf("Open = %v, want a plaintext %s FormatError", err, tc.field)
			}
		})
	}
}

func TestOpenRefusesBadPlaintext(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	b := s.bundle
	good := marshalPlaintext(b.Name, b.Version, b)
	tooBig := binary.BigEndian.AppendUint32(marshalPlaintext(b.Name, b.Version, &Bundle{})[:1+1+len(b.Name)+8], MaxFileSize+1)
	for _, tc := range []struct {
		name string
		pt   []byte
	}{
		{"empty", nil},
		{"format 2", append([]byte{2}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(slices.Clone(good), 0)},
		{"file over the limit", append(tooBig, make([]byte, MaxFileSize+1)...)},
		{"over the plaintext limit", make([]byte, maxPlaintextSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := Open(s.sealRaw(t, nil, tc.pt), s.trusted, s.ids)
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Part != "plaintext" {
				t.Errorf("Open = %v, want a plaintext FormatError", err)
			}
		})
	}
}

func TestOpenRefusesBadCiphertext(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env, err := parseEnvelope(s.env)
	if err != nil {
		t.Fatal(err)
	}
	// A trusted signer signed an invalid age file: still malformed.
	env.ciphertext = append([]byte(ageMagic), "-> X25519 broken\n"...)
	data := env.marshalSigned(s.key)
	if _, err := Verify(data, s.trusted); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	_, _, err = Open(data, s.trusted, s.ids)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Field != "ciphertext" {
		t.Errorf("Open = %v, want a ciphertext FormatError", err)
	}
}

// TestFormatRefusal: an envelope and a plaintext of a format this reader
// does not know are refused at the format byte, saying which format.
func TestFormatRefusal(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env := slices.Clone(s.env)
	env[len(envelopeMagic)] = Format + 1
	_, envErr := parseEnvelope(env)
	pt := marshalPlaintext(s.bundle.Name, s.bundle.Version, s.bundle)
	pt[0] = plaintextFormat + 1
	_, ptErr := parsePlaintext(pt)
	for _, tc := range []struct {
		err  error
		want FormatError
	}{
		{envErr, FormatError{Part: "envelope", Field: "format", Offset: len(envelopeMagic), Reason: fmt.Sprintf("unsupported format %d, this reader knows %d to %d", Format+1, MinFormat, Format)}},
		{ptErr, FormatError{Part: "plaintext", Field: "format", Offset: 0, Reason: fmt.Sprintf("unsupported plaintext format %d, this reader knows %d", plaintextFormat+1, plaintextFormat)}},
	} {
		var fe *FormatError
		if !errors.As(tc.err, &fe) || *fe != tc.want {
			t.Errorf("got %#v, want %#v", tc.err, tc.want)
		}
	}
}

func TestExtensions(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	pt := marshalPlaintext(s.bundle.Name, s.bundle.Version, s.bundle)
	for _, tc := range []struct {
		name string
		exts []extension
		ok   bool
	}{
		{"ignorable", []extension{{typ: 0xfffe, value: []byte("future")}}, true},
		{"two ignorable, empty value", []extension{{typ: 0x8004}, {typ: 0xfffe}}, true},
		{"recipient group", []extension{{typ: extRecipientGroup, value: []byte{0, 1, 0, 2}}}, true},
		{"recipient group of one", []extension{{typ: extRecipientGroup, value: []byte{0, 0, 0, 1}}}, false},
		{"recipient group index not below count", []extension{{typ: extRecipientGroup, value: []byte{0, 2, 0, 2}}}, false},
		{"recipient group of 3 bytes", []extension{{typ: extRecipientGroup, value: []byte{0, 0, 2}}}, false},
		{"unknown critical", []extension{{typ: 0x7fff}}, false},
		{"type zero", []extension{{typ: 0}}, false},
		{"unordered", []extension{{typ: 0xfffe}, {typ: 0x8003}}, false},
		{"repeated", []extension{{typ: 0xfffe}, {typ: 0xfffe}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := Open(s.sealRaw(t, tc.exts, pt), s.trusted, s.ids)
			if tc.ok && err != nil {
				t.Errorf("Open = %v, want success", err)
			}
			var fe *FormatError
			if !tc.ok && (!errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "extension")) {
				t.Errorf("Open = %v, want an extension FormatError", err)
			}
		})
	}
}

func TestSealRefuses(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	rec, _ := x25519Pair(t)
	one := mustRecipients(t, rec)
	r, err := ParseRecipient(rec)
	if err != nil {
		t.Fatal(err)
	}
	valid := func() *Bundle {
		return &Bundle{Name: "example.com", Version: 1, Cert: []byte("c"), Chain: []byte("ch"), FullChain: []byte("f"), PrivKey: []byte("k")}
	}
	for _, tc := range []struct {
		name       string
		edit       func(*Bundle)
		recipients []age.Recipient
		want       error
	}{
		{"no recipients", nil, nil, ErrNoRecipients},
		{"1025 recipients", nil, slices.Repeat([]age.Recipient{r}, MaxRecipients+1), ErrTooManyRecipients},
		{"nil recipient", nil, []age.Recipient{r, nil}, nil},
		{"empty name", func(b *Bundle) { b.Name = "" }, one, nil},
		{"long name", func(b *Bundle) { b.Name = strings.Repeat("a", MaxNameSize+1) }, one, nil},
		{"NUL in name", func(b *Bundle) { b.Name = "a\x00b" }, one, nil},
		{"version 0", func(b *Bundle) { b.Version = 0 }, one, nil},
		{"large privkey", func(b *Bundle) { b.PrivKey = make([]byte, MaxFileSize+1) }, one, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := valid()
			if tc.edit != nil {
				tc.edit(b)
			}
			env, err := Seal(b, key, tc.recipients)
			if err == nil || env != nil {
				t.Fatalf("Seal succeeded, want an error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Seal = %v, want %v", err, tc.want)
			}
		})
	}
	// The largest name and exactly MaxRecipients recipients are accepted.
	b := valid()
	b.Name = strings.Repeat("a", MaxNameSize)
	many := make([]age.Recipient, MaxRecipients)
	for i := range many {
		id := testkeys.X25519(t)
		many[i] = id.Recipient()
	}
	if _, err := Seal(b, key, many); err != nil {
		t.Errorf("Seal with %d recipients and a %d-byte name: %v", MaxRecipients, MaxNameSize, err)
	}
	if _, err := Seal(nil, key, one); err == nil {
		t.Error("Seal(nil bundle) succeeded")
	}
	// An envelope over MaxEnvelopeSize is refused.
	if _, err := seal(key, Format, "example.com", 1, nil, make([]byte, MaxEnvelopeSize), one); !errors.Is(err, ErrTooLarge) {
		t.Errorf("seal(1 MiB plaintext) = %v, want ErrTooLarge", err)
	}
}

func TestOpenedBundleIsACopy(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env := slices.Clone(s.env)
	_, b, err := Open(env, s.trusted, s.ids)
	if err != nil {
		t.Fatal(err)
	}
	clear(env)
	if !bytes.Equal(b.PrivKey, s.bundle.PrivKey) {
		t.Error("opened bundle changed when the envelope buffer was cleared")
	}
}

// TestSealRecord: WithRecipientsDigest writes the signed seal record, which
// Verify and Open return; without it there is none; a bad digest or a
// cert.pem without a certificate is refused.
func TestSealRecord(t *testing.T) {
	t.Parallel()
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	info, err := b.Check(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := mustSigningKey(t)
	rec, idFile := x25519Pair(t)
	rs := mustRecipients(t, rec)
	trusted := []PublicKey{key.Public()}
	digest := RecipientsDigest([]string{rec})

	env, err := Seal(b, key, rs, WithRecipientsDigest(digest))
	if err != nil {
		t.Fatal(err)
	}
	want := SealRecord{Fingerprint: info.Fingerprint, Recipients: digest}
	if hdr, err := Verify(env, trusted); err != nil || hdr.Record != want {
		t.Errorf("Verify = %+v, %v; want record %+v", hdr, err, want)
	}
	if hdr, _, err := Open(env, trusted, mustIdentities(t, idFile)); err != nil || hdr.Record != want {
		t.Errorf("Open = %+v, %v; want record %+v", hdr, err, want)
	}
	plain, err := Seal(b, key, rs)
	if err != nil {
		t.Fatal(err)
	}
	if hdr, err := Verify(plain, trusted); err != nil || !hdr.Record.IsZero() {
		t.Errorf("Verify of an envelope without a record = %+v, %v; want no record", hdr, err)
	}
	if len(env) != len(plain)+6+sealRecordSize {
		t.Errorf("the record adds %d bytes, want %d", len(env)-len(plain), 6+sealRecordSize)
	}

	for _, bad := range []string{"", "sha256:", "sha256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("0", 64), digest + "00"} {
		if bad == "" {
			continue // no option: no record
		}
		if _, err := Seal(b, key, rs, WithRecipientsDigest(bad)); err == nil || !strings.Contains(err.Error(), "recipients digest") {
			t.Errorf("Seal with digest %q = %v, want a refusal", bad, err)
		}
	}
	junk := *b
	junk.Cert = []byte("not a certificate")
	if _, err := Seal(&junk, key, rs, WithRecipientsDigest(digest)); err == nil || !strings.Contains(err.Error(), "cert.pem") {
		t.Errorf("Seal of a junk cert.pem with a record = %v, want a refusal naming cert.pem", err)
	}
}

func TestRecipientsDigest(t *testing.T) {
	t.Parallel()
	a, b := "age1aaaa", "ssh-ed25519 AAAAC3Nz host"
	d := RecipientsDigest([]string{a, b})
	for _, same := range [][]string{{b, a}, {" " + a + "\n", b, a}} {
		if got := RecipientsDigest(same); got != d {
			t.Errorf("RecipientsDigest(%q) = %s, want %s", same, got, d)
		}
	}
	if RecipientsDigest([]string{a}) == d {
		t.Error("another set has the same digest")
	}
	if _, err := ParseFingerprint(d); err != nil {
		t.Errorf("digest %q is not of the record's form", d)
	}
}

// TestSealFormat2Records: WithHold and WithWithdrawn write the hold and
// withdrawn records, which Verify and Open return; Withdrawn comes back
// sorted, once each, without zero fingerprints; more than 16 are refused,
// and format 1, which has neither record, refuses both; a format this
// writer does not know is refused.
func TestSealFormat2Records(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	fps := make([]Fingerprint, maxWithdrawn+1)
	for i := range fps {
		fps[i] = sha256.Sum256([]byte{byte(i)})
	}
	sorted := slices.SortedFunc(slices.Values(fps[:3]), func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	seal := func(opts ...SealOption) ([]byte, error) { return Seal(s.bundle, s.key, s.to, opts...) }

	env, err := seal(WithHold(), WithWithdrawn(fps[2], fps[0]), WithWithdrawn(fps[1], fps[0], Fingerprint{}))
	if err != nil {
		t.Fatal(err)
	}
	hdr, _, err := Open(env, s.trusted, s.ids)
	if err != nil {
		t.Fatal(err)
	}
	if hdr.Format != 2 || !hdr.Hold || !slices.Equal(hdr.Withdrawn, sorted) {
		t.Errorf("Open = format %d hold %v withdrawn %v, want format 2, hold, %v", hdr.Format, hdr.Hold, hdr.Withdrawn, sorted)
	}
	if hdr, err := Verify(s.env, s.trusted); err != nil || hdr.Hold || hdr.Withdrawn != nil || hdr.Format != Format {
		t.Errorf("Verify without the options = %+v, %v; want format %d, no hold, no withdrawn", hdr, err, Format)
	}
	if _, err := seal(WithWithdrawn(fps[:maxWithdrawn]...)); err != nil {
		t.Errorf("Seal with %d withdrawn: %v", maxWithdrawn, err)
	}
	for _, tc := range []struct {
		name string
		opts []SealOption
		want string
	}{
		{"17 withdrawn", []SealOption{WithWithdrawn(fps...)}, "17 withdrawn certificates, at most 16"},
		{"hold in format 1", []SealOption{withFormat(1), WithHold()}, "format 1 has no hold record"},
		{"withdrawn in format 1", []SealOption{withFormat(1), WithWithdrawn(fps[0])}, "format 1 has no withdrawn record"},
		{"format 3", []SealOption{withFormat(3)}, "format 3, this writer knows 1 to 2"},
	} {
		if env, err := seal(tc.opts...); env != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Seal = %v, want %q", tc.name, err, tc.want)
		}
	}
	// Format 1 as format 1 publishers wrote it: no new record, Format 1.
	env, err = seal(withFormat(1), WithWithdrawn(Fingerprint{}))
	if err != nil {
		t.Fatal(err)
	}
	if hdr, err := Verify(env, s.trusted); err != nil || hdr.Format != 1 || env[len(envelopeMagic)] != 1 {
		t.Errorf("Verify of format 1 = %+v, %v; want format 1", hdr, err)
	}
}

// TestWithdrawnRefusals: a withdrawn record out of order is refused at the
// first fingerprint that is not above the one before it.
func TestWithdrawnRefusals(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	pt := marshalPlaintext(s.bundle.Name, s.bundle.Version, s.bundle)
	a, b, c := Fingerprint{1}, Fingerprint{2}, Fingerprint{3}
	// The record's value starts after the signer, the extensions length
	// and the record's type and length.
	value := len(envelopeMagic) + 1 + 1 + len(s.bundle.Name) + 8 + 32 + 4 + 6
	for _, tc := range []struct {
		name   string
		fps    []Fingerprint
		field  string
		offset int
	}{
		{"third below second", []Fingerprint{a, c, b}, "extension value", value + 64},
		{"second repeats first", []Fingerprint{a, a, c}, "extension value", value + 32},
		{"second below first", []Fingerprint{b, a}, "extension value", value + 32},
	} {
		var v []byte
		for _, fp := range tc.fps {
			v = append(v, fp[:]...)
		}
		_, err := Verify(s.sealRaw(t, []extension{{typ: extWithdrawn, value: v}}, pt), s.trusted)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Field != tc.field || fe.Offset != tc.offset {
			t.Errorf("%s: Verify = %v, want field %q at offset %d", tc.name, err, tc.field, tc.offset)
		}
	}
}

// TestOpenErrorsAreOneLine: what age says about a broken ciphertext, which
// may hold a newline and quote a line of any length, reaches the error as
// one bounded line.
func TestOpenErrorsAreOneLine(t *testing.T) {
	t.Parallel()
	s := newSealed(t)
	env, err := parseEnvelope(s.env)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("A", 100_000)
	for _, ct := range []string{
		// A stanza whose body has no short last line: age's error says
		// so on two lines.
		ageMagic + "-> X25519 abc\n" + strings.Repeat("A", 64) + "\n--- x\n",
		// A stanza opening line of 100 kB, which age quotes.
		ageMagic + long + "\n",
	} {
		env.ciphertext = []byte(ct)
		_, _, err := Open(env.marshalSigned(s.key), s.trusted, s.ids)
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("Open = %v, want ErrMalformed", err)
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || len(msg) > 400 {
			t.Errorf("Open's error is not one bounded line (%d bytes): %q", len(msg), msg)
		}
	}
}
