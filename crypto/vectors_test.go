package crypto

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"filippo.io/age"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"github.com/certsync/certsync/internal/testing/treetest"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors and testdata/rollout (go test -run TestVectors -update)")

const vectorDir = "testdata/vectors"

// vectorNow is when the vectors' bundles are checked: an hour after N
// (2025-01-01T00:00:00Z); their certificates are valid until 2125.
var vectorNow = time.Date(2025, 1, 1, 1, 0, 0, 0, time.UTC)

// The expect values of the vectors and what they mean.
const (
	expectSuccess         = "success"          // Verify and Open succeed
	expectMalformed       = "malformed"        // ErrMalformed
	expectTruncated       = "truncated"        // ErrMalformed, a truncated field
	expectBadSignature    = "bad signature"    // ErrBadSignature
	expectUntrusted       = "untrusted signer" // ErrUntrustedSigner
	expectNotRecipient    = "not recipient"    // Verify succeeds, Open: ErrNotRecipient
	expectNameMismatch    = "name mismatch"    // Verify succeeds, Open: plaintext name differs
	expectVersionMismatch = "version mismatch" // Verify succeeds, Open: plaintext version differs
	expectIndexMismatch   = "index mismatch"   // Verify succeeds, Open: ErrMalformed, the stanza index is not the header's
	expectBadAgeHeader    = "bad age header"   // Verify succeeds, Open: ErrMalformed, the age header (field ciphertext)
)

// vector is one file of testdata/vectors.
type vector struct {
	comment     []string
	expect      string
	trusted     []string // public keys in text form
	identity    []string // age identity lines
	openssh     []byte   // an OpenSSH private key file, if the identity is one
	format      uint8    // the envelope's format, when Verify succeeds; 0 (no line) is format 1
	name        string   // header name; with version, checked when Verify succeeds
	version     uint64
	fingerprint string            // leaf fingerprint, on success
	record      SealRecord        // the signed seal record, when Verify succeeds; zero if none
	hold        bool              // the hold record, when Verify succeeds
	withdrawn   []Fingerprint     // the withdrawn record, when Verify succeeds
	group       Group             // the recipient group record, when Verify succeeds; zero if none
	field       string            // the FormatError's field, when malformed (no line: not checked)
	sums        map[string]string // file name -> hex SHA-256, on success
	envelope    []byte
}

// headerFormat is the Header.Format a vector that verifies must have.
func (v *vector) headerFormat() int { return int(cmp.Or(v.format, 1)) }

// marshal writes the vector's text form.
func (v *vector) marshal() []byte {
	var b bytes.Buffer
	writeExpect(&b, v.comment, v.expect, v.field)
	if v.format > 1 {
		fmt.Fprintf(&b, "format: %d\n", v.format)
	}
	for _, k := range v.trusted {
		fmt.Fprintf(&b, "trusted: %s\n", k)
	}
	for _, id := range v.identity {
		fmt.Fprintf(&b, "identity: %s\n", id)
	}
	if v.openssh != nil {
		fmt.Fprintf(&b, "identity-openssh: %s\n", base64.StdEncoding.EncodeToString(v.openssh))
	}
	if v.name != "" {
		fmt.Fprintf(&b, "name: %s\nversion: %d\n", v.name, v.version)
	}
	if v.fingerprint != "" {
		fmt.Fprintf(&b, "fingerprint: %s\n", v.fingerprint)
	}
	if !v.record.IsZero() {
		fmt.Fprintf(&b, "record fingerprint: %s\nrecord recipients: %s\n", v.record.Fingerprint, v.record.Recipients)
	}
	if v.hold {
		b.WriteString("hold: true\n")
	}
	for _, fp := range v.withdrawn {
		fmt.Fprintf(&b, "withdrawn: %s\n", fp)
	}
	if !v.group.IsZero() {
		fmt.Fprintf(&b, "group: %s\n", v.group)
	}
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		if s, ok := v.sums[f]; ok {
			fmt.Fprintf(&b, "sha256 %s: %s\n", f, s)
		}
	}
	writeBase64(&b, "envelope", v.envelope)
	return b.Bytes()
}

// writeExpect starts a vector's text form: its comment lines, what it
// expects and, if any, the FormatError's field.
func writeExpect(b *bytes.Buffer, comment []string, expect, field string) {
	for _, c := range comment {
		fmt.Fprintf(b, "# %s\n", c)
	}
	fmt.Fprintf(b, "expect: %s\n", expect)
	if field != "" {
		fmt.Fprintf(b, "field: %s\n", field)
	}
}

