package crypto

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"
)

// TestAgeCLIInterop checks this package's recipients and identities against
// the age command (the reference implementation, with its own ssh-ed25519
// and ssh-rsa stanzas), in both directions.
func TestAgeCLIInterop(t *testing.T) {
	t.Parallel()
	ageCmd, err := exec.LookPath("age")
	if err != nil {
		t.Skip("age not installed (apt-get install age)")
	}
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	want := marshalPlaintext(b.Name, b.Version, b)
	for _, tc := range []struct {
		kind string
		pair func(testing.TB) (string, []byte)
	}{
		{"x25519", x25519Pair},
		{"ssh-ed25519", sshEd25519Pair},
		{"ssh-rsa", sshRSAPair},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			rec, idFile := tc.pair(t)
			idPath := filepath.Join(dir, "identity")
			if err := WriteKeyFile(idPath, idFile); err != nil {
				t.Fatal(err)
			}
			// Sealed here, decrypted by age.
			data, err := Seal(b, key, mustRecipients(t, rec))
			if err != nil {
				t.Fatal(err)
			}
			env, err := parseEnvelope(data)
			if err != nil {
				t.Fatal(err)
			}
			ctPath := filepath.Join(dir, "sealed.age")
			if err := os.WriteFile(ctPath, env.ciphertext, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := exec.Command(ageCmd, "-d", "-i", idPath, ctPath).Output()
			if err != nil {
				t.Fatalf("age -d: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Error("age decrypted another plaintext")
			}
			// Encrypted by age, decrypted here.
			recPath := filepath.Join(dir, "recipient")
			if err := os.WriteFile(recPath, []byte(rec+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(ageCmd, "-R", recPath)
			cmd.Stdin = bytes.NewReader(want)
			ct, err := cmd.Output()
			if err != nil {
				t.Fatalf("age -R: %v", err)
			}
			r, err := age.Decrypt(bytes.NewReader(ct), mustIdentities(t, idFile)...)
			if err != nil {
				t.Fatalf("decrypting age's file: %v", err)
			}
			got, err = io.ReadAll(r)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("decrypting age's file: %v, plaintext equal: %v", err, bytes.Equal(got, want))
			}
		})
	}
}
