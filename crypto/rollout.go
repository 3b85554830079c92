// The signed rollout record: what releases a held bundle (Header.Hold) to
// nodes, wave by wave. Its bytes, behind one bounded parser, and the API
// (SignRollout, VerifyRollout). docs/FORMAT.md, "Rollout records", is the
// specification.

package crypto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The rollout record's layout.
const (
	// rolloutMagic starts every rollout record.
	rolloutMagic = "CERTSYNR"
	// RolloutFormat is the rollout record format this package writes and
	// reads.
	RolloutFormat = 1
	// rolloutContext is prepended to the signed bytes (domain separation
	// from envelopes and from any other use of the key).
	rolloutContext = "certsync rollout v1\x00"
	// MaxRolloutSize bounds a rollout record, as an envelope.
	MaxRolloutSize = MaxEnvelopeSize
	// MaxRolloutNodes bounds the nodes one record releases by name.
	MaxRolloutNodes = 100_000
	// MaxRolloutWave bounds the wave number.
	MaxRolloutWave = 100
	// maxNodeName bounds each released name (the node name rule's bound;
	// callers check the rule itself).
	maxNodeName = 64
	// maxRolloutReason bounds the reason's bytes.
	maxRolloutReason = 1024
)

// Rollout states, in RolloutRecord.State.
const (
	// RolloutRunning: the controller releases wave after wave.
	RolloutRunning = "running"
	// RolloutPaused: the operator paused it; nothing more is released.
	RolloutPaused = "paused"
	// RolloutHalted: too many nodes failed; nothing more is released
	// until the operator resumes it.
	RolloutHalted = "halted"
	// RolloutComplete: every node is released (All).
	RolloutComplete = "complete"
	// RolloutAborted: the operator aborted it; the previous certificate
	// was published again, and this version is released no further.
	RolloutAborted = "aborted"
)

// RolloutRecord is the publisher's signed word on one rollout: which nodes
// may install the held version Version (with the leaf Fingerprint) of the
// certificate Name, and the rollout's state. A node installs a held
// bundle only when the newest record for its name, version and
// fingerprint releases it ([RolloutRecord.Releases]); it ignores the rest
// of the record, which is the controller's state. Nothing in it is secret;
// node names are what the NATS server's operators already see in consumer
// names.
//
// Its JSON field names are the record's body (docs/FORMAT.md); they never
// change.
type RolloutRecord struct {
	// Name is the certificate name.
	Name string `json:"name"`
	// Version and Fingerprint are the held bundle's signed version and
	// its leaf's fingerprint.
	Version     uint64      `json:"version"`
	Fingerprint Fingerprint `json:"fingerprint"`
	// Generation counts the release actions of this rollout (a wave
	// released, a resume), from 1. A node whose install of Version failed
	// tries again once a record of a later generation releases it.
	Generation uint64 `json:"generation"`
	// State is one of RolloutRunning, RolloutPaused, RolloutHalted,
	// RolloutComplete, RolloutAborted.
	State string `json:"state"`
	// Wave is the wave last released: 0 the canaries, then 1, 2, …
	Wave int `json:"wave"`
	// All releases every node, whether named or not (a completed rollout;
	// a node that joins later installs at once).
	All bool `json:"all,omitempty"`
	// Released names the nodes released, sorted, each once.
	Released []string `json:"released,omitempty"`
	// Reason says why the rollout is paused, halted or aborted: one line.
	Reason string `json:"reason,omitempty"`
	// Time is when the record was written; WaveStarted when Wave was
	// released.
	Time        time.Time `json:"time"`
	WaveStarted time.Time `json:"wave_started"`
}

// Releases tells whether the record releases node. A nil record releases
// nothing. Released need not be sorted (a record being built); a verified
// one always is.
func (r *RolloutRecord) Releases(node string) bool {
	if r == nil {
		return false
	}
	return r.All || slices.Contains(r.Released, node)
}

// For tells whether the record is about version version of the certificate
// with fingerprint fp. A nil record is about nothing.
func (r *RolloutRecord) For(version uint64, fp Fingerprint) bool {
	return r != nil && r.Version == version && r.Fingerprint == fp
}

