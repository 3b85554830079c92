package crypto

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	nb := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	b := newTestBundle(t, "example.com", nb)
	info, err := b.Check(nb.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b.Cert)
	sum := sha256.Sum256(block.Bytes)
	// The version is the envelope's, not the certificate's; format 1's is
	// the NotBefore, which Format1Version gives.
	if info.Version != 0 {
		t.Errorf("Version = %d, want 0", info.Version)
	}
	if v := Format1Version(info.NotBefore); v != uint64(nb.Unix()) {
		t.Errorf("Format1Version = %d, want %d", v, nb.Unix())
	}
	if want := "sha256:" + hex.EncodeToString(sum[:]); info.Fingerprint.String() != want {
		t.Errorf("Fingerprint = %s, want %s", info.Fingerprint, want)
	}
	if want := strings.ToLower(info.Leaf.SerialNumber.Text(16)); info.Serial != want || want == "" {
		t.Errorf("Serial = %q, want %q", info.Serial, want)
	}
	if !info.NotBefore.Equal(nb) || info.NotBefore.Location() != time.UTC || info.NotAfter.Location() != time.UTC {
		t.Errorf("NotBefore = %v, NotAfter = %v, want UTC from %v", info.NotBefore, info.NotAfter, nb)
	}
	if !slices.Equal(info.DNSNames, []string{"example.com", "*.example.com"}) {
		t.Errorf("DNSNames = %v", info.DNSNames)
	}
}

