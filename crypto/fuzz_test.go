package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// FuzzOpen feeds arbitrary bodies to Verify and Open, seeded with the test
// vectors of both formats. Nothing may panic; whatever parses must
// re-marshal to the same bytes; a seal record is returned exactly when one
// parsed, and holds two digests; Hold and Withdrawn exactly when format 2
// records parsed, Withdrawn ascending and at most 16, Group exactly the
// recipient group record (a count of 2 or more, an index below it); a
// format 2 stanza index that parses has a salt and 1 to 1024 entries with
// ascending ids naming each stanza once, and Open succeeds on it only for
// an identity it lists; errors must wrap a
// documented sentinel and be one line; Open may succeed only where Verify
// does, with the same header, and its bundle must round-trip through the
// plaintext encoding. Open's fast path (the stanza index) and age's own
// path give the same result, for the body and for the body signed again by
// a trusted key (so that changes to the age ciphertext get past the
// signature).
func FuzzOpen(f *testing.F) {
	var trusted []PublicKey
	var ids []age.Identity
	for _, v := range readVectors(f) {
		f.Add(v.envelope)
		tk, id, err := v.keys()
		if err != nil {
			f.Fatal(err)
		}
		for _, k := range tk {
			if !slices.Contains(trusted, k) {
				trusted = append(trusted, k)
			}
		}
		ids = append(ids, id...)
	}
	// Grouped envelopes (format 2, the recipient group record), sealed by
	// the vectors' signer to the vectors' first identity: valid ones, and
	// others with a group record the parser refuses.
	var x *age.X25519Identity
	for _, id := range ids {
		if xi, ok := id.(*age.X25519Identity); ok && x == nil {
			x = xi
		}
	}
	if x == nil {
		f.Fatal("no X25519 identity among the vectors' identities")
	}
	key := newSigningKeyFromSeed(vectorSeed("signer"))
	b := &Bundle{Name: "example.com", Version: 1735689600000, Cert: []byte("c"), Chain: []byte("ch"), FullChain: []byte("f"), PrivKey: []byte("k")}
	pt := marshalPlaintext(b.Name, b.Version, b)
	for _, v := range [][]byte{{0, 0, 0, 2}, {0, 2, 0, 3}, {0xff, 0xfe, 0xff, 0xff}, {0, 2, 0, 2}, {0, 0, 0, 1}, {0, 0, 2}} {
		env, err := seal(key, 2, b.Name, b.Version, []extension{{typ: extRecipientGroup, value: v}, {typ: extHold, value: []byte{}}}, pt, []age.Recipient{x.Recipient()})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(env)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, perr := parseEnvelope(data)
		if perr == nil {
			if again := env.marshal(); !bytes.Equal(again, data) {
				t.Fatalf("parse then marshal changed the envelope:\n in  %x\n out %x", data, again)
			}
		} else if !errors.Is(perr, ErrMalformed) {
			t.Fatalf("parseEnvelope = %v, want ErrMalformed", perr)
		}
		hasRecord, hasHold, withdrawn, index, group := false, false, []byte(nil), []byte(nil), Group{}
		if perr == nil {
			if env.format < MinFormat || env.format > Format {
				t.Fatalf("parsed format %d", env.format)
			}
			for _, x := range env.exts {
				switch {
				case x.typ == extSealRecord:
					hasRecord = true
					if len(x.value) != sealRecordSize {
						t.Fatalf("parsed a seal record of %d bytes", len(x.value))
					}
				case x.typ == extHold:
					hasHold = true
					if env.format < 2 || len(x.value) != 0 {
						t.Fatalf("parsed a hold record of %d bytes in format %d", len(x.value), env.format)
					}
				case x.typ == extWithdrawn && env.format >= 2:
					withdrawn = x.value
				case x.typ == extStanzaIndex && env.format >= 2:
					index = x.value
					checkParsedIndex(t, x.value)
				case x.typ == extRecipientGroup:
					if env.format < 2 || len(x.value) != groupRecordSize {
						t.Fatalf("parsed a recipient group record of %d bytes in format %d", len(x.value), env.format)
					}
					if group = parseGroupRecord(x.value); group.Count < 2 || group.Index >= group.Count {
						t.Fatalf("parsed the recipient group record %+v", group)
					}
				case x.typ&extIgnorable == 0:
					t.Fatalf("parsed the critical record 0x%04x", x.typ)
				}
			}
		}
		hdr, verr := Verify(data, trusted)
		if verr == nil {
			if perr != nil {
				t.Fatalf("Verify succeeded where parsing failed: %v", perr)
			}
			if hdr.Name != env.name || hdr.Version != env.version || hdr.Signer != env.signer || hdr.Format != int(env.format) {
				t.Fatalf("Verify = %+v, parse = format %d %q %d %v", hdr, env.format, env.name, env.version, env.signer)
			}
			if hdr.Record.IsZero() == hasRecord {
				t.Fatalf("Verify's record %+v, but the envelope has a seal record: %v", hdr.Record, hasRecord)
			}
			if hdr.Group != group {
				t.Fatalf("Verify's Group %+v, but the envelope's record says %+v", hdr.Group, group)
			}
			if hdr.Hold != hasHold {
				t.Fatalf("Verify's Hold %v, but the envelope has a hold record: %v", hdr.Hold, hasHold)
			}
			if len(hdr.Withdrawn)*sha256.Size != len(withdrawn) || len(hdr.Withdrawn) > maxWithdrawn {
				t.Fatalf("Verify's Withdrawn holds %d fingerprints, the record %d bytes", len(hdr.Withdrawn), len(withdrawn))
			}
			for i, fp := range hdr.Withdrawn {
				if !bytes.Equal(fp[:], withdrawn[i*sha256.Size:(i+1)*sha256.Size]) || (i > 0 && bytes.Compare(hdr.Withdrawn[i-1][:], fp[:]) >= 0) {
					t.Fatalf("Verify's Withdrawn %v is not the record's, ascending", hdr.Withdrawn)
				}
			}
			for _, d := range []string{hdr.Record.Fingerprint.String(), hdr.Record.Recipients} {
				if _, err := ParseFingerprint(d); hasRecord && err != nil && d != "" {
					t.Fatalf("Verify's record holds %q, not a digest", d)
				}
			}
		} else if !isOneOf(verr, []error{ErrMalformed, ErrUntrustedSigner, ErrBadSignature}) {
			t.Fatalf("Verify = %v, want a documented sentinel", verr)
		}
		ohdr, b, oerr := Open(data, trusted, ids)
		ah, ab, aerr := open(data, trusted, ids, false)
		sameOpen(t, "fuzzed envelope", ohdr, b, oerr, ah, ab, aerr)
		if perr == nil {
			// The same envelope signed by a trusted key, so that the
			// fuzzer's changes to the ciphertext reach the age header.
			e := *env
			e.signer = key.Public()
			openBothWays(t, "fuzzed envelope, signed again", e.marshalSigned(key), trusted, ids)
		}
		for _, err := range []error{perr, verr, oerr} {
			if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error of more than one line: %q", err)
			}
		}
		if oerr != nil {
			if !isOneOf(oerr, []error{ErrMalformed, ErrUntrustedSigner, ErrBadSignature, ErrNotRecipient}) {
				t.Fatalf("Open = %v, want a documented sentinel", oerr)
			}
			return
		}
		if verr != nil || !reflect.DeepEqual(ohdr, hdr) {
			t.Fatalf("Open succeeded with header %+v where Verify = %+v, %v", ohdr, hdr, verr)
		}
		if index != nil && len(parseStanzaIndex(index).identities(ids)) == 0 {
			t.Fatal("Open succeeded on an envelope whose stanza index lists none of the identities")
		}
		pt := marshalPlaintext(b.Name, b.Version, b)
		b2, err := parsePlaintext(pt)
		if err != nil || b2.Name != b.Name || b2.Version != b.Version || !bytes.Equal(b2.Cert, b.Cert) ||
			!bytes.Equal(b2.Chain, b.Chain) || !bytes.Equal(b2.FullChain, b.FullChain) || !bytes.Equal(b2.PrivKey, b.PrivKey) {
			t.Fatalf("the opened bundle does not round-trip: %v", err)
		}
		// Check must not panic on whatever a trusted signer sealed.
		_, _ = b.Check(time.Unix(int64(b.Version), 0))
	})
}

