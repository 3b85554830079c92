package crypto

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const rolloutVectorDir = "testdata/rollout"

// rolloutVector is one file of testdata/rollout.
type rolloutVector struct {
	comment   []string
	expect    string   // expectSuccess, expectMalformed, expectTruncated, expectBadSignature, expectUntrusted
	field     string   // the FormatError's field, when malformed or truncated
	trusted   []string // public keys in text form
	body      string   // the record's JSON body, on success
	releases  []string // nodes Releases must release, on success
	withholds []string // nodes it must not, on success
	record    []byte
}

// marshal writes the vector's text form.
func (v *rolloutVector) marshal() []byte {
	var b bytes.Buffer
	writeExpect(&b, v.comment, v.expect, v.field)
	for _, k := range v.trusted {
		fmt.Fprintf(&b, "trusted: %s\n", k)
	}
	if v.body != "" {
		fmt.Fprintf(&b, "body: %s\n", v.body)
	}
	for _, n := range v.releases {
		fmt.Fprintf(&b, "releases: %s\n", n)
	}
	for _, n := range v.withholds {
		fmt.Fprintf(&b, "withholds: %s\n", n)
	}
	writeBase64(&b, "record", v.record)
	return b.Bytes()
}

// parseRolloutVector reads a vector's text form.
func parseRolloutVector(data []byte) (*rolloutVector, error) {
	v := &rolloutVector{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 2<<20)
	var rec strings.Builder
	inRecord := false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case inRecord:
			rec.WriteString(line)
			continue
		case strings.HasPrefix(line, "#"):
			v.comment = append(v.comment, strings.TrimSpace(line[1:]))
			continue
		case line == "record:":
			inRecord = true
			continue
		}
		key, val, ok := strings.Cut(line, ": ")
		if !ok {
			return nil, fmt.Errorf("line %d: want key: value", n)
		}
		switch key {
		case "expect":
			v.expect = val
		case "field":
			v.field = val
		case "trusted":
			v.trusted = append(v.trusted, val)
		case "body":
			v.body = val
		case "releases":
			v.releases = append(v.releases, val)
		case "withholds":
			v.withholds = append(v.withholds, val)
		default:
			return nil, fmt.Errorf("line %d: unknown key %q", n, key)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var err error
	if v.record, err = base64.StdEncoding.DecodeString(rec.String()); err != nil {
		return nil, fmt.Errorf("record: %v", err)
	}
	return v, nil
}

// readRolloutVectors reads every file of testdata/rollout.
func readRolloutVectors(t testing.TB) map[string]*rolloutVector {
	t.Helper()
	return readVectorFiles(t, rolloutVectorDir, parseRolloutVector)
}

// vectorSigners are the fixed signing keys of the vectors, by public key.
func vectorSigners() map[PublicKey]*SigningKey {
	m := map[PublicKey]*SigningKey{}
	for _, label := range []string{"signer", "previous signer", "untrusted signer"} {
		k := newSigningKeyFromSeed(vectorSeed(label))
		m[k.Public()] = k
	}
	return m
}

// TestRolloutVectors checks every file of testdata/rollout; TestVectors
// regenerates them with -update.
func TestRolloutVectors(t *testing.T) {
	t.Parallel()
	// The success records are about success_hold.txt's held bundle: a
	// node fed that envelope and one of them installs it or not.
	hold, err := os.ReadFile(filepath.Join(vectorDir, "success_hold.txt"))
	if err != nil {
		t.Fatal(err)
	}
	held, err := parseVector(hold)
	if err != nil || !held.hold {
		t.Fatalf("success_hold.txt: %v, hold %v", err, held != nil && held.hold)
	}
	heldFP, err := ParseFingerprint(held.fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	for file, v := range readRolloutVectors(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			checkRolloutVector(t, v, held.version, heldFP)
		})
	}
}

