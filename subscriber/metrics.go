package subscriber

import (
	"context"
	"errors"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/metrics"
)

// bundleOutcomes are the outcomes a bundle message can have (every
// Outcome): the certsync_bundles_total series each certificate starts with.
var bundleOutcomes = []Outcome{OutcomeStaged, OutcomeUnchanged, OutcomeSuperseded, OutcomeRefused, OutcomeFailed}

// refusalReasons name why a bundle was refused, for the refusals metric:
// a short, fixed label, never the error's text. The first whose error a
// refusal wraps names it; reasonOther names the rest. Each certificate's
// certsync_refusals_total starts with a series for each of them.
var refusalReasons = []struct {
	err    error
	reason string
}{
	{crypto.ErrUntrustedSigner, "untrusted_signer"},
	{crypto.ErrBadSignature, "bad_signature"},
	{crypto.ErrNotRecipient, "not_recipient"},
	{crypto.ErrMalformed, "malformed"},
	{ErrTooLarge, "too_large"},
	{ErrDowngrade, "downgrade"},
	{ErrConflict, "conflict"},
	{ErrWrongSubject, "wrong_subject"},
	{ErrUnknownCertificate, "unknown_certificate"},
	{ErrInvalidBundle, "invalid_bundle"},
}

// reasonOther is the reason of a refusal none of refusalReasons names;
// reasonClock counts, with the refusals, a bundle held back for now because
// the node's clock says it is expired or not valid yet (ErrClock).
const (
	reasonOther = "other"
	reasonClock = "clock"
)

// refusalReason names why a bundle was refused (see refusalReasons).
func refusalReason(err error) string {
	for _, r := range refusalReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return reasonOther
}

// knownMetrics makes every counter series of the node's certificates, at
// 0, so that monitoring sees them before anything happens.
func (n *Node) knownMetrics() {
	outcomes := make([]string, 0, len(bundleOutcomes))
	for _, o := range bundleOutcomes {
		outcomes = append(outcomes, string(o))
	}
	reasons := make([]string, 0, len(refusalReasons)+2)
	for _, r := range refusalReasons {
		reasons = append(reasons, r.reason)
	}
	n.metrics.Known(n.names, outcomes, append(reasons, reasonOther, reasonClock))
}

// observeBundle counts a decided bundle message.
func (n *Node) observeBundle(r *Result) {
	reason := ""
	switch {
	case r.Outcome == OutcomeRefused:
		reason = refusalReason(r.Err)
	case r.Outcome == OutcomeFailed && errors.Is(r.Err, ErrClock):
		reason = reasonClock
	}
	n.metrics.Bundle(r.Name, string(r.Outcome), reason, n.cfg.Now())
}

// observeInstalls counts installs and sets what each certificate has in
// service.
func (n *Node) observeInstalls(results []InstallResult) {
	for _, r := range results {
		switch r.Outcome {
		case InstallInstalled:
			n.metrics.Install(r.Name, true, n.cfg.Now())
		case InstallFailed:
			n.metrics.Install(r.Name, false, n.cfg.Now())
		}
	}
	n.observeInstalled()
}

// observeScheduled sets when each certificate's staged bundle installs
// on its own, from what installDue found waiting, and which wait for their
// rollout to release them: those have no scheduled time (the series is
// absent) and certsync_rollout_waiting is 1.
func (n *Node) observeScheduled(waiting []Scheduled) {
	if n.metrics == nil {
		return
	}
	at := map[string]time.Time{}
	held := map[string]bool{}
	for _, w := range waiting {
		if w.Why == whyRollout {
			held[w.Name] = true
			continue
		}
		at[w.Name] = w.At
	}
	for _, name := range n.names {
		n.metrics.Scheduled(name, at[name])
		n.metrics.RolloutWaiting(name, held[name])
	}
}

// observeInstalled sets the not-after of every certificate in service.
func (n *Node) observeInstalled() {
	if n.metrics == nil {
		return
	}
	for _, name := range n.names {
		if inst, _, err := n.installers[name].installed(); err == nil && inst != nil {
			n.metrics.Installed(name, inst.NotAfter)
		}
	}
}

// serveMetrics opens metrics_listen, when set, and serves it until ctx
// ends. A bad address fails at once, before Run does anything else.
func (n *Node) serveMetrics(ctx context.Context) (wait func(), err error) {
	if n.metrics == nil {
		return func() {}, nil
	}
	l, err := metrics.Listen(n.cfg.MetricsListen)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.metrics.Serve(ctx, l, n.log); err != nil {
			n.log.Error("metrics_failed", "error", err)
		}
	}()
	return func() { <-done }, nil
}
