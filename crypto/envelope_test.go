package crypto

import (
	"bytes"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
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
			b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
			key := mustSigningKey(t)
			other, _ := x25519Pair(t)
			rec, idFile := tc.pair(t)
			env, err := Seal(b, key, mustRecipients(t, other, rec))
			if err != nil {
				t.Fatal(err)
			}
			hdr, got, err := Open(env, []PublicKey{key.Public()}, mustIdentities(t, idFile))
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Name != b.Name || hdr.Version != b.Version || hdr.Signer != key.Public() || hdr.Format != Format {
				t.Errorf("header = %+v, want name %q version %d", hdr, b.Name, b.Version)
			}
			if got.Name != b.Name || got.Version != b.Version || !bytes.Equal(got.Cert, b.Cert) || !bytes.Equal(got.Chain, b.Chain) ||
				!bytes.Equal(got.FullChain, b.FullChain) || !bytes.Equal(got.PrivKey, b.PrivKey) {
				t.Errorf("opened bundle differs from the sealed one")
			}
			if _, err := got.Check(time.Now()); err != nil {
				t.Errorf("opened bundle: %v", err)
			}
		})
	}
}
