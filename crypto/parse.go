// The envelope's bounded parser: the reader that bounds every length and
// reports a *FormatError with the field and offset, the rules of the known
// records, parseEnvelope (it accepts exactly the bytes marshal produces)
// and parsePlaintext. The layout it reads is format.go's.

package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
)

// checkExtensionLength returns why a known record of type typ may not be n
// bytes long in the given format, or "". A record a format does not define
// is not checked (format 1 skips the withdrawn record as any unknown
// ignorable one).
func checkExtensionLength(format uint8, typ uint16, n uint32) string {
	switch {
	case typ == extSealRecord && n != sealRecordSize:
		return fmt.Sprintf("seal record (0x%04x) is %d bytes, want %d", typ, n, sealRecordSize)
	case format >= 2 && typ == extHold && n != 0:
		return fmt.Sprintf("hold record (0x%04x) is %d bytes, want 0", typ, n)
	case format >= 2 && typ == extWithdrawn && (n == 0 || n%sha256.Size != 0 || n > maxWithdrawn*sha256.Size):
		return fmt.Sprintf("withdrawn record (0x%04x) is %d bytes, want 1 to %d fingerprints of %d", typ, n, maxWithdrawn, sha256.Size)
	case format >= 2 && typ == extStanzaIndex && (n < indexSaltSize+indexEntrySize || (n-indexSaltSize)%indexEntrySize != 0 || n > indexSaltSize+MaxRecipients*indexEntrySize):
		return fmt.Sprintf("stanza index (0x%04x) is %d bytes, want a %d-byte salt and 1 to %d entries of %d", typ, n, indexSaltSize, MaxRecipients, indexEntrySize)
	}
	return ""
}

// badStanzaIndex returns the offset in v, a stanza index of a valid length,
// of the first entry breaking its rules and why, or -1 and "": ids in
// strictly ascending byte order (sorted, each once), each stanza number
// below the number of entries and named once, so that the entries name
// stanzas 0 to k-1 in some order. Whether the age header holds exactly k
// stanzas is checked by Open, which parses the header.
func badStanzaIndex(v []byte) (int, string) {
	k := (len(v) - indexSaltSize) / indexEntrySize
	seen := make([]bool, k)
	for i := range k {
		off := indexSaltSize + i*indexEntrySize
		id, num := v[off:off+indexIDSize], int(binary.BigEndian.Uint16(v[off+indexIDSize:]))
		switch {
		case i > 0 && bytes.Compare(v[off-indexEntrySize:off-indexEntrySize+indexIDSize], id) >= 0:
			return off, fmt.Sprintf("entry %d's id is not above the one before it (want ascending, each once)", i+1)
		case num >= k:
			return off + indexIDSize, fmt.Sprintf("entry %d names stanza %d of an index of %d entries", i+1, num, k)
		case seen[num]:
			return off + indexIDSize, fmt.Sprintf("entry %d names stanza %d again", i+1, num)
		}
		seen[num] = true
	}
	return -1, ""
}

// unordered returns the offset in v, a sequence of SHA-256 sums, of the
// first sum not above the one before it, or -1 when v is in strictly
// ascending byte order (so sorted and without repetition).
func unordered(v []byte) int {
	for i := sha256.Size; i+sha256.Size <= len(v); i += sha256.Size {
		if bytes.Compare(v[i-sha256.Size:i], v[i:i+sha256.Size]) >= 0 {
			return i
		}
	}
	return -1
}

// FormatError describes where an envelope or its plaintext breaks the
// format. It wraps [ErrMalformed].
type FormatError struct {
	// Part is "envelope", "plaintext" or "rollout" (a rollout record).
	Part string
	// Field names the field being parsed, such as "name" or "ciphertext".
	Field string
	// Offset is the byte offset of the field within Part.
	Offset int
	// Reason says what is wrong, without echoing secret bytes.
	Reason string
}

// Error implements error.
func (e *FormatError) Error() string {
	return fmt.Sprintf("malformed %s: %s at offset %d: %s", e.Part, e.Field, e.Offset, e.Reason)
}

// Unwrap returns [ErrMalformed].
func (e *FormatError) Unwrap() error { return ErrMalformed }

// maxQuoted bounds what a FormatError's reason repeats of another parser's
// error text.
const maxQuoted = 200