func TestCheckKeyForms(t *testing.T) {
	t.Parallel()
	nb := time.Now().Add(-time.Hour)
	ca := newTestCA(t, nb.Add(-time.Hour), nb.Add(48*time.Hour))
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  any
		pem  []byte
	}{
		{"EC PRIVATE KEY", ecKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})},
		{"RSA PRIVATE KEY", rsaKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
		{"PKCS#8 RSA", rsaKey, pkcs8PEM(t, rsaKey)},
		{"PKCS#8 EC", ecKey, pkcs8PEM(t, ecKey)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := ca.leaf(t, tc.key, 7, nb, nb.Add(24*time.Hour), "example.org")
			b := &Bundle{Cert: cert, Chain: ca.pem, FullChain: slices.Concat(cert, ca.pem), PrivKey: tc.pem}
			if _, err := b.Check(time.Now()); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCheckRefuses(t *testing.T) {
	t.Parallel()
	now := time.Now()
	nb := now.Add(-time.Hour)
	ca := newTestCA(t, nb.Add(-time.Hour), nb.Add(48*time.Hour))
	expiredCA := newTestCA(t, nb.Add(-48*time.Hour), now.Add(-time.Minute))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert := ca.leaf(t, key, 2, nb, nb.Add(24*time.Hour), "example.com")
	expired := ca.leaf(t, key, 3, nb.Add(-2*time.Hour), now.Add(-time.Second), "example.com")
	future := ca.leaf(t, key, 4, now.Add(MaxFutureNotBefore+time.Hour), now.Add(MaxFutureNotBefore+48*time.Hour), "example.com")
	old := ca.leaf(t, key, 5, time.Unix(0, 0), now.Add(time.Hour), "example.com")
	keyPEM := pkcs8PEM(t, key)
	otherPEM := pkcs8PEM(t, otherKey)
	secret := strings.TrimSpace(strings.SplitN(string(keyPEM), "\n", 3)[1]) // a line of key base64
	encrypted := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte("x")})
	garbledKey := []byte(strings.Replace(string(keyPEM), secret[:8], "AAAAAAAA", 1))

	valid := func() *Bundle {
		return &Bundle{Cert: cert, Chain: ca.pem, FullChain: slices.Concat(cert, ca.pem), PrivKey: keyPEM}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Bundle)
		want  string // file named in the error
		clock error  // ErrExpired or ErrNotYetValid for a *ClockError; nil for none
	}{
		{"key mismatch", func(b *Bundle) { b.PrivKey = otherPEM }, "privkey.pem", nil},
		{"two keys", func(b *Bundle) { b.PrivKey = slices.Concat(keyPEM, otherPEM) }, "privkey.pem", nil},
		{"no key", func(b *Bundle) { b.PrivKey = nil }, "privkey.pem", nil},
		{"garbled key", func(b *Bundle) { b.PrivKey = garbledKey }, "privkey.pem", nil},
		{"encrypted key", func(b *Bundle) { b.PrivKey = encrypted }, "privkey.pem", nil},
		{"certificate as key", func(b *Bundle) { b.PrivKey = cert }, "privkey.pem", nil},
		{"key file over the limit", func(b *Bundle) { b.PrivKey = slices.Concat(keyPEM, make([]byte, MaxFileSize)) }, "privkey.pem", nil},
		{"expired leaf", func(b *Bundle) { b.Cert = expired; b.FullChain = slices.Concat(expired, ca.pem) }, "cert.pem", ErrExpired},
		{"leaf from the future", func(b *Bundle) { b.Cert = future; b.FullChain = slices.Concat(future, ca.pem) }, "cert.pem", ErrNotYetValid},
		{"leaf from 1970", func(b *Bundle) { b.Cert = old; b.FullChain = slices.Concat(old, ca.pem) }, "cert.pem", nil},
		{"expired chain certificate", func(b *Bundle) {
			b.Chain = slices.Concat(ca.pem, expiredCA.pem)
			b.FullChain = slices.Concat(cert, ca.pem, expiredCA.pem)
		}, "chain.pem", ErrExpired},
		// A fault the clock cannot cure is reported as such, even when the
		// clock would refuse the bundle too.
		{"expired leaf with another key", func(b *Bundle) {
			b.Cert, b.FullChain, b.PrivKey = expired, slices.Concat(expired, ca.pem), otherPEM
		}, "privkey.pem", nil},
		{"garbage cert", func(b *Bundle) { b.Cert = []byte("not a certificate\n") }, "cert.pem", nil},
		{"garbage after cert", func(b *Bundle) { b.Cert = slices.Concat(cert, []byte("junk")) }, "cert.pem", nil},
		{"unterminated PEM", func(b *Bundle) { b.Cert = cert[:len(cert)-10] }, "cert.pem", nil},
		{"bad DER", func(b *Bundle) {
			b.Cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}})
		}, "cert.pem", nil},
		{"two leaves", func(b *Bundle) { b.Cert = slices.Concat(cert, cert) }, "cert.pem", nil},
		{"empty cert", func(b *Bundle) { b.Cert = nil }, "cert.pem", nil},
		{"key in cert.pem", func(b *Bundle) { b.Cert = keyPEM }, "cert.pem", nil},
		{"empty chain", func(b *Bundle) { b.Chain = []byte("\n") }, "chain.pem", nil},
		{"fullchain without chain", func(b *Bundle) { b.FullChain = cert }, "fullchain.pem", nil},
		{"fullchain reversed", func(b *Bundle) { b.FullChain = slices.Concat(ca.pem, cert) }, "fullchain.pem", nil},
		{"fullchain with another leaf", func(b *Bundle) { b.FullChain = slices.Concat(expired, ca.pem) }, "fullchain.pem", nil},
		{"fullchain garbage", func(b *Bundle) { b.FullChain = []byte("-----BEGIN CERTIFICATE-----\n") }, "fullchain.pem", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := valid()
			tc.edit(b)
			info, err := b.Check(now)
			if err == nil || info != nil {
				t.Fatal("Check succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("Check = %q, want it to name %s", msg, tc.want)
			}
			if strings.Contains(msg, secret[:16]) || strings.Contains(msg, "AAAAAAAA") {
				t.Errorf("Check = %q, holds key material", msg)
			}
			var ce *ClockError
			switch {
			case tc.clock == nil && errors.As(err, &ce):
				t.Errorf("Check = %q, a ClockError; want a refusal the clock cannot cure", msg)
			case tc.clock != nil && (!errors.As(err, &ce) || !errors.Is(err, tc.clock) || !ce.At.Equal(now)):
				t.Errorf("Check = %#v, want a ClockError wrapping %v at %v", err, tc.clock, now)
			}
		})
	}
	if _, err := valid().Check(now); err != nil {
		t.Errorf("valid bundle: %v", err)
	}
}
