package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"github.com/certsync/certsync/internal/testing/testkeys"
	"golang.org/x/crypto/ssh"
)

// countingIdentity is an identity crypto can name (its inner one's
// recipient) that counts the calls to Unwrap and the stanzas it was handed,
// to prove what Open tries.
type countingIdentity struct {
	id       age.Identity
	calls    atomic.Int64
	stanzas  atomic.Int64
	lastSeen atomic.Int64 // stanzas handed in the last call
}

func (c *countingIdentity) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	c.calls.Add(1)
	c.stanzas.Add(int64(len(stanzas)))
	c.lastSeen.Store(int64(len(stanzas)))
	return c.id.Unwrap(stanzas)
}

func (c *countingIdentity) recipientText() string {
	text, ok := identityRecipient(c.id)
	if !ok {
		panic("countingIdentity of an identity crypto cannot name")
	}
	return text
}

// counting wraps each of ids in a countingIdentity.
func counting(ids []age.Identity) ([]age.Identity, []*countingIdentity) {
	var out []age.Identity
	var cs []*countingIdentity
	for _, id := range ids {
		c := &countingIdentity{id: id}
		out, cs = append(out, c), append(cs, c)
	}
	return out, cs
}

// indexOf returns the parsed stanza index of env, failing if it has none.
func indexOf(t testing.TB, env []byte) stanzaIndex {
	t.Helper()
	e, err := parseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := e.extension(extStanzaIndex)
	if v == nil {
		t.Fatal("the envelope carries no stanza index")
	}
	return parseStanzaIndex(v)
}

// mixedFleet returns n recipients, alternately X25519 and ssh-ed25519
// (every 7th ssh-rsa when withRSA), their canonical texts and identities.
func mixedFleet(t testing.TB, n int, withRSA bool) ([]age.Recipient, []string, []age.Identity) {
	t.Helper()
	var rs []age.Recipient
	var texts []string
	var ids []age.Identity
	for i := range n {
		var line string
		var file []byte
		switch {
		case withRSA && i%7 == 6:
			line, file = sshRSAPair(t)
		case i%2 == 0:
			line, file = x25519Pair(t)
		default:
			line, file = sshEd25519Pair(t)
		}
		r := mustRecipients(t, line)[0]
		text, ok := canonicalRecipient(r)
		if !ok {
			t.Fatalf("ParseRecipient(%q) returned a recipient crypto cannot name", line)
		}
		rs, texts, ids = append(rs, r), append(texts, text), append(ids, mustIdentities(t, file)...)
	}
	return rs, texts, ids
}

func TestStanzaIndexOpensOneStanza(t *testing.T) {
	t.Parallel()
	rs, texts, ids := mixedFleet(t, 15, true)
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	env, err := Seal(b, key, rs, WithRecipientsDigest(RecipientsDigest(texts)))
	if err != nil {
		t.Fatal(err)
	}
	idx := indexOf(t, env)
	if idx.len() != len(rs) {
		t.Fatalf("index of %d entries for %d recipients", idx.len(), len(rs))
	}
	for i, text := range texts {
		if k, ok := idx.stanza(text); !ok || k != i {
			t.Errorf("index lists recipient %d (%.20s…) at %d, %v; want stanza %d", i+1, text, k, ok, i)
		}
	}
	for i, id := range ids {
		wrapped, cs := counting([]age.Identity{id})
		if _, got, err := Open(env, []PublicKey{key.Public()}, wrapped); err != nil || !bytes.Equal(got.PrivKey, b.PrivKey) {
			t.Fatalf("recipient %d: Open = %v", i+1, err)
		}
		if c := cs[0]; c.calls.Load() != 1 || c.stanzas.Load() != 1 {
			t.Errorf("recipient %d: %d Unwrap calls handed %d stanzas, want 1 call of 1 stanza", i+1, c.calls.Load(), c.stanzas.Load())
		}
	}
	// A stranger is not listed: refused before any unwrap.
	_, strangerFile := x25519Pair(t)
	wrapped, cs := counting(mustIdentities(t, strangerFile))
	if _, _, err := Open(env, []PublicKey{key.Public()}, wrapped); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("stranger: Open = %v, want ErrNotRecipient", err)
	}
	if n := cs[0].calls.Load(); n != 0 {
		t.Errorf("stranger: %d Unwrap calls, want none", n)
	}
	// A stranger and a recipient: only the recipient is tried, once.
	wrapped, cs = counting([]age.Identity{mustIdentities(t, strangerFile)[0], ids[len(ids)-1]})
	if _, _, err := Open(env, []PublicKey{key.Public()}, wrapped); err != nil {
		t.Fatalf("stranger and recipient: Open = %v", err)
	}
	if cs[0].calls.Load() != 0 || cs[1].calls.Load() != 1 || cs[1].lastSeen.Load() != 1 {
		t.Errorf("stranger and recipient: Unwrap calls %d and %d (%d stanzas), want 0 and 1 (1)", cs[0].calls.Load(), cs[1].calls.Load(), cs[1].lastSeen.Load())
	}
}

