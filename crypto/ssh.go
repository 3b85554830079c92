package crypto

// The age recipient types "ssh-ed25519" and "ssh-rsa", implemented here
// following age's agessh package (age-encryption.org/v1): agessh imports
// filippo.io/edwards25519, which this module does not carry, so the
// Edwards-to-Montgomery conversion below uses math/big instead. The stanzas
// are the ones agessh writes and reads, so `age -d -i ssh_host_ed25519_key`
// opens what these recipients seal.

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"slices"

	"filippo.io/age"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"golang.org/x/crypto/ssh"
)

const (
	sshRSALabel     = "age-encryption.org/v1/ssh-rsa"
	sshEd25519Label = "age-encryption.org/v1/ssh-ed25519"
	// minRSABits is the smallest RSA modulus age accepts.
	minRSABits = 2048
)

// stanzaB64 is age's base64: standard alphabet, no padding, strict.
var stanzaB64 = base64.RawStdEncoding.Strict()

// sshFingerprint is the stanza's short key hint: the first four bytes of
// the SHA-256 of the SSH wire encoding of the public key.
func sshFingerprint(pk ssh.PublicKey) string {
	h := sha256.Sum256(pk.Marshal())
	return stanzaB64.EncodeToString(h[:4])
}

// sshRSARecipient seals to an ssh-rsa key with RSA-OAEP-SHA256.
type sshRSARecipient struct {
	sshKey ssh.PublicKey
	pub    *rsa.PublicKey
}

// newSSHRSARecipient checks an ssh-rsa public key.
func newSSHRSARecipient(pk ssh.PublicKey) (*sshRSARecipient, error) {
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errors.New("not an RSA public key")
	}
	pub, ok := cpk.CryptoPublicKey().(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA public key")
	}
	if pub.N.BitLen() < minRSABits {
		return nil, errors.New("RSA key shorter than 2048 bits")
	}
	return &sshRSARecipient{sshKey: pk, pub: pub}, nil
}

// Wrap implements age.Recipient.
func (r *sshRSARecipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	body, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, r.pub, fileKey, []byte(sshRSALabel))
	if err != nil {
		return nil, err
	}
	return []*age.Stanza{{Type: "ssh-rsa", Args: []string{sshFingerprint(r.sshKey)}, Body: body}}, nil
}

// sshRSAIdentity opens ssh-rsa stanzas.
type sshRSAIdentity struct {
	key    *rsa.PrivateKey
	sshKey ssh.PublicKey
}

// newSSHRSAIdentity wraps an RSA private key.
func newSSHRSAIdentity(key *rsa.PrivateKey) (*sshRSAIdentity, error) {
	pk, err := ssh.NewPublicKey(&key.PublicKey)
	if err != nil {
		return nil, errors.New("unusable RSA key")
	}
	return &sshRSAIdentity{key: key, sshKey: pk}, nil
}

// Unwrap implements age.Identity.
func (i *sshRSAIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	fp := sshFingerprint(i.sshKey)
	for _, s := range stanzas {
		if s.Type != "ssh-rsa" {
			continue
		}
		if len(s.Args) != 1 {
			return nil, errors.New("invalid ssh-rsa recipient stanza")
		}
		if s.Args[0] != fp {
			continue
		}
		fileKey, err := rsa.DecryptOAEP(sha256.New(), rand.Reader, i.key, s.Body, []byte(sshRSALabel))
		if err != nil {
			// The fingerprint is a short hint and may collide.
			continue
		}
		return fileKey, nil
	}
	return nil, age.ErrIncorrectIdentity
}

// sshEd25519Recipient seals to an ssh-ed25519 key through its X25519 form,
// tweaked by the SSH key so the stanza is bound to it.
type sshEd25519Recipient struct {
	sshKey ssh.PublicKey
	theirs []byte // Montgomery u-coordinate of the Ed25519 key
}

// newSSHEd25519Recipient checks an ssh-ed25519 public key.
func newSSHEd25519Recipient(pk ssh.PublicKey) (*sshEd25519Recipient, error) {
	cpk, ok := pk.(ssh.CryptoPublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 public key")
	}
	epk, ok := cpk.CryptoPublicKey().(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 public key")
	}
	u, err := edwardsToMontgomery(epk)
	if err != nil {
		return nil, err
	}
	return &sshEd25519Recipient{sshKey: pk, theirs: u}, nil
}

// Wrap implements age.Recipient.
func (r *sshEd25519Recipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	ephemeral := make([]byte, curve25519.ScalarSize)
	if _, err := rand.Read(ephemeral); err != nil {
		return nil, err
	}
	ours, err := curve25519.X25519(ephemeral, curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	shared, err := curve25519.X25519(ephemeral, r.theirs)
	if err != nil {
		return nil, err
	}
	wrapKey, err := sshEd25519WrapKey(r.sshKey, shared, ours, r.theirs)
	if err != nil {
		return nil, err
	}
	body, err := aeadSeal(wrapKey, fileKey)
	if err != nil {
		return nil, err
	}
	return []*age.Stanza{{
		Type: "ssh-ed25519",
		Args: []string{sshFingerprint(r.sshKey), stanzaB64.EncodeToString(ours)},
		Body: body,
	}}, nil
}

// sshEd25519Identity opens ssh-ed25519 stanzas.
type sshEd25519Identity struct {
	secret, ours []byte
	sshKey       ssh.PublicKey
}

// newSSHEd25519Identity derives the X25519 identity of an Ed25519 key: the
// clamped-by-X25519 first half of SHA-512 of the seed.
func newSSHEd25519Identity(key ed25519.PrivateKey) (*sshEd25519Identity, error) {
	pk, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		return nil, errors.New("unusable Ed25519 key")
	}
	h := sha512.Sum512(key.Seed())
	secret := slices.Clone(h[:curve25519.ScalarSize])
	clear(h[:])
	ours, err := curve25519.X25519(secret, curve25519.Basepoint)
	if err != nil {
		return nil, errors.New("unusable Ed25519 key")
	}
	return &sshEd25519Identity{secret: secret, ours: ours, sshKey: pk}, nil
}

