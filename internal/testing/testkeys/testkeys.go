// Package testkeys makes the keys tests seal to and open with: new age
// X25519 identities and ssh-ed25519 key pairs, with the texts a node's
// configuration and sshd hold them in.
package testkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	"filippo.io/age"
	"golang.org/x/crypto/ssh"
)

// X25519 returns a new age X25519 identity, or fails the test.
func X25519(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// SSH is an ssh-ed25519 key pair, as sshd keeps a host key.
type SSH struct {
	Public  ed25519.PublicKey
	Private ed25519.PrivateKey
	// Line is the public key as an authorized_keys line without a comment:
	// "ssh-ed25519 AAAA…".
	Line string
	// PEM is the private key as an unencrypted OpenSSH key file.
	PEM []byte
}

// Ed25519 returns a new ssh-ed25519 key pair, or fails the test.
func Ed25519(t testing.TB) *SSH {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return &SSH{
		Public:  pub,
		Private: priv,
		Line:    strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub))),
		PEM:     pem.EncodeToMemory(block),
	}
}