// checkRolloutVector checks that a vector's record has its expected
// outcome; a success is for version and fp.
func checkRolloutVector(t *testing.T, v *rolloutVector, version uint64, fp Fingerprint) {
	var trusted []PublicKey
	for _, s := range v.trusted {
		k, err := ParsePublicKey(s)
		if err != nil {
			t.Fatal(err)
		}
		trusted = append(trusted, k)
	}
	r, signer, err := VerifyRollout(v.record, trusted)
	checkOneLine(t, err)
	refused := func(target error) {
		t.Helper()
		if !errors.Is(err, target) || r != nil {
			t.Fatalf("VerifyRollout = %v, want %v", err, target)
		}
		var fe *FormatError
		errors.As(err, &fe)
		if v.field != "" && (fe == nil || fe.Part != "rollout" || fe.Field != v.field) {
			t.Errorf("VerifyRollout = %v, want a rollout FormatError at field %q", err, v.field)
		}
		if v.expect == expectTruncated && (fe == nil || !strings.Contains(fe.Reason, "truncated")) {
			t.Errorf("VerifyRollout = %v, want a truncated field", err)
		}
	}
	switch v.expect {
	case expectSuccess:
		if err != nil {
			t.Fatalf("VerifyRollout = %v, want success", err)
		}
		if !slices.Contains(trusted, signer) {
			t.Errorf("signer %s is not trusted", signer)
		}
		if body, err := json.Marshal(r); err != nil || string(body) != v.body {
			t.Errorf("VerifyRollout = %s, want %s", body, v.body)
		}
		if !r.For(version, fp) {
			t.Errorf("record for version %d %s, want success_hold.txt's %d %s", r.Version, r.Fingerprint, version, fp)
		}
		for _, n := range v.releases {
			if !r.Releases(n) {
				t.Errorf("Releases(%q) = false", n)
			}
		}
		for _, n := range v.withholds {
			if r.Releases(n) {
				t.Errorf("Releases(%q) = true", n)
			}
		}
		if key := vectorSigners()[signer]; key == nil {
			t.Errorf("signer %s is none of the vectors' keys", signer)
		} else if again, err := SignRollout(r, key); err != nil || !bytes.Equal(again, v.record) {
			t.Errorf("the record does not sign again to the same bytes (%v)", err)
		}
	case expectMalformed, expectTruncated:
		refused(ErrMalformed)
	case expectBadSignature:
		refused(ErrBadSignature)
	case expectUntrusted:
		refused(ErrUntrustedSigner)
	default:
		t.Fatalf("unknown expect %q", v.expect)
	}
}