// TestStanzaIndexRefusals opens the index vectors with counting identities:
// a wrong entry costs one unwrap, a missing node none, never a trial of
// every stanza.
func TestStanzaIndexRefusals(t *testing.T) {
	t.Parallel()
	vs := readVectors(t)
	for _, tc := range []struct {
		file  string
		want  error
		calls int64
	}{
		{"not_recipient_index_wrong_stanza.txt", ErrNotRecipient, 1},
		{"not_recipient_index.txt", ErrNotRecipient, 0},
		{"index_mismatch_beyond_header.txt", ErrMalformed, 0},
		{"index_mismatch_short.txt", ErrMalformed, 0},
		{"success_index_x25519.txt", nil, 1},
		{"success_index_ssh_ed25519.txt", nil, 1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			v := vs[tc.file]
			if v == nil {
				t.Fatalf("no vector %s", tc.file)
			}
			trusted, ids, err := v.keys()
			if err != nil {
				t.Fatal(err)
			}
			wrapped, cs := counting(ids)
			_, _, err = Open(v.envelope, trusted, wrapped)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, want %v", err, tc.want)
			}
			if c := cs[0]; c.calls.Load() != tc.calls || c.stanzas.Load() > tc.calls {
				t.Errorf("%d Unwrap calls handed %d stanzas, want %d calls of at most 1 stanza", c.calls.Load(), c.stanzas.Load(), tc.calls)
			}
		})
	}
}

// TestStanzaIndexUnnamedIdentity: an identity crypto cannot name (agessh's,
// made directly) is handed every stanza, as without an index, and opens.
func TestStanzaIndexUnnamedIdentity(t *testing.T) {
	t.Parallel()
	k := testkeys.Ed25519(t)
	other, _ := x25519Pair(t)
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	env, err := Seal(b, key, mustRecipients(t, other, k.Line))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := agessh.NewEd25519Identity(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(env, []PublicKey{key.Public()}, []age.Identity{raw}); err != nil {
		t.Fatalf("Open with agessh's own identity = %v", err)
	}
}

func TestSealRefusesForIndex(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	b := &Bundle{Name: "example.com", Version: 1, Cert: []byte("c"), Chain: []byte("ch"), FullChain: []byte("f"), PrivKey: []byte("k")}
	ed, _ := sshEd25519Pair(t)
	x, _ := x25519Pair(t)
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ed))
	if err != nil {
		t.Fatal(err)
	}
	rawSSH, err := agessh.NewEd25519Recipient(pk)
	if err != nil {
		t.Fatal(err)
	}
	noComment := strings.Join(strings.Fields(ed)[:2], " ")
	for _, tc := range []struct {
		name string
		rs   []age.Recipient
		want string
	}{
		{"same ssh key with and without comment", mustRecipients(t, x, ed, noComment), "recipients 2 and 3 are the same recipient \"ssh-ed25519 "},
		{"same age recipient twice", mustRecipients(t, x, x), "recipients 1 and 2 are the same recipient \"age1"},
		{"a recipient crypto cannot name", []age.Recipient{mustRecipients(t, x)[0], rawSSH}, "recipient 2 (*agessh.Ed25519Recipient) cannot be named in the stanza index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env, err := Seal(b, key, tc.rs)
			if err == nil || env != nil {
				t.Fatal("Seal succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.ContainsAny(err.Error(), "\n") {
				t.Errorf("Seal = %q, want one line containing %q", err, tc.want)
			}
		})
	}
}

