package subscriber

import (
	"errors"
	"fmt"
	"time"
)

// Outcome is what became of one bundle message.
type Outcome string

// Outcomes of a message.
const (
	// OutcomeStaged: the bundle was staged; the message is acknowledged.
	OutcomeStaged Outcome = "staged"
	// OutcomeUnchanged: the same bundle was already staged; acknowledged.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeSuperseded: a newer bundle of the same certificate in the same
	// batch was staged (or already staged); acknowledged, never opened.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeRefused: the bundle failed a check that retrying cannot cure;
	// the message is terminated and the refusal reported.
	OutcomeRefused Outcome = "refused"
	// OutcomeFailed: a transient failure (disk, NATS); the message will be
	// delivered again after a delay.
	OutcomeFailed Outcome = "failed"
)

// Result is what happened to one message.
type Result struct {
	// Name is the certificate name from the subject; empty when the
	// subject holds none.
	Name string
	// Subject is the message's subject.
	Subject string
	// Sequence is the message's sequence number in the stream.
	Sequence uint64
	// Version is the bundle's signed version, once its signature verified.
	Version uint64
	// Outcome says what became of the message.
	Outcome Outcome
	// Err says why, for OutcomeRefused and OutcomeFailed. It holds no secret.
	Err error
	// Rollout is true for a rollout record (a message on a rollout
	// subject): OutcomeStaged then means kept, OutcomeSuperseded that it is
	// for a version below the staged one, and Version is the version it
	// releases.
	Rollout bool
}

// Report lists what one Sync did, message by message, in the order they
// were decided, then the installs it made and the staged bundles that wait
// to be installed on their own; or what one Install did.
type Report struct {
	Results   []Result
	Installs  []InstallResult
	Scheduled []Scheduled
}

// Scheduled is a staged bundle that waits to be installed on its own.
type Scheduled struct {
	// Name is the certificate's name; Version the staged bundle's.
	Name    string
	Version uint64
	// At is when it will be installed.
	At time.Time
	// Why says what decided At: "window" (the schedule), "expiry" (the
	// installed certificate comes within expiry_deadline), "not_before"
	// (the new certificate is not valid until then), "installed_expires"
	// (the installed one expires before that NotBefore), "retry" (a failed
	// install is tried again under expiry_deadline), "rollout" (held,
	// waiting for its rollout to release this node: At is then when the
	// expiry deadline would install it anyway, zero when never).
	Why string
}

// Failed reports whether any bundle for this node was refused or failed, or
// any install failed. `node sync` and `node install` exit non-zero when it
// is true.
func (r *Report) Failed() bool { return r.Err() != nil }

// Err joins the errors of the refused and failed messages and of the
// failed installs, one line each, or returns nil.
func (r *Report) Err() error {
	var errs []error
	for _, res := range r.Results {
		if res.Outcome == OutcomeRefused || res.Outcome == OutcomeFailed {
			what := "bundle"
			if res.Rollout {
				what = "rollout record"
			}
			errs = append(errs, fmt.Errorf("%s %q seq %d %s: %w", what, res.Name, res.Sequence, res.Outcome, res.Err))
		}
	}
	for _, res := range r.Installs {
		if res.Outcome == InstallFailed {
			errs = append(errs, fmt.Errorf("install %q version %d failed: %w", res.Name, res.Version, res.Err))
		}
	}
	return errors.Join(errs...)
}

// InstallCount returns how many installs had outcome o.
func (r *Report) InstallCount(o InstallOutcome) int {
	return countWhere(r.Installs, func(res InstallResult) bool { return res.Outcome == o })
}

// Count returns how many messages had outcome o.
func (r *Report) Count(o Outcome) int {
	return countWhere(r.Results, func(res Result) bool { return res.Outcome == o })
}

// countWhere returns how many elements of s satisfy f.
func countWhere[E any](s []E, f func(E) bool) int {
	n := 0
	for _, e := range s {
		if f(e) {
			n++
		}
	}
	return n
}
