package crypto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// fingerprintPrefix starts the text form of every SHA-256 digest certsync
// writes: a leaf's fingerprint and a recipients digest.
const fingerprintPrefix = "sha256:"

// Fingerprint tells one certificate from every other: the SHA-256 of its
// leaf's DER. Its text form, in headers, records, status and logs, is
// "sha256:" and 64 lowercase hex digits ([Fingerprint.String]);
// [ParseFingerprint] reads it back and refuses anything else. In JSON it is
// that string. The zero Fingerprint means "not known" (an envelope sealed
// before seal records existed); its text form is "".
type Fingerprint [sha256.Size]byte

// FingerprintOf is the fingerprint of the certificate whose DER is der.
func FingerprintOf(der []byte) Fingerprint { return sha256.Sum256(der) }

// ParseFingerprint reads the text form of a fingerprint: "sha256:" and 64
// lowercase hex digits.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	h, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok || len(h) != 2*len(f) || strings.ToLower(h) != h {
		return f, fmt.Errorf("parsing fingerprint %q: not %q and %d lowercase hex digits", s, fingerprintPrefix, 2*len(f))
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return Fingerprint{}, fmt.Errorf("parsing fingerprint %q: not %q and %d lowercase hex digits", s, fingerprintPrefix, 2*len(f))
	}
	return f, nil
}

// IsZero tells whether f is the zero Fingerprint: not known.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// String is "sha256:" and the 64 lowercase hex digits of f, or "" when f is
// zero.
func (f Fingerprint) String() string {
	if f.IsZero() {
		return ""
	}
	return fingerprintPrefix + f.Hex()
}

// Hex is the 64 lowercase hex digits of f, without "sha256:".
func (f Fingerprint) Hex() string { return hex.EncodeToString(f[:]) }

// Short is f cut to n hex digits for a person to compare at a glance:
// "sha256:" and the first n digits, then "…" (all of String when n covers
// it; "" when f is zero).
func (f Fingerprint) Short(n int) string {
	if f.IsZero() {
		return ""
	}
	h := f.Hex()
	if n < 0 || n >= len(h) {
		return fingerprintPrefix + h
	}
	return fingerprintPrefix + h[:n] + "…"
}

// MarshalText writes String.
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText reads what ParseFingerprint reads; "" is the zero
// Fingerprint.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*f = Fingerprint{}
		return nil
	}
	v, err := ParseFingerprint(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}