// writeBase64 ends a vector's text form: the line "<label>:", then data in
// standard base64, wrapped at 76 columns.
func writeBase64(b *bytes.Buffer, label string, data []byte) {
	b.WriteString(label + ":\n")
	enc := base64.StdEncoding.EncodeToString(data)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	if enc != "" {
		b.WriteString(enc + "\n")
	}
}

// parseVector reads a vector's text form.
func parseVector(data []byte) (*vector, error) {
	v := &vector{sums: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	var env strings.Builder
	inEnvelope := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if inEnvelope {
			env.WriteString(line)
			continue
		}
		if strings.HasPrefix(line, "#") {
			v.comment = append(v.comment, strings.TrimSpace(line[1:]))
			continue
		}
		if line == "envelope:" {
			inEnvelope = true
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: want key: value", n)
		}
		var err error
		switch {
		case key == "expect":
			v.expect = val
		case key == "field":
			v.field = val
		case key == "format":
			var f uint64
			f, err = strconv.ParseUint(val, 10, 8)
			if err == nil && f < 2 {
				err = fmt.Errorf("format %d: format 1 is written as no format line", f)
			}
			v.format = uint8(f)
		case key == "hold":
			if val != "true" {
				err = fmt.Errorf("hold %q, want true (or no hold line)", val)
			}
			v.hold = true
		case key == "group":
			k, count, ok := strings.Cut(val, "/")
			v.group.Index, err = strconv.Atoi(k)
			if err == nil {
				v.group.Count, err = strconv.Atoi(count)
			}
			if err == nil && (!ok || v.group.check() != "") {
				err = fmt.Errorf("group %q, want k/count of a valid record", val)
			}
		case key == "withdrawn":
			var fp Fingerprint
			fp, err = ParseFingerprint(val)
			v.withdrawn = append(v.withdrawn, fp)
		case key == "trusted":
			v.trusted = append(v.trusted, val)
		case key == "identity":
			v.identity = append(v.identity, val)
		case key == "identity-openssh":
			v.openssh, err = base64.StdEncoding.DecodeString(val)
		case key == "name":
			v.name = val
		case key == "version":
			v.version, err = strconv.ParseUint(val, 10, 64)
		case key == "fingerprint":
			v.fingerprint = val
		case key == "record fingerprint":
			v.record.Fingerprint, err = ParseFingerprint(val)
		case key == "record recipients":
			v.record.Recipients = val
		case strings.HasPrefix(key, "sha256 "):
			v.sums[strings.TrimPrefix(key, "sha256 ")] = val
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", n, key)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var err error
	v.envelope, err = base64.StdEncoding.DecodeString(env.String())
	if err != nil {
		return nil, fmt.Errorf("envelope: %v", err)
	}
	return v, nil
}

// keys returns the vector's trusted keys and identities.
func (v *vector) keys() ([]PublicKey, []age.Identity, error) {
	var trusted []PublicKey
	for _, s := range v.trusted {
		p, err := ParsePublicKey(s)
		if err != nil {
			return nil, nil, err
		}
		trusted = append(trusted, p)
	}
	var ids []age.Identity
	if len(v.identity) > 0 {
		more, err := ParseIdentities([]byte(strings.Join(v.identity, "\n")))
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, more...)
	}
	if v.openssh != nil {
		more, err := ParseIdentities(v.openssh)
		if err != nil {
			return nil, nil, err
		}
		ids = append(ids, more...)
	}
	return trusted, ids, nil
}

// readVectors reads every vector file.
func readVectors(t testing.TB) map[string]*vector {
	t.Helper()
	return readVectorFiles(t, vectorDir, parseVector)
}

// readVectorFiles reads every *.txt file of dir with parse, by file name:
// the envelope vectors and the rollout vectors alike.
func readVectorFiles[V any](t testing.TB, dir string, parse func([]byte) (V, error)) map[string]V {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no vectors in %s; run go test -run TestVectors -update", dir)
	}
	vs := map[string]V{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		v, err := parse(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		vs[filepath.Base(f)] = v
	}
	return vs
}

// writeVectorFiles makes dir hold exactly vectors, each file its vector's
// text form.
func writeVectorFiles[V interface{ marshal() []byte }](t testing.TB, dir string, vectors map[string]V) {
	t.Helper()
	treetest.MkdirAll(t, dir, 0o755)
	old, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for file, v := range vectors {
		treetest.WriteFile(t, filepath.Join(dir, file), v.marshal(), 0o644)
	}
}

// addVectors adds more to vectors, refusing a name twice.
func addVectors(t testing.TB, vectors, more map[string]*vector) {
	t.Helper()
	for file, v := range more {
		if vectors[file] != nil {
			t.Fatalf("two vectors named %s", file)
		}
		vectors[file] = v
	}
}

// fileSums is the hex SHA-256 of each of b's files, by file name, as a
// success vector records them.
func fileSums(b *Bundle) map[string]string {
	sums := map[string]string{}
	for _, f := range b.Files() {
		s := sha256.Sum256(*f.Data)
		sums[f.Name] = hex.EncodeToString(s[:])
	}
	return sums
}

func TestVectors(t *testing.T) {
	if *update {
		// A fixed random stream makes the regenerated files the same on
		// every run (for one Go version's use of randomness).
		t.Run("update", func(t *testing.T) {
			cryptotest.SetGlobalRandom(t, 1)
			writeVectors(t)
			// The rollout vectors are about success_hold.txt's
			// bundle, so they are written after it (and read, by
			// TestRolloutVectors, only once every test's serial part,
			// this one included, is done).
			writeRolloutVectors(t)
		})
	}
	t.Parallel()
	for file, v := range readVectors(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			checkVector(t, v)
		})
	}
}

