package crypto

import (
	"errors"
	"time"
)

// Sentinel errors. Errors returned by this package wrap them (test with
// [errors.Is]); all but ErrKeyPermissions, ErrExpired and ErrNotYetValid
// mark an envelope or a rollout record that will never be accepted, however
// often it is retried.
var (
	// ErrMalformed means the envelope or its plaintext does not follow the
	// format (docs/FORMAT.md): bad magic, unsupported format, a length out of
	// bounds, trailing bytes, an unknown critical extension, an invalid age
	// ciphertext, or a plaintext whose name or version differ from the
	// signed header; or a rollout record that does not follow its format
	// (its frame, or its signed body). Parse errors are of type
	// *[FormatError].
	ErrMalformed = errors.New("malformed envelope")
	// ErrBadSignature means the signature does not verify under the key the
	// envelope (or rollout record) names as its signer: it was altered.
	ErrBadSignature = errors.New("bad envelope signature")
	// ErrUntrustedSigner means the envelope (or rollout record) names a
	// signer that is not one of the trusted keys.
	ErrUntrustedSigner = errors.New("envelope signer is not trusted")
	// ErrNotRecipient means none of the identities can decrypt the envelope.
	ErrNotRecipient = errors.New("not a recipient of the envelope")
	// ErrNoRecipients means Seal was given no recipient.
	ErrNoRecipients = errors.New("no recipients")
	// ErrTooManyRecipients means Seal was given more than [MaxRecipients]
	// recipients, which age would encrypt to but no node could open.
	ErrTooManyRecipients = errors.New("too many recipients")
	// ErrTooLarge means a sealed envelope would exceed [MaxEnvelopeSize], or
	// a signed rollout record [MaxRolloutSize].
	ErrTooLarge = errors.New("envelope too large")
	// ErrKeyPermissions means a key file may be read or written by group or
	// others; "chmod 600 FILE" fixes it.
	ErrKeyPermissions = errors.New("key file permissions too open")
	// ErrExpired means a certificate of a bundle had expired at the time
	// [Bundle.Check] was given. It comes in a [*ClockError].
	ErrExpired = errors.New("certificate expired")
	// ErrNotYetValid means a bundle's leaf is not valid until more than
	// [MaxFutureNotBefore] after the time [Bundle.Check] was given. It comes
	// in a [*ClockError].
	ErrNotYetValid = errors.New("certificate not yet valid")
)

// ClockError is a [Bundle.Check] that failed only because of the time it
// was given: a certificate had expired then, or the leaf's NotBefore lies
// more than [MaxFutureNotBefore] after it. Checked at another time, the
// same bundle may pass, so a caller whose clock may be wrong (a node) holds
// the bundle back and tries again rather than refusing it for good. It
// wraps [ErrExpired] or [ErrNotYetValid].
type ClockError struct {
	// Err is ErrExpired or ErrNotYetValid.
	Err error
	// Reason names the file, the certificate and the bound it missed.
	Reason string
	// At is the time the bundle was checked at.
	At time.Time
}

// Error implements error.
func (e *ClockError) Error() string { return e.Reason }

// Unwrap returns [ErrExpired] or [ErrNotYetValid].
func (e *ClockError) Unwrap() error { return e.Err }
