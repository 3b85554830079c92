package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"testing/cryptotest"
	"unicode"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"filippo.io/edwards25519/field"
	"github.com/certsync/certsync/internal/testing/testkeys"
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
		id := testkeys.X25519(t)
		ours := mustRecipients(t, id.Recipient().String())[0]
		if x, ok := ours.(*x25519Recipient); !ok || x.key == nil {
			t.Fatalf("ParseRecipient(%s) = %T, want an *x25519Recipient with its point", id.Recipient(), ours)
		}
		pairs = append(pairs, pair{ours, id.Recipient(), id})

		text, file := sshEd25519Pair(t)
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

// TestX25519RecipientText: the text an X25519 recipient keeps as its
// canonical form is what age encodes its key as, for keys of every shape
// (1,000 random ones), with surrounding space trimmed; the uppercase and
// mixed-case forms of one are not taken as an X25519 recipient's.
func TestX25519RecipientText(t *testing.T) {
	t.Parallel()
	for range 1000 {
		id := testkeys.X25519(t)
		want := id.Recipient().String()
		r, err := ParseRecipient(" " + want + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if got := r.(*x25519Recipient).text; got != want {
			t.Fatalf("canonical text %q, want age's %q", got, want)
		}
		k := 4 + strings.IndexFunc(want[4:], unicode.IsLetter) // a letter of the key, uppercased: mixed case
		for _, other := range []string{strings.ToUpper(want), want[:k] + strings.ToUpper(want[k:k+1]) + want[k+1:]} {
			if r, err := ParseRecipient(other); err == nil {
				if x, ok := r.(*x25519Recipient); ok {
					t.Fatalf("%q parsed as an X25519 recipient with text %q", other, x.text)
				}
			}
		}
	}
}

// TestEdwardsWrap: the share and the secret edwardsWrap computes on the
// Edwards curve are X25519's, by crypto/ecdh, for 2,000 random scalars and
// recipients' points (X25519 keys, and ssh-ed25519 keys' tweaked points);
// a point with no Edwards form that helps (on the twist, u = -1, of small
// order) has none (cofactorPoint), and keeps crypto/ecdh's ladders.
func TestEdwardsWrap(t *testing.T) {
	t.Parallel()
	id0 := testkeys.X25519(t)
	ssh0, _ := sshEd25519Pair(t)
	for i := range 2000 {
		var shared *ecdh.PublicKey
		if i%2 == 0 {
			id := testkeys.X25519(t)
			shared = mustRecipients(t, id.Recipient().String())[0].(*x25519Recipient).key.shared
		} else {
			text, _ := sshEd25519Pair(t)
			shared = mustRecipients(t, text)[0].(*sshRecipient).key.shared
		}
		q8 := cofactorPoint(shared.Bytes())
		if q8 == nil {
			t.Fatalf("key %d: no Edwards point", i)
		}
		if i < 2 {
			// A recipient's Wrap takes this path: its key holds the
			// point after the first wrap, and none before.
			var r age.Recipient
			var key *curve25519Key
			if i == 0 {
				x := mustRecipients(t, id0.Recipient().String())[0].(*x25519Recipient)
				r, key = x, x.key
			} else {
				x := mustRecipients(t, ssh0)[0].(*sshRecipient)
				r, key = x, x.key
			}
			if key.q8 != nil {
				t.Fatal("the Edwards point was computed at parse time")
			}
			if _, err := r.Wrap(make([]byte, 16)); err != nil || key.q8 == nil {
				t.Fatalf("wrap: %v; Edwards point %v, want one", err, key.q8)
			}
		}
		e := make([]byte, 32)
		rand.Read(e)
		share, secret, err := edwardsWrap(e, q8)
		if err != nil {
			t.Fatal(err)
		}
		priv, err := ecdh.X25519().NewPrivateKey(e)
		if err != nil {
			t.Fatal(err)
		}
		want, err := priv.ECDH(shared)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(share, priv.PublicKey().Bytes()) || !bytes.Equal(secret, want) {
			t.Fatalf("key %d: share %x secret %x, want X25519's %x and %x", i, share, secret, priv.PublicKey().Bytes(), want)
		}
	}
	minusOne := make([]byte, 32)
	minusOne[0], minusOne[31] = 0xec, 0x7f // 2^255 - 20 = -1 mod 2^255 - 19
	order4 := make([]byte, 32)             // u = 0: the point of order 2 on the Montgomery curve
	twist := twistPoint(t)
	for what, u := range map[string][]byte{"u = -1": minusOne, "u = 0 (small order)": order4, "a point of the twist": twist} {
		if q8 := cofactorPoint(u); q8 != nil {
			t.Errorf("%s: an Edwards point, want none", what)
		}
	}
}

// twistPoint is the smallest u from 2 on for which u^3 + 486662·u^2 + u is
// not a square: a point of Curve25519's twist, not of the curve.
func twistPoint(t *testing.T) []byte {
	t.Helper()
	var a, one, u field.Element
	a.SetBytes([]byte{0x06, 0x6d, 0x07, 30: 0, 31: 0}) // 486662 = 0x076d06
	one.One()
	for k := byte(2); k < 100; k++ {
		b := make([]byte, 32)
		b[0] = k
		u.SetBytes(b)
		var u2, u3, rhs field.Element
		u2.Square(&u)
		u3.Multiply(&u2, &u)
		rhs.Multiply(&a, &u2)
		rhs.Add(&rhs, &u3)
		rhs.Add(&rhs, &u)
		if _, square := new(field.Element).SqrtRatio(&rhs, &one); square == 0 {
			return b
		}
	}
	t.Fatal("no point of the twist below 100")
	return nil
}
