package subscriber

import (
	"context"
	"errors"
	"time"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/metrics"
)

// refusalReason names why a bundle was refused, for the refusals metric:
// a short, fixed label, never the error's text.
func refusalReason(err error) string {
	for _, r := range []struct {
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
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

// observeBundle counts a decided bundle message.
func (n *Node) observeBundle(r *Result) {
	reason := ""
	switch {
	case r.Outcome == OutcomeRefused:
		reason = refusalReason(r.Err)
	case r.Outcome == OutcomeFailed && errors.Is(r.Err, ErrClock):
		reason = "clock" // held back for now, counted with the refusals
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
// on its own, from what installDue found waiting.
func (n *Node) observeScheduled(waiting []Scheduled) {
	if n.metrics == nil {
		return
	}
	at := map[string]time.Time{}
	for _, w := range waiting {
		at[w.Name] = w.At
	}
	for _, name := range n.names {
		n.metrics.Scheduled(name, at[name])
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
