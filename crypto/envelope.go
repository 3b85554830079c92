// The sealed envelope's API: Seal, Verify, Open, the signed Header and its
// SealRecord. The bytes they write are format.go's, and parse.go reads
// them.

package crypto

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"filippo.io/age"
)

// Format is the envelope format version this package writes; it reads
// every format from [MinFormat] to Format. Format 1's version is the leaf's
// NotBefore, which a node checks; format 2's is assigned by the publisher
// (see docs/FORMAT.md, "The version"), and format 2 adds the hold and the
// withdrawn records.
const Format = 2

// MinFormat is the oldest envelope format this package reads: nodes keep
// accepting what is already in the stream.
const MinFormat = 1

// MaxRecipients is the most recipients one envelope may have: age refuses
// to decrypt a header with more stanzas, although it encrypts one.
const MaxRecipients = 1024

// MaxEnvelopeSize bounds an envelope: NATS' default max payload (1 MiB).
// Seal refuses to produce a larger one; Verify and Open refuse a larger one
// before any other work.
const MaxEnvelopeSize = 1 << 20

// MaxNameSize bounds a certificate name, in bytes.
const MaxNameSize = 253

// Header is the signed, non-secret part of an envelope.
type Header struct {
	// Format is the envelope's format version, [MinFormat] to [Format].
	// It says what Version means: the leaf's NotBefore in format 1 (a
	// node checks [Format1Version]), the publisher's in format 2.
	Format int
	// Name is the certificate name the envelope is for.
	Name string
	// Version is the bundle's version (see [Release.Version]).
	Version uint64
	// Signer is the key that signed the envelope, one of the trusted keys.
	Signer PublicKey
	// Record is the envelope's signed seal record; its zero value means
	// the envelope carries none (as envelopes written before it existed).
	Record SealRecord
	// Hold says the envelope carries the hold record (format 2): a node
	// stages the bundle but installs it only once a signed rollout record
	// for this name, version and fingerprint releases it ([RolloutRecord]).
	Hold bool
	// Withdrawn are the fingerprints of the certificates the publisher
	// took out of service when it sealed this one (a rollback), from the
	// withdrawn record; nil when none.
	Withdrawn []Fingerprint
	// Group is the envelope's recipient group record (format 2): which of
	// how many sealed copies of this version it is; zero when it has none.
	Group Group
}

// SealRecord is what a publisher vouches for, under the signature, about
// what it sealed and to whom, so that it can later tell from the stream
// alone, and without decrypting, whether a certificate must be sealed
// again. Nodes need none of it.
type SealRecord struct {
	// Fingerprint is the fingerprint of the leaf (the first certificate of
	// cert.pem), as Info.Fingerprint.
	Fingerprint Fingerprint
	// Recipients is the RecipientsDigest of the recipients the envelope
	// was sealed to: "sha256:" and 64 lowercase hex digits.
	Recipients string
}

// IsZero tells whether r is the zero SealRecord: no record.
func (r SealRecord) IsZero() bool { return r == SealRecord{} }

// RecipientsDigest is the digest of a set of recipients as written in a
// configuration ("age1…", "ssh-ed25519 AAAA…"): "sha256:" and the hex
// SHA-256 of the distinct recipient strings, space-trimmed, sorted
// bytewise, joined by "\n". The order and repetitions of recipients do not
// change it.
func RecipientsDigest(recipients []string) string {
	texts := make([]string, len(recipients))
	for i, r := range recipients {
		texts[i] = strings.TrimSpace(r)
	}
	slices.Sort(texts)
	texts = slices.Compact(texts)
	// A digest in the text form of a fingerprint, although it names no
	// certificate: one format for every SHA-256 certsync writes.
	return Fingerprint(sha256.Sum256([]byte(strings.Join(texts, "\n")))).String()
}

// A SealOption adds to what [Seal] writes.
type SealOption func(*sealOptions)

