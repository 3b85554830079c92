package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// testRollout returns a valid rollout record: wave 1 of a running rollout,
// Released out of order and with a repetition (SignRollout sorts it).
func testRollout() *RolloutRecord {
	at := time.Date(2025, 2, 1, 0, 10, 0, 0, time.UTC)
	return &RolloutRecord{
		Name: "example.com", Version: 1738368002123, Fingerprint: sha256.Sum256([]byte("leaf")),
		Generation: 2, State: RolloutRunning, Wave: 1,
		Released: []string{"web-2", "canary-1", "web-1", "canary-1"},
		Time:     at, WaveStarted: at.Add(-time.Minute),
	}
}

// signedTestRollout returns testRollout signed by key.
func signedTestRollout(t *testing.T, key *SigningKey) []byte {
	t.Helper()
	data, err := SignRollout(testRollout(), key)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkOneLine fails t when err's text is more than one line.
func checkOneLine(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
		t.Errorf("error of more than one line: %q", err)
	}
}

func TestRolloutRoundTrip(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	r := testRollout()
	r.Time = r.Time.In(time.FixedZone("CET", 3600))
	given := *r
	given.Released = slices.Clone(r.Released)
	data, err := SignRollout(r, key)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*r, given) {
		t.Errorf("SignRollout changed its record: %+v, was %+v", r, given)
	}
	again, err := SignRollout(r, key)
	if err != nil || !bytes.Equal(again, data) {
		t.Errorf("signing the same record again gave other bytes (%v)", err)
	}
	got, signer, err := VerifyRollout(data, []PublicKey{mustSigningKey(t).Public(), key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	want := testRollout()
	want.Released = []string{"canary-1", "web-1", "web-2"}
	if signer != key.Public() || !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC {
		t.Errorf("VerifyRollout = signer %s time %v, want %s %v in UTC", signer, got.Time, key.Public(), want.Time)
	}
	got.Time = want.Time
	if !reflect.DeepEqual(got, want) {
		t.Errorf("VerifyRollout = %+v, want %+v", got, want)
	}
	if again, err := SignRollout(got, key); err != nil || !bytes.Equal(again, data) {
		t.Errorf("what verified does not sign again to the same bytes (%v)", err)
	}
	if len(data) != rolloutBodyOffset+int(binary.BigEndian.Uint32(data[rolloutBodyOffset-4:]))+signatureSize || string(data[:8]) != "CERTSYNR" || data[8] != RolloutFormat {
		t.Errorf("frame %x is not magic, format, signer, body length, body, signature", data[:rolloutBodyOffset])
	}

	for node, released := range map[string]bool{"canary-1": true, "web-1": true, "web-2": true, "web-3": false, "": false} {
		if got.Releases(node) != released {
			t.Errorf("Releases(%q) = %v, want %v", node, !released, released)
		}
	}
	// Releases holds for a record being built, unsorted.
	if !r.Releases("canary-1") || r.Releases("web-3") {
		t.Error("Releases of an unsorted record is wrong")
	}
	all := *got
	all.All, all.Released = true, nil
	if !all.Releases("web-9") {
		t.Error("a record for all releases no node it does not name")
	}
	if !got.For(want.Version, want.Fingerprint) || got.For(want.Version+1, want.Fingerprint) || got.For(want.Version, Fingerprint{1}) {
		t.Error("For does not match exactly the version and fingerprint")
	}
	var none *RolloutRecord
	if none.Releases("web-1") || none.For(want.Version, want.Fingerprint) {
		t.Error("a nil record releases something")
	}
	if _, err := SignRollout(nil, key); err == nil {
		t.Error("SignRollout(nil) succeeded")
	}
	if _, err := SignRollout(testRollout(), nil); err == nil {
		t.Error("SignRollout without a key succeeded")
	}
}

// TestRolloutRefusesFrame: the frame's refusals, each a FormatError at
// its field, before any signature is checked.
func TestRolloutRefusesFrame(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	data := signedTestRollout(t, key)
	trusted := []PublicKey{key.Public()}
	resigned := func(edit func([]byte)) []byte {
		d := slices.Clone(data)
		edit(d)
		n := len(d) - signatureSize
		copy(d[n:], key.sign(append([]byte(rolloutContext), d[:n]...)))
		return d
	}
	longer := binary.BigEndian.AppendUint32(slices.Clone(data[:rolloutBodyOffset-4]), uint32(len(data)))
	for _, tc := range []struct {
		name   string
		data   []byte
		field  string
		offset int
		reason string
	}{
		{"empty", nil, "magic", 0, "truncated"},
		{"over 1 MiB", append(slices.Clone(data), make([]byte, MaxRolloutSize)...), "record", MaxRolloutSize, "exceeds the limit"},
		{"an envelope's magic", resigned(func(d []byte) { copy(d, envelopeMagic) }), "magic", 0, "not a certsync rollout record"},
		{"format 2", resigned(func(d []byte) { d[8] = 2 }), "format", 8, "unsupported rollout format 2, this reader knows 1"},
		{"format 0", resigned(func(d []byte) { d[8] = 0 }), "format", 8, "unsupported rollout format 0"},
		{"cut in the signer", data[:20], "signer", 9, "truncated"},
		{"body length beyond the end", append(longer, data[rolloutBodyOffset:]...), "body length", rolloutBodyOffset - 4, "truncated"},
		{"no signature", data[:len(data)-signatureSize], "body length", rolloutBodyOffset - 4, "truncated"},
		{"one trailing byte", append(slices.Clone(data), '\n'), "end", len(data), "1 trailing bytes after the signature"},
		{"twice", append(slices.Clone(data), data...), "end", len(data), "trailing bytes"},
	} {
		_, _, err := VerifyRollout(tc.data, trusted)
		var fe *FormatError
		if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.Part != "rollout" || fe.Field != tc.field || fe.Offset != tc.offset || !strings.Contains(fe.Reason, tc.reason) {
			t.Errorf("%s: VerifyRollout = %v, want a rollout FormatError at %s, offset %d: %q", tc.name, err, tc.field, tc.offset, tc.reason)
		}
		checkOneLine(t, err)
	}
	for n := range len(data) {
		if _, _, err := VerifyRollout(data[:n], trusted); !errors.Is(err, ErrMalformed) {
			t.Fatalf("cut to %d of %d bytes: VerifyRollout = %v, want ErrMalformed", n, len(data), err)
		}
	}
}

// TestRolloutRefusesEveryFlippedByte: no byte of a record can change and
// still verify; which refusal depends on where the byte is.
func TestRolloutRefusesEveryFlippedByte(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	data := signedTestRollout(t, key)
	trusted := []PublicKey{key.Public()}
	for i := range data {
		var want error
		switch {
		case i < 9: // magic, format
			want = ErrMalformed
		case i < 9+32:
			want = ErrUntrustedSigner
		case i < rolloutBodyOffset: // body length
			want = ErrMalformed
		default: // body, signature
			want = ErrBadSignature
		}
		for _, bit := range []byte{0x01, 0x80} {
			mod := slices.Clone(data)
			mod[i] ^= bit
			if _, _, err := VerifyRollout(mod, trusted); !errors.Is(err, want) {
				t.Fatalf("byte %d ^ %#x: VerifyRollout = %v, want %v", i, bit, err, want)
			}
		}
	}
}

func TestRolloutRefusesSigner(t *testing.T) {
	t.Parallel()
	key, other := mustSigningKey(t), mustSigningKey(t)
	data := signedTestRollout(t, key)
	for name, trusted := range map[string][]PublicKey{"none": nil, "another key": {other.Public()}, "the zero key": {{}}} {
		if r, _, err := VerifyRollout(data, trusted); !errors.Is(err, ErrUntrustedSigner) || r != nil {
			t.Errorf("%s trusted: VerifyRollout = %v, want ErrUntrustedSigner", name, err)
		}
	}
	// A trusted key named as signer over another key's signature.
	forged := slices.Clone(data)
	pub := other.Public()
	copy(forged[9:], pub.key[:])
	if _, _, err := VerifyRollout(forged, []PublicKey{pub}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged signer: VerifyRollout = %v, want ErrBadSignature", err)
	}
	// The same key's signature over the same bytes in another context
	// (an envelope's) does not verify.
	n := len(data) - signatureSize
	crossed := slices.Clone(data)
	copy(crossed[n:], key.sign(append([]byte(signatureContext), data[:n]...)))
	if _, _, err := VerifyRollout(crossed, []PublicKey{key.Public()}); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed in the envelope's context: VerifyRollout = %v, want ErrBadSignature", err)
	}
}