// Unwrap implements age.Identity.
func (i *sshEd25519Identity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	fp := sshFingerprint(i.sshKey)
	for _, s := range stanzas {
		if s.Type != "ssh-ed25519" {
			continue
		}
		if len(s.Args) != 2 {
			return nil, errors.New("invalid ssh-ed25519 recipient stanza")
		}
		theirs, err := stanzaB64.DecodeString(s.Args[1])
		if err != nil || len(theirs) != curve25519.PointSize {
			return nil, errors.New("invalid ssh-ed25519 recipient stanza")
		}
		if s.Args[0] != fp {
			continue
		}
		shared, err := curve25519.X25519(i.secret, theirs)
		if err != nil {
			return nil, errors.New("invalid ssh-ed25519 recipient stanza")
		}
		wrapKey, err := sshEd25519WrapKey(i.sshKey, shared, theirs, i.ours)
		if err != nil {
			return nil, err
		}
		fileKey, err := aeadOpen(wrapKey, s.Body)
		if err != nil {
			// The fingerprint is a short hint and may collide.
			continue
		}
		return fileKey, nil
	}
	return nil, age.ErrIncorrectIdentity
}

// sshEd25519WrapKey derives the stanza's wrapping key: the X25519 shared
// secret multiplied by a tweak derived from the SSH key, then HKDF-SHA256
// salted with the ephemeral share and the recipient's X25519 key.
func sshEd25519WrapKey(sshKey ssh.PublicKey, shared, ephemeral, recipient []byte) ([]byte, error) {
	tweak := make([]byte, curve25519.ScalarSize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, nil, sshKey.Marshal(), []byte(sshEd25519Label)), tweak); err != nil {
		return nil, err
	}
	tweaked, err := curve25519.X25519(tweak, shared)
	if err != nil {
		return nil, errors.New("invalid ssh-ed25519 shared secret")
	}
	salt := slices.Concat(ephemeral, recipient)
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, tweaked, salt, []byte(sshEd25519Label)), key); err != nil {
		return nil, err
	}
	return key, nil
}

// aeadSeal encrypts with ChaCha20-Poly1305 under a single-use key and a
// zero nonce, as age's stanzas do.
func aeadSeal(key, plaintext []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, make([]byte, chacha20poly1305.NonceSize), plaintext, nil), nil
}

// aeadOpen is the inverse of aeadSeal.
func aeadOpen(key, ciphertext []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), ciphertext, nil)
}

// Field constants of edwards25519: p = 2^255 - 19, d = -121665/121666.
var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	curveD = func() *big.Int {
		d := new(big.Int).ModInverse(big.NewInt(121666), fieldP)
		d.Mul(d, big.NewInt(-121665))
		return d.Mod(d, fieldP)
	}()
)

// edwardsToMontgomery returns the X25519 public key (Montgomery u =
// (1+y)/(1-y)) of an Ed25519 public key, after checking that the key
// encodes a point of the curve. Like filippo.io/edwards25519, which age
// uses, it accepts a non-canonical y (reduced mod p).
func edwardsToMontgomery(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("invalid Ed25519 public key")
	}
	le := slices.Clone(pub)
	le[31] &= 0x7f
	slices.Reverse(le)
	y := new(big.Int).SetBytes(le)
	y.Mod(y, fieldP)
	// The point exists iff x² = (y²-1)/(d·y²+1) has a square root.
	y2 := new(big.Int).Mul(y, y)
	y2.Mod(y2, fieldP)
	num := new(big.Int).Sub(y2, big.NewInt(1))
	den := new(big.Int).Mul(curveD, y2)
	den.Add(den, big.NewInt(1))
	den.Mod(den, fieldP)
	den.ModInverse(den, fieldP)
	x2 := num.Mul(num, den)
	x2.Mod(x2, fieldP)
	if x2.Sign() != 0 && new(big.Int).ModSqrt(x2, fieldP) == nil {
		return nil, errors.New("invalid Ed25519 public key: not a curve point")
	}
	oneMinusY := new(big.Int).Sub(big.NewInt(1), y)
	oneMinusY.Mod(oneMinusY, fieldP)
	if oneMinusY.Sign() == 0 {
		return nil, errors.New("invalid Ed25519 public key: identity point")
	}
	u := new(big.Int).Add(big.NewInt(1), y)
	u.Mul(u, oneMinusY.ModInverse(oneMinusY, fieldP))
	u.Mod(u, fieldP)
	out := u.FillBytes(make([]byte, 32))
	slices.Reverse(out)
	return out, nil
}
