package subscriber

import (
	"errors"
	"fmt"

	"github.com/certsync/certsync/crypto"
)

// Sentinel errors. Errors from this package wrap them; test with errors.Is.
var (
	// ErrDowngrade means a bundle is older than the one staged (or
	// installed): it is refused even when validly signed. It is
	// crypto.ErrDowngrade, the one rule's error (crypto.CheckOrder).
	ErrDowngrade = crypto.ErrDowngrade
	// ErrConflict means a bundle has the version of the staged (or
	// installed) one but another certificate: two different certificates
	// cannot share a version, so the newcomer is refused. It is
	// crypto.ErrConflict.
	ErrConflict = crypto.ErrConflict
	// ErrUnknownCertificate means a bundle is for a certificate that is not
	// in this node's configuration.
	ErrUnknownCertificate = errors.New("certificate not in this node's configuration")
	// ErrWrongSubject means a bundle's signed name is not the certificate
	// name of the subject it was published on (a body moved to another
	// subject), its signed recipient group record does not match the
	// subject (a group's envelope on the bundle subject or another group's
	// subject, an ungrouped one on a group subject), or the subject is not
	// a bundle or group subject.
	ErrWrongSubject = errors.New("bundle does not belong to its subject")
	// ErrTooLarge means a message is larger than crypto.MaxEnvelopeSize; it
	// is refused before anything reads it.
	ErrTooLarge = errors.New("message larger than an envelope may be")
	// ErrInvalidBundle means a bundle opened fine but its files do not make a
	// usable certificate: unparsable, a key that does not match, before
	// 1970, a signed version that is not the leaf's.
	ErrInvalidBundle = errors.New("invalid bundle")
	// ErrClock means a bundle is held back because of the node's clock: at
	// the node's time a certificate has expired, or the leaf is not valid
	// until more than crypto.MaxFutureNotBefore ahead (the error also wraps
	// the *crypto.ClockError). The node cannot tell a wrong clock from a
	// wrong bundle, so this is not a refusal: the message is delivered
	// again with a growing delay until the bundle passes or a newer one
	// takes its place, and the older bundles of its batch are superseded
	// by it (never staged instead of it).
	ErrClock = errors.New("held back by the node's clock, tried again in case it is wrong")
	// ErrNotStaged means nothing is staged for a certificate.
	ErrNotStaged = errors.New("nothing staged")
	// ErrNoConsumer means the node's durable consumer does not exist and the
	// node may not create it. The management side creates it when it runs
	// `certsync publish` or `certsync republish`.
	ErrNoConsumer = errors.New("consumer not found")
)

// PermanentError marks a failure that retrying cannot cure: the message is
// terminated rather than delivered again. Refusals (bad signature, untrusted
// signer, not a recipient, malformed, too large, downgrade, wrong subject,
// unknown certificate, invalid bundle) are permanent; a full disk, a NATS
// hiccup or a bundle the node's clock holds back ([ErrClock]) is not.
type PermanentError struct {
	Err error
}

// Error implements error.
func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *PermanentError) Unwrap() error { return e.Err }

// permanent marks err as permanent; nil stays nil.
func permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err, or an error it wraps, is a PermanentError.
func IsPermanent(err error) bool {
	var pe *PermanentError
	return errors.As(err, &pe)
}

// heldAs says, in a refusal by crypto.CheckOrder, what is held and where
// (where is "staged" or "installed"): "version 7 is staged" before a
// downgrade, "staged with fingerprint …, this is …" before a conflict.
func heldAs(where string, held, incoming crypto.Release) string {
	if held.Version == incoming.Version {
		return fmt.Sprintf("%s with fingerprint %s, this is %s", where, held.Fingerprint, incoming.Fingerprint)
	}
	return fmt.Sprintf("version %d is %s", held.Version, where)
}