// check applies the record's rules (the parser's, after decoding; and
// SignRollout's, before encoding). Its errors never echo more than a short
// state, so each is one bounded line.
func (r *RolloutRecord) check() error {
	if err := checkName(r.Name); err != nil {
		return err
	}
	switch {
	case !utf8.ValidString(r.Name):
		// JSON would carry U+FFFD instead: the record signed would not
		// be the record given.
		return errors.New("name is not valid UTF-8")
	case r.Version == 0:
		return errors.New("version 0 is invalid")
	case r.Fingerprint.IsZero():
		return errors.New("no fingerprint")
	case r.Generation == 0:
		return errors.New("generation 0 is invalid")
	case r.Wave < 0 || r.Wave > MaxRolloutWave:
		return fmt.Errorf("wave %d, want 0 to %d", r.Wave, MaxRolloutWave)
	case len(r.Released) > MaxRolloutNodes:
		return fmt.Errorf("%d released nodes, at most %d", len(r.Released), MaxRolloutNodes)
	case len(r.Reason) > maxRolloutReason:
		return fmt.Errorf("reason is %d bytes, at most %d", len(r.Reason), maxRolloutReason)
	case !utf8.ValidString(r.Reason):
		return errors.New("reason is not valid UTF-8")
	case strings.ContainsFunc(r.Reason, breaksLine):
		return errors.New("reason holds a control character or a line break")
	case r.Time.IsZero():
		return errors.New("no time")
	}
	switch r.State {
	case RolloutRunning, RolloutPaused, RolloutHalted, RolloutComplete, RolloutAborted:
	default:
		if len(r.State) > maxStateEcho {
			return fmt.Errorf("unknown state of %d bytes", len(r.State))
		}
		return fmt.Errorf("unknown state %q", r.State)
	}
	for i, n := range r.Released {
		if n == "" || len(n) > maxNodeName || strings.ContainsFunc(n, func(c rune) bool { return c <= ' ' || c > '~' }) {
			return fmt.Errorf("released node %d is not a node name", i+1)
		}
		if i > 0 && r.Released[i-1] >= n {
			return fmt.Errorf("released nodes not sorted or repeated at %d", i+1)
		}
	}
	return nil
}

// maxStateEcho bounds the unknown state an error quotes.
const maxStateEcho = 32

// breaksLine tells whether c may not appear in a one-line text: a control
// character (C0, DEL, C1) or a Unicode line or paragraph separator.
func breaksLine(c rune) bool {
	return unicode.IsControl(c) || c == '\u2028' || c == '\u2029'
}

// canonical is r as SignRollout writes it: Released sorted and
// deduplicated, the times in UTC.
func (r *RolloutRecord) canonical() RolloutRecord {
	c := *r
	c.Released = slices.Compact(slices.Sorted(slices.Values(r.Released)))
	c.Time, c.WaveStarted = c.Time.UTC(), c.WaveStarted.UTC()
	return c
}

// SignRollout checks r (Released is sorted and deduplicated first, the
// times taken in UTC; r itself is not changed) and returns it as a rollout
// record signed with key. Signing is deterministic: the same record and
// key give the same bytes.
func SignRollout(r *RolloutRecord, key *SigningKey) ([]byte, error) {
	if r == nil || key == nil {
		return nil, errors.New("signing rollout record: nil record or signing key")
	}
	c := r.canonical()
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("signing rollout record %q: %w", r.Name, err)
	}
	body, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("signing rollout record %q: %v", r.Name, err)
	}
	if n := rolloutBodyOffset + len(body) + signatureSize; n > MaxRolloutSize {
		return nil, fmt.Errorf("signing rollout record %q: %d bytes, over the limit of %d: %w", r.Name, n, MaxRolloutSize, ErrTooLarge)
	}
	return signRolloutBody(body, key), nil
}

