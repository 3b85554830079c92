// Open's fast path for an envelope that carries a stanza index: the age
// header read with a bounded scan instead of age's parser, the node's one
// stanza parsed and unwrapped, the header MAC checked here, and the payload
// decrypted by age itself behind a rebuilt one-stanza header. This is
// security code: every rule below is age's own (https://age-encryption.org/v1
// and filippo.io/age v1.3.2's internal/format and primitives.go), and
// FuzzOpen and FuzzAgeHeader check that the fast path and age's own path
// accept and refuse the same envelopes. docs/FORMAT.md, "Verification
// order", says what the node checks and why it is as strong as age's check.

package crypto

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
)

// The pieces of an age v1 header (age's internal/format).
const (
	ageIntro        = "age-encryption.org/v1\n"
	ageStanzaPrefix = "-> "
	ageFooterPrefix = "---"
	// ageColumns is the length of a full body line; a body ends with the
	// first shorter line, which may be empty.
	ageColumns = 64
	// ageBytesPerLine is what a full body line decodes to.
	ageBytesPerLine = ageColumns / 4 * 3
	// ageMaxArgs is the most space-separated fields age's parser accepts on
	// a stanza's opening line, the type included: its splitArgs refuses an
	// argument once it holds more than 128, so it keeps 129.
	ageMaxArgs = 129
	// ageMACSize is the size of the header MAC, HMAC-SHA-256.
	ageMACSize = sha256.Size
	// ageMACColumns is the length of the MAC in unpadded base64.
	ageMACColumns = 43
	// ageMaxStanzas is the most stanzas age's parser reads (MaxRecipients).
	ageMaxStanzas = MaxRecipients
)

// ageBase64 is age's base64: standard alphabet, no padding, and strict (the
// unused low bits of the last character must be zero), so that a body has
// exactly one encoding.
var ageBase64 = base64.RawStdEncoding.Strict()

// ageHeader is where the parts of an age header lie in a ciphertext that
// scanAgeHeader accepted. Age's 2 MiB header limit needs no check: the
// ciphertext lies in an envelope of at most MaxEnvelopeSize (1 MiB).
type ageHeader struct {
	// stanzas is the offset of each stanza's opening line, in order.
	stanzas []int
	// macEnd is the offset just past "---" of the closing line: the header
	// MAC covers ct[:macEnd].
	macEnd int
	// mac is the header MAC the closing line carries.
	mac [ageMACSize]byte
	// payload is the offset of the payload (its nonce), just past the
	// closing line's newline.
	payload int
}

// ageHeaderError is a header that age's parser refuses too: Off is the
// offset in the ciphertext of the line at fault.
type ageHeaderError struct {
	Off    int
	Reason string
}

func (e *ageHeaderError) Error() string { return "age header: " + e.Reason }

// scanAgeHeader finds the stanzas, the MAC and the payload of the age file
// ct without building any stanza, and checks every line with the rules of
// age's parser, so that it accepts exactly the headers age.Decrypt parses
// (a header is refused the same way on a node whatever path it opens by,
// and by certsync versions before the fast path): the intro line; at most
// ageMaxStanzas stanzas, each an opening line "-> " and 1 to ageMaxArgs
// fields of printable ASCII (33 to 126) separated by one space, then body
// lines of canonical base64, each full line of ageColumns characters, the
// last one shorter (perhaps empty); then the closing line "--- " and the
// MAC, 43 characters of canonical base64. Because every accepted header is
// the one encoding of what it holds, it is byte for byte what age marshals
// again to compute the MAC, so the MAC over ct[:macEnd] is age's.
//
// The scan decodes each body line into a fixed buffer and keeps nothing
// but the offsets: linear in the header, one small allocation.
func scanAgeHeader(ct []byte) (*ageHeader, error) {
	if !bytes.HasPrefix(ct, []byte(ageIntro)) {
		return nil, &ageHeaderError{Off: 0, Reason: fmt.Sprintf("the intro line is not %q", ageIntro[:len(ageIntro)-1])}
	}
	h := &ageHeader{stanzas: make([]int, 0, 16)}
	var scratch [ageBytesPerLine]byte
	off := len(ageIntro)
	for {
		line, next, ok := ageLine(ct, off)
		if !ok {
			return nil, &ageHeaderError{Off: off, Reason: "truncated before the closing line"}
		}
		if bytes.HasPrefix(line, []byte(ageFooterPrefix)) {
			if err := parseAgeFooter(line, &h.mac); err != "" {
				return nil, &ageHeaderError{Off: off, Reason: "closing line: " + err}
			}
			if len(h.stanzas) == 0 {
				return nil, &ageHeaderError{Off: off, Reason: "no stanza"}
			}
			h.macEnd, h.payload = off+len(ageFooterPrefix), next
			return h, nil
		}
		if len(h.stanzas) == ageMaxStanzas {
			return nil, &ageHeaderError{Off: off, Reason: fmt.Sprintf("more than %d stanzas", ageMaxStanzas)}
		}
		n := len(h.stanzas) + 1
		if _, err := ageFields(line, nil); err != "" {
			return nil, &ageHeaderError{Off: off, Reason: fmt.Sprintf("stanza %d: opening line: %s", n, err)}
		}
		h.stanzas = append(h.stanzas, off)
		off = next
		for {
			line, next, ok := ageLine(ct, off)
			if !ok {
				return nil, &ageHeaderError{Off: off, Reason: fmt.Sprintf("stanza %d: truncated body", n)}
			}
			k, err := decodeAgeBodyLine(scratch[:], line)
			if err != "" {
				return nil, &ageHeaderError{Off: off, Reason: fmt.Sprintf("stanza %d: body line: %s", n, err)}
			}
			off = next
			if k < ageBytesPerLine {
				break
			}
		}
	}
}

