package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/certsync/certsync/internal/wire"
)

// RollbackOptions say which certificate Rollback puts back, and how.
type RollbackOptions struct {
	// ToSerial picks the archived certificate with this serial (hex, as
	// `certsync inspect` shows it; case and leading zeros do not matter);
	// empty means the previous one.
	ToSerial string
	// Immediate seals it without the hold record, whatever the policy, so
	// every node installs it at once (rollout abort).
	Immediate bool
}

// Rollback publishes an earlier certificate of name again, with a new
// version (so nodes accept it, and a replay of the envelope rolled back
// from is a downgrade) and the newest bundle's certificate withdrawn:
// its withdrawn record lists it, with those the newest listed (at most 16,
// the oldest dropped) minus the one put back, so that neither publish nor
// republish puts it back (ErrWithdrawn). When the certificate has a
// rollout policy, and not Immediate, it is sealed with the hold record and
// goes through the same waves as a renewal.
//
// The earlier certificate's four files come from certbot's archive: the
// lineage's cert.pem must link to <lineages>/../archive/<name>/certN.pem,
// beside chainN.pem, fullchainN.pem and privkeyN.pem (each read bounded, as
// ReadLineage reads). Without ToSerial it is the previous one: the highest
// archived issue, other than the newest bundle's certificate and those
// its withdrawn record lists, that an earlier bundle the stream still
// holds carried; else the highest such issue below the newest bundle's
// (or, when that is not archived, below the one cert.pem links to). With
// ToSerial it is the archived issue with that serial, withdrawn or not.
// It must pass Publish's checks (not expired, its key matching).
//
// Refusals (an error starting "refusing to roll back"; nothing stored): an
// unknown certificate, a lineage that is not certbot's, an invalid serial,
// no bundle in the stream, no earlier certificate, a serial not in the
// archive, the newest bundle's certificate itself, an expired or invalid
// certificate, a held bundle on a stream without the rollout subjects.
func (p *Publisher) Rollback(ctx context.Context, name string, opts RollbackOptions) (*Result, error) {
	refuse := func(err error) error { return fmt.Errorf("refusing to roll back certificate %q: %w", name, err) }
	if p.cfg.SigningKey == nil {
		return nil, refuse(errors.New("no signing key configured"))
	}
	if err := wire.CheckCertName(name); err != nil {
		return nil, fmt.Errorf("refusing to roll back: %w", err)
	}
	if _, ok := p.cfg.Certificates[name]; !ok {
		return nil, refuse(ErrUnknownCertificate)
	}
	serial, err := parseSerial(opts.ToSerial)
	if err != nil {
		return nil, refuse(err)
	}
	arch, err := openArchive(p.cfg.Lineages, name)
	if err != nil {
		return nil, refuse(err)
	}

	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("rolling back certificate %q: %w", name, err)
	}
	defer s.close()
	if err := s.ensure(ctx, p.cfg.Stream, false); err != nil {
		return nil, fmt.Errorf("rolling back certificate %q: %w", name, err)
	}
	var hist []published
	err = s.do(ctx, "reading the history", func(ctx context.Context) error {
		heads, err := s.readHeads(ctx, name)
		if err != nil {
			return err
		}
		hist, err = s.history(ctx, name, heads)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rolling back certificate %q: %w", name, err)
	}
	if len(hist) == 0 {
		return nil, refuse(fmt.Errorf("the stream holds no bundle of it signed with this signing key to roll back from"))
	}
	e, err := rollbackTarget(arch, hist, serial)
	if err != nil {
		return nil, refuse(err)
	}
	b, err := arch.bundle(e)
	if err != nil {
		return nil, refuse(err)
	}
	if _, err := b.Check(p.now()); err != nil {
		return nil, refuse(fmt.Errorf("the archived certificate serial %s (%s): %w", e.Serial, e.file("cert"), err))
	}
	j, err := p.prepareTo(b, "roll back")
	if err != nil {
		return nil, err
	}
	if j.info.Fingerprint != e.Fingerprint {
		return nil, refuse(fmt.Errorf("%s changed while it was read", e.file("cert")))
	}
	j.rollback, j.immediate = true, opts.Immediate
	return s.deliver(ctx, j, "rolling back", "roll back")
}

// parseSerial checks a serial given to Rollback and returns it as
// crypto.Release.Serial has it: lowercase hex without leading zeros.
// An invalid one is not echoed.
func parseSerial(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > 64 || strings.Trim(strings.ToLower(s), "0123456789abcdef") != "" {
		return "", errors.New("invalid serial: want the certificate's serial in hex, as certsync inspect shows it")
	}
	s = strings.TrimLeft(strings.ToLower(s), "0")
	if s == "" {
		s = "0"
	}
	return s, nil
}

// rollbackTarget chooses the archived issue Rollback puts back (see
// Rollback), given the subject's history hist (its bundles, oldest first;
// not empty) and serial ("": the previous one).
func rollbackTarget(arch *archive, hist []published, serial string) (*archived, error) {
	newest := hist[len(hist)-1]
	if serial != "" {
		e, err := arch.find(func(e *archived) bool { return e.Serial == serial })
		switch {
		case err != nil:
			return nil, err
		case e == nil:
			return nil, fmt.Errorf("serial %s is not in certbot's archive %q", serial, arch.dir)
		case e.Fingerprint == newest.Fingerprint:
			return nil, fmt.Errorf("serial %s (%s) is the newest bundle's certificate already (version %d at sequence %d)",
				serial, e.file("cert"), newest.Version, newest.Sequence)
		}
		return e, nil
	}
	candidate := func(e *archived) bool {
		return e.Fingerprint != newest.Fingerprint && !slices.Contains(newest.Withdrawn, e.Fingerprint)
	}
	e, err := arch.find(func(e *archived) bool {
		return candidate(e) && slices.ContainsFunc(hist[:len(hist)-1], func(h published) bool { return h.Fingerprint == e.Fingerprint })
	})
	if err != nil || e != nil {
		return e, err
	}
	current := arch.current
	if cur, err := arch.find(func(e *archived) bool { return e.Fingerprint == newest.Fingerprint }); err != nil {
		return nil, err
	} else if cur != nil {
		current = cur.index
	}
	e, err = arch.find(func(e *archived) bool { return e.index < current && candidate(e) })
	switch {
	case err != nil:
		return nil, err
	case e == nil:
		return nil, fmt.Errorf("certbot's archive %q holds no earlier certificate to go back to below cert%d.pem, other than the newest bundle's and those it withdrew", arch.dir, current)
	}
	return e, nil
}
