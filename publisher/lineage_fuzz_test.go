package publisher

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// FuzzReadLineage feeds arbitrary file contents through the lineage reader
// and the bundle check that publish applies to it. It must never panic,
// and any error must be one line that repeats none of the private key.
func FuzzReadLineage(f *testing.F) {
	ca := testcert.NewCA(f)
	c := ca.Issue(f, testcert.Options{Names: []string{"example.com"}})
	f.Add(c.Cert, c.Chain, c.FullChain, c.PrivKey)
	f.Add(c.Cert, c.Chain, c.FullChain, c.Cert)
	f.Add(c.FullChain, []byte{}, c.FullChain, c.PrivKey)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), c.Chain, c.FullChain, c.PrivKey)
	f.Fuzz(func(t *testing.T, cert, chain, fullchain, privkey []byte) {
		dir := filepath.Join(t.TempDir(), "example.com")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string][]byte{"cert.pem": cert, "chain.pem": chain, "fullchain.pem": fullchain, "privkey.pem": privkey} {
			treetest.WriteFile(t, filepath.Join(dir, name), data, 0o600)
		}
		b, err := ReadLineage(dir, "")
		if err == nil {
			_, err = b.Check(time.Now())
		}
		checkFuzzError(t, err, privkey)

		// The explicit-files reader splits a full chain itself.
		b, err = ReadFiles("example.com", filepath.Join(dir, "cert.pem"), filepath.Join(dir, "privkey.pem"), "")
		if err == nil {
			if !bytes.Equal(append(bytes.Clone(b.Cert), b.Chain...), cert) || !bytes.Equal(b.FullChain, cert) {
				t.Fatalf("ReadFiles split %q into cert and chain that do not join back", cert)
			}
			_, err = b.Check(time.Now())
		}
		checkFuzzError(t, err, privkey)
	})
}

func checkFuzzError(t *testing.T, err error, privkey []byte) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Fatalf("error spans lines: %q", msg)
	}
	// No 16-byte run of the key file's base64 body may appear in an error.
	for line := range bytes.Lines(privkey) {
		line = bytes.TrimSpace(line)
		if len(line) < 16 || bytes.HasPrefix(line, []byte("-----")) {
			continue
		}
		for i := 0; i+16 <= len(line); i += 8 {
			if strings.Contains(msg, string(line[i:i+16])) {
				t.Fatalf("error repeats private key bytes: %q", msg)
			}
		}
	}
}