// ageLine returns the line of ct at off without its newline and the offset
// of the next line; false when no newline ends it.
func ageLine(ct []byte, off int) (line []byte, next int, ok bool) {
	i := bytes.IndexByte(ct[off:], '\n')
	if i < 0 {
		return nil, 0, false
	}
	return ct[off : off+i], off + i + 1, true
}

// ageFields checks a stanza's opening line as age's parser does and, when
// fields is not nil, appends its fields (the type, then the arguments) to
// it; the error is "" when the line is valid.
func ageFields(line []byte, fields []string) ([]string, string) {
	if !bytes.HasPrefix(line, []byte(ageStanzaPrefix)) {
		return nil, `does not start with "-> "`
	}
	rest := line[len(ageStanzaPrefix):]
	for n := 0; ; n++ {
		i := bytes.IndexByte(rest, ' ')
		field := rest
		if i >= 0 {
			field = rest[:i]
		}
		if n == ageMaxArgs {
			return nil, fmt.Sprintf("more than %d fields", ageMaxArgs)
		}
		if !ageValidString(field) {
			return nil, fmt.Sprintf("field %d is empty or not printable ASCII", n+1)
		}
		if fields != nil {
			fields = append(fields, string(field))
		}
		if i < 0 {
			return fields, ""
		}
		rest = rest[i+1:]
	}
}

