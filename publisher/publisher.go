// Package publisher turns certbot's files into signed, sealed bundles on the
// CERTSYNC JetStream stream, and reads back what the stream holds.
//
// A [Config] says which nodes (by age recipient) receive which
// certificates; [Config.Validate] (which New calls) applies its defaults
// and holds its rules, the command line's publisher.yaml included.
//
// The management host uses it in these ways:
//
//   - Publish, from certbot's deploy hook: ReadLineage (or ReadFiles) gives a
//     bundle; Publish checks it (known name, valid PEM files, a key matching
//     its certificate, nothing expired), seals it to the age recipients of
//     exactly the nodes configured for the certificate, signs it, and stores
//     it on certsync.bundle.<name> with the contract's headers. More nodes
//     than one envelope holds (256, or the server's max payload) are
//     sealed in recipient groups, one envelope per group under one
//     version on certsync.group.<k>.<name> (groups.go).
//   - Republish, from a timer or after nodes change: for every configured
//     certificate, it reads the lineage under Config.Lineages and publishes
//     it again when it differs from the stream's newest bundle or was sealed
//     to other recipients. It also brings every node's consumer in line with
//     the configuration and reports nodes that lost certificates they may
//     hold, since those certificates must be reissued.
//   - Rollback, for `certsync rollback`: an earlier certificate from certbot's
//     archive published again with a new version, the newest one withdrawn.
//   - Bundles, for `certsync inspect`: the headers of every bundle held in the
//     stream. It never decrypts anything.
//
// # Idempotence and ordering
//
// Before sealing, Publish reads the newest bundle on the certificate's
// subject. The same certificate sealed to the same recipients is not
// published again (a re-run of certbot's hook is a no-op); sealed to other
// recipients it keeps the newest's version (and its hold and withdrawn
// records), so nodes that hold it find it the same. Any other certificate
// gets a new version, assigned by the publisher: max(the clock in Unix
// milliseconds, the highest version the subject holds + 1), strictly
// increasing even when the stream is lost and rebuilt (the clock moves on),
// and above every format 1 version (NotBefore seconds). A certificate the
// newest bundle withdrew (ErrWithdrawn) or an earlier bundle's (ErrEarlier)
// is refused: putting it back is Rollback's job. A certificate with a
// rollout policy (Config.Policy) is sealed with the hold record. The message is stored only if the subject's newest sequence is
// still the one looked at, and its Nats-Msg-Id lets the server drop a repeat
// within the stream's duplicate window, so concurrent hooks store at most one
// copy.
//
// # Consumers
//
// The management side owns the nodes' durable consumers (node-<name>), so
// nodes never need the right to create or change them. Publish only adds:
// it creates missing consumers and adds the certificate's subject to those
// that lack it. Republish makes every consumer match the configuration
// exactly and deletes the consumers of nodes that left it. A consumer that
// is new is created after the bundle is stored, so that a new node starts
// at a bundle sealed to it; a subject added to an existing consumer makes
// the certificate be published again, since JetStream does not deliver a
// subject's earlier messages to a consumer that gains it. That is one
// request per consumer, a while with thousands of nodes: Config.Progress,
// when set, is told how far it is ([Progress], progress.go).
//
// # Connections, time bounds, errors
//
// Each call connects to NATS, does its work and closes the connection; a
// Publisher holds no connection and is safe for concurrent use. Each call is
// bounded by ctx and by Config.Timeout, and each JetStream request in it by
// natsconn.RequestTimeout: while NATS is unreachable, has no JetStream
// leader or does not answer, the request is sent again with backoff until
// the timeout, then the call fails with the last error and why it gave up.
// A publish whose acknowledgement was lost finds its bundle on the next try
// and stores nothing twice (the message id and the expected last subject
// sequence). Refusals
// (invalid bundle, unknown certificate, withdrawn or earlier) are never
// retried and happen before anything is stored. No error or log line ever
// holds key material.
package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// Errors callers may match with errors.Is.
var (
	// ErrUnknownCertificate means the certificate is not in the
	// configuration, so it has no nodes to be sealed to.
	ErrUnknownCertificate = errors.New("not in the configuration")
	// ErrWithdrawn means the certificate is one the newest bundle's
	// withdrawn record lists: a rollback took it out of service, so
	// publish and republish never put it back. The error names the
	// command that does, deliberately: certsync rollback NAME --to SERIAL.
	ErrWithdrawn = errors.New("withdrawn by a rollback")
	// ErrEarlier means the certificate is that of an earlier bundle the
	// stream still holds, not the newest's: putting it back into service
	// is a rollback (Rollback; certsync rollback NAME --to SERIAL), not a
	// publish. Any other certificate publishes with a new version, whatever
	// its NotBefore (a switch to a CA that dates its certificates earlier).
	ErrEarlier = errors.New("an earlier certificate of the stream's history")
	// ErrNotSetUp means the stream or the status bucket is missing, or
	// lacks a protection certsync needs (no purges, deletes or roll-ups),
	// and this credential may not fix it: under least privilege only the
	// admin creates and updates them, with Setup (certsync setup).
	ErrNotSetUp = errors.New("not set up for certsync")
	// ErrRefusedSettings means the stream or the status bucket has
	// sources, a mirror, republish, a subject transform, message
	// schedules or subject delete markers. Each can copy messages into the
	// status bucket or out of the stream, or needs roll-ups; certsync
	// neither keeps nor removes them silently: the admin looks and removes
	// them (nats stream edit), then runs Setup.
	ErrRefusedSettings = errors.New("which certsync never keeps nor removes by itself")
)

