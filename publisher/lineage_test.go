package publisher

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestReadLineageFollowsRenewals(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	root := t.TempDir()
	first := ca.Issue(t, testcert.Options{NotBefore: time.Now().Add(-time.Hour)})
	live := testcert.WriteLineage(t, root, "example.com", first)
	second := ca.Issue(t, testcert.Options{})
	testcert.RenewLineage(t, root, "example.com", second)

	b, err := ReadLineage(live+"/", "")
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "example.com" {
		t.Errorf("name %q, want the folder's", b.Name)
	}
	if !bytes.Equal(b.Cert, second.Cert) || !bytes.Equal(b.Chain, second.Chain) ||
		!bytes.Equal(b.FullChain, second.FullChain) || !bytes.Equal(b.PrivKey, second.PrivKey) {
		t.Error("read files are not the renewed version's")
	}
	if _, err := b.Check(time.Now()); err != nil {
		t.Errorf("check: %v", err)
	}
	// --name overrides the folder's name.
	if b, err := ReadLineage(live, "other.example"); err != nil || b.Name != "other.example" {
		t.Errorf("override: %v, %v", b, err)
	}
	// The name comes from the cleaned path.
	if b, err := ReadLineage(live+"/../example.com/.", ""); err != nil || b.Name != "example.com" {
		t.Errorf("unclean path: %v, %v", b, err)
	}
}

func TestReadLineageRefusals(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	root := t.TempDir()
	live := testcert.WriteLineage(t, root, "example.com", ca.Issue(t, testcert.Options{}))
	big := filepath.Join(root, "big.pem")
	treetest.WriteFile(t, big, bytes.Repeat([]byte("A"), crypto.MaxFileSize+1), 0o600)
	bigLive := filepath.Join(root, "live", "big.example")
	treetest.MkdirAll(t, bigLive, 0o700)
	for _, f := range testcert.Files {
		target := filepath.Join(live, f+".pem")
		if f == "chain" {
			target = big
		}
		if err := os.Symlink(target, filepath.Join(bigLive, f+".pem")); err != nil {
			t.Fatal(err)
		}
	}
	dirLive := filepath.Join(root, "live", "dir.example")
	treetest.MkdirAll(t, filepath.Join(dirLive, "cert.pem"), 0o700)
	tests := []struct {
		dir, name, want string
	}{
		{bigLive, "", `chain.pem": 65537 bytes, more than the limit of 65536`},
		{dirLive, "", `cert.pem": not a regular file`},
		{filepath.Join(root, "live", "missing.example"), "", "no such file or directory"},
		{live, "../../etc", `invalid certificate name "../../etc"`},
		{"/", "", `invalid certificate name "/"`},
	}
	for _, tt := range tests {
		_, err := ReadLineage(tt.dir, tt.name)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadLineage(%q, %q): %v, want an error containing %q", tt.dir, tt.name, err, tt.want)
		}
	}
}

func TestReadFiles(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	c := ca.Issue(t, testcert.Options{})
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		treetest.WriteFile(t, p, data, 0o600)
		return p
	}
	cert, chain, full, key := write("cert.pem", c.Cert), write("chain.pem", c.Chain), write("full.pem", c.FullChain), write("key.pem", c.PrivKey)
	noNewline := write("nonl.pem", bytes.TrimRight(c.Cert, "\n"))

	check := func(what string, b *crypto.Bundle, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(b.Cert, c.Cert) && !bytes.Equal(b.Cert, bytes.TrimRight(c.Cert, "\n")) {
			t.Errorf("%s: cert.pem differs", what)
		}
		if !bytes.Equal(b.Chain, c.Chain) || !bytes.Equal(b.PrivKey, c.PrivKey) {
			t.Errorf("%s: chain or key differs", what)
		}
		if !bytes.Equal(b.FullChain, c.FullChain) {
			t.Errorf("%s: fullchain.pem %q, want %q", what, b.FullChain, c.FullChain)
		}
		if _, err := b.Check(time.Now()); err != nil {
			t.Errorf("%s: check: %v", what, err)
		}
	}
	b, err := ReadFiles("example.com", cert, key, chain)
	check("cert and chain", b, err)
	b, err = ReadFiles("example.com", full, key, "")
	check("full chain split", b, err)
	b, err = ReadFiles("example.com", noNewline, key, chain)
	check("cert without final newline", b, err)

	for _, tt := range []struct {
		name, cert, key, chain, want string
	}{
		{"../../etc", cert, key, chain, `invalid certificate name "../../etc"`},
		{"example.com", full, key, chain, "holds 2 PEM blocks and a chain file is given"},
		{"example.com", cert, "", "", "a certificate file and a key file are required"},
		{"example.com", key + ".missing", key, "", "no such file"},
		{"example.com", write("empty.pem", nil), key, "", "holds no PEM block"},
	} {
		if _, err := ReadFiles(tt.name, tt.cert, tt.key, tt.chain); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadFiles(%q, %q, %q, %q): %v, want %q", tt.name, tt.cert, tt.key, tt.chain, err, tt.want)
		}
	}
}