type sealOptions struct {
	recipientsDigest string
	hold             bool
	withdrawn        []Fingerprint
	group            Group
	// format is 0 for Format; tests set 1 to write what older publishers
	// wrote (the hold and withdrawn records are refused then).
	format uint8
	// noIndex leaves out the stanza index of format 2: tests set it to
	// write what publishers wrote before the index existed.
	noIndex bool
}

// WithHold makes Seal write the hold record: nodes stage the bundle but
// install it only once a rollout record releases it (see [Header.Hold]).
func WithHold() SealOption {
	return func(o *sealOptions) { o.hold = true }
}

// WithWithdrawn makes Seal write the withdrawn record with fps (sorted and
// deduplicated by Seal; at most 16, zero ones dropped): the certificates
// this envelope deliberately takes out of service.
func WithWithdrawn(fps ...Fingerprint) SealOption {
	return func(o *sealOptions) { o.withdrawn = append(o.withdrawn, fps...) }
}

// WithRecipientsDigest makes Seal write a signed seal record (see
// [SealRecord]) holding the fingerprint of the bundle's leaf, which Seal
// computes from b.Cert, and digest, the [RecipientsDigest] of the
// recipients given to Seal. Seal refuses a digest not of that form, and a
// cert.pem that holds no certificate.
func WithRecipientsDigest(digest string) SealOption {
	return func(o *sealOptions) { o.recipientsDigest = digest }
}