// signRolloutBody frames body and signs the frame with key: the bytes of a
// rollout record, whatever body holds (tests use it for records SignRollout
// would never write).
func signRolloutBody(body []byte, key *SigningKey) []byte {
	pub := key.Public()
	b := make([]byte, 0, rolloutBodyOffset+len(body)+signatureSize)
	b = append(b, rolloutMagic...)
	b = append(b, RolloutFormat)
	b = append(b, pub.key[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return append(b, key.sign(append([]byte(rolloutContext), b...))...)
}

// VerifyRollout parses a rollout record and checks its signature: at most
// [MaxRolloutSize] bytes and a well-formed frame ([ErrMalformed], as a
// [*FormatError] with part "rollout"), a signer among trusted
// ([ErrUntrustedSigner]) and its valid signature ([ErrBadSignature]). Only
// once the signature holds is the body read: one JSON object, obeying the
// record's rules, and exactly the bytes SignRollout writes for it (so a
// record has one encoding, and what verifies signs again to the same
// bytes); else [ErrMalformed], field "body". It returns the record and its
// signer.
func VerifyRollout(data []byte, trusted []PublicKey) (*RolloutRecord, PublicKey, error) {
	signer, body, err := parseRollout(data)
	if err != nil {
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record: %w", err)
	}
	if !slices.Contains(trusted, signer) {
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record: signer %s: %w", signer, ErrUntrustedSigner)
	}
	n := len(data) - signatureSize
	if !signer.verify(append([]byte(rolloutContext), data[:n]...), data[n:]) {
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record: signer %s: %w", signer, ErrBadSignature)
	}
	var r RolloutRecord
	if err := json.Unmarshal(body, &r); err != nil {
		// The decoder's words would quote the body: only where it broke.
		off := rolloutBodyOffset
		if se, ok := errors.AsType[*json.SyntaxError](err); ok {
			off += int(se.Offset)
		}
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record: %w", &FormatError{Part: "rollout", Field: "body", Offset: off, Reason: "not one JSON object of a rollout record"})
	}
	if err := r.check(); err != nil {
		// Not r.Name: it may be what the rule refused (1 MiB long).
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record: %w", &FormatError{Part: "rollout", Field: "body", Offset: rolloutBodyOffset, Reason: err.Error()})
	}
	c := r.canonical()
	if want, err := json.Marshal(&c); err != nil || !bytes.Equal(want, body) {
		return nil, PublicKey{}, fmt.Errorf("verifying rollout record %q: %w", r.Name, &FormatError{Part: "rollout", Field: "body", Offset: rolloutBodyOffset, Reason: "not in the canonical encoding SignRollout writes"})
	}
	return &r, signer, nil
}

// rolloutBodyOffset is where a rollout record's body starts.
const rolloutBodyOffset = len(rolloutMagic) + 1 + ed25519.PublicKeySize + 4

// parseRollout splits a rollout record into its signer and its body,
// checking the frame: size, magic, format, the body's length, and that
// exactly the signature follows the body. It does not look into the body.
func parseRollout(data []byte) (PublicKey, []byte, error) {
	var signer PublicKey
	if len(data) > MaxRolloutSize {
		return signer, nil, &FormatError{Part: "rollout", Field: "record", Offset: MaxRolloutSize, Reason: fmt.Sprintf("%d bytes exceeds the limit of %d", len(data), MaxRolloutSize)}
	}
	r := &reader{part: "rollout", data: data}
	m, err := r.take(len(rolloutMagic), "magic")
	if err != nil {
		return signer, nil, err
	}
	if string(m) != rolloutMagic {
		r.off = 0
		return signer, nil, r.errorf("magic", "not a certsync rollout record")
	}
	f, err := r.uint8("format")
	if err != nil {
		return signer, nil, err
	}
	if f != RolloutFormat {
		r.off--
		return signer, nil, r.errorf("format", "unsupported rollout format %d, this reader knows %d", f, RolloutFormat)
	}
	k, err := r.take(ed25519.PublicKeySize, "signer")
	if err != nil {
		return signer, nil, err
	}
	copy(signer.key[:], k)
	n, err := r.uint32("body length")
	if err != nil {
		return signer, nil, err
	}
	left := len(data) - r.off - signatureSize
	if int64(n) > int64(left) {
		r.off -= 4
		return signer, nil, r.errorf("body length", "truncated: %d exceeds the %d bytes left before the %d-byte signature", n, max(left, 0), signatureSize)
	}
	body, _ := r.take(int(n), "body")
	r.off += signatureSize
	if r.off != len(data) {
		return signer, nil, r.errorf("end", "%d trailing bytes after the signature", len(data)-r.off)
	}
	return signer, body, nil
}