// checkVector checks that a vector's envelope has its expected outcome.
func checkVector(t *testing.T, v *vector) {
	trusted, ids, err := v.keys()
	if err != nil {
		t.Fatal(err)
	}
	hdr, verr := Verify(v.envelope, trusted)
	ohdr, b, oerr := Open(v.envelope, trusted, ids)
	verifies := func() {
		t.Helper()
		if verr != nil {
			t.Fatalf("Verify = %v, want success", verr)
		}
		if hdr.Name != v.name || hdr.Version != v.version || hdr.Format != v.headerFormat() || !slices.Contains(trusted, hdr.Signer) || hdr.Record != v.record {
			t.Errorf("Verify = %+v, want format %d name %q version %d record %+v", hdr, v.headerFormat(), v.name, v.version, v.record)
		}
		if hdr.Hold != v.hold || !slices.Equal(hdr.Withdrawn, v.withdrawn) || hdr.Group != v.group {
			t.Errorf("Verify = hold %v withdrawn %v group %v, want hold %v withdrawn %v group %v", hdr.Hold, hdr.Withdrawn, hdr.Group, v.hold, v.withdrawn, v.group)
		}
	}
	refused := func(target error) *FormatError {
		t.Helper()
		if !errors.Is(oerr, target) {
			t.Fatalf("Open = %v, want %v", oerr, target)
		}
		var fe *FormatError
		errors.As(oerr, &fe)
		return fe
	}
	switch v.expect {
	case expectSuccess:
		verifies()
		if oerr != nil {
			t.Fatalf("Open = %v, want success", oerr)
		}
		if !reflect.DeepEqual(ohdr, hdr) || b.Name != v.name || b.Version != v.version {
			t.Errorf("Open = %+v, %q %d; want Verify's header %+v", ohdr, b.Name, b.Version, hdr)
		}
		for f, data := range map[string][]byte{"cert.pem": b.Cert, "chain.pem": b.Chain, "fullchain.pem": b.FullChain, "privkey.pem": b.PrivKey} {
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != v.sums[f] {
				t.Errorf("%s: sha256 %x, want %s", f, sum, v.sums[f])
			}
		}
		info, err := b.Check(vectorNow)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if info.Fingerprint.String() != v.fingerprint {
			t.Errorf("Check = fingerprint %s, want %s", info.Fingerprint, v.fingerprint)
		}
		// Format 1's version is the leaf's NotBefore, which a node
		// checks; format 2's is the publisher's, unrelated to it.
		if f1 := Format1Version(info.NotBefore); hdr.Format == 1 && f1 != v.version {
			t.Errorf("format 1 version %d, but the leaf's NotBefore gives %d", v.version, f1)
		}
		if !v.record.IsZero() && v.record.Fingerprint != info.Fingerprint {
			t.Errorf("record fingerprint %s, the opened leaf's is %s", v.record.Fingerprint, info.Fingerprint)
		}
	case expectMalformed:
		fe := refused(ErrMalformed)
		if !errors.Is(verr, ErrMalformed) {
			t.Errorf("Verify = %v, want ErrMalformed", verr)
		}
		if v.field != "" && (fe == nil || fe.Field != v.field) {
			t.Errorf("Open = %v, want a FormatError at field %q", oerr, v.field)
		}
	case expectTruncated:
		if fe := refused(ErrMalformed); fe == nil || !strings.Contains(fe.Reason, "truncated") {
			t.Errorf("Open = %v, want a truncated field", oerr)
		}
	case expectBadSignature:
		refused(ErrBadSignature)
	case expectUntrusted:
		refused(ErrUntrustedSigner)
	case expectNotRecipient:
		verifies()
		refused(ErrNotRecipient)
	case expectIndexMismatch:
		verifies()
		if fe := refused(ErrMalformed); fe == nil || fe.Field != "extension value" || !strings.Contains(fe.Reason, "stanza index") {
			t.Errorf("Open = %v, want a stanza index FormatError", oerr)
		}
	case expectBadAgeHeader:
		verifies()
		if fe := refused(ErrMalformed); fe == nil || fe.Field != "ciphertext" {
			t.Errorf("Open = %v, want a ciphertext FormatError", oerr)
		}
	case expectNameMismatch, expectVersionMismatch:
		verifies()
		field := map[string]string{expectNameMismatch: "name", expectVersionMismatch: "version"}[v.expect]
		if fe := refused(ErrMalformed); fe == nil || fe.Part != "plaintext" || fe.Field != field {
			t.Errorf("Open = %v, want a plaintext %s mismatch", oerr, field)
		}
	default:
		t.Fatalf("unknown expect %q", v.expect)
	}
}