// oneLine is s, another parser's error text (age's), cut to its first line
// and to at most maxQuoted bytes, so that a FormatError is always one
// bounded line: age's own texts may hold a newline, and quote a line of
// the ciphertext of any length.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > maxQuoted {
		s = strings.ToValidUTF8(s[:maxQuoted], "") + "…"
	}
	return s
}

// reader consumes a byte slice, producing FormatErrors with offsets.
type reader struct {
	part string
	data []byte
	off  int
}

// errorf returns a FormatError at the current offset.
func (r *reader) errorf(field, format string, args ...any) error {
	return &FormatError{Part: r.part, Field: field, Offset: r.off, Reason: fmt.Sprintf(format, args...)}
}

// take consumes n bytes, or fails naming field.
func (r *reader) take(n int, field string) ([]byte, error) {
	if n < 0 || n > len(r.data)-r.off {
		return nil, r.errorf(field, "truncated: need %d bytes, %d left", n, len(r.data)-r.off)
	}
	b := r.data[r.off : r.off+n : r.off+n]
	r.off += n
	return b, nil
}

func (r *reader) uint8(field string) (uint8, error) {
	b, err := r.take(1, field)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (r *reader) uint16(field string) (uint16, error) {
	b, err := r.take(2, field)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint16(b), nil
}

func (r *reader) uint32(field string) (uint32, error) {
	b, err := r.take(4, field)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (r *reader) uint64(field string) (uint64, error) {
	b, err := r.take(8, field)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// name reads a one-byte length and a name obeying checkName.
func (r *reader) name() (string, error) {
	n, err := r.uint8("name length")
	if err != nil {
		return "", err
	}
	if n == 0 || int(n) > MaxNameSize {
		r.off--
		return "", r.errorf("name length", "%d is not in 1..%d", n, MaxNameSize)
	}
	b, err := r.take(int(n), "name")
	if err != nil {
		return "", err
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		r.off -= int(n) - i
		return "", r.errorf("name", "NUL byte")
	}
	return string(b), nil
}

// version reads a non-zero version.
func (r *reader) version() (uint64, error) {
	v, err := r.uint64("version")
	if err != nil {
		return 0, err
	}
	if v == 0 {
		r.off -= 8
		return 0, r.errorf("version", "version 0 is invalid")
	}
	return v, nil
}

// header reads what both the envelope and the plaintext begin with: a
// format byte from lo to hi (what names it in the refusal: "format",
// "plaintext format"), then the name and the version.
func (r *reader) header(lo, hi uint8, what string) (format uint8, name string, version uint64, err error) {
	f, err := r.uint8("format")
	if err != nil {
		return 0, "", 0, err
	}
	if f < lo || f > hi {
		r.off--
		knows := fmt.Sprint(hi)
		if lo != hi {
			knows = fmt.Sprintf("%d to %d", lo, hi)
		}
		return 0, "", 0, r.errorf("format", "unsupported %s %d, this reader knows %s", what, f, knows)
	}
	if name, err = r.name(); err != nil {
		return 0, "", 0, err
	}
	if version, err = r.version(); err != nil {
		return 0, "", 0, err
	}
	return f, name, version, nil
}

// parseEnvelope parses an envelope without checking its signature. It
// accepts exactly the byte strings marshal produces: parse then marshal
// returns the input.
func parseEnvelope(data []byte) (*envelope, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, &FormatError{Part: "envelope", Field: "envelope", Offset: MaxEnvelopeSize, Reason: fmt.Sprintf("%d bytes exceeds the limit of %d", len(data), MaxEnvelopeSize)}
	}
	r := &reader{part: "envelope", data: data}
	m, err := r.take(len(envelopeMagic), "magic")
	if err != nil {
		return nil, err
	}
	if string(m) != envelopeMagic {
		r.off = 0
		return nil, r.errorf("magic", "not a certsync envelope")
	}
	e := &envelope{}
	if e.format, e.name, e.version, err = r.header(MinFormat, Format, "format"); err != nil {
		return nil, err
	}
	signer, err := r.take(ed25519.PublicKeySize, "signer")
	if err != nil {
		return nil, err
	}
	copy(e.signer.key[:], signer)
	extLen, err := r.uint32("extensions length")
	if err != nil {
		return nil, err
	}
	if int64(extLen) > int64(len(data)-r.off) {
		r.off -= 4
		return nil, r.errorf("extensions length", "truncated: %d exceeds the %d bytes left", extLen, len(data)-r.off-4)
	}
	extEnd := r.off + int(extLen)
	prev := -1
	for r.off < extEnd {
		if extEnd-r.off < 6 {
			return nil, r.errorf("extension record", "truncated record header: %d bytes left in the extension area", extEnd-r.off)
		}
		typ, _ := r.uint16("extension type")
		n, _ := r.uint32("extension length")
		if typ == 0 || int(typ) <= prev {
			r.off -= 6
			return nil, r.errorf("extension type", "type 0x%04x is zero or not above the previous record's", typ)
		}
		if int64(n) > int64(extEnd-r.off) {
			r.off -= 4
			return nil, r.errorf("extension length", "%d exceeds the %d bytes left in the extension area", n, extEnd-r.off-4)
		}
		if typ&extIgnorable == 0 && (e.format < 2 || typ != extHold && typ != extRecipientGroup) {
			r.off -= 6
			return nil, r.errorf("extension type", "unsupported critical extension record 0x%04x", typ)
		}
		if err := checkExtensionLength(e.format, typ, n); err != "" {
			r.off -= 4
			return nil, r.errorf("extension length", "%s", err)
		}
		v, _ := r.take(int(n), "extension value")
		if e.format >= 2 && typ == extWithdrawn {
			if i := unordered(v); i >= 0 {
				r.off -= int(n) - i
				return nil, r.errorf("extension value", "withdrawn record (0x%04x): fingerprint %d is not above the one before it (want ascending, each once)", typ, i/sha256.Size+1)
			}
		}
		if e.format >= 2 && typ == extStanzaIndex {
			if i, why := badStanzaIndex(v); i >= 0 {
				r.off -= int(n) - i
				return nil, r.errorf("extension value", "stanza index (0x%04x): %s", typ, why)
			}
		}
		if e.format >= 2 && typ == extRecipientGroup {
			if err := checkGroupRecord(r, v); err != nil {
				return nil, err
			}
		}
		e.exts = append(e.exts, extension{typ: typ, value: v})
		prev = int(typ)
	}
	ctLen, err := r.uint32("ciphertext length")
	if err != nil {
		return nil, err
	}
	if int64(ctLen) > int64(len(data)-r.off-signatureSize) {
		r.off -= 4
		return nil, r.errorf("ciphertext length", "truncated: %d exceeds the %d bytes left before the %d-byte signature", ctLen, max(len(data)-r.off-4-signatureSize, 0), signatureSize)
	}
	if e.ciphertext, err = r.take(int(ctLen), "ciphertext"); err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(e.ciphertext, []byte(ageMagic)) {
		r.off -= int(ctLen)
		return nil, r.errorf("ciphertext", "not a binary age v1 file")
	}
	if e.signature, err = r.take(signatureSize, "signature"); err != nil {
		return nil, err
	}
	if r.off != len(data) {
		return nil, r.errorf("end", "%d trailing bytes after the signature", len(data)-r.off)
	}
	return e, nil
}

// parsePlaintext decodes a plaintext. The files are copied, so the caller
// may clear pt.
func parsePlaintext(pt []byte) (*Bundle, error) {
	r := &reader{part: "plaintext", data: pt}
	b := &Bundle{}
	var err error
	if _, b.Name, b.Version, err = r.header(plaintextFormat, plaintextFormat, "plaintext format"); err != nil {
		return nil, err
	}
	for _, file := range b.Files() {
		n, err := r.uint32(file.Name + " length")
		if err != nil {
			return nil, err
		}
		if n > MaxFileSize {
			r.off -= 4
			return nil, r.errorf(file.Name+" length", "%d exceeds the limit of %d", n, MaxFileSize)
		}
		v, err := r.take(int(n), file.Name)
		if err != nil {
			return nil, err
		}
		*file.Data = bytes.Clone(v)
	}
	if r.off != len(pt) {
		return nil, r.errorf("end", "%d trailing bytes after %s", len(pt)-r.off, FileKey)
	}
	return b, nil
}
