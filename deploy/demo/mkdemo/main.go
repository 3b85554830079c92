// Command mkdemo makes the stand-ins `make demo` needs so that it runs with no
// root and no outside service: a certbot-shaped lineage signed by a throwaway
// CA (in place of Let's Encrypt), its renewal, and an OpenSSH ed25519 host key
// (in place of a server's /etc/ssh/ssh_host_ed25519_key). It is a demo tool,
// not part of certsync.
//
//	mkdemo lineage ROOT NAME DOMAIN...   writes ROOT/archive/NAME/*1.pem and ROOT/live/NAME symlinks
//	mkdemo renew ROOT NAME DOMAIN...     adds the next version and repoints the symlinks, as certbot renew does
//	mkdemo sshkey FILE                   writes an OpenSSH ed25519 private key (0600), prints its public key
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkdemo: error:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: mkdemo lineage|renew ROOT NAME DOMAIN [DOMAIN] | sshkey FILE")
	}
	switch args[0] {
	case "lineage", "renew":
		if len(args) < 4 {
			return fmt.Errorf("usage: mkdemo %s ROOT NAME DOMAIN [DOMAIN]", args[0])
		}
		return writeVersion(args[1], args[2], args[3:])
	case "sshkey":
		return sshKey(args[1])
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// writeVersion issues a leaf for domains and writes it as the next version
// of the lineage, the way certbot lays out archive/ and live/.
func writeVersion(root, name string, domains []string) error {
	archive := filepath.Join(root, "archive", name)
	live := filepath.Join(root, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	n := 1
	for ; ; n++ {
		if _, err := os.Lstat(filepath.Join(archive, fmt.Sprintf("cert%d.pem", n))); errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	// Backdated an hour, as Let's Encrypt does, so that it is valid at once:
	// a node installs a certificate that is not valid yet only at its
	// NotBefore. A renewal in the same second goes one second later.
	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	if prev, err := readLeaf(filepath.Join(archive, fmt.Sprintf("cert%d.pem", n-1))); err == nil && !prev.NotBefore.Before(notBefore) {
		notBefore = prev.NotBefore.Add(time.Second)
	}
	files, err := issue(domains, notBefore)
	if err != nil {
		return err
	}
	for _, f := range []string{"cert", "chain", "fullchain", "privkey"} {
		file := fmt.Sprintf("%s%d.pem", f, n)
		mode := os.FileMode(0o644)
		if f == "privkey" {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(archive, file), files[f], mode); err != nil {
			return err
		}
		link := filepath.Join(live, f+".pem")
		tmp := link + ".new"
		os.Remove(tmp)
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, file), tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, link); err != nil {
			return err
		}
	}
	return nil
}

func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

// issue makes a throwaway root, an intermediate and a leaf valid for 90 days
// from now. certsync orders versions by the leaf's not-before, so a renewal
// always starts at least a second after the certificate it replaces.
func issue(domains []string, now time.Time) (map[string][]byte, error) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := func(cn string, ca bool, days int) *x509.Certificate {
		serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		c := &x509.Certificate{
			SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
			NotBefore: now, NotAfter: now.AddDate(0, 0, days),
			BasicConstraintsValid: true, IsCA: ca,
		}
		if ca {
			c.KeyUsage = x509.KeyUsageCertSign
		} else {
			c.KeyUsage = x509.KeyUsageDigitalSignature
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			c.DNSNames = domains
		}
		return c
	}
	root := tmpl("certsync demo root", true, 3650)
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, _ = x509.ParseCertificate(rootDER)
	inter := tmpl("certsync demo intermediate", true, 3650)
	interDER, err := x509.CreateCertificate(rand.Reader, inter, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	inter, _ = x509.ParseCertificate(interDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, tmpl(domains[0], false, 90), inter, &leafKey.PublicKey, interKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})
	return map[string][]byte{
		"cert":      cert,
		"chain":     chain,
		"fullchain": append(append([]byte{}, cert...), chain...),
		"privkey":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func sshKey(path string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "demo host key")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(pem.EncodeToMemory(block)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	fmt.Println(strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))))
	return nil
}