// TestSealParallelStructure: the recipient set returns stanza i for
// recipient i whatever the number of goroutines, and Seal's envelope lists
// each recipient at its own stanza (run it with -cpu 1,2 as well).
func TestSealParallelStructure(t *testing.T) {
	t.Parallel()
	n := 3*minWrapChunk + 5
	rs, texts, ids := mixedFleet(t, n, false)
	fileKey := make([]byte, 16)
	rand.Read(fileKey)
	var want []string // each stanza's type and, for ssh-ed25519, its key tag
	for _, workers := range []int{1, 2, 3, 8} {
		stanzas, err := (&recipientSet{rs: rs, workers: workers}).Wrap(fileKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(stanzas) != n {
			t.Fatalf("%d workers: %d stanzas for %d recipients", workers, len(stanzas), n)
		}
		var got []string
		for i, s := range stanzas {
			shape := s.Type
			if s.Type == "ssh-ed25519" {
				shape += " " + s.Args[0]
			}
			got = append(got, shape)
			// Stanza i opens with identity i, alone.
			if i%17 == 0 || i == n-1 {
				k, err := ids[i].Unwrap([]*age.Stanza{s})
				if err != nil || !bytes.Equal(k, fileKey) {
					t.Fatalf("%d workers: stanza %d does not open with recipient %d's identity: %v", workers, i, i+1, err)
				}
			}
		}
		if want == nil {
			want = got
		} else if !slices.Equal(got, want) {
			t.Errorf("%d workers: stanza order differs from one worker's", workers)
		}
	}
	b := newTestBundle(t, "example.com", time.Now().Add(-time.Hour).Truncate(time.Second))
	key := mustSigningKey(t)
	env, err := Seal(b, key, rs)
	if err != nil {
		t.Fatal(err)
	}
	idx := indexOf(t, env)
	for i, text := range texts {
		if k, ok := idx.stanza(text); !ok || k != i {
			t.Fatalf("index lists recipient %d at %d, %v; want %d", i+1, k, ok, i)
		}
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if _, _, err := Open(env, []PublicKey{key.Public()}, ids[i:i+1]); err != nil {
			t.Errorf("recipient %d: Open = %v", i+1, err)
		}
	}
}

// failingRecipient fails to wrap, or wraps to two stanzas, or carries a
// label.
type failingRecipient struct {
	two   bool
	label string
}

func (f failingRecipient) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	s, _, err := f.WrapWithLabels(fileKey)
	return s, err
}

func (f failingRecipient) WrapWithLabels([]byte) ([]*age.Stanza, []string, error) {
	switch {
	case f.two:
		return []*age.Stanza{{Type: "a"}, {Type: "b"}}, nil, nil
	case f.label != "":
		return []*age.Stanza{{Type: "a"}}, []string{f.label}, nil
	}
	return nil, nil, errors.New("no luck")
}

func TestRecipientSetRefuses(t *testing.T) {
	t.Parallel()
	x, _ := x25519Pair(t)
	good := mustRecipients(t, x)[0]
	for _, tc := range []struct {
		name string
		bad  age.Recipient
		want string
	}{
		{"wrap fails", failingRecipient{}, "recipient 2: no luck"},
		{"two stanzas", failingRecipient{two: true}, "recipient 2: 2 stanzas, want exactly 1"},
		{"other labels", failingRecipient{label: "postquantum"}, "recipients 1 and 2 cannot share an age header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, workers := range []int{1, 2} {
				rs := slices.Repeat([]age.Recipient{good}, 2*minWrapChunk)
				rs[1] = tc.bad
				if _, err := (&recipientSet{rs: rs, workers: workers}).Wrap(make([]byte, 16)); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%d workers: Wrap = %v, want %q", workers, err, tc.want)
				}
			}
		})
	}
}