// Action says what a publish did.
type Action string

// Actions.
const (
	// Published means a new message now holds the bundle.
	Published Action = "published"
	// Unchanged means the stream's newest bundle already is this certificate
	// sealed to these recipients; nothing was stored.
	Unchanged Action = "unchanged"
)

// Result describes the outcome of publishing one certificate.
type Result struct {
	// Name is the certificate name.
	Name string
	// Action is Published or Unchanged.
	Action Action
	// Sequence is the stream sequence of the message holding the bundle:
	// the new one, or the newest one when unchanged.
	Sequence uint64
	// Release is the certificate's version (the one published, or the
	// newest's when unchanged), serial, fingerprint and validity.
	crypto.Release
	// Hold is true when the bundle carries the hold record: nodes install
	// it only once a rollout releases it.
	Hold bool
	// Withdrawn are the certificates its withdrawn record lists (taken out
	// of service by a rollback), sorted; nil when none.
	Withdrawn []crypto.Fingerprint
	// Recipients is the digest of the recipients the bundle is sealed to
	// (signed in the envelope's seal record; also the Certsync-Recipients
	// header).
	Recipients string
	// Nodes are the nodes the bundle is sealed to, sorted.
	Nodes []string
	// Groups is the number of recipient groups the nodes are split into:
	// 1 when one envelope holds them all, on certsync.bundle.<name>; else
	// one envelope per group, on certsync.group.<k>.<name>.
	Groups int
	// Stored are the subjects a message was stored on, in group order:
	// those of the groups that changed (all of them for a new version);
	// nil when unchanged.
	Stored []string
}

// Publisher publishes bundles as its Config says. Create it with New. It is
// safe for concurrent use; each method call uses its own NATS connection.
type Publisher struct {
	cfg        Config
	log        *slog.Logger
	timeout    time.Duration
	now        func() time.Time
	recipients map[string]age.Recipient // by node name
	// groupCapacity is the most recipients one envelope holds, 0 for
	// groups.go's groupCapacity (256); only tests set it, lower, so that a
	// few nodes form recipient groups.
	groupCapacity int
	// nodeCerts is, by node, its configured certificates, sorted
	// (certsOf): a publish to 10,000 nodes asks it for each.
	nodeCerts map[string][]string
}

