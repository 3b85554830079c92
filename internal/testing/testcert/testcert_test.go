package testcert

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestIssueVerifies(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	nb := time.Now().Add(-time.Hour)
	c := ca.Issue(t, Options{Names: []string{"a.test"}, NotBefore: nb, Validity: 2 * time.Hour})
	if !c.Leaf.NotBefore.Equal(nb.Truncate(time.Second)) || !c.Leaf.NotAfter.Equal(c.Leaf.NotBefore.Add(2*time.Hour)) {
		t.Errorf("validity %v..%v, want from %v for 2h", c.Leaf.NotBefore, c.Leaf.NotAfter, nb)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root)
	inter := x509.NewCertPool()
	if !inter.AppendCertsFromPEM(c.Chain) {
		t.Fatal("chain.pem holds no certificate")
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "a.test", Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
	if !bytes.Equal(c.FullChain, append(append([]byte{}, c.Cert...), c.Chain...)) {
		t.Error("fullchain.pem is not cert.pem followed by chain.pem")
	}
	block, _ := pem.Decode(c.PrivKey)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatal("privkey.pem is not a PKCS #8 PEM block")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Errorf("privkey.pem: %v", err)
	}
}

func TestLineageLikeCertbot(t *testing.T) {
	t.Parallel()
	ca := NewCA(t)
	root := t.TempDir()
	first := ca.Issue(t, Options{NotBefore: time.Now().Add(-2 * time.Hour)})
	live := WriteLineage(t, root, "example.com", first)
	if live != filepath.Join(root, "live", "example.com") {
		t.Fatalf("live folder %s", live)
	}
	checkLive(t, live, 1, first)

	second := ca.Issue(t, Options{})
	if _, n := RenewLineage(t, root, "example.com", second); n != 2 {
		t.Fatalf("renewed version %d, want 2", n)
	}
	checkLive(t, live, 2, second)
	// The first version stays in the archive, as certbot keeps it.
	old, err := os.ReadFile(filepath.Join(root, "archive", "example.com", "cert1.pem"))
	if err != nil || !bytes.Equal(old, first.Cert) {
		t.Errorf("archive cert1.pem changed or missing: %v", err)
	}
}

func checkLive(t *testing.T, live string, n int, c *Cert) {
	t.Helper()
	want := map[string][]byte{"cert": c.Cert, "chain": c.Chain, "fullchain": c.FullChain, "privkey": c.PrivKey}
	for _, f := range Files {
		p := filepath.Join(live, f+".pem")
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("%s is not a symlink: %v", p, err)
		}
		if wantTarget := filepath.Join("..", "..", "archive", "example.com", f+string(rune('0'+n))+".pem"); target != wantTarget {
			t.Errorf("%s -> %s, want %s", p, target, wantTarget)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want[f]) {
			t.Errorf("%s: content differs (%v)", p, err)
		}
	}
	st, err := os.Stat(filepath.Join(live, "privkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("privkey.pem mode %v, want 0600", st.Mode().Perm())
	}
}
