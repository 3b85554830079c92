package publisher

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
	data, err := io.ReadAll(io.LimitReader(f, crypto.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %q: %w", path, atomicfile.Cause(err))
	}
	if len(data) > crypto.MaxFileSize {
		return nil, fmt.Errorf("reading %q: more than the limit of %d bytes", path, crypto.MaxFileSize)
	}
	return data, nil
}
