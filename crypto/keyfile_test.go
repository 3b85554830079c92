package crypto

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestWriteKeyFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k")
	if err := WriteKeyFile(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %04o, want 0600", st.Mode().Perm())
	}
	data, err := ReadKeyFile(path)
	if err != nil || string(data) != "secret" {
		t.Errorf("ReadKeyFile = %q, %v", data, err)
	}
}

func TestWriteKeyFileNeverOverwrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "k")
	treetest.WriteFile(t, path, []byte("old"), 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, link} {
		err := WriteKeyFile(p, []byte("new"))
		if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("WriteKeyFile(%s) = %v, want ErrExist naming the path", p, err)
		}
	}
	if data, _ := os.ReadFile(path); string(data) != "old" {
		t.Errorf("file holds %q, want it untouched", data)
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the symlink's target was created")
	}
	// The path once, not again as the temporary file's.
	missing := filepath.Join(dir, "missing", "k")
	if err := WriteKeyFile(missing, nil); !errors.Is(err, fs.ErrNotExist) || err.Error() != fmt.Sprintf("writing key file %q: no such file or directory", missing) {
		t.Errorf("WriteKeyFile in a missing folder: %v", err)
	}
}

func TestReadKeyFileRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		mode fs.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true},
		{0o640, false},
		{0o604, false},
		{0o620, false},
		{0o602, false},
		{0o644, false},
		{0o666, false},
	} {
		path := filepath.Join(dir, tc.mode.String())
		treetest.WriteFile(t, path, []byte("k"), 0o600)
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		// ReadKeyFile and CheckKeyFile apply one rule.
		for fn, check := range map[string]func(string) error{
			"ReadKeyFile":  func(p string) error { _, err := ReadKeyFile(p); return err },
			"CheckKeyFile": CheckKeyFile,
		} {
			err := check(path)
			if tc.ok && err != nil {
				t.Errorf("mode %04o: %s: %v", tc.mode, fn, err)
			}
			if tc.ok {
				continue
			}
			var kpe *KeyPermissionsError
			if !errors.Is(err, ErrKeyPermissions) || !errors.As(err, &kpe) || kpe.Path != path {
				t.Errorf("mode %04o: %s = %v, want a *KeyPermissionsError for %s", tc.mode, fn, err, path)
			} else if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, fmt.Sprintf("%04o", tc.mode)) {
				t.Errorf("mode %04o: %s: error %q does not name the path and mode", tc.mode, fn, msg)
			}
		}
	}
	if err := CheckKeyFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckKeyFile of a missing file = %v, want ErrNotExist", err)
	}
	big := filepath.Join(dir, "big")
	if err := WriteKeyFile(big, make([]byte, MaxKeyFileSize+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(big); err == nil {
		t.Error("ReadKeyFile read a file over the limit")
	}
	exact := filepath.Join(dir, "exact")
	if err := WriteKeyFile(exact, make([]byte, MaxKeyFileSize)); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(exact); err != nil {
		t.Errorf("ReadKeyFile at the limit: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(sub); err == nil {
		t.Error("ReadKeyFile read a directory")
	}
	if err := CheckKeyFile(sub); err == nil {
		t.Error("CheckKeyFile accepted a directory")
	}
}
