package publisher

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/wire"
)

// ReadLineage reads the four files of a certbot lineage folder (certbot's
// live/<name>/: cert.pem, chain.pem, fullchain.pem and privkey.pem, usually
// symlinks into ../../archive/<name>/, which are followed). The bundle's name
// is name, or the folder's base name when name is empty; it must be a valid
// certificate name. Each file must be a regular file of at most
// crypto.MaxFileSize bytes. The bundle is not checked: Publish does that.
func ReadLineage(dir, name string) (*crypto.Bundle, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("reading lineage %q: %w", dir, err)
	}
	if name == "" {
		name = filepath.Base(abs)
	}
	if err := wire.CheckCertName(name); err != nil {
		return nil, fmt.Errorf("reading lineage %q: %w", dir, err)
	}
	b := &crypto.Bundle{Name: name}
	for _, f := range b.Files() {
		data, err := readFile(filepath.Join(abs, f.Name))
		if err != nil {
			return nil, fmt.Errorf("reading lineage %q: %w", dir, err)
		}
		*f.Data = data
	}
	return b, nil
}

// ReadFiles reads a bundle from explicit PEM files, for certificates that
// certbot does not manage. name must be a valid certificate name; certPath
// and keyPath are required.
//
// With chainPath, certPath must hold the leaf alone, and fullchain.pem is
// the leaf followed by the chain (a newline is put between them if the leaf
// does not end with one). Without chainPath, certPath may hold a full chain
// (leaf first, as certbot's fullchain.pem): the leaf and its line ending
// become cert.pem, the rest chain.pem, and the file itself fullchain.pem, so
// the bytes are kept exactly. A certificate file holding the leaf alone and
// no chainPath gives an empty chain, which Publish refuses (a bundle needs
// its chain).
func ReadFiles(name, certPath, keyPath, chainPath string) (*crypto.Bundle, error) {
	if err := wire.CheckCertName(name); err != nil {
		return nil, fmt.Errorf("reading certificate files: %w", err)
	}
	if certPath == "" || keyPath == "" {
		return nil, fmt.Errorf("reading certificate files of %q: a certificate file and a key file are required", name)
	}
	cert, err := readFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading certificate files of %q: %w", name, err)
	}
	key, err := readFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading certificate files of %q: %w", name, err)
	}
	b := &crypto.Bundle{Name: name, PrivKey: key}
	if chainPath != "" {
		chain, err := readFile(chainPath)
		if err != nil {
			return nil, fmt.Errorf("reading certificate files of %q: %w", name, err)
		}
		if n := countBlocks(cert); n > 1 {
			return nil, fmt.Errorf("reading certificate files of %q: %q holds %d PEM blocks and a chain file is given: give the leaf certificate alone", name, certPath, n)
		}
		full := bytes.Clone(cert)
		if len(full) > 0 && full[len(full)-1] != '\n' {
			full = append(full, '\n')
		}
		b.Cert, b.Chain, b.FullChain = cert, chain, append(full, chain...)
		return b, nil
	}
	block, rest := pem.Decode(cert)
	if block == nil {
		return nil, fmt.Errorf("reading certificate files of %q: %q holds no PEM block", name, certPath)
	}
	b.Cert = cert[:len(cert)-len(rest)]
	b.Chain = rest
	b.FullChain = cert
	return b, nil
}

// countBlocks counts the PEM blocks in data.
func countBlocks(data []byte) int {
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return n
		}
		n++
	}
}

// readFile reads a regular file (following symlinks) of at most
// crypto.MaxFileSize bytes. Its errors name the file, never its content.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, atomicfile.Cause(err))
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %q: not a regular file", path)
	}
	if st.Size() > crypto.MaxFileSize {
		return nil, fmt.Errorf("reading %q: %d bytes, more than the limit of %d", path, st.Size(), crypto.MaxFileSize)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, atomicfile.Cause(err))
	}
	defer f.Close()
	data, err := atomicfile.ReadAtMost(f, crypto.MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, err)
	}
	return data, nil
}

// maxArchived bounds how many certificates of one lineage Rollback looks
// at in certbot's archive: far more than decades of renewals.
const maxArchived = 1000

// archiveFile matches certbot's archived certificates, cert<N>.pem.
var archiveFile = regexp.MustCompile(`^cert([1-9][0-9]{0,8})\.pem$`)

// archive is certbot's archive of one lineage, <lineages>/../archive/<name>/:
// for each issue N of the certificate, certN.pem, chainN.pem, fullchainN.pem
// and privkeyN.pem, which the live/<name>/ links point at.
type archive struct {
	name string
	dir  string
	// current is the issue live/<name>/cert.pem points at.
	current int
	// issues are the issues found, highest first.
	issues []int
	read   map[int]*archived
}

