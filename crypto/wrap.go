// The file key wrapped for an age X25519 or ssh-ed25519 recipient without
// the scalar multiplications age's own Wrap repeats: every stanza is byte
// for byte the one age's X25519Recipient or agessh's Ed25519Recipient
// writes from the same random bytes (TestWrapMatchesAge draws both from
// one fixed stream), so every reader opens it as it would age's.
//
// Why age's Wrap is slower than it needs to be: each of its
// curve25519.X25519 calls builds a crypto/ecdh private key, which computes
// the key's public point (one Montgomery ladder) before the ECDH asked for
// (another). So age's X25519 Wrap runs four ladders for the two products
// it needs (the ephemeral share e·B and the shared secret e·P), and
// agessh's ssh-ed25519 Wrap six for its three (e·B, e·P, then t·(e·P) with
// the tweak t derived from the recipient's public key alone). Here the
// ephemeral key's public point is the share, the shared secret is one ECDH,
// and for ssh-ed25519 the tweak is applied to the recipient's point once,
// when the recipient is parsed: X25519(e, X25519(t, P)) = X25519(t,
// X25519(e, P)), since both are the x-coordinate of c(e)·c(t)·P, c(k) being
// the clamped scalar, and scalar multiplication commutes. Both sides are
// zero (the ECDH error) exactly when P is of small order: a clamped
// scalar is 8·m with 0 < m < the group order, so c(k)·P is the identity
// only when P is in the 8-torsion, whatever k. Such a key keeps age's own
// Wrap, which refuses it as before. Two ladders per stanza, for both kinds.

package crypto

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"filippo.io/age"
	"filippo.io/edwards25519"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/ssh"
)

// The HKDF info strings of age's stanza types (age's x25519.go, agessh).
const (
	x25519Label     = "age-encryption.org/v1/X25519"
	sshEd25519Label = "age-encryption.org/v1/ssh-ed25519"
)

// curve25519Key is what wrapping for a Curve25519 recipient needs: the
// recipient's point P as the stanza's HKDF salt takes it, and the point
// the ephemeral scalar multiplies (P itself for X25519, t·P for
// ssh-ed25519).
type curve25519Key struct {
	point  []byte
	shared *ecdh.PublicKey
}

// stanza is the one stanza of type typ that wraps fileKey (wrap): its
// arguments args, then the share.
func (k *curve25519Key) stanza(fileKey []byte, typ, label string, args ...string) ([]*age.Stanza, error) {
	share, body, err := k.wrap(fileKey, label)
	if err != nil {
		return nil, err
	}
	return []*age.Stanza{{Type: typ, Args: append(args, share), Body: body}}, nil
}

// wrap wraps fileKey as age does for both kinds: a fresh 32-byte scalar e
// from crypto/rand (as age reads it), the share e·B, the wrapping key
// HKDF-SHA-256(secret e·shared, salt share || point, info label), the file
// key sealed under it with ChaCha20-Poly1305 and a zero nonce. It returns
// the share, in age's base64, and the body.
func (k *curve25519Key) wrap(fileKey []byte, label string) (string, []byte, error) {
	ephemeral := make([]byte, 32)
	rand.Read(ephemeral)
	priv, err := ecdh.X25519().NewPrivateKey(ephemeral)
	clear(ephemeral)
	if err != nil {
		return "", nil, err
	}
	share := priv.PublicKey().Bytes()
	secret, err := priv.ECDH(k.shared)
	if err != nil {
		return "", nil, err
	}
	defer clear(secret)
	salt := make([]byte, 0, len(share)+len(k.point))
	salt = append(append(salt, share...), k.point...)
	key, err := hkdf.Key(sha256.New, secret, salt, label, chacha20poly1305.KeySize)
	if err != nil {
		return "", nil, err
	}
	defer clear(key)
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return "", nil, err
	}
	body := aead.Seal(nil, make([]byte, chacha20poly1305.NonceSize), fileKey, nil)
	return base64.RawStdEncoding.EncodeToString(share), body, nil
}

// x25519Recipient is an age X25519 recipient [ParseRecipient] returned:
// age's, its canonical text, and its point, for a Wrap of two ladders.
type x25519Recipient struct {
	*age.X25519Recipient
	text string
	key  *curve25519Key // nil: age's Wrap
}

// newX25519Recipient is r, whose canonical text is text, with its key.
func newX25519Recipient(r *age.X25519Recipient) *x25519Recipient {
	x := &x25519Recipient{X25519Recipient: r, text: r.String()}
	if point, ok := x25519Point(x.text); ok {
		if shared, err := ecdh.X25519().NewPublicKey(point); err == nil {
			x.key = &curve25519Key{point: point, shared: shared}
		}
	}
	return x
}

// Wrap implements age.Recipient: age's X25519 stanza.
func (r *x25519Recipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	if r.key == nil {
		return r.X25519Recipient.Wrap(fileKey)
	}
	return r.key.stanza(fileKey, "X25519", x25519Label)
}

// bech32Charset is Bech32's alphabet (BIP 173), in which an age recipient
// writes its key.
const bech32Charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

// x25519Point decodes the 32-byte point of text, an age recipient that
// age.ParseX25519Recipient accepted (so its checksum is valid) and wrote
// again with String (lowercase): "age1", 52 characters of data, 6 of
// checksum.
func x25519Point(text string) ([]byte, bool) {
	if len(text) != len("age1")+52+6 || !strings.HasPrefix(text, "age1") {
		return nil, false
	}
	out := make([]byte, 0, 32)
	var acc uint32
	bits := 0
	for _, c := range []byte(text[len("age1") : len(text)-6]) {
		v := strings.IndexByte(bech32Charset, c)
		if v < 0 {
			return nil, false
		}
		acc = acc<<5 | uint32(v)
		bits += 5
		if bits >= 8 {
			bits -= 8
			out = append(out, byte(acc>>bits))
			acc &= 1<<bits - 1
		}
	}
	return out, len(out) == 32 && acc == 0
}

// sshEd25519Key is the key of an ssh-ed25519 recipient for a Wrap of two
// ladders: agessh's tag of the key (the first 4 bytes of SHA-256 of its
// wire encoding, in base64) and its Curve25519 point P, with t·P, t being
// agessh's tweak HKDF-SHA-256(no secret, salt the wire encoding, info the
// label). Nil (age's Wrap) when the key has no such point, or t·P is the
// identity (P of small order, which age's Wrap refuses).
func sshEd25519Key(pub ssh.PublicKey) (string, *curve25519Key) {
	cpk, ok := pub.(ssh.CryptoPublicKey)
	if !ok {
		return "", nil
	}
	edPub, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return "", nil
	}
	p, err := new(edwards25519.Point).SetBytes(edPub)
	if err != nil {
		return "", nil
	}
	point := p.BytesMontgomery()
	wire := pub.Marshal()
	tweak, err := hkdf.Key(sha256.New, nil, wire, sshEd25519Label, 32)
	if err != nil {
		return "", nil
	}
	t, err := ecdh.X25519().NewPrivateKey(tweak)
	if err != nil {
		return "", nil
	}
	u, err := ecdh.X25519().NewPublicKey(point)
	if err != nil {
		return "", nil
	}
	tp, err := t.ECDH(u)
	if err != nil {
		return "", nil
	}
	shared, err := ecdh.X25519().NewPublicKey(tp)
	if err != nil {
		return "", nil
	}
	sum := sha256.Sum256(wire)
	return base64.RawStdEncoding.EncodeToString(sum[:4]), &curve25519Key{point: point, shared: shared}
}