// TestRolloutBody: a signed body is read only as one JSON object in
// exactly the encoding SignRollout writes.
func TestRolloutBody(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	trusted := []PublicKey{key.Public()}
	good := signedTestRollout(t, key)
	body := string(good[rolloutBodyOffset : len(good)-signatureSize])
	plus := testRollout()
	plus.Time = plus.Time.In(time.FixedZone("CET", 3600))
	plus.Released = []string{"canary-1", "web-1", "web-2"}
	plusBody, err := json.Marshal(plus)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, body, reason string
	}{
		{"empty", "", "not one JSON object"},
		{"not JSON", "not json", "not one JSON object"},
		{"an array", "[" + body + "]", "not one JSON object"},
		{"null", "null", "empty name"},
		{"two objects", body + body, "not one JSON object"},
		{"a closing brace after it", body + "}", "not one JSON object"},
		{"a trailing newline", body + "\n", "canonical"},
		{"a leading space", " " + body, "canonical"},
		{"an unknown field", strings.Replace(body, `{"name"`, `{"future":1,"name"`, 1), "canonical"},
		{"a key in capitals", strings.Replace(body, `"name"`, `"NAME"`, 1), "canonical"},
		{"a repeated key", strings.Replace(body, `{"name":"example.com"`, `{"name":"other.example.com","name":"example.com"`, 1), "canonical"},
		{"an escaped letter", strings.Replace(body, `"example.com"`, `"\u0065xample.com"`, 1), "canonical"},
		{"a time not in UTC", string(plusBody), "canonical"},
		{"an empty released list", strings.Replace(body, `"released":["canary-1","web-1","web-2"]`, `"released":[]`, 1), "canonical"},
		{"a string version", strings.Replace(body, `"version":1738368002123`, `"version":"1738368002123"`, 1), "not one JSON object"},
	} {
		if tc.body == body {
			t.Fatalf("%s: the edit did not apply", tc.name)
		}
		_, _, err := VerifyRollout(signRolloutBody([]byte(tc.body), key), trusted)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Part != "rollout" || fe.Field != "body" || !strings.Contains(fe.Reason, tc.reason) {
			t.Errorf("%s: VerifyRollout = %v, want a body FormatError: %q", tc.name, err, tc.reason)
		}
		checkOneLine(t, err)
	}
	if _, _, err := VerifyRollout(signRolloutBody([]byte(body), key), trusted); err != nil {
		t.Errorf("the canonical body framed again: %v", err)
	}
}