// checkParsedIndex fails unless v, a stanza index the parser accepted,
// obeys docs/FORMAT.md: a salt, 1 to MaxRecipients entries, ids strictly
// ascending, the stanza numbers 0 to k-1 each once.
func checkParsedIndex(t *testing.T, v []byte) {
	t.Helper()
	if len(v) < indexSaltSize+indexEntrySize || (len(v)-indexSaltSize)%indexEntrySize != 0 || len(v) > indexSaltSize+MaxRecipients*indexEntrySize {
		t.Fatalf("parsed a stanza index of %d bytes", len(v))
	}
	x := parseStanzaIndex(v)
	seen := make([]bool, x.len())
	for i := range x.len() {
		e := x.entries[i*indexEntrySize : (i+1)*indexEntrySize]
		if i > 0 && bytes.Compare(x.entries[(i-1)*indexEntrySize:(i-1)*indexEntrySize+indexIDSize], e[:indexIDSize]) >= 0 {
			t.Fatalf("parsed a stanza index whose entry %d is not above the one before", i+1)
		}
		k := int(binary.BigEndian.Uint16(e[indexIDSize:]))
		if k >= x.len() || seen[k] {
			t.Fatalf("parsed a stanza index whose entry %d names stanza %d (of %d, or again)", i+1, k, x.len())
		}
		seen[k] = true
	}
}