// vectorSeed derives a fixed 32-byte seed from a label.
func vectorSeed(label string) []byte {
	s := sha256.Sum256([]byte("certsync test vector " + label))
	return s[:]
}

// writeVectors regenerates testdata/vectors. The signing keys are fixed;
// the age and SSH identities, certificates and ciphertexts are random and
// recorded in the files.
func writeVectors(t *testing.T) {
	signer := newSigningKeyFromSeed(vectorSeed("signer"))
	rotated := newSigningKeyFromSeed(vectorSeed("previous signer"))
	untrusted := newSigningKeyFromSeed(vectorSeed("untrusted signer"))
	trusted := []string{signer.Public().String()}
	id := testkeys.X25519(t)
	others := func() []age.Recipient {
		var rs []age.Recipient
		for range 2 {
			o := testkeys.X25519(t)
			rs = append(rs, o.Recipient())
		}
		return rs
	}
	me := []age.Recipient{id.Recipient()}
	ids := []string{id.String()}

	// Certificates: one CA; leaves valid for a century so the vectors do
	// not expire. Version N is 2025-01-01T00:00:00Z.
	n := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := newTestCA(t, n.Add(-24*time.Hour), n.AddDate(100, 0, 1))
	bundle := func(notBefore time.Time, serial int64) *Bundle {
		return vectorBundle(t, ca, n, notBefore, serial, uint64(notBefore.Unix()))
	}
	current := bundle(n, 1001)
	older := bundle(n.Add(-time.Second), 1000)
	sameVersion := bundle(n, 1002)

	// The vectors of format 1 are sealed as format 1 publishers sealed
	// them: nodes keep accepting what is in the stream, and the files
	// stay byte for byte what they were.
	mustSeal2 := func(b *Bundle, key *SigningKey, rs []age.Recipient, opts ...SealOption) []byte {
		env, err := Seal(b, key, rs, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	mustSeal := func(b *Bundle, key *SigningKey, rs []age.Recipient, opts ...SealOption) []byte {
		return mustSeal2(b, key, rs, append([]SealOption{withFormat(1)}, opts...)...)
	}
	success := func(b *Bundle, env []byte, comment ...string) *vector {
		info, err := b.Check(vectorNow)
		if err != nil {
			t.Fatal(err)
		}
		sums := fileSums(b)
		return &vector{comment: comment, expect: expectSuccess, trusted: trusted, identity: ids, name: b.Name,
			version: b.Version, fingerprint: info.Fingerprint.String(), sums: sums, envelope: env}
	}
	failure := func(expect string, env []byte, comment ...string) *vector {
		return &vector{comment: comment, expect: expect, trusted: trusted, identity: ids, envelope: env}
	}
	field := func(f string, v *vector) *vector {
		v.field = f
		return v
	}
	verified := func(v *vector, b *Bundle) *vector {
		v.name, v.version = b.Name, b.Version
		return v
	}
	base := mustSeal(current, signer, slices.Concat(others(), me))
	flip := func(env []byte, i int) []byte {
		e := slices.Clone(env)
		e[i] ^= 0x01
		return e
	}
	resign := func(env []byte, key *SigningKey, edit func([]byte)) []byte {
		e := slices.Clone(env)
		edit(e)
		copy(e[len(e)-signatureSize:], key.sign(signedMessage(e)))
		return e
	}
	parsed, err := parseEnvelope(base)
	if err != nil {
		t.Fatal(err)
	}
	ctOff := parsed.ciphertextOffset()
	pt := func(name string, version uint64, b *Bundle) []byte { return marshalPlaintext(name, version, b) }
	rawSeal := func(exts []extension, plaintext []byte) []byte {
		env, err := seal(signer, 1, current.Name, current.Version, exts, plaintext, me)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}

	myDigest := RecipientsDigest([]string{id.Recipient().String()})
	recorded := mustSeal(current, signer, me, WithRecipientsDigest(myDigest))
	withRecord := func(v *vector) *vector {
		h, err := Verify(recorded, []PublicKey{signer.Public()})
		if err != nil {
			t.Fatal(err)
		}
		v.record = h.Record
		return v
	}
	// The seal record's value: after the signer, the extensions length and
	// the record's type and length.
	recordOff := len(envelopeMagic) + 1 + 1 + len(current.Name) + 8 + ed25519.PublicKeySize + 4 + 6

	edLine, edFile := sshEd25519Pair(t)
	rsaLine, rsaFile := sshRSAPair(t)
	sshVector := func(line string, file []byte, comment string) *vector {
		v := success(current, mustSeal(current, signer, slices.Concat(others(), mustRecipients(t, line))), comment)
		v.identity, v.openssh = nil, file
		return v
	}

	vectors := map[string]*vector{
		"success_x25519.txt": success(current, base,
			"A valid envelope for example.com, version N = 1735689600 (2025-01-01T00:00:00Z),",
			"sealed to three X25519 recipients; the identity is the last one."),
		"success_ssh_ed25519.txt": sshVector(edLine, edFile,
			"A valid envelope sealed to two X25519 recipients and an ssh-ed25519 key (identity-openssh)."),
		"success_ssh_rsa.txt": sshVector(rsaLine, rsaFile,
			"A valid envelope sealed to two X25519 recipients and an ssh-rsa key (identity-openssh)."),
		"success_ignorable_extension.txt": success(current, rawSeal([]extension{{typ: 0xfffe, value: []byte("a future ignorable record")}}, pt(current.Name, current.Version, current)),
			"A valid envelope with an unknown extension record 0xfffe marked ignorable (bit 0x8000): skipped."),
		"success_seal_record.txt": withRecord(success(current, recorded,
			"A valid envelope carrying the seal record (0x8001, ignorable): the leaf's fingerprint and the digest of",
			"the one recipient it is sealed to (the identity's), which Verify returns; a reader without it skips it.")),
		"bad_signature_seal_record.txt": failure(expectBadSignature, flip(recorded, recordOff+sha256.Size),
			"success_seal_record.txt with the first byte of the recipients digest flipped: the record is signed."),
		"malformed_seal_record.txt": failure(expectMalformed, rawSeal([]extension{{typ: extSealRecord, value: make([]byte, sealRecordSize-1)}}, pt(current.Name, current.Version, current)),
			"A signed envelope whose seal record (0x8001) is 63 bytes instead of 64: refused by a reader that knows it."),
		"success_rotated_signer.txt": func() *vector {
			v := success(current, mustSeal(current, rotated, me), "Signed by the second of two trusted keys (key rotation).")
			v.trusted = []string{signer.Public().String(), rotated.Public().String()}
			return v
		}(),
		"downgrade_1_newer.txt": success(current, mustSeal(current, signer, me),
			"Downgrade pair, first half: example.com version N = 1735689600. Valid. A node that installed",
			"this one must refuse downgrade_2_older.txt: crypto accepts both, the node decides."),
		"downgrade_2_older.txt": success(older, mustSeal(older, signer, me),
			"Downgrade pair, second half: example.com version N-1 = 1735689599, another certificate.",
			"Valid and correctly signed; a node holding version N must refuse it as a downgrade."),
		"same_version_other_certificate.txt": success(sameVersion, mustSeal(sameVersion, signer, me),
			"example.com version N = 1735689600 like downgrade_1_newer.txt, but another certificate (serial 3ea).",
			"Valid; a node holding the other certificate at version N must refuse it."),
		"bad_signature.txt": failure(expectBadSignature, flip(base, len(base)-1),
			"success_x25519.txt with the last byte of the signature flipped."),
		"bad_signature_ciphertext.txt": failure(expectBadSignature, flip(base, ctOff+len(parsed.ciphertext)/2),
			"success_x25519.txt with one byte in the middle of the age ciphertext flipped."),
		"bad_signature_name.txt": failure(expectBadSignature, flip(base, len(envelopeMagic)+2),
			"success_x25519.txt with the first byte of the name flipped (\"example.com\" -> \"dxample.com\"):",
			"a body cannot be moved to another certificate."),
		"bad_signature_version.txt": failure(expectBadSignature, flip(base, signerOffset(parsed)-1),
			"success_x25519.txt with the version's last byte flipped: a body cannot be replayed as another version."),
		"untrusted_signer.txt": failure(expectUntrusted, mustSeal(current, untrusted, me),
			"A well-formed envelope correctly signed by a key that is not trusted."),
		"not_recipient.txt": verified(failure(expectNotRecipient, mustSeal(current, signer, others()),
			"A valid envelope sealed to two other X25519 recipients only."), current),
		"truncated_signature.txt": failure(expectTruncated, base[:len(base)-1],
			"success_x25519.txt without its last byte."),
		"truncated_header.txt": failure(expectTruncated, base[:len(envelopeMagic)+1+1+4],
			"success_x25519.txt cut inside the name."),
		"trailing_garbage.txt": failure(expectMalformed, append(slices.Clone(base), '\n'),
			"success_x25519.txt followed by one newline byte."),
		"bad_magic.txt": failure(expectMalformed, flip(base, 0),
			"success_x25519.txt with the first byte of the magic flipped."),
		"unsupported_format.txt": field("format", failure(expectMalformed, resign(base, signer, func(e []byte) { e[len(envelopeMagic)] = 3 }),
			"success_x25519.txt with format byte 3, signed again: a reader of formats 1 and 2 refuses format 3",
			"(as a format 1 reader refuses format 2).")),
		"critical_extension.txt": failure(expectMalformed, rawSeal([]extension{{typ: extRecipientGroup, value: []byte{0, 0, 0, 2}}}, pt(current.Name, current.Version, current)),
			"A signed envelope carrying record 0x0001 (reserved for recipient groups, critical):",
			"a v1 reader refuses it."),
		"empty.txt": failure(expectTruncated, []byte{},
			"An empty body."),
		"name_mismatch.txt": verified(failure(expectNameMismatch, rawSeal(nil, pt("other.example.com", current.Version, current)),
			"Signed header names example.com; the plaintext names other.example.com."), current),
		"version_mismatch.txt": verified(failure(expectVersionMismatch, rawSeal(nil, pt(current.Name, current.Version+1, current)),
			"Signed header says version N; the plaintext says N+1."), current),
	}
	addVectors(t, vectors, format2Vectors(t, signer, id, ca, n, current, older, sameVersion, others))
	// The stanza index's vectors draw their randomness after all others.
	addVectors(t, vectors, indexVectors(t, signer, id, ca, n, current, others))
	// The age header's vectors draw theirs after the stanza index's.
	addVectors(t, vectors, ageHeaderVectors(t, signer, id, current, others))
	// The recipient group record's vectors draw theirs after the age
	// header's.
	addVectors(t, vectors, groupVectors(t, signer, id, ca, n, others))
	writeVectorFiles(t, vectorDir, vectors)
}

// format2Vectors returns the vectors of format 2: the publisher's version
// in milliseconds, the hold and withdrawn records. They are made after
// the format 1 vectors, so that those draw the same randomness as before
// and stay byte for byte what the stream holds. signer, id, ca, n and the
// bundles are writeVectors'.
func format2Vectors(t *testing.T, signer *SigningKey, id *age.X25519Identity, ca *testCA, n time.Time,
	current, older, sameVersion *Bundle, others func() []age.Recipient) map[string]*vector {
	trusted := []string{signer.Public().String()}
	ids := []string{id.String()}
	me := []age.Recipient{id.Recipient()}
	myDigest := RecipientsDigest([]string{id.Recipient().String()})

	// V is the version the publisher gave, in Unix milliseconds: a month
	// after N, when the certificate was first published. It has nothing
	// to do with the leaf's NotBefore (N).
	v := uint64(n.AddDate(0, 1, 0).UnixMilli()) + 123
	bundle := func(ca *testCA, notBefore time.Time, serial int64, version uint64) *Bundle {
		return vectorBundle(t, ca, n, notBefore, serial, version)
	}
	info := func(b *Bundle) *Info {
		i, err := b.Check(vectorNow)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	// success seals b as format 2 with the seal record (as certsync's
	// publisher did before the stanza index) and opts, to rs; hold and
	// withdrawn are what the vector says Verify returns.
	success := func(b *Bundle, rs []age.Recipient, digest string, hold bool, withdrawn []Fingerprint, opts []SealOption, comment ...string) *vector {
		env, err := Seal(b, signer, rs, append([]SealOption{WithRecipientsDigest(digest), withoutIndex()}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		fp := info(b).Fingerprint
		sums := fileSums(b)
		return &vector{comment: comment, expect: expectSuccess, format: 2, trusted: trusted, identity: ids, name: b.Name,
			version: b.Version, fingerprint: fp.String(), record: SealRecord{Fingerprint: fp, Recipients: digest},
			hold: hold, withdrawn: withdrawn, sums: sums, envelope: env}
	}
	// malformed seals b's plaintext in the given format with exactly the
	// records exts, past Seal's checks.
	malformed := func(format uint8, field string, b *Bundle, exts []extension, comment ...string) *vector {
		env, err := seal(signer, format, b.Name, b.Version, exts, marshalPlaintext(b.Name, b.Version, b), me)
		if err != nil {
			t.Fatal(err)
		}
		return &vector{comment: comment, expect: expectMalformed, field: field, trusted: trusted, identity: ids, envelope: env}
	}
	sorted := func(fps ...Fingerprint) []Fingerprint {
		return slices.SortedFunc(slices.Values(fps), func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	}
	concat := func(fps []Fingerprint) []byte {
		var b []byte
		for _, fp := range fps {
			b = append(b, fp[:]...)
		}
		return b
	}

	fresh := bundle(ca, n, 2001, v)
	all := slices.Concat(others(), me)
	var allTexts []string
	for _, r := range all {
		allTexts = append(allTexts, r.(fmt.Stringer).String())
	}
	// The CA switch: the first certificate from the CA in use, the second
	// from another CA, issued an hour before the first (NotBefore N-1h),
	// published a minute after it. Format 1 would have refused it as a
	// downgrade; format 2 orders by the publisher's version.
	caB := newTestCA(t, n.Add(-48*time.Hour), n.AddDate(100, 0, 1))
	first := bundle(ca, n, 2002, v+1_000)
	second := bundle(caB, n.Add(-time.Hour), 2003, v+61_000)
	held := bundle(ca, n, 2004, v+2_000)
	// The rollback: older's certificate (downgrade_2_older.txt's) put back
	// under a new version, current's and sameVersion's taken out.
	back := *older
	back.Version = v + 3_000
	withdrawn := sorted(info(current).Fingerprint, info(sameVersion).Fingerprint)
	var seventeen []Fingerprint
	for i := range maxWithdrawn + 1 {
		seventeen = append(seventeen, sha256.Sum256([]byte{byte(i)}))
	}
	seventeen = sorted(seventeen...)
	desc := slices.Clone(withdrawn)
	slices.Reverse(desc)

	return map[string]*vector{
		"success_format2.txt": success(fresh, all, RecipientsDigest(allTexts), false, nil, nil,
			"A valid format 2 envelope for example.com, sealed to three X25519 recipients (the identity is the last one),",
			"with the seal record. Its version V = 1738368000123 is the publisher's, in Unix milliseconds",
			"(2025-02-01T00:00:00.123Z, when it was published), unrelated to the leaf's NotBefore (N = 1735689600 seconds):",
			"every format 2 version is above every format 1 version, which is a NotBefore in seconds."),
		"ca_switch_1_first.txt": success(first, me, myDigest, false, nil, nil,
			"CA switch pair, first half: format 2, version V+1000, a leaf from the CA in use valid from N."),
		"ca_switch_2_second.txt": success(second, me, myDigest, false, nil, nil,
			"CA switch pair, second half: format 2, version V+61000 (published a minute after ca_switch_1_first.txt),",
			"a leaf from another CA valid from N-1h, earlier than the first's. Both are valid: a node that holds the first",
			"must take the second (a higher version), although a format 1 node, ordering by NotBefore, would refuse it."),
		"success_hold.txt": success(held, me, myDigest, true, nil, []SealOption{WithHold()},
			"A valid format 2 envelope carrying the hold record (0x0002, critical, empty): Verify says Hold, and a node",
			"stages the bundle but installs it only once a signed rollout record releases it. Version V+2000."),
		"success_withdrawn.txt": success(&back, me, myDigest, false, withdrawn, []SealOption{WithWithdrawn(withdrawn[1], withdrawn[0], withdrawn[1])},
			"A rollback: downgrade_2_older.txt's certificate put back as format 2 version V+3000, carrying the withdrawn",
			"record (0x8003, ignorable) with the fingerprints of downgrade_1_newer.txt's and same_version_other_certificate.txt's",
			"certificates, ascending; Verify returns them in Withdrawn. Nodes need none of it; the publisher never republishes them."),
		"malformed_withdrawn_unsorted.txt": malformed(2, "extension value", held, []extension{{typ: extWithdrawn, value: concat(desc)}},
			"success_withdrawn.txt's two fingerprints in descending order: the withdrawn record must be ascending."),
		"malformed_withdrawn_repeated.txt": malformed(2, "extension value", held, []extension{{typ: extWithdrawn, value: concat([]Fingerprint{withdrawn[0], withdrawn[0]})}},
			"A withdrawn record holding one fingerprint twice: each appears once."),
		"malformed_withdrawn_33_bytes.txt": malformed(2, "extension length", held, []extension{{typ: extWithdrawn, value: append(concat(withdrawn[:1]), 0)}},
			"A withdrawn record of 33 bytes: its length is a multiple of 32."),
		"malformed_withdrawn_17.txt": malformed(2, "extension length", held, []extension{{typ: extWithdrawn, value: concat(seventeen)}},
			"A withdrawn record of 17 ascending fingerprints (544 bytes): at most 16."),
		"malformed_withdrawn_empty.txt": malformed(2, "extension length", held, []extension{{typ: extWithdrawn, value: []byte{}}},
			"An empty withdrawn record: it holds 1 to 16 fingerprints, or is absent."),
		"malformed_hold_value.txt": malformed(2, "extension length", held, []extension{{typ: extHold, value: []byte{1}}},
			"A hold record (0x0002) with a one-byte value: its value is empty."),
		"malformed_hold_format1.txt": malformed(1, "extension type", current, []extension{{typ: extHold, value: []byte{}}},
			"A format 1 envelope carrying the hold record (0x0002): format 1 does not define it, and a critical record a",
			"format does not define is refused (as a format 1 node refuses it), so a hold is never ignored."),
		"success_format1_withdrawn_skipped.txt": func() *vector {
			env, err := seal(signer, 1, current.Name, current.Version, []extension{{typ: extWithdrawn, value: []byte("not fingerprints")}},
				marshalPlaintext(current.Name, current.Version, current), me)
			if err != nil {
				t.Fatal(err)
			}
			fp := info(current).Fingerprint
			sums := fileSums(current)
			return &vector{comment: []string{
				"A format 1 envelope (version N, as downgrade_1_newer.txt) carrying a 16-byte record 0x8003: format 1 does not",
				"define the withdrawn record, so it is an unknown ignorable record there, skipped; Verify returns no Withdrawn.",
			}, expect: expectSuccess, trusted: trusted, identity: ids, name: current.Name, version: current.Version,
				fingerprint: fp.String(), sums: sums, envelope: env}
		}(),
		"critical_extension_format2.txt": malformed(2, "extension type", held, []extension{{typ: 0x0003, value: []byte{}}},
			"A format 2 envelope carrying record 0x0003, critical and not defined: refused, as any unknown critical record."),
	}
}

// vectorBundle is the bundle of the vectors' certificate example.com (and
// *.example.com) with a fresh P-256 key, the leaf serial by ca from
// notBefore until a century after N (n), sealed at version.
func vectorBundle(t *testing.T, ca *testCA, n, notBefore time.Time, serial int64, version uint64) *Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.leaf(t, key, serial, notBefore, n.AddDate(100, 0, 0), "example.com", "*.example.com")
	return &Bundle{Name: "example.com", Version: version, Cert: cert, Chain: ca.pem,
		FullChain: slices.Concat(cert, ca.pem), PrivKey: pkcs8PEM(t, key)}
}
