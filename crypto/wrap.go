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
// Wrap, which refuses it as before. Two ladders per stanza, for both kinds;
// and where the multiplied point has an Edwards form (every real key's
// does), not even those: the share is a fixed-base multiplication with
// precomputed tables and the secret one variable-base multiplication on
// the Edwards curve (edwardsWrap), about a quarter less work (63 against
// 48 µs a stanza here).

package crypto

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"sync"

	"filippo.io/age"
	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
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
// ssh-ed25519), as crypto/ecdh takes it and, when it has one, as an
// Edwards point times the cofactor (edwardsWrap).
type curve25519Key struct {
	point  []byte
	shared *ecdh.PublicKey
	// q8 is shared's Edwards form (cofactorPoint), nil for the ladders of
	// crypto/ecdh; computed at the first wrap (edwards), since it costs a
	// square root and a publisher parses every recipient of its
	// configuration, 10,000 of them, to check it, twice per publish.
	q8     *edwards25519.Point
	q8Once sync.Once
}

// newCurve25519Key is the key for point and shared.
func newCurve25519Key(point []byte, shared *ecdh.PublicKey) *curve25519Key {
	return &curve25519Key{point: point, shared: shared}
}

// edwards is k's Edwards point times the cofactor, nil when it has none.
func (k *curve25519Key) edwards() *edwards25519.Point {
	k.q8Once.Do(func() { k.q8 = cofactorPoint(k.shared.Bytes()) })
	return k.q8
}

// cofactorPoint is 8·Q for an Edwards point Q whose Montgomery u is u (the
// birational map: y = (u-1)/(u+1); either sign of x, as X25519 reads only
// u), or nil when there is none that helps: u = -1, u not on the curve (on
// its twist, which X25519 also multiplies), or 8·Q the identity (u of
// small order, where X25519's ECDH fails).
func cofactorPoint(u []byte) *edwards25519.Point {
	var fu, one, num, den, y field.Element
	if _, err := fu.SetBytes(u); err != nil {
		return nil
	}
	one.One()
	den.Add(&fu, &one)
	if den.Equal(new(field.Element)) == 1 {
		return nil
	}
	num.Subtract(&fu, &one)
	y.Multiply(&num, den.Invert(&den))
	q, err := new(edwards25519.Point).SetBytes(y.Bytes())
	if err != nil {
		return nil
	}
	q8 := new(edwards25519.Point).MultByCofactor(q)
	if q8.Equal(edwards25519.NewIdentityPoint()) == 1 {
		return nil
	}
	return q8
}

// edwardsWrap is X25519(e, B) and X25519(e, u(Q)), the share and the
// shared secret, in one fixed-base and one variable-base multiplication
// on the Edwards curve instead of two Montgomery ladders (crypto/ecdh
// computes a private key's public point as it makes the key, so even one
// ECDH costs two ladders). X25519 multiplies by the clamped scalar c(e),
// a multiple of 8 in [2^254, 2^255): c(e)·B = (c(e) mod l)·B, B being of
// order l (SetBytesWithClamping), and c(e)·Q = m·(8·Q) with m = c(e)/8,
// which is below l, so a canonical scalar. BytesMontgomery writes u as
// X25519 does. TestEdwardsWrap checks both against crypto/ecdh.
func edwardsWrap(e []byte, q8 *edwards25519.Point) (share, secret []byte, err error) {
	s, err := new(edwards25519.Scalar).SetBytesWithClamping(e)
	if err != nil {
		return nil, nil, err
	}
	share = new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery()
	var c, m [32]byte
	defer clear(c[:])
	defer clear(m[:])
	copy(c[:], e)
	c[0] &= 248
	c[31] &= 127
	c[31] |= 64
	for i := range m {
		m[i] = c[i] >> 3
		if i < len(m)-1 {
			m[i] |= c[i+1] << 5
		}
	}
	ms, err := new(edwards25519.Scalar).SetCanonicalBytes(m[:])
	if err != nil {
		return nil, nil, err
	}
	return share, new(edwards25519.Point).ScalarMult(ms, q8).BytesMontgomery(), nil
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
	share, secret, err := k.exchange()
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

// exchange draws the ephemeral scalar e (32 bytes of crypto/rand, as age
// reads them) and returns the share e·B and the secret e·shared:
// edwardsWrap when the key has its Edwards point, else crypto/ecdh.
func (k *curve25519Key) exchange() (share, secret []byte, err error) {
	ephemeral := make([]byte, 32)
	defer clear(ephemeral)
	rand.Read(ephemeral)
	if q8 := k.edwards(); q8 != nil {
		return edwardsWrap(ephemeral, q8)
	}
	priv, err := ecdh.X25519().NewPrivateKey(ephemeral)
	if err != nil {
		return nil, nil, err
	}
	secret, err = priv.ECDH(k.shared)
	if err != nil {
		return nil, nil, err
	}
	return priv.PublicKey().Bytes(), secret, nil
}

// x25519Recipient is an age X25519 recipient [ParseRecipient] returned:
// age's, its canonical text, and its point, for a Wrap of two ladders.
type x25519Recipient struct {
	*age.X25519Recipient
	text string
	key  *curve25519Key // nil: age's Wrap
}

// newX25519Recipient is r, parsed from text, with its key. text is r's
// canonical form (what r.String() encodes again, at a cost a publisher of
// 10,000 nodes paid twice per publish): an "age1…" string age parsed is
// lowercase (age refuses mixed case), its checksum is the data's, and its
// padding bits are zero (age refuses others), so encoding its key again
// gives the same string (TestX25519RecipientText).
func newX25519Recipient(r *age.X25519Recipient, text string) *x25519Recipient {
	x := &x25519Recipient{X25519Recipient: r, text: text}
	if point, ok := x25519Point(x.text); ok {
		if shared, err := ecdh.X25519().NewPublicKey(point); err == nil {
			x.key = newCurve25519Key(point, shared)
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
	return base64.RawStdEncoding.EncodeToString(sum[:4]), newCurve25519Key(point, shared)
}