// TestRolloutRules: every rule of the record, refused by SignRollout
// before signing and by VerifyRollout in a body signed past it; the
// limits themselves are accepted.
func TestRolloutRules(t *testing.T) {
	t.Parallel()
	key := mustSigningKey(t)
	trusted := []PublicKey{key.Public()}
	many := make([]string, MaxRolloutNodes+1)
	for i := range many {
		many[i] = fmt.Sprintf("n%06d", i)
	}
	for _, tc := range []struct {
		name   string
		edit   func(*RolloutRecord)
		reason string
		signed bool // SignRollout cannot write it: checked only by VerifyRollout
	}{
		{"empty name", func(r *RolloutRecord) { r.Name = "" }, "empty name", false},
		{"NUL in name", func(r *RolloutRecord) { r.Name = "a\x00b" }, "NUL", false},
		{"254-byte name", func(r *RolloutRecord) { r.Name = strings.Repeat("a", MaxNameSize+1) }, "over the limit of 253", false},
		{"name not UTF-8", func(r *RolloutRecord) { r.Name = "a\xffb" }, "name is not valid UTF-8", false},
		{"version 0", func(r *RolloutRecord) { r.Version = 0 }, "version 0", false},
		{"no fingerprint", func(r *RolloutRecord) { r.Fingerprint = Fingerprint{} }, "no fingerprint", false},
		{"generation 0", func(r *RolloutRecord) { r.Generation = 0 }, "generation 0", false},
		{"wave -1", func(r *RolloutRecord) { r.Wave = -1 }, "wave -1, want 0 to 100", false},
		{"wave 101", func(r *RolloutRecord) { r.Wave = MaxRolloutWave + 1 }, "wave 101", false},
		{"too many released", func(r *RolloutRecord) { r.Released = many }, "100001 released nodes, at most 100000", false},
		{"1025-byte reason", func(r *RolloutRecord) { r.Reason = strings.Repeat("x", maxRolloutReason+1) }, "reason is 1025 bytes", false},
		{"newline in reason", func(r *RolloutRecord) { r.Reason = "web-1 failed\nweb-2 failed" }, "control character or a line break", false},
		{"DEL in reason", func(r *RolloutRecord) { r.Reason = "a\x7fb" }, "control character", false},
		{"C1 control in reason", func(r *RolloutRecord) { r.Reason = "a\u0085b" }, "control character", false},
		{"line separator in reason", func(r *RolloutRecord) { r.Reason = "a\u2028b" }, "line break", false},
		{"paragraph separator in reason", func(r *RolloutRecord) { r.Reason = "a\u2029b" }, "line break", false},
		{"reason not UTF-8", func(r *RolloutRecord) { r.Reason = "a\xffb" }, "reason is not valid UTF-8", false},
		{"no time", func(r *RolloutRecord) { r.Time = time.Time{} }, "no time", false},
		{"unknown state", func(r *RolloutRecord) { r.State = "rolling" }, `unknown state "rolling"`, false},
		{"no state", func(r *RolloutRecord) { r.State = "" }, `unknown state ""`, false},
		{"long unknown state", func(r *RolloutRecord) { r.State = strings.Repeat("s", 5000) }, "unknown state of 5000 bytes", false},
		{"empty node name", func(r *RolloutRecord) { r.Released = []string{"", "web-1"} }, "released node 1 is not a node name", false},
		{"65-byte node name", func(r *RolloutRecord) { r.Released = []string{strings.Repeat("w", 65)} }, "released node 1 is not a node name", false},
		{"space in node name", func(r *RolloutRecord) { r.Released = []string{"web 1"} }, "released node 1", false},
		{"non-ASCII node name", func(r *RolloutRecord) { r.Released = []string{"web-1", "wéb-2"} }, "released node 2", false},
		{"unsorted", func(r *RolloutRecord) { r.Released = []string{"web-2", "web-1"} }, "released nodes not sorted or repeated at 2", true},
		{"repeated", func(r *RolloutRecord) { r.Released = []string{"web-1", "web-1"} }, "released nodes not sorted or repeated at 2", true},
	} {
		r := testRollout()
		r.Released = slices.Compact(slices.Sorted(slices.Values(r.Released)))
		tc.edit(r)
		if !tc.signed {
			_, err := SignRollout(r, key)
			if err == nil || !strings.Contains(err.Error(), tc.reason) || !strings.HasPrefix(err.Error(), "signing rollout record ") {
				t.Errorf("%s: SignRollout = %v, want %q", tc.name, err, tc.reason)
			}
			checkOneLine(t, err)
			if err != nil && len(err.Error()) > 400 {
				t.Errorf("%s: SignRollout's error is %d bytes long", tc.name, len(err.Error()))
			}
		}
		body, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if tc.name == "name not UTF-8" || tc.name == "reason not UTF-8" {
			continue // JSON cannot carry it: decoding gives U+FFFD
		}
		_, _, err = VerifyRollout(signRolloutBody(body, key), trusted)
		var fe *FormatError
		if !errors.As(err, &fe) || fe.Field != "body" || !strings.Contains(fe.Reason, tc.reason) {
			t.Errorf("%s: VerifyRollout = %v, want a body FormatError: %q", tc.name, err, tc.reason)
		}
		checkOneLine(t, err)
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: VerifyRollout's error is %d bytes long", tc.name, len(err.Error()))
		}
	}
	for name, edit := range map[string]func(*RolloutRecord){
		"wave 100":          func(r *RolloutRecord) { r.Wave = MaxRolloutWave },
		"wave 0":            func(r *RolloutRecord) { r.Wave = 0 },
		"1024-byte reason":  func(r *RolloutRecord) { r.Reason = strings.Repeat("é", maxRolloutReason/2) },
		"253-byte name":     func(r *RolloutRecord) { r.Name = strings.Repeat("a", MaxNameSize) },
		"64-byte node name": func(r *RolloutRecord) { r.Released = []string{strings.Repeat("w", 64)} },
		"all, none named":   func(r *RolloutRecord) { r.All, r.Released, r.State = true, nil, RolloutComplete },
		"no wave start":     func(r *RolloutRecord) { r.WaveStarted = time.Time{} },
	} {
		r := testRollout()
		edit(r)
		data, err := SignRollout(r, key)
		if err != nil {
			t.Errorf("%s: SignRollout: %v", name, err)
			continue
		}
		if _, _, err := VerifyRollout(data, trusted); err != nil {
			t.Errorf("%s: VerifyRollout: %v", name, err)
		}
	}
	for _, state := range []string{RolloutRunning, RolloutPaused, RolloutHalted, RolloutComplete, RolloutAborted} {
		r := testRollout()
		r.State = state
		if _, err := SignRollout(r, key); err != nil {
			t.Errorf("state %s: %v", state, err)
		}
	}
}

// TestRolloutTooLarge: a record over MaxRolloutSize is not signed.
func TestRolloutTooLarge(t *testing.T) {
	t.Parallel()
	r := testRollout()
	r.Released = nil
	for i := range 20_000 {
		r.Released = append(r.Released, fmt.Sprintf("%s-%06d", strings.Repeat("w", 50), i))
	}
	if data, err := SignRollout(r, mustSigningKey(t)); !errors.Is(err, ErrTooLarge) || data != nil {
		t.Errorf("SignRollout of 20000 long names = %v, want ErrTooLarge", err)
	}
}
