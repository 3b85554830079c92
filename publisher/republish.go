package publisher

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/certsync/certsync/crypto"
)

// Report is what Republish did.
type Report struct {
	// Results hold the certificates handled without error, by name.
	Results []Result
	// Dropped are the nodes that stopped receiving certificates, by node.
	// Each certificate listed should be reissued (certbot renew
	// --force-renewal --cert-name NAME), since the node may hold its key.
	Dropped []Dropped
	// Withdrawn are the certificates whose lineage holds a certificate
	// the newest bundle's withdrawn record lists (a rollback took it out
	// of service), by name. Republish did not publish it: it kept the
	// newest bundle, and sealed that again where its recipients changed.
	// Not an error: the next renewal (another certificate) publishes as
	// usual.
	Withdrawn []WithdrawnLineage
}

// WithdrawnLineage is a lineage whose certificate a rollback withdrew.
type WithdrawnLineage struct {
	// Name is the certificate name.
	Name string
	// Lineage is the lineage's certificate (serial, fingerprint,
	// validity), which republish did not publish.
	Lineage crypto.Release
	// InService is the newest bundle's certificate, the one rolled back
	// to: its signed version and fingerprint, and its serial as the
	// bundle's header says.
	InService crypto.Release
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
// the earlier message gets it again. It keeps the newest bundle's version
// (and its hold and withdrawn records). Withdrawn and earlier certificates
// are still refused (ErrWithdrawn, ErrEarlier).
func Force() RepublishOption {
	return func(o *republishOptions) { o.force = true }
}

// Republish reconciles the stream with the configuration and the lineages
// on disk. For each named certificate (all configured ones when names is
// empty; an unconfigured name is an error before anything is done), it
// reads the lineage under Config.Lineages/<name> and publishes it when the
// subject is empty, holds another certificate, or holds one sealed to
// other recipients, as the newest bundle's signed seal record says (or
// always, with Force). A lineage whose certificate the newest bundle's
// withdrawn record lists (a rollback took it out of service) is never
// published: the newest bundle's certificate, read from certbot's archive,
// is sealed again in its place when its recipients changed, and the
// lineage is listed in Report.Withdrawn (and logged as
// lineage_withdrawn). It also makes every node's consumer match the
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
		force := o.force || plan.added[j.bundle.Name]
		res, _, err := s.publish(ctx, j, force)
		var we *withdrawnError
		if errors.As(err, &we) {
			res, err = p.republishInService(ctx, s, j, we.newest, force)
			if err == nil {
				w := WithdrawnLineage{Name: j.bundle.Name, Lineage: j.info.Release, InService: we.newest.Release}
				report.Withdrawn = append(report.Withdrawn, w)
				p.log.Warn("lineage_withdrawn", "name", w.Name, "serial", w.Lineage.Serial, "fingerprint", w.Lineage.Fingerprint,
					"in_service_version", w.InService.Version, "in_service_fingerprint", w.InService.Fingerprint,
					"reason", "a rollback withdrew the lineage's certificate: the newest bundle stays",
					"hint", "the next renewal publishes as usual; certsync rollback NAME --to SERIAL puts it back deliberately")
			}
		}
		if err != nil {
			err = wrapPublishError(j.bundle.Name, err, "republishing", "republish")
			errs = append(errs, err)
			p.log.Error("republish_failed", "name", j.bundle.Name, "error", err)
			continue
		}
		report.Results = append(report.Results, *res)
		if plan.added[j.bundle.Name] {
			if err := s.repostRollout(ctx, j.bundle.Name, res); err != nil {
				err = fmt.Errorf("republishing certificate %q: %w", j.bundle.Name, err)
				errs = append(errs, err)
				p.log.Error("republish_failed", "name", j.bundle.Name, "error", err)
			}
		}
	}
	if err := s.createConsumers(ctx, want, plan.missing); err != nil {
		errs = append(errs, fmt.Errorf("republishing: %w", err))
	}
	return report, errors.Join(errs...)
}

// republishInService handles a lineage whose certificate (j's) the newest
// bundle newest withdrew: nothing when newest is sealed to j's recipients
// (and not forced); else newest's certificate, from certbot's archive,
// sealed again (with its version, hold and withdrawn records).
func (p *Publisher) republishInService(ctx context.Context, s *session, j *job, newest published, force bool) (*Result, error) {
	name := j.bundle.Name
	if !force && newest.Recipients == j.digest {
		res := &Result{Name: name, Action: Unchanged, Sequence: newest.Sequence, Release: newest.Release,
			Hold: newest.Hold, Withdrawn: newest.Withdrawn, Recipients: j.digest, Nodes: j.nodes}
		s.log.Info("bundle_unchanged", "name", name, "sequence", res.Sequence, "fingerprint", res.Fingerprint, "forced", force)
		return res, nil
	}
	in, err := p.inServiceJob(name, newest)
	if err != nil {
		return nil, fmt.Errorf("the lineage's certificate (serial %s) is %w, and the newest bundle's cannot be sealed again to the changed recipients: %w",
			j.info.Serial, ErrWithdrawn, err)
	}
	res, _, err := s.publish(ctx, in, force)
	return res, err
}

// inServiceJob is the job of the newest bundle's certificate, read from
// certbot's archive by its fingerprint.
func (p *Publisher) inServiceJob(name string, newest published) (*job, error) {
	arch, err := openArchive(p.cfg.Lineages, name)
	if err != nil {
		return nil, err
	}
	e, err := arch.find(func(e *archived) bool { return e.Fingerprint == newest.Fingerprint })
	switch {
	case err != nil:
		return nil, err
	case e == nil:
		return nil, fmt.Errorf("its certificate (version %d at sequence %d) is not in %q", newest.Version, newest.Sequence, arch.dir)
	}
	b, err := arch.bundle(e)
	if err != nil {
		return nil, err
	}
	if _, err := b.Check(p.now()); err != nil {
		return nil, fmt.Errorf("the archived certificate serial %s (%s): %w", e.Serial, e.file("cert"), err)
	}
	return p.prepareTo(b, "republish")
}
