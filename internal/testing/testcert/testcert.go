// Package testcert makes X.509 certificates for tests and lays them out on
// disk exactly as certbot does, so the publisher and end-to-end tests read
// the same shape of files they meet in production.
//
// A CA is a self-signed root with one intermediate; Issue signs a leaf with
// chosen names and validity and returns its four PEM files (cert, chain,
// fullchain, privkey) in certbot's byte layout. WriteLineage writes them as a
// new certbot lineage:
//
//	<root>/archive/<name>/cert1.pem  chain1.pem  fullchain1.pem  privkey1.pem (0600)
//	<root>/live/<name>/cert.pem -> ../../archive/<name>/cert1.pem   (and the three others)
//
// RenewLineage adds version N+1 and repoints the live symlinks, as
// `certbot renew` does. Every function fails the test on error.
package testcert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// CA is a test certificate authority: a self-signed root and an
// intermediate that signs leaves, as public ACME CAs do.
type CA struct {
	// Root is the self-signed root certificate.
	Root *x509.Certificate
	// Intermediate signs the leaves; its PEM is the lineage's chain.pem.
	Intermediate *x509.Certificate
	// RootPEM and IntermediatePEM are the two certificates in PEM.
	RootPEM, IntermediatePEM []byte

	key *ecdsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago for ten years.
func NewCA(t testing.TB) *CA {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	rootKey := newKey(t)
	rootTmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: "certsync test root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root, rootPEM := sign(t, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	interKey := newKey(t)
	interTmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: "certsync test intermediate"},
		NotBefore:             rootTmpl.NotBefore,
		NotAfter:              rootTmpl.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	inter, interPEM := sign(t, interTmpl, root, &interKey.PublicKey, rootKey)
	return &CA{Root: root, Intermediate: inter, RootPEM: rootPEM, IntermediatePEM: interPEM, key: interKey}
}

// Options choose a leaf's names and validity.
type Options struct {
	// Names are the DNS names (default "example.com" and "*.example.com");
	// a name that parses as an IP address is an IP address SAN instead.
	// The first is the subject's common name.
	Names []string
	// NotBefore is the start of validity (default a minute ago). It is
	// truncated to the second, as X.509 stores it; certsync uses it as the
	// bundle's version, so successive leaves need distinct seconds.
	NotBefore time.Time
	// Validity is how long the leaf is valid from NotBefore (default 90
	// days). A short validity with an old NotBefore makes an expired leaf.
	Validity time.Duration
	// ClientAuth makes the leaf valid for TLS client authentication too,
	// as a NATS server's certificate must be for its cluster routes and
	// leaf node links, where it is also the client.
	ClientAuth bool
}

// Cert is an issued leaf and its files, byte for byte as certbot writes
// them: cert.pem holds the leaf, chain.pem the intermediate, fullchain.pem
// both, privkey.pem the leaf's PKCS #8 key.
type Cert struct {
	// Leaf is the parsed leaf certificate.
	Leaf *x509.Certificate
	// Cert, Chain, FullChain and PrivKey are the four PEM files.
	Cert, Chain, FullChain, PrivKey []byte
}

// Issue signs a new leaf with a fresh ECDSA P-256 key.
func (ca *CA) Issue(t testing.TB, o Options) *Cert {
	t.Helper()
	if len(o.Names) == 0 {
		o.Names = []string{"example.com", "*.example.com"}
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Minute)
	}
	o.NotBefore = o.NotBefore.Truncate(time.Second)
	if o.Validity == 0 {
		o.Validity = 90 * 24 * time.Hour
	}
	key := newKey(t)
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if o.ClientAuth {
		usage = append(usage, x509.ExtKeyUsageClientAuth)
	}
	var dnsNames []string
	var ips []net.IP
	for _, n := range o.Names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dnsNames = append(dnsNames, n)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t),
		Subject:      pkix.Name{CommonName: o.Names[0]},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotBefore.Add(o.Validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	leaf, leafPEM := sign(t, tmpl, ca.Intermediate, &key.PublicKey, ca.key)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testcert: marshal leaf key: %v", err)
	}
	chain := bytes.Clone(ca.IntermediatePEM)
	return &Cert{
		Leaf:      leaf,
		Cert:      leafPEM,
		Chain:     chain,
		FullChain: append(bytes.Clone(leafPEM), chain...),
		PrivKey:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	}
}

