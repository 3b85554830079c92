package publisher

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
)

// Report is what Republish did.
type Report struct {
	// Results hold the certificates handled without error, by name.
	Results []Result
	// Dropped are the nodes that stopped receiving certificates, by node.
	// Each certificate listed should be reissued (certbot renew
	// --force-renewal --cert-name NAME), since the node may hold its key.
	Dropped []Dropped
}

// A RepublishOption changes what [Publisher.Republish] does.
type RepublishOption func(*republishOptions)

type republishOptions struct {
	force bool
}

// Force makes Republish seal and publish the newest lineage of each
// certificate even when the stream's newest bundle already is that
// certificate sealed to those recipients: the operator's way out of any
// stuck node. Every node of the certificate receives a fresh message; one
// that holds the certificate finds it unchanged, one that refused or lost
// the earlier message gets it again. Older certificates are still refused
// (ErrOlder).
func Force() RepublishOption {
	return func(o *republishOptions) { o.force = true }
}

// Republish reconciles the stream with the configuration and the lineages
// on disk. For each named certificate (all configured ones when names is
// empty; an unconfigured name is an error before anything is done), it
// reads the lineage under Config.Lineages/<name> and publishes it when the
// subject is empty, holds another certificate, or holds one sealed to
// other recipients, as the newest bundle's signed seal record says (or
// always, with Force). It also makes every node's consumer match the
// configuration exactly, deletes the consumers of nodes that left it, and
// reports in Report.Dropped what those nodes may hold.
//
// Republish carries on past a certificate that fails and returns the
// report of what succeeded with the joined errors of what did not; the
// report is never nil.
func (p *Publisher) Republish(ctx context.Context, names []string, opts ...RepublishOption) (*Report, error) {
	var o republishOptions
	for _, opt := range opts {
		opt(&o)
	}
	report := &Report{}
	if p.cfg.SigningKey == nil {
		return report, errors.New("refusing to republish: no signing key configured")
	}
	if len(names) == 0 {
		names = sortedKeys(p.cfg.Certificates)
	}
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	for _, name := range names {
		if _, ok := p.cfg.Certificates[name]; !ok {
			return report, fmt.Errorf("republishing certificate %q: %w", name, ErrUnknownCertificate)
		}
	}
	lineages := p.cfg.Lineages
	var errs []error
	var jobs []*job
	for _, name := range names {
		b, err := ReadLineage(filepath.Join(lineages, name), name)
		if err != nil {
			errs = append(errs, fmt.Errorf("republishing certificate %q: %w", name, err))
			p.log.Error("republish_failed", "name", name, "error", err)
			continue
		}
		j, err := p.prepare(b)
		if err != nil {
			errs = append(errs, err)
			p.log.Error("republish_failed", "name", name, "error", err)
			continue
		}
		jobs = append(jobs, j)
	}

	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return report, errors.Join(append(errs, fmt.Errorf("republishing: %w", err))...)
	}
	defer s.close()
	if err := s.ensure(ctx, p.cfg.Stream, false); err != nil {
		return report, errors.Join(append(errs, fmt.Errorf("republishing: %w", err))...)
	}

	want := map[string][]string{}
	for node := range p.cfg.Nodes {
		if certs := p.certsOf(node); len(certs) > 0 {
			want[node] = certs
		}
	}
	plan, err := s.updateConsumers(ctx, want, true)
	if err != nil {
		errs = append(errs, fmt.Errorf("republishing: %w", err))
	}
	if plan == nil {
		plan = &consumerPlan{}
	}
	report.Dropped = plan.dropped
	for _, d := range plan.dropped {
		p.log.Warn("node_dropped_certificates", "node", d.Node, "certificates", d.Certificates,
			"consumer_deleted", d.Removed, "hint", "reissue these certificates: the node may hold their keys")
	}

	for _, j := range jobs {
		res, err := s.publish(ctx, j, o.force || plan.added[j.bundle.Name])
		if err != nil {
			err = wrapPublishError(j.bundle.Name, err)
			errs = append(errs, err)
			p.log.Error("republish_failed", "name", j.bundle.Name, "error", err)
			continue
		}
		report.Results = append(report.Results, *res)
	}
	if err := s.createConsumers(ctx, want, plan.missing); err != nil {
		errs = append(errs, fmt.Errorf("republishing: %w", err))
	}
	return report, errors.Join(errs...)
}
