// The stanza index (record 0x8002, format 2) and the parallel seal: how
// Seal names each recipient and wraps the file key for all of them on
// every core, and how Open finds its identities' stanzas without trying
// the others. The record's bytes are format.go's and its parser's rules
// parse.go's; docs/FORMAT.md, "The stanza index", is the specification.

package crypto

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"sync"

	"filippo.io/age"
)

// stanzaIndexContext starts what an index id hashes (domain separation).
const stanzaIndexContext = "certsync stanza index v1\x00"

// stanzaID is the index id of the recipient whose canonical text is
// recipient, in an index of the given salt: the first indexIDSize bytes of
// SHA-256(stanzaIndexContext || salt || recipient).
func stanzaID(salt []byte, recipient string) [indexIDSize]byte {
	h := sha256.New()
	h.Write([]byte(stanzaIndexContext))
	h.Write(salt)
	h.Write([]byte(recipient))
	var id [indexIDSize]byte
	copy(id[:], h.Sum(nil))
	return id
}

// sshRecipient is an SSH recipient (ssh-ed25519 or ssh-rsa) that knows its
// canonical text, which age's agessh recipients do not tell, and, for an
// ssh-ed25519 key, what a Wrap of two ladders needs (wrap.go).
type sshRecipient struct {
	age.Recipient
	text string
	// tag and key are agessh's tag of an ssh-ed25519 key and its tweaked
	// point (sshEd25519Key); key is nil for ssh-rsa, and for a key that
	// keeps agessh's Wrap.
	tag string
	key *curve25519Key
}

// Wrap implements age.Recipient: agessh's stanza, ssh-ed25519 written
// here (wrap.go), ssh-rsa by agessh.
func (r *sshRecipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	if r.key == nil {
		return r.Recipient.Wrap(fileKey)
	}
	return r.key.stanza(fileKey, "ssh-ed25519", sshEd25519Label, r.tag)
}

// sshIdentity is an SSH identity (an ed25519 or rsa private key) that
// knows the canonical text of its recipient, which age's agessh identities
// do not tell.
type sshIdentity struct {
	age.Identity
	recipient string
}

// recipientText is the identity's recipient, canonical (see
// canonicalRecipient).
func (i *sshIdentity) recipientText() string { return i.recipient }

// canonicalRecipient returns a recipient's canonical text, the one the
// stanza index hashes: "age1…" for an age X25519 recipient, "ssh-ed25519
// AAAA…" or "ssh-rsa AAAA…" without a comment for one [ParseRecipient]
// returned. It is false for any other age.Recipient, which crypto cannot
// name.
func canonicalRecipient(r age.Recipient) (string, bool) {
	switch r := r.(type) {
	case *age.X25519Recipient:
		return r.String(), true
	case *x25519Recipient:
		return r.text, true
	case *sshRecipient:
		return r.text, true
	}
	return "", false
}

// identityRecipient returns the canonical text of an identity's recipient:
// for an age X25519 or hybrid identity its Recipient's, for an SSH identity
// [ParseIdentities] returned its public key's. It is false for any other
// age.Identity (a caller's own, or one of agessh's made directly), which
// Open hands every stanza, as without an index.
func identityRecipient(id age.Identity) (string, bool) {
	switch id := id.(type) {
	case *age.X25519Identity:
		return id.Recipient().String(), true
	case *age.HybridIdentity:
		return id.Recipient().String(), true
	case interface{ recipientText() string }:
		return id.recipientText(), true
	}
	return "", false
}

// maxSaltTries bounds how often Seal draws a new salt when two recipients'
// ids collide (about 2^-45 for 1,024 recipients: never, in practice).
const maxSaltTries = 4

// newStanzaIndex returns the value of a stanza index for recipients whose
// canonical texts are texts, stanza i being texts[i]'s: a fresh random salt,
// then the entries sorted by id. texts must be distinct.
func newStanzaIndex(texts []string) ([]byte, error) {
	type entry struct {
		id     [indexIDSize]byte
		stanza uint16
	}
	entries := make([]entry, len(texts))
	salt := make([]byte, indexSaltSize)
	for range maxSaltTries {
		rand.Read(salt)
		for i, t := range texts {
			entries[i] = entry{id: stanzaID(salt, t), stanza: uint16(i)}
		}
		slices.SortFunc(entries, func(a, b entry) int { return bytes.Compare(a.id[:], b.id[:]) })
		collides := false
		for i := 1; i < len(entries); i++ {
			collides = collides || entries[i].id == entries[i-1].id
		}
		if collides {
			continue
		}
		v := make([]byte, 0, indexSaltSize+len(entries)*indexEntrySize)
		v = append(v, salt...)
		for _, e := range entries {
			v = append(v, e.id[:]...)
			v = binary.BigEndian.AppendUint16(v, e.stanza)
		}
		return v, nil
	}
	return nil, fmt.Errorf("stanza index: recipient ids collided under %d salts", maxSaltTries)
}

// stanzaIndex is a parsed stanza index, checked by badStanzaIndex.
type stanzaIndex struct {
	salt    []byte
	entries []byte
}

// parseStanzaIndex reads an index value that parseEnvelope accepted.
func parseStanzaIndex(v []byte) stanzaIndex {
	return stanzaIndex{salt: v[:indexSaltSize], entries: v[indexSaltSize:]}
}

// len is the number of entries, which is the number of stanzas the index
// was written for.
func (x stanzaIndex) len() int { return len(x.entries) / indexEntrySize }