// FuzzPlaintext checks that the plaintext parser never panics and accepts
// exactly what marshalPlaintext produces.
func FuzzPlaintext(f *testing.F) {
	f.Add(marshalPlaintext("example.com", 1735689600, &Bundle{Cert: []byte("c"), Chain: []byte("ch"), FullChain: []byte("f"), PrivKey: []byte("k")}))
	f.Add(marshalPlaintext("a", 1, &Bundle{}))
	f.Fuzz(func(t *testing.T, pt []byte) {
		b, err := parsePlaintext(pt)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Part != "plaintext" {
				t.Fatalf("parsePlaintext = %v, want a plaintext FormatError", err)
			}
			return
		}
		if again := marshalPlaintext(b.Name, b.Version, b); !bytes.Equal(again, pt) {
			t.Fatalf("parse then marshal changed the plaintext:\n in  %x\n out %x", pt, again)
		}
	})
}

// FuzzRollout feeds arbitrary bytes to VerifyRollout, seeded with the
// rollout vectors, twice: as a whole record, and as a body framed and
// signed by a trusted key (so the fuzzer reaches the body's rules, behind
// the signature). Nothing may panic; errors wrap a documented sentinel and
// are one line; whatever frame parses re-encodes to the same bytes; and
// whatever verifies signs again, by its signer, to exactly the same bytes
// (a record has one encoding), obeys the record's rules, and answers
// Releases and For.
func FuzzRollout(f *testing.F) {
	signers := vectorSigners()
	var trusted []PublicKey
	for _, v := range readRolloutVectors(f) {
		f.Add(v.record)
		if len(v.record) >= rolloutBodyOffset+signatureSize {
			f.Add(v.record[rolloutBodyOffset : len(v.record)-signatureSize])
		}
		for _, s := range v.trusted {
			k, err := ParsePublicKey(s)
			if err != nil {
				f.Fatal(err)
			}
			if !slices.Contains(trusted, k) {
				trusted = append(trusted, k)
			}
		}
	}
	key := newSigningKeyFromSeed(vectorSeed("signer"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, rec := range [][]byte{data, signRolloutBody(data, key)} {
			signer, body, perr := parseRollout(rec)
			if perr == nil {
				if again := slices.Concat([]byte(rolloutMagic), []byte{RolloutFormat}, signer.key[:],
					binary.BigEndian.AppendUint32(nil, uint32(len(body))), body, rec[len(rec)-signatureSize:]); !bytes.Equal(again, rec) {
					t.Fatalf("parse then frame changed the record:\n in  %x\n out %x", rec, again)
				}
			}
			r, who, err := VerifyRollout(rec, trusted)
			if err != nil {
				if !isOneOf(err, []error{ErrMalformed, ErrUntrustedSigner, ErrBadSignature}) {
					t.Fatalf("VerifyRollout = %v, want a documented sentinel", err)
				}
				if strings.ContainsAny(err.Error(), "\r\n") {
					t.Fatalf("error of more than one line: %q", err)
				}
				if r != nil {
					t.Fatalf("VerifyRollout returned a record with its error %v", err)
				}
				continue
			}
			if perr != nil || who != signer {
				t.Fatalf("VerifyRollout succeeded with signer %s where the frame parses as %v, %s", who, perr, signer)
			}
			if err := r.check(); err != nil {
				t.Fatalf("a verified record breaks a rule: %v", err)
			}
			k := signers[who]
			if k == nil {
				t.Fatalf("verified under %s, none of the vectors' keys", who)
			}
			again, err := SignRollout(r, k)
			if err != nil || !bytes.Equal(again, rec) {
				t.Fatalf("what verified does not sign again to the same bytes (%v):\n in  %x\n out %x", err, rec, again)
			}
			for _, n := range r.Released {
				if !r.Releases(n) {
					t.Fatalf("Releases(%q) = false for a node it names", n)
				}
			}
			if !r.For(r.Version, r.Fingerprint) {
				t.Fatal("For is false for the record's own version and fingerprint")
			}
		}
	})
}

