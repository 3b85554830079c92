package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"testing/cryptotest"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"golang.org/x/crypto/ssh"
)

// TestWrapMatchesAge wraps file keys for X25519 and ssh-ed25519 recipients
// as ParseRecipient returns them (wrap.go: two ladders per stanza) and,
// from the same random stream, with age's own X25519Recipient and agessh's
// Ed25519Recipient: the stanzas must be the same bytes, and open with the
// recipient's identity. Not parallel: cryptotest.SetGlobalRandom sets the
// process's randomness.
func TestWrapMatchesAge(t *testing.T) {
	type pair struct {
		ours, age age.Recipient
		id        age.Identity
	}
	var pairs []pair
	for range 24 {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		ours := mustRecipients(t, id.Recipient().String())[0]
		if x, ok := ours.(*x25519Recipient); !ok || x.key == nil {
			t.Fatalf("ParseRecipient(%s) = %T, want an *x25519Recipient with its point", id.Recipient(), ours)
		}
		pairs = append(pairs, pair{ours, id.Recipient(), id})

		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		text, file := sshPair(t, pub, priv)
		ours = mustRecipients(t, text)[0]
		if s, ok := ours.(*sshRecipient); !ok || s.key == nil {
			t.Fatalf("ParseRecipient(%.20s…) = %T, want an *sshRecipient with its tweaked point", text, ours)
		}
		theirs, err := agessh.ParseRecipient(text)
		if err != nil {
			t.Fatal(err)
		}
		pairs = append(pairs, pair{ours, theirs, mustIdentities(t, file)[0]})
	}
	for i, p := range pairs {
		fileKey := make([]byte, 16)
		rand.Read(fileKey)
		wrap := func(r age.Recipient) *age.Stanza {
			t.Helper()
			cryptotest.SetGlobalRandom(t, uint64(i))
			ss, err := r.Wrap(fileKey)
			if err != nil || len(ss) != 1 {
				t.Fatalf("pair %d: Wrap = %d stanzas, %v", i, len(ss), err)
			}
			return ss[0]
		}
		ours, theirs := wrap(p.ours), wrap(p.age)
		if ours.Type != theirs.Type || strings.Join(ours.Args, " ") != strings.Join(theirs.Args, " ") || !bytes.Equal(ours.Body, theirs.Body) {
			t.Errorf("pair %d (%s): stanza %s %q %x, age's %s %q %x", i, theirs.Type, ours.Type, ours.Args, ours.Body, theirs.Type, theirs.Args, theirs.Body)
		}
		got, err := p.id.Unwrap([]*age.Stanza{ours})
		if err != nil || !bytes.Equal(got, fileKey) {
			t.Errorf("pair %d (%s): the identity unwraps %x, %v", i, ours.Type, got, err)
		}
	}
}

// TestWrapSmallOrderKey: an ssh-ed25519 key of small order (here the
// identity point) has no usable tweaked point, keeps agessh's Wrap, and is
// refused by it as before.
func TestWrapSmallOrderKey(t *testing.T) {
	t.Parallel()
	identity := make([]byte, ed25519.PublicKeySize)
	identity[0] = 1
	pub, err := ssh.NewPublicKey(ed25519.PublicKey(identity))
	if err != nil {
		t.Fatal(err)
	}
	r := mustRecipients(t, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))[0]
	if s := r.(*sshRecipient); s.key != nil {
		t.Fatal("a small-order key got a tweaked point")
	}
	if _, err := r.Wrap(make([]byte, 16)); err == nil {
		t.Fatal("Wrap for a small-order key succeeded")
	}
}