// stanza returns the number of the stanza of the recipient whose
// canonical text is recipient, by binary search, or false when the index
// does not list it.
func (x stanzaIndex) stanza(recipient string) (int, bool) {
	id := stanzaID(x.salt, recipient)
	k := x.len()
	i := sort.Search(k, func(i int) bool {
		return bytes.Compare(x.entries[i*indexEntrySize:i*indexEntrySize+indexIDSize], id[:]) >= 0
	})
	if i == k || !bytes.Equal(x.entries[i*indexEntrySize:i*indexEntrySize+indexIDSize], id[:]) {
		return 0, false
	}
	return int(binary.BigEndian.Uint16(x.entries[i*indexEntrySize+indexIDSize:])), true
}

// identities returns what Open hands age for identities under the index:
// each identity the index lists, wrapped to see only its own stanza, and
// each identity crypto cannot name (identityRecipient), unchanged, in the
// given order. An identity that can be named but is not listed is left
// out: it is not a recipient. None left means not a recipient at all.
func (x stanzaIndex) identities(identities []age.Identity) []age.Identity {
	var out []age.Identity
	for _, id := range identities {
		text, named := identityRecipient(id)
		if !named {
			out = append(out, id)
			continue
		}
		if k, ok := x.stanza(text); ok {
			out = append(out, &indexedIdentity{id: id, stanza: k, stanzas: x.len()})
		}
	}
	return out
}

// indexedIdentity is an identity the stanza index lists at one stanza: age
// hands it every stanza of the header, and it passes on only that one, so
// that a wrong entry is "not a recipient" after one unwrap, never a trial
// of every stanza.
type indexedIdentity struct {
	id      age.Identity
	stanza  int // its stanza, below stanzas
	stanzas int // the index's entries, which must be the header's stanzas
}

// Unwrap implements age.Identity.
func (x *indexedIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	if len(stanzas) != x.stanzas || x.stanza >= len(stanzas) {
		return nil, &indexMismatchError{entries: x.stanzas, stanzas: len(stanzas)}
	}
	return x.id.Unwrap(stanzas[x.stanza : x.stanza+1])
}

// indexMismatchError is an index whose entries are not the age header's
// stanzas: Open reports it as a malformed stanza index.
type indexMismatchError struct {
	entries, stanzas int
}

func (e *indexMismatchError) Error() string {
	return fmt.Sprintf("stanza index (0x%04x) has %d entries for %d age stanzas", extStanzaIndex, e.entries, e.stanzas)
}

// minWrapChunk is the fewest recipients a goroutine of recipientSet wraps
// for: below it the goroutines cost more than they save (an X25519 or
// ssh-ed25519 wrap takes about 0.1 to 0.2 ms). A set of fewer recipients,
// such as every test vector's, is wrapped on the calling goroutine in
// order, so a fixed random stream (cryptotest.SetGlobalRandom) gives the
// same bytes every time.
const minWrapChunk = 64

// recipientSet is one age.Recipient for many: its Wrap wraps the file key
// for each of rs on up to workers goroutines (contiguous runs of rs) and
// returns their stanzas in the order of rs, whatever the goroutines'
// timing, so stanza i is rs[i]'s, as the stanza index says. Each recipient
// must wrap to exactly one stanza (age X25519 and SSH recipients do), and
// all of them must carry the same labels, as age.Encrypt requires of its
// recipients.
type recipientSet struct {
	rs      []age.Recipient
	workers int
}

// newRecipientSet wraps for rs on up to GOMAXPROCS goroutines.
func newRecipientSet(rs []age.Recipient) *recipientSet {
	return &recipientSet{rs: rs, workers: runtime.GOMAXPROCS(0)}
}

// Wrap implements age.Recipient.
func (s *recipientSet) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	stanzas, _, err := s.WrapWithLabels(fileKey)
	return stanzas, err
}

// WrapWithLabels implements age.RecipientWithLabels: the labels of every
// recipient must be the same (a post-quantum recipient does not share a
// header with a classic one), and are returned.
func (s *recipientSet) WrapWithLabels(fileKey []byte) ([]*age.Stanza, []string, error) {
	n := len(s.rs)
	if n == 0 {
		return nil, nil, errors.New("no recipients")
	}
	stanzas := make([][]*age.Stanza, n)
	labels := make([][]string, n)
	errs := make([]error, n)
	wrap := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			stanzas[i], labels[i], errs[i] = wrapWithLabels(s.rs[i], fileKey)
		}
	}
	if workers := min(s.workers, (n+minWrapChunk-1)/minWrapChunk); workers <= 1 {
		wrap(0, n)
	} else {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() { wrap(n*w/workers, n*(w+1)/workers) })
		}
		wg.Wait()
	}
	out := make([]*age.Stanza, 0, n)
	for i := range n {
		switch {
		case errs[i] != nil:
			return nil, nil, fmt.Errorf("wrapping the file key for recipient %d: %w", i+1, errs[i])
		case len(stanzas[i]) != 1:
			return nil, nil, fmt.Errorf("wrapping the file key for recipient %d: %d stanzas, want exactly 1", i+1, len(stanzas[i]))
		}
		slices.Sort(labels[i])
		if !slices.Equal(labels[i], labels[0]) {
			return nil, nil, fmt.Errorf("recipients 1 and %d cannot share an age header: labels %q and %q", i+1, labels[0], labels[i])
		}
		out = append(out, stanzas[i][0])
	}
	return out, labels[0], nil
}

// wrapWithLabels wraps fileKey for r as age.Encrypt does: with its labels
// if it has any.
func wrapWithLabels(r age.Recipient, fileKey []byte) ([]*age.Stanza, []string, error) {
	if r, ok := r.(age.RecipientWithLabels); ok {
		return r.WrapWithLabels(fileKey)
	}
	s, err := r.Wrap(fileKey)
	return s, nil, err
}