// WithKeyOf returns a copy of c whose privkey.pem is other's key: a bundle
// whose key does not match its certificate.
func (c *Cert) WithKeyOf(other *Cert) *Cert {
	d := *c
	d.PrivKey = bytes.Clone(other.PrivKey)
	return &d
}

// Files are the four files of a lineage, as certbot names them.
var Files = []string{"cert", "chain", "fullchain", "privkey"}

// WriteLineage writes c as the first version of a new certbot lineage name
// under root (certbot's configuration folder, like /etc/letsencrypt) and
// returns the live folder, root/live/<name>. It fails if the lineage exists.
func WriteLineage(t testing.TB, root, name string, c *Cert) string {
	t.Helper()
	archive := filepath.Join(root, "archive", name)
	live := filepath.Join(root, "live", name)
	for _, dir := range []string{archive, live} {
		if _, err := os.Lstat(dir); err == nil {
			t.Fatalf("testcert: lineage %q exists: %s", name, dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatalf("testcert: %v", err)
		}
	}
	readme := "This directory contains your keys and certificates.\n\n" +
		"`[cert name]/privkey.pem`  : the private key for your certificate.\n"
	if err := os.WriteFile(filepath.Join(live, "README"), []byte(readme), 0o644); err != nil {
		t.Fatalf("testcert: %v", err)
	}
	writeVersion(t, root, name, 1, c)
	return live
}

// RenewLineage adds c as the next version of an existing lineage (certN+1.pem
// and so on in the archive) and repoints the live symlinks to it, as `certbot
// renew` does. It returns the live folder and the new version number.
func RenewLineage(t testing.TB, root, name string, c *Cert) (string, int) {
	t.Helper()
	archive := filepath.Join(root, "archive", name)
	entries, err := os.ReadDir(archive)
	if err != nil {
		t.Fatalf("testcert: renew lineage %q: %v", name, err)
	}
	re := regexp.MustCompile(`^cert([0-9]+)\.pem$`)
	last := 0
	for _, e := range entries {
		if m := re.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			last = max(last, n)
		}
	}
	if last == 0 {
		t.Fatalf("testcert: renew lineage %q: no cert<N>.pem in %s", name, archive)
	}
	writeVersion(t, root, name, last+1, c)
	return filepath.Join(root, "live", name), last + 1
}

// writeVersion writes the archive files of version n and points the live
// symlinks at them, each replaced atomically by a rename.
func writeVersion(t testing.TB, root, name string, n int, c *Cert) {
	t.Helper()
	archive := filepath.Join(root, "archive", name)
	live := filepath.Join(root, "live", name)
	data := map[string][]byte{"cert": c.Cert, "chain": c.Chain, "fullchain": c.FullChain, "privkey": c.PrivKey}
	for _, f := range Files {
		mode := os.FileMode(0o644)
		if f == "privkey" {
			mode = 0o600
		}
		file := fmt.Sprintf("%s%d.pem", f, n)
		fd, err := os.OpenFile(filepath.Join(archive, file), os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if err != nil {
			t.Fatalf("testcert: %v", err)
		}
		if _, err := fd.Write(data[f]); err != nil {
			fd.Close()
			t.Fatalf("testcert: %v", err)
		}
		if err := fd.Close(); err != nil {
			t.Fatalf("testcert: %v", err)
		}
		link := filepath.Join(live, f+".pem")
		tmp := link + ".new"
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, file), tmp); err != nil {
			t.Fatalf("testcert: %v", err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatalf("testcert: %v", err)
		}
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testcert: generate key: %v", err)
	}
	return key
}

func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testcert: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("testcert: create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testcert: parse certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