// Seal encrypts b with age to recipients, signs the result with key, and
// returns the envelope. It refuses an invalid name (empty, longer than
// [MaxNameSize] bytes, or holding a NUL; callers check the stricter
// certificate name rules), version 0, a file over [MaxFileSize], no
// recipients ([ErrNoRecipients]), more than [MaxRecipients] recipients or
// age stanzas ([ErrTooManyRecipients]) and an envelope over
// [MaxEnvelopeSize] ([ErrTooLarge]). Seal does not call [Bundle.Check].
// With [WithRecipientsDigest] the envelope carries a signed seal record.
//
// Seal always writes the stanza index (docs/FORMAT.md), so that each node
// opens its own stanza directly: every recipient must be one crypto can
// name, an *age.X25519Recipient or one [ParseRecipient] returned, and
// appear once. The file key is wrapped for the recipients on up to
// GOMAXPROCS goroutines; stanza i of the age header is recipients[i]'s,
// however many goroutines ran.
func Seal(b *Bundle, key *SigningKey, recipients []age.Recipient, opts ...SealOption) ([]byte, error) {
	if b == nil || key == nil {
		return nil, errors.New("sealing envelope: nil bundle or signing key")
	}
	if err := checkName(b.Name); err != nil {
		return nil, fmt.Errorf("sealing envelope %q: %w", b.Name, err)
	}
	if b.Version == 0 {
		return nil, fmt.Errorf("sealing envelope %q: version 0 is invalid", b.Name)
	}
	if len(recipients) == 0 {
		return nil, fmt.Errorf("sealing envelope %q: %w", b.Name, ErrNoRecipients)
	}
	if len(recipients) > MaxRecipients {
		return nil, fmt.Errorf("sealing envelope %q: %d recipients, at most %d can open one envelope: %w", b.Name, len(recipients), MaxRecipients, ErrTooManyRecipients)
	}
	for i, r := range recipients {
		if r == nil {
			return nil, fmt.Errorf("sealing envelope %q: recipient %d is nil", b.Name, i+1)
		}
	}
	for _, f := range b.Files() {
		if len(*f.Data) > MaxFileSize {
			return nil, fmt.Errorf("sealing envelope %q: %s is %d bytes, over the limit of %d", b.Name, f.Name, len(*f.Data), MaxFileSize)
		}
	}
	var o sealOptions
	for _, opt := range opts {
		opt(&o)
	}
	format := cmp.Or(o.format, Format)
	if format < MinFormat || format > Format {
		return nil, fmt.Errorf("sealing envelope %q: format %d, this writer knows %d to %d", b.Name, format, MinFormat, Format)
	}
	var exts []extension
	if x, err := groupExtension(format, o.group); err != nil {
		return nil, fmt.Errorf("sealing envelope %q: %w", b.Name, err)
	} else if x != nil {
		exts = append(exts, *x)
	}
	if o.hold {
		if format < 2 {
			return nil, fmt.Errorf("sealing envelope %q: format %d has no hold record", b.Name, format)
		}
		exts = append(exts, extension{typ: extHold, value: []byte{}})
	}
	if o.recipientsDigest != "" {
		digest, err := ParseFingerprint(o.recipientsDigest)
		if err != nil {
			return nil, fmt.Errorf("sealing envelope %q: seal record: recipients digest %q is not \"sha256:\" and 64 lowercase hex digits", b.Name, o.recipientsDigest)
		}
		certs, err := parseCertFile(FileCert, b.Cert)
		if err != nil {
			return nil, fmt.Errorf("sealing envelope %q: seal record: %w", b.Name, err)
		}
		fp := FingerprintOf(certs[0].Raw)
		exts = append(exts, extension{typ: extSealRecord, value: marshalSealRecord(fp[:], digest[:])})
	}
	if format >= 2 && !o.noIndex {
		texts := make([]string, len(recipients))
		first := make(map[string]int, len(recipients))
		for i, r := range recipients {
			text, ok := canonicalRecipient(r)
			if !ok {
				return nil, fmt.Errorf("sealing envelope %q: recipient %d (%T) cannot be named in the stanza index: want an age X25519 recipient or one ParseRecipient returned", b.Name, i+1, r)
			}
			if j, dup := first[text]; dup {
				return nil, fmt.Errorf("sealing envelope %q: recipients %d and %d are the same recipient %q", b.Name, j+1, i+1, text)
			}
			first[text], texts[i] = i, text
		}
		v, err := newStanzaIndex(texts)
		if err != nil {
			return nil, fmt.Errorf("sealing envelope %q: %w", b.Name, err)
		}
		exts = append(exts, extension{typ: extStanzaIndex, value: v})
	}
	if fps := withdrawnSet(o.withdrawn); len(fps) > 0 {
		if format < 2 {
			return nil, fmt.Errorf("sealing envelope %q: format %d has no withdrawn record", b.Name, format)
		}
		if len(fps) > maxWithdrawn {
			return nil, fmt.Errorf("sealing envelope %q: %d withdrawn certificates, at most %d", b.Name, len(fps), maxWithdrawn)
		}
		var v []byte
		for _, fp := range fps {
			v = append(v, fp[:]...)
		}
		exts = append(exts, extension{typ: extWithdrawn, value: v})
	}
	pt := marshalPlaintext(b.Name, b.Version, b)
	defer clear(pt)
	env, err := seal(key, format, b.Name, b.Version, exts, pt, recipients)
	if err != nil {
		return nil, fmt.Errorf("sealing envelope %q: %w", b.Name, err)
	}
	return env, nil
}

