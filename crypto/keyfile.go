package crypto

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"filippo.io/age"
)

// MaxKeyFileSize bounds what [ReadKeyFile] reads: 64 KiB holds any key file
// this package accepts (an RSA 16384-bit OpenSSH key is about 13 KiB).
const MaxKeyFileSize = 64 << 10

// WriteKeyFile creates the key file path with mode 0600, writes data, and
// syncs the file and its directory. It never overwrites: if path exists the
// error wraps [fs.ErrExist] and names the path. On a failed write the
// partial file is removed.
func WriteKeyFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("creating key file %q: refusing to overwrite: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("creating key file %q: %w", path, unwrapPath(err))
	}
	fail := func(doing string, err error) error {
		_ = f.Close()
		_ = os.Remove(path)
		return fmt.Errorf("%s key file %q: %w", doing, path, unwrapPath(err))
	}
	// The umask may have cleared bits of 0600 but never adds any; Chmod
	// makes the mode exactly 0600 whatever the umask.
	if err := f.Chmod(0o600); err != nil {
		return fail("setting mode of", err)
	}
	if _, err := f.Write(data); err != nil {
		return fail("writing", err)
	}
	if err := f.Sync(); err != nil {
		return fail("syncing", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("closing key file %q: %w", path, unwrapPath(err))
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("syncing directory of key file %q: %w", path, err)
	}
	return nil
}

// syncDir makes a new directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return unwrapPath(err)
	}
	defer d.Close()
	return unwrapPath(d.Sync())
}

// ReadKeyFile reads a key file of at most [MaxKeyFileSize] bytes. It refuses
// what [CheckKeyFile] refuses, checked on the opened file.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, unwrapPath(err))
	}
	if err := checkKeyFileInfo(path, st); err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading key file %q: %w", path, unwrapPath(err))
	}
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("reading key file %q: larger than %d bytes", path, MaxKeyFileSize)
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
		return fmt.Errorf("checking key file %q: %w", path, unwrapPath(err))
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
	data, err := ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseSigningKey(data)
	if err != nil {
		return nil, fmt.Errorf("loading signing key %q: %w", path, err)
	}
	return k, nil
}

// LoadIdentities reads and parses a node's identity file (see [ReadKeyFile]
// and [ParseIdentities]).
func LoadIdentities(path string) ([]age.Identity, error) {
	data, err := ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	ids, err := ParseIdentities(data)
	if err != nil {
		return nil, fmt.Errorf("loading identities %q: %w", path, err)
	}
	return ids, nil
}

// unwrapPath drops the *fs.PathError layer, whose message repeats the path
// the caller's error already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
