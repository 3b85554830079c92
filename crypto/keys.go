package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// publicKeyPrefix starts the text form of a [PublicKey].
const publicKeyPrefix = "certsync-ed25519:"

// pemPrivateKey is the PEM block type of a PKCS#8 private key.
const pemPrivateKey = "PRIVATE KEY"

// SigningKey is a publisher's Ed25519 signing key. Its file form is a PEM
// "PRIVATE KEY" block (PKCS#8), which openssl reads as well
// (openssl pkey -in FILE -pubout).
type SigningKey struct {
	priv ed25519.PrivateKey
}

// PublicKey is the public half of a [SigningKey]. It is comparable, so it
// can be used as a map key or compared with ==. The zero value is no key and
// never verifies a signature.
type PublicKey struct {
	key [ed25519.PublicKeySize]byte
}

// GenerateSigningKey returns a new random signing key.
func GenerateSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating signing key: %w", err)
	}
	return &SigningKey{priv: priv}, nil
}

// newSigningKeyFromSeed returns the signing key of a 32-byte seed (tests and
// vectors use fixed seeds).
func newSigningKeyFromSeed(seed []byte) *SigningKey {
	return &SigningKey{priv: ed25519.NewKeyFromSeed(seed)}
}

// ParseSigningKey parses the key file form written by [SigningKey.MarshalPEM]:
// exactly one PEM "PRIVATE KEY" block holding a PKCS#8 Ed25519 key, with
// nothing but white space around it. Errors never contain key material.
func ParseSigningKey(data []byte) (*SigningKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parsing signing key: no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("parsing signing key: unexpected data after the PEM block")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("parsing signing key: PEM block type %q, want %q", block.Type, pemPrivateKey)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("parsing signing key: encrypted or annotated PEM blocks are not supported")
	}
	// The parse error is not wrapped: it could describe key bytes.
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("parsing signing key: not a valid PKCS#8 private key")
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parsing signing key: key type %T, want an Ed25519 key", key)
	}
	return &SigningKey{priv: priv}, nil
}

// MarshalPEM returns the key file form of k: a PEM "PRIVATE KEY" block
// (PKCS#8). It is secret; write it with [WriteKeyFile].
func (k *SigningKey) MarshalPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		// An ed25519.PrivateKey always marshals; reaching here is a bug.
		panic("crypto: marshaling an ed25519 key: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
}

// Public returns the public key of k.
func (k *SigningKey) Public() PublicKey {
	var p PublicKey
	copy(p.key[:], k.priv.Public().(ed25519.PublicKey))
	return p
}

// sign returns the Ed25519 signature of msg.
func (k *SigningKey) sign(msg []byte) []byte {
	return ed25519.Sign(k.priv, msg)
}

// ParsePublicKey parses the text form of a public key,
// "certsync-ed25519:" followed by the standard, padded base64 encoding of
// the 32 key bytes. Surrounding white space is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	t := strings.TrimSpace(s)
	b64, ok := strings.CutPrefix(t, publicKeyPrefix)
	if !ok {
		// The value is not echoed: it may be a secret pasted in the wrong place.
		return PublicKey{}, fmt.Errorf("parsing public key: not of the form %s<base64>", publicKeyPrefix)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return PublicKey{}, fmt.Errorf("parsing public key %q: want %d bytes in standard padded base64", t, ed25519.PublicKeySize)
	}
	var p PublicKey
	copy(p.key[:], raw)
	return p, nil
}

// String returns the text form of p, the exact line `certsync keygen signing`
// prints and nodes list in trusted_publishers.
func (p PublicKey) String() string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(p.key[:])
}

// IsZero reports whether p is the zero value (no key).
func (p PublicKey) IsZero() bool {
	return p == PublicKey{}
}

// verify reports whether sig is p's valid signature of msg.
func (p PublicKey) verify(msg, sig []byte) bool {
	if p.IsZero() {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(p.key[:]), msg, sig)
}
