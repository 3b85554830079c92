package crypto

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"filippo.io/age"

	"github.com/certsync/certsync/internal/atomicfile"
)

// MaxKeyFileSize bounds what [ReadKeyFile] reads: 64 KiB holds any key file
// this package accepts (an RSA 16384-bit OpenSSH key is about 13 KiB).
const MaxKeyFileSize = 64 << 10

// WriteKeyFile creates the key file path with mode 0600 (whatever the
// umask) holding data, durably and all at once (atomicfile.Create: a
// temporary file beside it, synced, linked to path, the folder synced). It
// never overwrites: if path exists, even as a symbolic link, the error
// wraps [fs.ErrExist] and names the path.
func WriteKeyFile(path string, data []byte) error {
	err := atomicfile.Create(path, data, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating key file %q: refusing to overwrite: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("writing key file %q: %w", path, atomicfile.Cause(err))
	}
	return nil
}

// ReadKeyFile reads a key file of at most [MaxKeyFileSize] bytes. It refuses
// what [CheckKeyFile] refuses, checked on the opened file.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, atomicfile.Cause(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, atomicfile.Cause(err))
	}
	if err := checkKeyFileInfo(path, st); err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, err)
	}
	data, err := atomicfile.ReadAtMost(f, MaxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, err)
	}
	return data, nil
}

// CheckKeyFile applies the rule for every file holding a secret, without
// reading it: it must exist and be a regular file (a symbolic link to one
// is followed), and its mode must not let group or others read or write
// it. That error is a *[KeyPermissionsError], naming the path and mode and
// wrapping [ErrKeyPermissions]. It is for secret files another library
// reads itself (the NATS nkey seed, creds and TLS key); [ReadKeyFile]
// applies the same rule to the file it opens.
func CheckKeyFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking key file %q: %w", path, atomicfile.Cause(err))
	}
	if err := checkKeyFileInfo(path, st); err != nil {
		return fmt.Errorf("checking key file %q: %w", path, err)
	}
	return nil
}

// checkKeyFileInfo is the rule of CheckKeyFile on a file's information.
func checkKeyFileInfo(path string, st fs.FileInfo) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o066 != 0 {
		return &KeyPermissionsError{Path: path, Mode: perm}
	}
	return nil
}

// KeyPermissionsError is the refusal of a key file whose mode lets group or
// others read or write it. It wraps [ErrKeyPermissions]; Path is what to
// chmod 600.
type KeyPermissionsError struct {
	// Path is the key file as given.
	Path string
	// Mode is its permission bits.
	Mode fs.FileMode
}

// Error implements error; the caller's message names the path.
func (e *KeyPermissionsError) Error() string {
	return fmt.Sprintf("mode %04o lets group or others access it: %v", e.Mode, ErrKeyPermissions)
}

// Unwrap returns [ErrKeyPermissions].
func (e *KeyPermissionsError) Unwrap() error { return ErrKeyPermissions }

// LoadSigningKey reads and parses a signing key file (see [ReadKeyFile] and
// [ParseSigningKey]).
func LoadSigningKey(path string) (*SigningKey, error) {
	return loadKeyFile(path, "signing key", ParseSigningKey)
}

// LoadIdentities reads and parses a node's identity file (see [ReadKeyFile]
// and [ParseIdentities]).
func LoadIdentities(path string) ([]age.Identity, error) {
	return loadKeyFile(path, "identities", ParseIdentities)
}

// loadKeyFile reads the key file path and parses it; a parse error names
// what it held ("loading <what> <path>: …").
func loadKeyFile[T any](path, what string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := ReadKeyFile(path)
	if err != nil {
		return zero, err
	}
	v, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("loading %s %q: %w", what, path, err)
	}
	return v, nil
}