// New checks cfg and applies its defaults (Config.Validate), and returns a
// Publisher, which keeps its own copy of the maps. The signing key may be
// nil for a Publisher that only lists bundles; Publish and Republish
// refuse to work without it. A nil log discards logs.
func New(cfg Config, log *slog.Logger) (*Publisher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Nodes = maps.Clone(cfg.Nodes)
	cfg.Certificates = maps.Clone(cfg.Certificates)
	for name, nodes := range cfg.Certificates {
		cfg.Certificates[name] = slices.Clone(nodes)
	}
	recipients, err := cfg.validate()
	if err != nil {
		return nil, errConfig(err)
	}
	p := &Publisher{
		cfg:        cfg,
		log:        log,
		timeout:    cfg.Timeout,
		now:        cfg.Now,
		recipients: recipients,
		nodeCerts:  map[string][]string{},
	}
	for _, name := range sortedKeys(cfg.Certificates) {
		for _, node := range cfg.Certificates[name] {
			p.nodeCerts[node] = append(p.nodeCerts[node], name)
		}
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

// job is a checked bundle ready to be sealed.
type job struct {
	bundle     crypto.Bundle // Version set by session.publish
	info       *crypto.Info
	nodes      []string
	recipients []age.Recipient
	digest     string
	// rollback marks a Rollback: a new version although the certificate
	// was published before; immediate seals it without the hold record.
	rollback, immediate bool
	// sealed holds the envelopes sealed for it, by what they were sealed
	// as (sealGroup), so that a retry seals nothing twice; mu guards it.
	mu     sync.Mutex
	sealed map[string][]byte
}

// Publish checks b and publishes it to the nodes configured for b.Name,
// unless the stream's newest bundle for it already is the same certificate
// sealed to the same recipients. b is not modified; its Version is ignored
// and assigned in the published bundle (see the package doc).
//
// A refusal (unknown certificate, invalid bundle, no nodes, too many nodes,
// ErrWithdrawn, ErrEarlier, a held bundle on a stream without the rollout
// subjects) returns an error starting "refusing to publish"; nothing is
// stored. Any other error means NATS did not store the bundle within the
// timeout.
func (p *Publisher) Publish(ctx context.Context, b *crypto.Bundle) (*Result, error) {
	j, err := p.prepare(b)
	if err != nil {
		return nil, err
	}
	return p.deliver(ctx, j, "publishing", "publish")
}

// deliver connects, ensures the stream and stores j (session.deliver):
// Publish's work. doing and verb name it in errors ("publishing",
// "publish": "refusing to publish certificate …").
func (p *Publisher) deliver(ctx context.Context, j *job, doing, verb string) (*Result, error) {
	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s certificate %q: %w", doing, j.bundle.Name, err)
	}
	defer s.close()
	if err := s.ensure(ctx, p.cfg.Stream, false); err != nil {
		return nil, fmt.Errorf("%s certificate %q: %w", doing, j.bundle.Name, err)
	}
	return s.deliver(ctx, j, doing, verb)
}

// deliver stores j, bringing the consumers of j's nodes in line first
// (adding only; session.followLayout), and creates missing consumers:
// Publish's and Rollback's work on an ensured session.
func (s *session) deliver(ctx context.Context, j *job, doing, verb string) (*Result, error) {
	name := j.bundle.Name
	res, plan, err := s.publish(ctx, j, false)
	var r refusal
	if plan == nil && errors.As(err, &r) && ctx.Err() == nil {
		// Refused before the consumers followed the layout: they are
		// brought in line all the same, so that missing ones are created.
		var cerr error
		if plan, cerr = s.updateConsumers(ctx, s.wantOf(j), false); cerr != nil {
			return nil, errors.Join(wrapPublishError(name, err, doing, verb), fmt.Errorf("%s certificate %q: %w", doing, name, cerr))
		}
	}
	if err != nil {
		err = wrapPublishError(name, err, doing, verb)
	} else if plan.added[name] {
		if rerr := s.repostRollout(ctx, name, res); rerr != nil {
			err = fmt.Errorf("%s certificate %q: %w", doing, name, rerr)
		}
	}
	// Create missing consumers even when publishing was refused: the
	// newest bundle on the subject may well be sealed to the node already.
	// Not when time is up: that would only repeat the timeout.
	if ctx.Err() != nil || plan == nil {
		return res, err
	}
	if cerr := s.createConsumers(ctx, s.wantOf(j), plan.missing); cerr != nil {
		err = errors.Join(err, fmt.Errorf("%s certificate %q: %w", doing, name, cerr))
	}
	return res, err
}

// wrapPublishError names the certificate in an error of session.publish:
// "refusing to <verb>" for a refusal, "<doing>" for NATS's failures.
func wrapPublishError(name string, err error, doing, verb string) error {
	var r refusal
	if errors.As(err, &r) {
		return fmt.Errorf("refusing to %s certificate %q: %w", verb, name, r.error)
	}
	return fmt.Errorf("%s certificate %q: %w", doing, name, err)
}

// prepare checks a bundle against the configuration and the clock.
func (p *Publisher) prepare(b *crypto.Bundle) (*job, error) { return p.prepareTo(b, "publish") }

// prepareTo is prepare, its refusals saying "refusing to <verb>".
func (p *Publisher) prepareTo(b *crypto.Bundle, verb string) (*job, error) {
	if p.cfg.SigningKey == nil {
		return nil, fmt.Errorf("refusing to %s certificate %q: no signing key configured", verb, b.Name)
	}
	if err := wire.CheckCertName(b.Name); err != nil {
		return nil, fmt.Errorf("refusing to %s: %w", verb, err)
	}
	nodes, ok := p.cfg.Certificates[b.Name]
	if !ok {
		return nil, fmt.Errorf("refusing to %s certificate %q: %w", verb, b.Name, ErrUnknownCertificate)
	}
	info, err := b.Check(p.now())
	if err != nil {
		return nil, fmt.Errorf("refusing to %s certificate %q: %w", verb, b.Name, err)
	}
	// The version is the envelope's, assigned by session.publish from
	// what the stream holds.
	j := &job{bundle: *b, info: info}
	j.bundle.Version, info.Version = 0, 0
	// Validate refuses a node listed twice and nodes sharing a recipient,
	// so each node is one recipient and one stanza.
	j.nodes = slices.Sorted(slices.Values(nodes))
	if len(j.nodes) == 0 {
		return nil, fmt.Errorf("refusing to %s certificate %q: no nodes configured to receive it", verb, b.Name)
	}
	// More than one envelope can hold are split into recipient groups
	// (session.layout).
	for _, node := range j.nodes {
		j.recipients = append(j.recipients, p.recipients[node])
	}
	j.digest = p.cfg.recipientsDigest(b.Name)
	return j, nil
}

// recipientsDigest is the RecipientsDigest of the recipients configured
// for certificate name, as written: what its newest envelope's seal
// record holds when it is sealed to today's nodes.
func (c *Config) recipientsDigest(name string) string {
	texts := make([]string, 0, len(c.Certificates[name]))
	for _, node := range c.Certificates[name] {
		texts = append(texts, strings.TrimSpace(c.Nodes[node]))
	}
	return RecipientsDigest(texts)
}

// RecipientsDigest is the digest of a set of recipients as written in the
// configuration, crypto.RecipientsDigest: what the seal record of each
// envelope holds, signed, and the Certsync-Recipients header repeats for
// operators.
func RecipientsDigest(recipients []string) string { return crypto.RecipientsDigest(recipients) }

// certsOf lists the configured certificates of a node, sorted, clipped:
// an append copies it.
func (p *Publisher) certsOf(node string) []string { return slices.Clip(p.nodeCerts[node]) }

// bound limits ctx to the configured timeout; its cause says so and
// matches context.DeadlineExceeded. The context has no deadline
// (natsconn.Overall): each JetStream request under it has its own,
// natsconn.RequestTimeout, so that a request the cluster never answers
// (its leader died) is sent again instead of waiting for all of the
// timeout.
func (p *Publisher) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return natsconn.Overall(ctx, p.timeout, timeoutError{p.timeout})
}

// timeoutError is why a call bounded by Config.Timeout gave up.
type timeoutError struct{ d time.Duration }

func (e timeoutError) Error() string        { return fmt.Sprintf("no success within the %v timeout", e.d) }
func (e timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