// indexVectors returns the vectors of the stanza index (format 2), made
// after every other vector so that those draw the same randomness as
// before and stay byte for byte what they were.
func indexVectors(t *testing.T, signer *SigningKey, id *age.X25519Identity, ca *testCA, n time.Time,
	current *Bundle, others func() []age.Recipient) map[string]*vector {
	trusted := []string{signer.Public().String()}
	ids := []string{id.String()}
	me := id.Recipient()
	// Version V+4000, a month after N plus a little, as format2Vectors'.
	version := uint64(n.AddDate(0, 1, 0).UnixMilli()) + 123 + 4_000
	b := vectorBundle(t, ca, n, n, 3001, version)
	info, err := b.Check(vectorNow)
	if err != nil {
		t.Fatal(err)
	}
	sums := fileSums(b)
	textsOf := func(rs []age.Recipient) []string {
		var texts []string
		for _, r := range rs {
			text, ok := canonicalRecipient(r)
			if !ok {
				t.Fatalf("recipient %T cannot be named", r)
			}
			texts = append(texts, text)
		}
		return texts
	}
	// success seals b with Seal, as the publisher does (the seal record and
	// the stanza index), to rs.
	success := func(rs []age.Recipient, comment ...string) *vector {
		digest := RecipientsDigest(textsOf(rs))
		env, err := Seal(b, signer, rs, WithRecipientsDigest(digest))
		if err != nil {
			t.Fatal(err)
		}
		return &vector{comment: comment, expect: expectSuccess, format: 2, trusted: trusted, identity: ids, name: b.Name,
			version: b.Version, fingerprint: info.Fingerprint.String(), record: SealRecord{Fingerprint: info.Fingerprint, Recipients: digest},
			sums: sums, envelope: env}
	}
	// raw seals b to rs with exactly the records exts, past Seal's checks.
	raw := func(expect, field string, exts []extension, rs []age.Recipient, comment ...string) *vector {
		env, err := seal(signer, 2, b.Name, b.Version, exts, marshalPlaintext(b.Name, b.Version, b), rs)
		if err != nil {
			t.Fatal(err)
		}
		v := &vector{comment: comment, expect: expect, field: field, trusted: trusted, identity: ids, envelope: env}
		if expect != expectMalformed {
			v.format, v.name, v.version = 2, b.Name, b.Version
		}
		return v
	}
	index := func(rs []age.Recipient) []byte {
		v, err := newStanzaIndex(textsOf(rs))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// entry returns the offset in an index value of the entry for text.
	entry := func(v []byte, text string) int {
		id := stanzaID(v[:indexSaltSize], text)
		for off := indexSaltSize; off < len(v); off += indexEntrySize {
			if bytes.Equal(v[off:off+indexIDSize], id[:]) {
				return off
			}
		}
		t.Fatalf("no entry for %s", text)
		return 0
	}
	edit := func(v []byte, f func(v []byte)) []extension {
		v = slices.Clone(v)
		f(v)
		return []extension{{typ: extStanzaIndex, value: v}}
	}
	setStanza := func(v []byte, off int, k uint16) { binary.BigEndian.PutUint16(v[off+indexIDSize:], k) }

	edLine, edFile := sshEd25519Pair(t)
	three := slices.Concat(others(), []age.Recipient{me}) // the identity last
	phantom := others()[0]                                // listed in an index, not in the header
	swapped := index(three)                               // the identity's and the first's entries swapped
	first, mine := entry(swapped, textsOf(three)[0]), entry(swapped, textsOf(three)[2])
	beyond := index(slices.Concat(three[:1], []age.Recipient{phantom, me})) // the identity at stanza 2
	short := index([]age.Recipient{three[0], me})                           // 2 entries
	valid := index(three)

	return map[string]*vector{
		"success_index_x25519.txt": success(slices.Concat(others(), three),
			"A valid format 2 envelope sealed to five X25519 recipients (the identity is the last one) with the seal record",
			"and the stanza index (0x8002, ignorable): a 16-byte salt, then per stanza an 8-byte id, the first bytes of",
			"SHA-256(\"certsync stanza index v1\\x00\" || salt || recipient), and the stanza's number, sorted by id.",
			"Open hands the identity its own stanza only. Version V+4000."),
		"success_index_ssh_ed25519.txt": func() *vector {
			v := success(slices.Concat(others(), others(), mustRecipients(t, edLine)),
				"As success_index_x25519.txt, sealed to four X25519 recipients and, last, an ssh-ed25519 key (identity-openssh),",
				"listed under its canonical text \"ssh-ed25519 AAAA…\" without the comment.")
			v.identity, v.openssh = nil, edFile
			return v
		}(),
		"not_recipient_index.txt": raw(expectNotRecipient, "", []extension{{typ: extStanzaIndex, value: index(three[:2])}}, three[:2],
			"A valid envelope with a stanza index, sealed to two other X25519 recipients: the identity is not listed, so",
			"Open refuses it as not a recipient without trying any stanza."),
		"not_recipient_index_wrong_stanza.txt": raw(expectNotRecipient, "", edit(swapped, func(v []byte) {
			setStanza(v, first, 2)
			setStanza(v, mine, 0)
		}), three,
			"Sealed to three X25519 recipients (the identity last) with a signed but wrong stanza index: the identity's",
			"entry names stanza 0, the first recipient's. Open tries that one stanza and refuses the envelope as not a",
			"recipient: never a trial of every stanza."),
		"index_mismatch_beyond_header.txt": raw(expectIndexMismatch, "", []extension{{typ: extStanzaIndex, value: beyond}}, []age.Recipient{three[0], me},
			"Sealed to two X25519 recipients (the identity last) with a stanza index of three entries, the identity's",
			"naming stanza 2, beyond the header: the index does not describe the header, refused as malformed on Open."),
		"index_mismatch_short.txt": raw(expectIndexMismatch, "", []extension{{typ: extStanzaIndex, value: short}}, three,
			"Sealed to three X25519 recipients with a stanza index of two entries (the first recipient's and the identity's,",
			"at stanza 1): the index does not describe the header, refused as malformed on Open."),
		"malformed_index_length.txt": raw(expectMalformed, "extension length", []extension{{typ: extStanzaIndex, value: append(slices.Clone(valid), 0)}}, three,
			"A stanza index of 47 bytes: its length is a 16-byte salt and a multiple of 10."),
		"malformed_index_salt_only.txt": raw(expectMalformed, "extension length", []extension{{typ: extStanzaIndex, value: valid[:indexSaltSize]}}, three,
			"A stanza index of a salt and no entry: it lists every stanza, at least one."),
		"malformed_index_unsorted.txt": raw(expectMalformed, "extension value", edit(valid, func(v []byte) {
			a, b := v[indexSaltSize:indexSaltSize+indexEntrySize], v[indexSaltSize+indexEntrySize:indexSaltSize+2*indexEntrySize]
			tmp := slices.Clone(a)
			copy(a, b)
			copy(b, tmp)
		}), three,
			"A stanza index whose first two entries are swapped: entries are sorted by id, ascending."),
		"malformed_index_duplicate_id.txt": raw(expectMalformed, "extension value", edit(valid, func(v []byte) {
			copy(v[indexSaltSize+indexEntrySize:], v[indexSaltSize:indexSaltSize+indexIDSize])
		}), three,
			"A stanza index whose second entry repeats the first entry's id: each id appears once."),
		"malformed_index_stanza_range.txt": raw(expectMalformed, "extension value", edit(valid, func(v []byte) {
			setStanza(v, indexSaltSize, 3)
		}), three,
			"A stanza index of three entries whose first names stanza 3: each names a stanza below the number of entries."),
		"malformed_index_stanza_repeated.txt": raw(expectMalformed, "extension value", edit(valid, func(v []byte) {
			copy(v[indexSaltSize+indexEntrySize+indexIDSize:], v[indexSaltSize+indexIDSize:indexSaltSize+indexEntrySize])
		}), three,
			"A stanza index whose first two entries name the same stanza: each stanza is named once."),
		"success_format1_index_skipped.txt": func() *vector {
			env, err := seal(signer, 1, current.Name, current.Version, []extension{{typ: extStanzaIndex, value: []byte("not an index")}},
				marshalPlaintext(current.Name, current.Version, current), []age.Recipient{me})
			if err != nil {
				t.Fatal(err)
			}
			ci, err := current.Check(vectorNow)
			if err != nil {
				t.Fatal(err)
			}
			cs := fileSums(current)
			return &vector{comment: []string{
				"A format 1 envelope (version N, as downgrade_1_newer.txt) carrying a 12-byte record 0x8002: format 1 does not",
				"define the stanza index, so it is an unknown ignorable record there, skipped; Open tries every stanza.",
			}, expect: expectSuccess, trusted: trusted, identity: ids, name: current.Name, version: current.Version,
				fingerprint: ci.Fingerprint.String(), sums: cs, envelope: env}
		}(),
	}
}