// archived is one issue of an archive: its leaf's serial, fingerprint and
// validity (no version: that is an envelope's).
type archived struct {
	index int
	crypto.Release
}

// file is the name of one of the issue's four files, kind one of "cert",
// "chain", "fullchain" and "privkey".
func (e *archived) file(kind string) string { return kind + strconv.Itoa(e.index) + ".pem" }

// openArchive finds the archive of the certbot lineage lineages/name: its
// cert.pem must be a link to a certN.pem in lineages/../archive/name/ (as
// certbot makes them); anything else is not certbot's lineage, and has no
// earlier certificates to go back to.
func openArchive(lineages, name string) (*archive, error) {
	live := filepath.Join(lineages, name)
	dir := filepath.Join(lineages, "..", "archive", name)
	notCertbot := func(why string) error {
		return fmt.Errorf("lineage %q is not certbot's: %s; only certbot's archive (%s) holds earlier certificates to go back to", live, why, dir)
	}
	link := filepath.Join(live, crypto.FileCert)
	target, err := os.Readlink(link)
	switch {
	case errors.Is(err, syscall.EINVAL):
		return nil, notCertbot(crypto.FileCert + " is not a link into its archive")
	case err != nil:
		return nil, fmt.Errorf("reading lineage %q: %w", live, atomicfile.Cause(err))
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(live, target)
	}
	m := archiveFile.FindStringSubmatch(filepath.Base(target))
	if m == nil {
		return nil, notCertbot(fmt.Sprintf("%s links to %q, not to a cert<N>.pem", crypto.FileCert, filepath.Base(target)))
	}
	want, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, notCertbot(fmt.Sprintf("reading its archive: %v", atomicfile.Cause(err)))
	}
	if got, err := filepath.EvalSymlinks(filepath.Dir(target)); err != nil || got != want {
		return nil, notCertbot(fmt.Sprintf("%s links into %q, not into its archive", crypto.FileCert, filepath.Dir(target)))
	}
	a := &archive{name: name, dir: dir, read: map[int]*archived{}}
	a.current, _ = strconv.Atoi(m[1])
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading archive %q: %w", dir, atomicfile.Cause(err))
	}
	for _, e := range entries {
		if m := archiveFile.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[1])
			a.issues = append(a.issues, n)
		}
	}
	if len(a.issues) > maxArchived {
		return nil, fmt.Errorf("reading archive %q: %d certificates, more than the %d certsync looks at", dir, len(a.issues), maxArchived)
	}
	slices.Sort(a.issues)
	slices.Reverse(a.issues)
	return a, nil
}

// find returns the highest issue for which match is true, or nil. It
// reads each certN.pem it looks at (bounded, as every lineage file);
// one that does not hold a certificate is an error naming it.
func (a *archive) find(match func(*archived) bool) (*archived, error) {
	for _, n := range a.issues {
		e, err := a.issue(n)
		if err != nil {
			return nil, err
		}
		if match(e) {
			return e, nil
		}
	}
	return nil, nil
}

// issue reads the leaf of issue n.
func (a *archive) issue(n int) (*archived, error) {
	if e := a.read[n]; e != nil {
		return e, nil
	}
	e := &archived{index: n}
	path := filepath.Join(a.dir, e.file("cert"))
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading archive %q: %w", a.dir, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("reading archive %q: %q holds no certificate", a.dir, path)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading archive %q: %q: parsing the certificate: %v", a.dir, path, err)
	}
	e.Release = crypto.Release{
		Serial:      leaf.SerialNumber.Text(16),
		Fingerprint: crypto.FingerprintOf(leaf.Raw),
		NotBefore:   leaf.NotBefore.UTC(),
		NotAfter:    leaf.NotAfter.UTC(),
	}
	a.read[n] = e
	return e, nil
}

// bundle reads the four files of issue e, bounded as ReadLineage's. It is
// not checked: Publish's checks apply.
func (a *archive) bundle(e *archived) (*crypto.Bundle, error) {
	b := &crypto.Bundle{Name: a.name}
	for _, f := range []struct {
		kind string
		dst  *[]byte
	}{{"cert", &b.Cert}, {"chain", &b.Chain}, {"fullchain", &b.FullChain}, {"privkey", &b.PrivKey}} {
		data, err := readFile(filepath.Join(a.dir, e.file(f.kind)))
		if err != nil {
			return nil, fmt.Errorf("reading archive %q: %w", a.dir, err)
		}
		*f.dst = data
	}
	return b, nil
}
