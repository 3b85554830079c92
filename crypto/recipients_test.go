package crypto

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/certsync/certsync/internal/testing/acmetest"
)

func TestParseRecipient(t *testing.T) {
	t.Parallel()
	x, _ := x25519Pair(t)
	ed, _ := sshEd25519Pair(t)
	rsaLine, _ := sshRSAPair(t)
	for _, s := range []string{x, ed, rsaLine, "  " + x + "\n", strings.Fields(ed)[0] + " " + strings.Fields(ed)[1]} {
		if _, err := ParseRecipient(s); err != nil {
			t.Errorf("ParseRecipient(%q): %v", s, err)
		}
	}
}

func TestParseRecipientRefuses(t *testing.T) {
	t.Parallel()
	x, xID := x25519Pair(t)
	ed, _ := sshEd25519Pair(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	smallPub, err := ssh.NewPublicKey(&small.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ssh.NewPublicKey(&ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	secretLine := strings.Split(string(xID), "\n")[2]
	// The last character changed to another one: replacing it with a fixed
	// one would leave the key valid whenever it already ended so.
	badChecksum := x[:len(x)-1] + "q"
	if strings.HasSuffix(x, "q") {
		badChecksum = x[:len(x)-1] + "p"
	}
	for _, tc := range []struct {
		name, in string
	}{
		{"empty", ""},
		{"secret key", secretLine},
		{"bad age checksum", badChecksum},
		{"post-quantum", "age1pq1qqqq"},
		{"RSA 1024", string(ssh.MarshalAuthorizedKey(smallPub))},
		{"ecdsa", string(ssh.MarshalAuthorizedKey(ecPub))},
		{"truncated ssh", ed[:40]},
		{"two lines", ed + "\n" + ed},
		{"options", `command="x" ` + ed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRecipient(tc.in)
			if err == nil {
				t.Fatal("ParseRecipient succeeded")
			}
			if !strings.Contains(err.Error(), "age1") || !strings.Contains(err.Error(), "ssh-ed25519") {
				t.Errorf("error %q does not say which kinds are accepted", err)
			}
			if strings.Contains(err.Error(), "AGE-SECRET-KEY") {
				t.Errorf("error %q echoes a secret key", err)
			}
		})
	}
}

func TestParseIdentities(t *testing.T) {
	t.Parallel()
	_, x1 := x25519Pair(t)
	_, x2 := x25519Pair(t)
	_, ed := sshEd25519Pair(t)
	_, rsaFile := sshRSAPair(t)
	for _, tc := range []struct {
		name string
		data []byte
		n    int
	}{
		{"age file", x1, 1},
		{"two age identities and blank lines", []byte(string(x1) + "\n\n" + string(x2)), 2},
		{"ssh-ed25519", ed, 1},
		{"ssh-rsa", rsaFile, 1},
		{"ssh-ed25519 with leading blank line", append([]byte("\n"), ed...), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ids, err := ParseIdentities(tc.data)
			if err != nil || len(ids) != tc.n {
				t.Errorf("ParseIdentities = %d identities, %v; want %d", len(ids), err, tc.n)
			}
		})
	}
}

func TestParseIdentitiesRefuses(t *testing.T) {
	t.Parallel()
	_, x := x25519Pair(t)
	secret := strings.Split(string(x), "\n")[2]
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_ = pub
	enc, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "c", []byte("passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecBlock, err := ssh.MarshalPrivateKey(ec, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "no identity"},
		{"comments only", "# nothing\n", "no identity"},
		{"garbled age key", secret[:len(secret)-2] + "QQ", "line 1"},
		{"public key", "age1qqqq", "line 1"},
		{"encrypted ssh key", string(pem.EncodeToMemory(enc)), "passphrase"},
		{"age-encrypted file", "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n", "passphrase"},
		{"ecdsa ssh key", string(pem.EncodeToMemory(ecBlock)), "ed25519 or rsa"},
		{"garbled ssh key", "-----BEGIN OPENSSH PRIVATE KEY-----\n" + secret + "\n-----END OPENSSH PRIVATE KEY-----\n", "not a valid"},
		{"too large", strings.Repeat("#", MaxKeyFileSize+1), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseIdentities([]byte(tc.data))
			if err == nil {
				t.Fatal("ParseIdentities succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseIdentities = %q, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[20:40]) {
				t.Errorf("error %q holds key material", err)
			}
		})
	}
}

// TestSSHKeygenKeys uses keys written by OpenSSH's own ssh-keygen, the way
// a node's host keys are made.
func TestSSHKeygenKeys(t *testing.T) {
	t.Parallel()
	keygen := acmetest.RequireTool(t, "ssh-keygen")
	dir := t.TempDir()
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	for _, tc := range []struct {
		typ, passphrase string
		ok              bool
	}{
		{"ed25519", "", true},
		{"rsa", "", true},
		{"ed25519", "secret", false},
	} {
		path := filepath.Join(dir, tc.typ+tc.passphrase)
		out, err := exec.Command(keygen, "-q", "-t", tc.typ, "-N", tc.passphrase, "-C", "host", "-f", path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		ids, err := LoadIdentities(path)
		if !tc.ok {
			if err == nil || !strings.Contains(err.Error(), "passphrase") {
				t.Errorf("%s with a passphrase: LoadIdentities = %v, want a passphrase error", tc.typ, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.typ, err)
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		env, err := Seal(b, key, mustRecipients(t, string(pub)))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Open(env, []PublicKey{key.Public()}, ids); err != nil {
			t.Errorf("%s: Open: %v", tc.typ, err)
		}
	}
}
