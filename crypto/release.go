package crypto

import (
	"errors"
	"time"
)

// Release is what tells one issue of a certificate from the others of its
// name, and orders them: its version, its leaf's serial and fingerprint and
// validity. (It is not an age identity: those are the keys nodes decrypt
// with.) [Bundle.Check] derives it from a bundle's leaf; a node keeps it in
// certsync.json beside what it staged and installed, a publisher reads it
// from the stream. Every "is this newer than what is held" question is
// [Compare], answered as an error by [CheckOrder]. None of it is secret.
//
// Its JSON field names are those of certsync.json and state.json on nodes;
// they never change.
type Release struct {
	// Version is the bundle's signed version ([Bundle.Version]): the
	// publisher's, strictly increasing per certificate. Nodes refuse a
	// version lower than the one they hold, and an equal version with a
	// different certificate; a higher version may carry any certificate,
	// an earlier one put back (a rollback) included.
	Version uint64 `json:"version"`
	// Serial is the leaf's serial number in lowercase hex.
	Serial string `json:"serial,omitempty"`
	// Fingerprint is the SHA-256 of the leaf's DER.
	Fingerprint Fingerprint `json:"fingerprint"`
	// NotBefore and NotAfter bound the leaf's validity, in UTC.
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Order is how an incoming release stands to the one held ([Compare]).
type Order int

// Orders.
const (
	// Same: the same version of the same certificate.
	Same Order = iota
	// Newer: a higher version; it may replace the one held.
	Newer
	// Older: a lower version, a downgrade.
	Older
	// Conflict: the same version but another certificate. The publisher
	// never gives two certificates one version, so one of them is not
	// what it claims.
	Conflict
)

// String names the order in lowercase.
func (o Order) String() string {
	switch o {
	case Same:
		return "same"
	case Newer:
		return "newer"
	case Older:
		return "older"
	case Conflict:
		return "conflict"
	}
	return "unknown"
}

// Compare says how incoming stands to held, by version, then fingerprint.
// A zero fingerprint on either side is not known and not compared: equal
// versions are then Same (an envelope sealed before seal records has no
// fingerprint; sealing it again is harmless, since a node that holds it
// finds the same certificate).
func Compare(held, incoming Release) Order {
	switch {
	case incoming.Version > held.Version:
		return Newer
	case incoming.Version < held.Version:
		return Older
	case held.Fingerprint.IsZero() || incoming.Fingerprint.IsZero() || held.Fingerprint == incoming.Fingerprint:
		return Same
	}
	return Conflict
}

// Errors of [CheckOrder]. The stage, the installer and the publisher all
// refuse with them, wrapped with what was held where.
var (
	// ErrDowngrade means a release is older than the one held: it is
	// refused even when validly signed.
	ErrDowngrade = errors.New("older than the version held")
	// ErrConflict means a release has the version of the one held but
	// another certificate.
	ErrConflict = errors.New("same version as the one held but another certificate")
)

// CheckOrder is the rule "never go back": nil when incoming may follow held
// (Same or Newer, see [Compare]), [ErrDowngrade] when it is Older,
// [ErrConflict] when it is a Conflict. The errors are the bare sentinels:
// the caller wraps them with what it holds, and where.
func CheckOrder(held, incoming Release) error {
	switch Compare(held, incoming) {
	case Older:
		return ErrDowngrade
	case Conflict:
		return ErrConflict
	}
	return nil
}