// ageValidString is age's isValidString: not empty, every byte printable
// ASCII from 33 to 126 (age reads runes; any byte from 128 up belongs to a
// rune above 126, or to none, which age refuses too).
func ageValidString(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

// decodeAgeBodyLine decodes one body line into dst (ageBytesPerLine bytes)
// as age's parser does: canonical base64, no CR, at most ageColumns
// characters; it returns the decoded length, or the error.
func decodeAgeBodyLine(dst, line []byte) (int, string) {
	if len(line) > ageColumns {
		return 0, fmt.Sprintf("longer than %d characters", ageColumns)
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return 0, "holds a carriage return"
	}
	n, err := ageBase64.Decode(dst, line)
	if err != nil {
		return 0, "not canonical unpadded base64"
	}
	return n, ""
}

// parseAgeFooter checks the closing line as age's parser does ("--- " and
// one field, the MAC in canonical base64, 32 bytes) and decodes the MAC
// into mac; the error is "" when the line is valid.
func parseAgeFooter(line []byte, mac *[ageMACSize]byte) string {
	if !bytes.HasPrefix(line, []byte(ageFooterPrefix+" ")) {
		return `does not start with "--- "`
	}
	field := line[len(ageFooterPrefix)+1:]
	if !ageValidString(field) {
		return "the MAC is empty, not printable ASCII, or followed by another field"
	}
	if len(field) != ageMACColumns {
		return fmt.Sprintf("the MAC is %d characters, want %d", len(field), ageMACColumns)
	}
	if n, err := ageBase64.Decode(mac[:], field); err != nil || n != ageMACSize {
		return "the MAC is not canonical unpadded base64"
	}
	return ""
}

// stanza parses stanza k of the header h of ct, which scanAgeHeader
// accepted: its fields and its decoded body.
func (h *ageHeader) stanza(ct []byte, k int) *age.Stanza {
	line, off, _ := ageLine(ct, h.stanzas[k])
	fields, _ := ageFields(line, make([]string, 0, 4))
	s := &age.Stanza{Type: fields[0], Args: fields[1:]}
	var scratch [ageBytesPerLine]byte
	for {
		line, next, _ := ageLine(ct, off)
		n, _ := decodeAgeBodyLine(scratch[:], line)
		s.Body = append(s.Body, scratch[:n]...)
		off = next
		if n < ageBytesPerLine {
			return s
		}
	}
}

// ageHeaderMAC is the MAC of an age header as the spec defines it:
// HMAC-SHA-256 keyed by HKDF-SHA-256(file key, no salt, info "header"),
// over the header up to and including the "---" of its closing line.
func ageHeaderMAC(fileKey, header []byte) []byte {
	key, err := hkdf.Key(sha256.New, fileKey, nil, "header", sha256.Size)
	if err != nil {
		// hkdf.Key fails only for a length over 255 hash sizes.
		panic("crypto: deriving the age header MAC key: " + err.Error())
	}
	defer clear(key)
	m := hmac.New(sha256.New, key)
	m.Write(header)
	return m.Sum(nil)
}

// ageInjectedStanza is the one stanza of the header openIndexed rebuilds:
// a placeholder no identity unwraps, since the file key is injected.
const ageInjectedStanza = "-> certsync-injected\n\n"

// decryptWithFileKey decrypts the payload of the age file ct (from offset
// payload) with age itself, given the file key the node unwrapped and
// whose original header MAC it checked: age.Decrypt reads a rebuilt
// header of one placeholder stanza, with a MAC computed under fileKey, then
// the original payload, and is handed fileKey with
// age.NewInjectedFileKeyIdentity (age's supported way to decrypt with a
// file key obtained out of band), so the STREAM decryption is age's own.
func decryptWithFileKey(fileKey, ct []byte, payload int) (io.Reader, error) {
	hdr := make([]byte, 0, len(ageIntro)+len(ageInjectedStanza)+len(ageFooterPrefix)+2+ageMACColumns)
	hdr = append(hdr, ageIntro+ageInjectedStanza+ageFooterPrefix...)
	hdr = append(hdr, ' ')
	hdr = ageBase64.AppendEncode(hdr, ageHeaderMAC(fileKey, hdr[:len(hdr)-1]))
	hdr = append(hdr, '\n')
	return age.Decrypt(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(ct[payload:])), age.NewInjectedFileKeyIdentity(fileKey))
}

// openIndexed is Open's fast path: the age file ct opened by identities,
// every one of them an *indexedIdentity (the stanza index lists it). It
// scans the header (scanAgeHeader), refuses a header of another number of
// stanzas than the index has entries (*indexMismatchError), hands each
// identity in turn its one stanza, as age.Decrypt would (an
// age.ErrIncorrectIdentity moves on to the next, any other error is
// fatal), checks the header MAC under the file key in constant time, and
// returns age's reader of the payload. The errors: *ageHeaderError for a
// header age refuses, a MAC that does not verify among them (Open returns
// ErrMalformed, never ErrNotRecipient), *indexMismatchError,
// errNoStanzaOpens when no identity unwraps its stanza, or the identity's
// or age's own.
func openIndexed(ct []byte, identities []*indexedIdentity) (io.Reader, error) {
	h, err := scanAgeHeader(ct)
	if err != nil {
		return nil, err
	}
	var fileKey []byte
	for _, id := range identities {
		if len(h.stanzas) != id.stanzas {
			return nil, &indexMismatchError{entries: id.stanzas, stanzas: len(h.stanzas)}
		}
		fileKey, err = id.id.Unwrap([]*age.Stanza{h.stanza(ct, id.stanza)})
		if errors.Is(err, age.ErrIncorrectIdentity) {
			continue
		}
		if err != nil {
			return nil, err
		}
		break
	}
	if fileKey == nil {
		return nil, errNoStanzaOpens
	}
	defer clear(fileKey)
	mac := ageHeaderMAC(fileKey, ct[:h.macEnd])
	if !hmac.Equal(mac, h.mac[:]) {
		return nil, &ageHeaderError{Off: h.macEnd - len(ageFooterPrefix), Reason: "closing line: the MAC does not verify under the file key"}
	}
	return decryptWithFileKey(fileKey, ct, h.payload)
}

// errNoStanzaOpens: no identity unwrapped the stanza the index lists it
// at; Open returns ErrNotRecipient.
var errNoStanzaOpens = errors.New("no listed stanza opens with its identity")
