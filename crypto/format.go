// The envelope's wire format (as age's internal/format): the byte
// layout's constants and its record types, the envelope and its marshal,
// the seal record's value, and the plaintext's encoding. parse.go reads
// them back behind one bounded parser (parse then marshal returns the
// input byte for byte). docs/FORMAT.md is the specification;
// testdata/vectors pins it. The API over it (Seal, Verify, Open, Header)
// is in envelope.go.

package crypto

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// The byte layout; docs/FORMAT.md is its specification.
const (
	// envelopeMagic starts every envelope.
	envelopeMagic = "CERTSYNC"
	// signatureContext is prepended to the signed bytes (domain separation).
	signatureContext = "certsync envelope v1\x00"
	// signatureSize is the size of the trailing Ed25519 signature.
	signatureSize = ed25519.SignatureSize
	// ageMagic starts a binary age v1 file.
	ageMagic = "age-encryption.org/v1\n"
	// plaintextFormat is the plaintext's own format version.
	plaintextFormat = 1
	// maxPlaintextSize bounds the plaintext: format, name, version, files.
	maxPlaintextSize = 1 + 1 + MaxNameSize + 8 + 4*(4+MaxFileSize)
)

// Extension record types. A type with extIgnorable set may be skipped by a
// reader that does not know it; any other unknown type is refused.
const (
	extIgnorable = 0x8000
	// extRecipientGroup is the recipient group record (format 2, group.go):
	// "this is sealed copy index of count of one version". Critical: a
	// reader that does not know it would call every other group's node
	// "not a recipient".
	extRecipientGroup = 0x0001
	// extSealRecord is the seal record: the leaf's fingerprint and the
	// digest of the recipients, as the publisher vouches for them.
	// Ignorable: a node does not need it.
	extSealRecord = 0x8001
	// extHold is the hold record (format 2): a node stages the bundle but
	// installs it only once a signed rollout record releases it. Critical:
	// a reader that does not know it would install at once. Empty value.
	extHold = 0x0002
	// extStanzaIndex is the stanza index (format 2): a random salt, then
	// one entry per age stanza, sorted by id, each an id derived from the
	// salt and the stanza's recipient (stanzaID) and the stanza's number,
	// so that a node hands age its own stanza only (index.go). Ignorable:
	// without it a reader tries every stanza.
	extStanzaIndex = 0x8002
	// indexSaltSize, indexIDSize and indexEntrySize are the stanza index's
	// salt, an entry's id and an entry (the id and a 16-bit stanza number).
	indexSaltSize  = 16
	indexIDSize    = 8
	indexEntrySize = indexIDSize + 2
	// extWithdrawn is the withdrawn record (format 2): the fingerprints of
	// certificates the publisher deliberately took out of service (rolled
	// back from), 1 to maxWithdrawn SHA-256 sums, so that republish never
	// puts them back. Ignorable: nodes need none of it.
	extWithdrawn = 0x8003
	// maxWithdrawn bounds the withdrawn record.
	maxWithdrawn = 16
	// sealRecordSize is the seal record's value size: two SHA-256 sums.
	sealRecordSize = 2 * sha256.Size
)

// marshalSealRecord encodes a seal record's value.
func marshalSealRecord(fingerprint, recipients []byte) []byte {
	return slices.Concat(fingerprint, recipients)
}

// parseSealRecord decodes a seal record's value, already checked to be
// sealRecordSize bytes.
func parseSealRecord(v []byte) SealRecord {
	return SealRecord{
		Fingerprint: Fingerprint(v[:sha256.Size]),
		Recipients:  Fingerprint(v[sha256.Size:]).String(),
	}
}

// extension is one type-length-value record of the extension area.
type extension struct {
	typ   uint16
	value []byte
}

// envelope is a parsed envelope.
type envelope struct {
	format     uint8
	name       string
	version    uint64
	signer     PublicKey
	exts       []extension
	ciphertext []byte
	signature  []byte
}

// signedMessage returns what the signature of the envelope data covers: the
// context string followed by every byte before the signature.
func signedMessage(data []byte) []byte {
	n := len(data) - signatureSize
	msg := make([]byte, 0, len(signatureContext)+n)
	msg = append(msg, signatureContext...)
	return append(msg, data[:n]...)
}

// marshalUnsigned returns the envelope's bytes up to the signature.
func (e *envelope) marshalUnsigned() []byte {
	var b []byte
	b = append(b, envelopeMagic...)
	b = append(b, e.format)
	b = append(b, byte(len(e.name)))
	b = append(b, e.name...)
	b = binary.BigEndian.AppendUint64(b, e.version)
	b = append(b, e.signer.key[:]...)
	extLen := 0
	for _, x := range e.exts {
		extLen += 6 + len(x.value)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(extLen))
	for _, x := range e.exts {
		b = binary.BigEndian.AppendUint16(b, x.typ)
		b = binary.BigEndian.AppendUint32(b, uint32(len(x.value)))
		b = append(b, x.value...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.ciphertext)))
	return append(b, e.ciphertext...)
}

// marshal returns the envelope's bytes with its signature as parsed.
func (e *envelope) marshal() []byte {
	return append(e.marshalUnsigned(), e.signature...)
}

// marshalSigned signs the envelope with key and returns its bytes.
func (e *envelope) marshalSigned(key *SigningKey) []byte {
	unsigned := e.marshalUnsigned()
	msg := append([]byte(signatureContext), unsigned...)
	e.signature = key.sign(msg)
	return append(unsigned, e.signature...)
}

// ciphertextOffset returns the offset of the ciphertext in the envelope.
func (e *envelope) ciphertextOffset() int {
	n := len(envelopeMagic) + 1 + 1 + len(e.name) + 8 + ed25519.PublicKeySize + 4
	for _, x := range e.exts {
		n += 6 + len(x.value)
	}
	return n + 4
}

// extension returns the value of the record of type typ and its offset in
// the envelope, or nil and -1 when the envelope carries none.
func (e *envelope) extension(typ uint16) ([]byte, int) {
	n := len(envelopeMagic) + 1 + 1 + len(e.name) + 8 + ed25519.PublicKeySize + 4
	for _, x := range e.exts {
		if x.typ == typ {
			return x.value, n + 6
		}
		n += 6 + len(x.value)
	}
	return nil, -1
}

// marshalPlaintext encodes the plaintext: format, name, version, then the
// four files, each with a 4-byte length.
func marshalPlaintext(name string, version uint64, b *Bundle) []byte {
	n := 1 + 1 + len(name) + 8 + 16 + len(b.Cert) + len(b.Chain) + len(b.FullChain) + len(b.PrivKey)
	p := make([]byte, 0, n)
	p = append(p, plaintextFormat, byte(len(name)))
	p = append(p, name...)
	p = binary.BigEndian.AppendUint64(p, version)
	for _, f := range b.Files() {
		p = binary.BigEndian.AppendUint32(p, uint32(len(*f.Data)))
		p = append(p, *f.Data...)
	}
	return p
}