// writeRolloutVectors regenerates testdata/rollout. Ed25519 signing is
// deterministic and the keys are the envelope vectors' fixed ones, so the
// files come out the same on every run.
func writeRolloutVectors(t *testing.T) {
	signer := newSigningKeyFromSeed(vectorSeed("signer"))
	rotated := newSigningKeyFromSeed(vectorSeed("previous signer"))
	untrusted := newSigningKeyFromSeed(vectorSeed("untrusted signer"))
	trusted := []string{signer.Public().String()}

	hold, err := os.ReadFile(filepath.Join(vectorDir, "success_hold.txt"))
	if err != nil {
		t.Fatal(err)
	}
	held, err := parseVector(hold)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := ParseFingerprint(held.fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	// T is when the controller wrote the first record: ten minutes after
	// success_hold.txt was published.
	at := time.UnixMilli(int64(held.version)).UTC().Truncate(time.Second).Add(10 * time.Minute)
	record := func(gen uint64, state string, wave int, released ...string) *RolloutRecord {
		return &RolloutRecord{Name: held.name, Version: held.version, Fingerprint: fp, Generation: gen, State: state,
			Wave: wave, Released: released, Time: at.Add(time.Duration(gen) * 20 * time.Minute),
			WaveStarted: at.Add(time.Duration(gen) * 20 * time.Minute)}
	}
	sign := func(r *RolloutRecord, key *SigningKey) []byte {
		data, err := SignRollout(r, key)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	success := func(r *RolloutRecord, key *SigningKey, releases, withholds []string, comment ...string) *rolloutVector {
		data := sign(r, key)
		return &rolloutVector{comment: comment, expect: expectSuccess, trusted: trusted,
			body: string(data[rolloutBodyOffset : len(data)-signatureSize]), releases: releases, withholds: withholds, record: data}
	}
	failure := func(expect, field string, data []byte, comment ...string) *rolloutVector {
		return &rolloutVector{comment: comment, expect: expect, field: field, trusted: trusted, record: data}
	}
	flip := func(data []byte, i int) []byte {
		d := slices.Clone(data)
		d[i] ^= 0x01
		return d
	}
	resign := func(data []byte, edit func([]byte)) []byte {
		d := slices.Clone(data)
		edit(d)
		n := len(d) - signatureSize
		copy(d[n:], signer.sign(append([]byte(rolloutContext), d[:n]...)))
		return d
	}
	body := func(r *RolloutRecord) []byte {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	canary := record(1, RolloutRunning, 0, "canary-1")
	wave := record(3, RolloutRunning, 2, "canary-1", "web-1", "web-2", "web-3")
	halted := record(2, RolloutHalted, 1, "canary-1", "web-1")
	halted.Reason = "2 of 2 released nodes failed (max_failures 1): canary-1: install: check failed (exit status 1); web-1: install: check failed (exit status 1)"
	complete := record(5, RolloutComplete, 3, "canary-1", "web-1", "web-2", "web-3")
	complete.All = true
	base := sign(wave, signer)
	// Where "web-1" is in success_wave.txt's body.
	web1 := rolloutBodyOffset + bytes.Index(base[rolloutBodyOffset:], []byte(`"web-1"`)) + len(`"web-`)
	unsorted := body(wave)
	unsorted = bytes.Replace(unsorted, []byte(`"web-1","web-2"`), []byte(`"web-2","web-1"`), 1)

	vectors := map[string]*rolloutVector{
		"success_canary.txt": success(canary, signer, []string{"canary-1"}, []string{"web-1", "web-9"},
			"Generation 1 of the rollout of success_hold.txt's version and certificate: wave 0, the canary canary-1 released."),
		"success_wave.txt": success(wave, signer, []string{"canary-1", "web-1", "web-2", "web-3"}, []string{"web-4"},
			"Generation 3: wave 2 released; canary-1, web-1, web-2 and web-3 may install, web-4 may not yet."),
		"success_halted.txt": success(halted, signer, []string{"canary-1", "web-1"}, []string{"web-2"},
			"Generation 2, halted with a reason: what is released stays released (a node that already installed keeps it),",
			"nothing more is, until an operator resumes it with a later generation."),
		"success_complete.txt": success(complete, signer, []string{"canary-1", "web-9", "joined-later"}, nil,
			"Generation 5, complete: all, so every node is released, also one the record does not name."),
		"success_rotated_signer.txt": func() *rolloutVector {
			v := success(canary, rotated, []string{"canary-1"}, nil, "success_canary.txt's record signed by the second of two trusted keys.")
			v.trusted = []string{signer.Public().String(), rotated.Public().String()}
			return v
		}(),
		"bad_signature.txt": failure(expectBadSignature, "", flip(base, len(base)-1),
			"success_wave.txt with the last byte of the signature flipped."),
		"bad_signature_released.txt": failure(expectBadSignature, "", flip(base, web1),
			"success_wave.txt with \"web-1\" changed to \"web-0\" in the body: a node cannot release itself."),
		"bad_signature_context.txt": func() *rolloutVector {
			d := slices.Clone(base)
			n := len(d) - signatureSize
			copy(d[n:], signer.sign(append([]byte(signatureContext), d[:n]...)))
			return failure(expectBadSignature, "", d,
				"success_wave.txt signed by the trusted key over the envelope's context (\"certsync envelope v1\\0\"):",
				"a signature in one context is never valid in the other.")
		}(),
		"untrusted_signer.txt": failure(expectUntrusted, "", sign(wave, untrusted),
			"success_wave.txt's record correctly signed by a key that is not trusted."),
		"malformed_magic.txt": failure(expectMalformed, "magic", resign(base, func(d []byte) { copy(d, envelopeMagic) }),
			"success_wave.txt with an envelope's magic (CERTSYNC), signed again: an envelope is never a rollout record."),
		"malformed_format.txt": failure(expectMalformed, "format", resign(base, func(d []byte) { d[len(rolloutMagic)] = 2 }),
			"success_wave.txt with format byte 2, signed again: a reader of rollout format 1 refuses it."),
		"truncated_signature.txt": failure(expectTruncated, "body length", base[:len(base)-1],
			"success_wave.txt without its last byte."),
		"truncated_header.txt": failure(expectTruncated, "signer", base[:len(rolloutMagic)+1+10],
			"success_wave.txt cut inside the signer."),
		"empty.txt": failure(expectTruncated, "magic", []byte{}, "An empty body."),
		"trailing_garbage.txt": failure(expectMalformed, "end", append(slices.Clone(base), '\n'),
			"success_wave.txt followed by one newline byte."),
		"malformed_body_not_json.txt": failure(expectMalformed, "body", signRolloutBody([]byte("wave 2: canary-1 web-1"), signer),
			"A correctly signed record whose body is not JSON."),
		"malformed_body_unsorted.txt": failure(expectMalformed, "body", signRolloutBody(unsorted, signer),
			"success_wave.txt's body with web-2 before web-1, correctly signed: released nodes are sorted, each once."),
		"malformed_body_not_canonical.txt": failure(expectMalformed, "body", signRolloutBody(append(body(wave), '\n'), signer),
			"success_wave.txt's body followed by a newline, correctly signed: a record has one encoding, the one SignRollout writes."),
		"malformed_body_state.txt": failure(expectMalformed, "body", signRolloutBody(bytes.Replace(body(wave), []byte(`"running"`), []byte(`"rolling"`), 1), signer),
			"success_wave.txt's body with the unknown state \"rolling\", correctly signed."),
	}
	writeVectorFiles(t, rolloutVectorDir, vectors)
}
