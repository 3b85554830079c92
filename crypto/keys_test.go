package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/acmetest"
)

func TestSigningKeyPEM(t *testing.T) {
	t.Parallel()
	k := mustSigningKey(t)
	data := k.MarshalPEM()
	if !bytes.HasPrefix(data, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Fatalf("MarshalPEM = %q, want a PRIVATE KEY block", data)
	}
	got, err := ParseSigningKey(append([]byte("\n"), data...))
	if err != nil {
		t.Fatal(err)
	}
	if got.Public() != k.Public() || !got.priv.Equal(k.priv) {
		t.Error("parsed key differs")
	}
	msg := []byte("message")
	if !k.Public().verify(msg, got.sign(msg)) {
		t.Error("signature of the parsed key does not verify")
	}
}

func TestSigningKeyOpenSSL(t *testing.T) {
	t.Parallel()
	openssl := acmetest.RequireTool(t, "openssl")
	k := mustSigningKey(t)
	path := filepath.Join(t.TempDir(), "signing.key")
	if err := WriteKeyFile(path, k.MarshalPEM()); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkey", "-in", path, "-pubout", "-outform", "DER").Output()
	if err != nil {
		t.Fatalf("openssl pkey: %v", err)
	}
	pub := k.Public()
	if !bytes.HasSuffix(out, pub.key[:]) {
		t.Errorf("openssl's public key %x does not end in %x", out, pub.key)
	}
}

func TestParseSigningKeyRefuses(t *testing.T) {
	t.Parallel()
	k := mustSigningKey(t)
	good := k.MarshalPEM()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(good)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not PEM", []byte("hello")},
		{"two blocks", append(append([]byte{}, good...), good...)},
		{"wrong type", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: block.Bytes})},
		{"encrypted", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: block.Bytes})},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: block.Bytes[:len(block.Bytes)-1]})},
		{"EC key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSigningKey(tc.data)
			if err == nil {
				t.Fatal("ParseSigningKey succeeded")
			}
			if strings.Contains(err.Error(), string(good[30:50])) {
				t.Errorf("error %q holds key material", err)
			}
		})
	}
}

func TestPublicKeyText(t *testing.T) {
	t.Parallel()
	p := mustSigningKey(t).Public()
	s := p.String()
	if !strings.HasPrefix(s, "certsync-ed25519:") || len(s) != len("certsync-ed25519:")+44 {
		t.Fatalf("String = %q", s)
	}
	for _, in := range []string{s, " " + s + "\n", "\t" + s} {
		got, err := ParsePublicKey(in)
		if err != nil || got != p {
			t.Errorf("ParsePublicKey(%q) = %v, %v; want %v", in, got, err, p)
		}
	}
	if p.IsZero() || !(PublicKey{}).IsZero() {
		t.Error("IsZero is wrong")
	}
	b64 := strings.TrimPrefix(s, "certsync-ed25519:")
	for _, in := range []string{
		"",
		b64,
		"certsync-ed25519:",
		"certsync-ed25519:" + b64[:43], // padding missing
		"certsync-ed25519:" + strings.TrimSuffix(b64, "=") + "A=", // wrong length
		"certsync-ed25519:" + "AAAA" + b64,
		"ssh-ed25519 " + b64,
		"CERTSYNC-ED25519:" + b64,
		"certsync-ed25519: " + b64,
	} {
		if _, err := ParsePublicKey(in); err == nil {
			t.Errorf("ParsePublicKey(%q) succeeded", in)
		}
	}
	if _, err := ParsePublicKey("AGE-SECRET-KEY-1SECRET"); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("ParsePublicKey(secret) = %v, want an error that does not echo it", err)
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	k := mustSigningKey(t)
	path := filepath.Join(dir, "signing.key")
	if err := WriteKeyFile(path, k.MarshalPEM()); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSigningKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Public() != k.Public() {
		t.Error("loaded key differs")
	}
	_, idFile := x25519Pair(t)
	idPath := filepath.Join(dir, "node.key")
	if err := WriteKeyFile(idPath, idFile); err != nil {
		t.Fatal(err)
	}
	if ids, err := LoadIdentities(idPath); err != nil || len(ids) != 1 {
		t.Errorf("LoadIdentities = %d, %v", len(ids), err)
	}
	// A node key file is not a signing key, and says which file.
	if _, err := LoadSigningKey(idPath); err == nil || !strings.Contains(err.Error(), idPath) {
		t.Errorf("LoadSigningKey(identity file) = %v, want an error naming the path", err)
	}
	if _, err := LoadIdentities(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadIdentities(missing) = %v, want ErrNotExist", err)
	}
}
