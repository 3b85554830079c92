package authconf

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/certsync/certsync/crypto"
)

// ErrNotUserSeed means a seed file holds no nkey user seed: another kind of
// nkey, or something else entirely.
var ErrNotUserSeed = errors.New("not an nkey user seed")

// ReadSeed returns the public key (U…) of the nkey user seed in the file at
// path. Like every key file, it must be readable by its owner only: a file
// group or others may read fails with an error wrapping
// crypto.ErrKeyPermissions. The seed itself never reaches an error.
func ReadSeed(path string) (string, error) {
	data, err := crypto.ReadKeyFile(path)
	if err != nil {
		return "", err
	}
	defer wipe(data)
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		// nkeys' errors name the problem, never the seed.
		return "", fmt.Errorf("reading nkey seed %q: %w (%v)", path, ErrNotUserSeed, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("reading nkey seed %q: %w", path, err)
	}
	return pub, nil
}

// EnsureSeed returns the public key of the nkey user seed at path, creating
// the file with a new seed when it does not exist: mode 0600, created with
// O_EXCL, so an existing file is never replaced. who goes into the file's
// comment. created tells whether the file was created now.
func EnsureSeed(path, who string) (pub string, created bool, err error) {
	pub, err = ReadSeed(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return pub, false, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", false, fmt.Errorf("creating nkey seed %q: %w", path, err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", false, fmt.Errorf("creating nkey seed %q: %w", path, err)
	}
	defer wipe(seed)
	pub, err = kp.PublicKey()
	if err != nil {
		return "", false, fmt.Errorf("creating nkey seed %q: %w", path, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# certsync NATS credential of %s, written by `certsync auth`\n", who)
	fmt.Fprintf(&b, "# created: %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# public key: %s\n", pub)
	data := append([]byte(b.String()), seed...)
	data = append(data, '\n')
	defer wipe(data)
	err = crypto.WriteKeyFile(path, data)
	if errors.Is(err, fs.ErrExist) {
		// Created meanwhile by another run: keep that one.
		pub, err = ReadSeed(path)
		return pub, false, err
	}
	if err != nil {
		return "", false, err
	}
	return pub, true, nil
}

// wipe overwrites key material once it is no longer needed.
func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}
