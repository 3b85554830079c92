package crypto

import (
	"bytes"
	stdcrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// MaxFileSize bounds each of a bundle's four PEM files.
const MaxFileSize = 64 << 10

// The names of a bundle's files, wherever they are kept: in certbot's
// lineage, in the envelope's plaintext (in this order), in a node's stage
// folder and in each installed version folder. Nothing else names them.
const (
	// FileCert is the leaf certificate.
	FileCert = "cert.pem"
	// FileChain is the intermediate certificates.
	FileChain = "chain.pem"
	// FileFullChain is FileCert followed by FileChain.
	FileFullChain = "fullchain.pem"
	// FileKey is the leaf's private key. Secret.
	FileKey = "privkey.pem"
	// FileCombined is FileFullChain followed by FileKey, which a node
	// installs for HAProxy when asked to. Secret.
	FileCombined = "combined.pem"
	// FileRecord is the non-secret record a node keeps beside a staged or
	// installed bundle (its [Release], signer and times).
	FileRecord = "certsync.json"
)

// BundleFile is one of a bundle's four PEM files: its name and where its
// bytes are held.
type BundleFile struct {
	// Name is FileCert, FileChain, FileFullChain or FileKey.
	Name string
	// Data points at the field of the Bundle holding the file.
	Data *[]byte
}

// Files returns b's four PEM files in their order (FileCert, FileChain,
// FileFullChain, FileKey), pointing into b: a reader fills them, a writer
// reads them.
func (b *Bundle) Files() []BundleFile {
	return []BundleFile{
		{FileCert, &b.Cert}, {FileChain, &b.Chain}, {FileFullChain, &b.FullChain}, {FileKey, &b.PrivKey},
	}
}

// MaxFutureNotBefore is how far in the future a leaf's NotBefore may lie
// when checked. Format 1's version is the NotBefore, and nodes refuse lower
// versions, so a certificate dated years ahead would block every later
// renewal; a day covers clock skew between the CA, the publisher and nodes.
const MaxFutureNotBefore = 24 * time.Hour

// Bundle is one certificate as certbot keeps it: the four PEM files of a
// lineage, byte for byte, with its name and version.
type Bundle struct {
	// Name is the certificate name (certbot's lineage name).
	Name string
	// Version is the bundle's signed version, strictly increasing per
	// certificate: assigned by the publisher (format 2), or the leaf's
	// NotBefore ([Format1Version], format 1). [Bundle.Check] leaves it be.
	Version uint64
	// Cert is cert.pem: the leaf certificate.
	Cert []byte
	// Chain is chain.pem: the intermediate certificates.
	Chain []byte
	// FullChain is fullchain.pem: Cert followed by Chain.
	FullChain []byte
	// PrivKey is privkey.pem: the leaf's private key. Secret.
	PrivKey []byte
}

// Info describes a checked bundle's leaf certificate. None of it is secret.
type Info struct {
	// Release is the leaf's version, serial, fingerprint and validity.
	Release
	// DNSNames are the leaf's DNS subject alternative names.
	DNSNames []string
	// Leaf is the parsed leaf certificate.
	Leaf *x509.Certificate
}

// Check validates the bundle's PEM files and describes its leaf:
//
//   - cert.pem holds exactly one CERTIFICATE block;
//   - chain.pem holds one or more CERTIFICATE blocks;
//   - fullchain.pem holds the certificates of cert.pem followed by those of
//     chain.pem, in that order;
//   - privkey.pem holds exactly one private key ("PRIVATE KEY" PKCS#8,
//     "EC PRIVATE KEY" or "RSA PRIVATE KEY"), unencrypted, whose public key
//     is the leaf's;
//   - the leaf's NotBefore is not before 1970;
//   - no certificate has expired at now, and the leaf's NotBefore is at most
//     [MaxFutureNotBefore] after now: these two depend on now alone and are
//     checked last, so their failure, a [*ClockError] wrapping [ErrExpired]
//     or [ErrNotYetValid], means the bundle passed every other check;
//   - each file is at most [MaxFileSize] bytes and holds nothing but PEM
//     blocks and white space.
//
// Errors name the file and the reason and never contain key material.
// Check does not look at b.Name or b.Version, and the Info's Version is 0:
// the version is the envelope's, not the certificate's.
func (b *Bundle) Check(now time.Time) (*Info, error) {
	certs, err := parseCertFile(FileCert, b.Cert)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("checking %s: %d certificates, want exactly one", FileCert, len(certs))
	}
	leaf := certs[0]
	chain, err := parseCertFile(FileChain, b.Chain)
	if err != nil {
		return nil, err
	}
	full, err := parseCertFile(FileFullChain, b.FullChain)
	if err != nil {
		return nil, err
	}
	want := append([]*x509.Certificate{leaf}, chain...)
	if len(full) != len(want) {
		return nil, fmt.Errorf("checking %s: %d certificates, want %d (%s followed by %s)", FileFullChain, len(full), len(want), FileCert, FileChain)
	}
	for i := range full {
		if !full[i].Equal(want[i]) {
			return nil, fmt.Errorf("checking %s: certificate %d differs from %s followed by %s", FileFullChain, i+1, FileCert, FileChain)
		}
	}
	key, err := parseKeyFile(FileKey, b.PrivKey)
	if err != nil {
		return nil, err
	}
	pub, ok := key.Public().(interface {
		Equal(stdcrypto.PublicKey) bool
	})
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("checking %s: the private key does not match the certificate in %s", FileKey, FileCert)
	}
	// What follows needs no clock; the clock's checks come last, so a
	// ClockError means nothing else is wrong with the bundle.
	if leaf.NotBefore.Unix() <= 0 {
		return nil, fmt.Errorf("checking %s: certificate valid from %s, before 1970", FileCert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, &ClockError{Err: ErrExpired, At: now,
			Reason: fmt.Sprintf("checking %s: certificate expired at %s", FileCert, leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	for i, c := range chain {
		if now.After(c.NotAfter) {
			return nil, &ClockError{Err: ErrExpired, At: now,
				Reason: fmt.Sprintf("checking %s: certificate %d (%s) expired at %s", FileChain, i+1, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	if leaf.NotBefore.After(now.Add(MaxFutureNotBefore)) {
		return nil, &ClockError{Err: ErrNotYetValid, At: now,
			Reason: fmt.Sprintf("checking %s: certificate not valid until %s, more than %s ahead", FileCert, leaf.NotBefore.UTC().Format(time.RFC3339), MaxFutureNotBefore)}
	}
	return &Info{
		Release: Release{
			Serial:      leaf.SerialNumber.Text(16),
			Fingerprint: FingerprintOf(leaf.Raw),
			NotBefore:   leaf.NotBefore.UTC(),
			NotAfter:    leaf.NotAfter.UTC(),
		},
		DNSNames: leaf.DNSNames,
		Leaf:     leaf,
	}, nil
}

// Format1Version is the version a format 1 envelope carries for a leaf
// valid from notBefore: its Unix seconds. A node refuses a format 1
// envelope whose signed version is not its leaf's Format1Version.
func Format1Version(notBefore time.Time) uint64 { return uint64(notBefore.Unix()) }

// pemBlocks splits a file into PEM blocks, refusing empty or oversized
// files and any data outside the blocks. Errors never echo file bytes.
func pemBlocks(file string, data []byte) ([]*pem.Block, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("checking %s: %d bytes exceeds the limit of %d", file, len(data), MaxFileSize)
	}
	var blocks []*pem.Block
	rest := data
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("checking %s: data outside PEM blocks at byte %d", file, len(data)-len(rest))
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("checking %s: invalid PEM block at byte %d", file, len(data)-len(rest))
		}
		blocks = append(blocks, block)
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("checking %s: no PEM block found", file)
	}
	return blocks, nil
}

// parseCertFile parses a file of one or more CERTIFICATE blocks.
func parseCertFile(file string, data []byte) ([]*x509.Certificate, error) {
	blocks, err := pemBlocks(file, data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for i, block := range blocks {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("checking %s: block %d is %q, want CERTIFICATE", file, i+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("checking %s: certificate %d does not parse: %v", file, i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// parseKeyFile parses a file holding exactly one unencrypted private key.
// Parse errors are not wrapped: they could describe key bytes.
func parseKeyFile(file string, data []byte) (stdcrypto.Signer, error) {
	blocks, err := pemBlocks(file, data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("checking %s: %d PEM blocks, want exactly one private key", file, len(blocks))
	}
	block := blocks[0]
	if len(block.Headers) != 0 || block.Type == "ENCRYPTED PRIVATE KEY" {
		return nil, fmt.Errorf("checking %s: encrypted private keys are not supported", file)
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("checking %s: block is %q, want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY", file, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("checking %s: the %s block does not parse", file, block.Type)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, errors.New("checking " + file + ": unsupported private key type")
}
