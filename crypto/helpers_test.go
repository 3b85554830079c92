package crypto

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"golang.org/x/crypto/ssh"
)

// testCA is a throwaway certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// newTestCA makes an intermediate-like CA valid from notBefore to notAfter.
func newTestCA(t testing.TB, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certsync test CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf issues a leaf for key, returning its PEM.
func (ca *testCA) leaf(t testing.TB, key any, serial int64, notBefore, notAfter time.Time, names ...string) []byte {
	t.Helper()
	var pub any
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	case *rsa.PrivateKey:
		pub = &k.PublicKey
	case ed25519.PrivateKey:
		pub = k.Public()
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pkcs8PEM encodes a private key as a PEM "PRIVATE KEY".
func pkcs8PEM(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// newTestBundle returns a valid bundle for name whose leaf is valid from
// notBefore for 90 days, with an ECDSA key.
func newTestBundle(t testing.TB, name string, notBefore time.Time) *Bundle {
	t.Helper()
	ca := newTestCA(t, notBefore.Add(-24*time.Hour), notBefore.Add(365*24*time.Hour))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.leaf(t, key, notBefore.Unix(), notBefore, notBefore.Add(90*24*time.Hour), name, "*."+name)
	return &Bundle{
		Name:      name,
		Version:   uint64(notBefore.Unix()),
		Cert:      cert,
		Chain:     ca.pem,
		FullChain: append(append([]byte{}, cert...), ca.pem...),
		PrivKey:   pkcs8PEM(t, key),
	}
}

// sshEd25519Pair returns an ssh-ed25519 recipient line, with a comment,
// and the matching OpenSSH private key file.
func sshEd25519Pair(t testing.TB) (string, []byte) {
	t.Helper()
	k := testkeys.Ed25519(t)
	return k.Line + " test@certsync", k.PEM
}

// sshRSAPair returns an ssh-rsa recipient line and the matching OpenSSH
// private key file.
func sshRSAPair(t testing.TB) (string, []byte) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return sshPair(t, &priv.PublicKey, priv)
}

func sshPair(t testing.TB, pub, priv any) (string, []byte) {
	t.Helper()
	spub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "test@certsync")
	if err != nil {
		t.Fatal(err)
	}
	line := string(ssh.MarshalAuthorizedKey(spub))
	return line[:len(line)-1] + " test@certsync", pem.EncodeToMemory(block)
}

// x25519Pair returns an age recipient string and an identity file.
func x25519Pair(t testing.TB) (string, []byte) {
	t.Helper()
	id := testkeys.X25519(t)
	return id.Recipient().String(), []byte("# created: test\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n")
}

// mustRecipients parses recipient strings.
func mustRecipients(t testing.TB, ss ...string) []age.Recipient {
	t.Helper()
	var rs []age.Recipient
	for _, s := range ss {
		r, err := ParseRecipient(s)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// mustIdentities parses an identity file.
func mustIdentities(t testing.TB, data []byte) []age.Identity {
	t.Helper()
	ids, err := ParseIdentities(data)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// mustSigningKey generates a signing key.
func mustSigningKey(t testing.TB) *SigningKey {
	t.Helper()
	k, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// withFormat makes Seal write envelope format f: 1 for what publishers
// wrote before format 2 (the vectors of format 1 are regenerated so).
func withFormat(f uint8) SealOption {
	return func(o *sealOptions) { o.format = f }
}

// withoutIndex makes Seal leave out the stanza index: what format 2
// publishers wrote before it existed (the vectors of that time are
// regenerated so).
func withoutIndex() SealOption {
	return func(o *sealOptions) { o.noIndex = true }
}