// seal encrypts plaintext to recipients (in parallel, one stanza each, in
// their order: recipientSet) and builds and signs the envelope. It checks
// only what age and the size limits demand, so tests can build envelopes
// that Open must refuse.
func seal(key *SigningKey, format uint8, name string, version uint64, exts []extension, plaintext []byte, recipients []age.Recipient) ([]byte, error) {
	var ct bytes.Buffer
	w, err := age.Encrypt(&ct, newRecipientSet(recipients))
	if err != nil {
		return nil, fmt.Errorf("encrypting: %v", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return nil, fmt.Errorf("encrypting: %v", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encrypting: %v", err)
	}
	hdr, err := age.ExtractHeader(bytes.NewReader(ct.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("reading back the age header: %v", err)
	}
	if n := bytes.Count(hdr, []byte("\n-> ")); n > MaxRecipients {
		return nil, fmt.Errorf("%d age stanzas, at most %d can be opened: %w", n, MaxRecipients, ErrTooManyRecipients)
	}
	env := &envelope{format: format, name: name, version: version, signer: key.Public(), exts: exts, ciphertext: ct.Bytes()}
	data := env.marshalSigned(key)
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%d bytes, over the limit of %d: %w", len(data), MaxEnvelopeSize, ErrTooLarge)
	}
	return data, nil
}

// Verify parses an envelope and checks its signature, without decrypting:
// the envelope must be at most [MaxEnvelopeSize] bytes and well formed
// ([ErrMalformed]), name a signer among trusted ([ErrUntrustedSigner]), and
// carry that signer's valid signature ([ErrBadSignature]). It is cheap, so
// a node can use it to skip superseded versions without decrypting them.
func Verify(envelope []byte, trusted []PublicKey) (*Header, error) {
	hdr, _, err := verify(envelope, trusted)
	return hdr, err
}

// verify is Verify, also returning the parsed envelope.
func verify(data []byte, trusted []PublicKey) (*Header, *envelope, error) {
	env, err := parseEnvelope(data)
	if err != nil {
		return nil, nil, fmt.Errorf("verifying envelope: %w", err)
	}
	if !slices.Contains(trusted, env.signer) {
		return nil, nil, fmt.Errorf("verifying envelope %q version %d: signer %s: %w", env.name, env.version, env.signer, ErrUntrustedSigner)
	}
	if !env.signer.verify(signedMessage(data), env.signature) {
		return nil, nil, fmt.Errorf("verifying envelope %q version %d: signer %s: %w", env.name, env.version, env.signer, ErrBadSignature)
	}
	hdr := &Header{Format: int(env.format), Name: env.name, Version: env.version, Signer: env.signer}
	for _, x := range env.exts {
		switch {
		case x.typ == extSealRecord:
			hdr.Record = parseSealRecord(x.value)
		case env.format >= 2 && x.typ == extRecipientGroup:
			hdr.Group = parseGroupRecord(x.value)
		case env.format >= 2 && x.typ == extHold:
			hdr.Hold = true
		case env.format >= 2 && x.typ == extWithdrawn:
			for i := 0; i < len(x.value); i += sha256.Size {
				hdr.Withdrawn = append(hdr.Withdrawn, Fingerprint(x.value[i:i+sha256.Size]))
			}
		}
	}
	return hdr, env, nil
}

// Open verifies an envelope as [Verify] does, then decrypts it with
// identities ([ErrNotRecipient] if none matches) and parses the plaintext,
// which must repeat the signed name and version ([ErrMalformed]
// otherwise). The bundle's files are returned exactly as sealed; Open does
// not call [Bundle.Check].
//
// When the envelope carries a stanza index (format 2), each identity whose
// recipient crypto can name (an age identity, or an SSH one
// [ParseIdentities] returned) is handed only the stanza the index lists it
// at: one unwrap whatever the number of recipients. An identity the index
// does not list is not tried; none listed is [ErrNotRecipient] at once; a
// listed stanza that does not open is [ErrNotRecipient] too, after that one
// unwrap; an index whose entries are not the age header's stanzas is
// [ErrMalformed]. An identity crypto cannot name (a caller's own
// age.Identity) is handed every stanza, as without an index.
//
// When the index lists every identity given, Open does not hand the age
// header to age's parser: it scans the header with age's rules, parses the
// listed stanzas only, checks the header MAC itself in constant time (a
// mismatch is [ErrMalformed]) and has age decrypt the payload with the
// file key (see docs/FORMAT.md, "Verification order"), so that its cost
// hardly grows with the number of recipients.
func Open(envelope []byte, trusted []PublicKey, identities []age.Identity) (*Header, *Bundle, error) {
	return open(envelope, trusted, identities, true)
}

// open is Open; fast says whether an envelope whose stanza index lists
// every identity is opened by openIndexed (Open always), or by age.Decrypt
// as an envelope whose index also leaves identities crypto cannot name
// (tests compare the two paths).
func open(envelope []byte, trusted []PublicKey, identities []age.Identity, fast bool) (*Header, *Bundle, error) {
	hdr, env, err := verify(envelope, trusted)
	if err != nil {
		return nil, nil, err
	}
	if len(identities) == 0 {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: no identities given", hdr.Name, hdr.Version)
	}
	var indexOffset int
	var indexed []*indexedIdentity
	if v, off := env.extension(extStanzaIndex); env.format >= 2 && v != nil {
		identities, indexOffset = parseStanzaIndex(v).identities(identities), off
		if len(identities) == 0 {
			return nil, nil, fmt.Errorf("opening envelope %q version %d: not in the stanza index: %w", hdr.Name, hdr.Version, ErrNotRecipient)
		}
		for _, id := range identities {
			if x, ok := id.(*indexedIdentity); ok && fast {
				indexed = append(indexed, x)
			}
		}
	}
	var r io.Reader
	if len(indexed) > 0 && len(indexed) == len(identities) {
		r, err = openIndexed(env.ciphertext, indexed)
	} else {
		r, err = age.Decrypt(bytes.NewReader(env.ciphertext), identities...)
	}
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		var headerErr *ageHeaderError
		var mismatch *indexMismatchError
		switch {
		case errors.As(err, &noMatch) || errors.Is(err, errNoStanzaOpens):
			return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version, ErrNotRecipient)
		case errors.As(err, &mismatch):
			return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
				&FormatError{Part: "envelope", Field: "extension value", Offset: indexOffset, Reason: mismatch.Error()})
		case errors.As(err, &headerErr):
			return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
				&FormatError{Part: "envelope", Field: "ciphertext", Offset: env.ciphertextOffset() + headerErr.Off, Reason: headerErr.Error()})
		}
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
			&FormatError{Part: "envelope", Field: "ciphertext", Offset: env.ciphertextOffset(), Reason: "age: " + oneLine(err.Error())})
	}
	pt, err := io.ReadAll(io.LimitReader(r, maxPlaintextSize+1))
	defer clear(pt)
	if err != nil {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
			&FormatError{Part: "envelope", Field: "ciphertext", Offset: env.ciphertextOffset(), Reason: "age payload: " + oneLine(err.Error())})
	}
	if len(pt) > maxPlaintextSize {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
			&FormatError{Part: "plaintext", Field: "plaintext", Offset: maxPlaintextSize, Reason: fmt.Sprintf("longer than the limit of %d bytes", maxPlaintextSize)})
	}
	b, err := parsePlaintext(pt)
	if err != nil {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version, err)
	}
	if b.Name != hdr.Name {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
			&FormatError{Part: "plaintext", Field: "name", Offset: 2, Reason: fmt.Sprintf("%q differs from the signed name", b.Name)})
	}
	if b.Version != hdr.Version {
		return nil, nil, fmt.Errorf("opening envelope %q version %d: %w", hdr.Name, hdr.Version,
			&FormatError{Part: "plaintext", Field: "version", Offset: 2 + len(b.Name), Reason: fmt.Sprintf("%d differs from the signed version", b.Version)})
	}
	return hdr, b, nil
}

// withdrawnSet is fps sorted, without repetitions or zero fingerprints.
func withdrawnSet(fps []Fingerprint) []Fingerprint {
	out := slices.DeleteFunc(slices.Clone(fps), Fingerprint.IsZero)
	slices.SortFunc(out, func(a, b Fingerprint) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(out)
}

// checkName applies the envelope's own name rule: non-empty, at most
// MaxNameSize bytes, no NUL.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameSize:
		return fmt.Errorf("name is %d bytes, over the limit of %d", len(name), MaxNameSize)
	case strings.IndexByte(name, 0) >= 0:
		return errors.New("name holds a NUL byte")
	}
	return nil
}