// FuzzParseKeys feeds arbitrary text to ParseRecipient, and arbitrary key
// files to ParseIdentities and IdentityRecipient, seeded with a key of each
// kind. Nothing may panic; a recipient that parses has a canonical text
// that parses back to itself; an identity file's recipient is the
// canonical text of its first identity's; and an error never repeats a
// long word of the file, which may be a secret key (one line).
func FuzzParseKeys(f *testing.F) {
	x, xFile := x25519Pair(f)
	ed, edFile := sshEd25519Pair(f)
	rsa, rsaFile := sshRSAPair(f)
	for _, s := range []string{x, ed, rsa, "age1pq1abc", "ssh-ed25519 AAAA", "AGE-SECRET-KEY-1QQQ"} {
		f.Add(s, []byte(s))
	}
	f.Add("", xFile)
	f.Add("", edFile)
	f.Add("", rsaFile)
	f.Add("", append([]byte("# created: now\n"), xFile...))
	f.Fuzz(func(t *testing.T, text string, file []byte) {
		if r, err := ParseRecipient(text); err == nil {
			canon, ok := canonicalRecipient(r)
			if !ok {
				t.Fatalf("ParseRecipient(%q) = %T, which has no canonical text", text, r)
			}
			again, err := ParseRecipient(canon)
			if err != nil {
				t.Fatalf("ParseRecipient(%q) = %q, which does not parse: %v", text, canon, err)
			}
			if c, _ := canonicalRecipient(again); c != canon {
				t.Fatalf("ParseRecipient(%q) = %q, which reads back as %q", text, canon, c)
			}
		} else if strings.Contains(err.Error(), "\n") {
			t.Fatalf("ParseRecipient(%q): a multi-line error %q", text, err)
		}
		ids, idErr := ParseIdentities(file)
		rec, recErr := IdentityRecipient(file)
		for _, err := range []error{idErr, recErr} {
			if err == nil {
				continue
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("a multi-line error %q", msg)
			}
			for _, word := range strings.Fields(string(file)) {
				if len(word) >= 20 && strings.Contains(msg, word) {
					t.Fatalf("error %q repeats %q of the key file", msg, word)
				}
			}
		}
		if idErr == nil && recErr == nil {
			if want, ok := identityRecipient(ids[0]); ok && want != rec {
				t.Fatalf("IdentityRecipient = %q, the first identity's recipient is %q", rec, want)
			}
		}
	})
}
