package publisher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// msgSizeHeader carries the body's size in a headers-only delivery.
const msgSizeHeader = "Nats-Msg-Size"

// BundleInfo describes one message held in the stream, from its headers
// and metadata only. Fields a message does not carry (it was not published
// by certsync) are zero.
type BundleInfo struct {
	// Sequence is the message's stream sequence.
	Sequence uint64
	// Subject is the message's subject, certsync.bundle.<name>.
	Subject string
	// Name is the certificate name, from the subject.
	Name string
	// Release is the bundle's version, its leaf's serial, fingerprint and
	// validity, as the headers say (they are not signed).
	crypto.Release
	// Format is the envelope's format version.
	Format int
	// Recipients is the digest of the recipients it is sealed to.
	Recipients string
	// Hold is true when the bundle is sealed with the hold record (the
	// Certsync-Hold header): nodes install it once a rollout releases it.
	Hold bool
	// Withdrawn are the certificates its withdrawn record lists (the
	// Certsync-Withdrawn header): those a rollback took out of service.
	Withdrawn []crypto.Fingerprint
	// Published is when the stream stored it.
	Published time.Time
	// Size is the body's size in bytes.
	Size int
}

// Bundles lists the messages the stream holds for the named certificates
// (all of them when names is empty), sorted by name, then sequence. It reads
// headers only, never a body, and creates nothing: a missing stream gives an
// empty list. Names need not be configured, only valid. It lists bundles
// only: the rollout records the stream holds on certsync.rollout.<name>
// are not read (certsync rollout status shows them).
func (p *Publisher) Bundles(ctx context.Context, names []string) ([]BundleInfo, error) {
	filters := []string{wire.Subjects}
	if len(names) > 0 {
		filters = filters[:0]
		for _, name := range slices.Sorted(slices.Values(names)) {
			if err := wire.CheckCertName(name); err != nil {
				return nil, fmt.Errorf("listing bundles: %w", err)
			}
			filters = append(filters, wire.Subject(name))
		}
		filters = slices.Compact(filters)
	}
	ctx, cancel := p.bound(ctx)
	defer cancel()
	s, err := p.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing bundles: %w", err)
	}
	defer s.close()
	var out []BundleInfo
	err = s.do(ctx, "listing bundles", func(ctx context.Context) error {
		var err error
		out, err = s.bundles(ctx, filters)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing bundles: %w", err)
	}
	slices.SortFunc(out, func(a, b BundleInfo) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.Sequence, b.Sequence)
	})
	return out, nil
}

// bundles reads the headers of the messages on filters with an ordered,
// headers-only consumer.
func (s *session) bundles(ctx context.Context, filters []string) ([]BundleInfo, error) {
	st, err := s.js.Stream(ctx, wire.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", wire.Stream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(wire.Subjects))
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", wire.Stream, err)
	}
	total := uint64(0)
	for subject, n := range info.State.Subjects {
		if len(filters) == 1 && filters[0] == wire.Subjects || slices.Contains(filters, subject) {
			total += n
		}
	}
	if total == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		HeadersOnly:    true,
	})
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", wire.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", wire.Stream, err)
	}
	defer it.Stop()
	var out []BundleInfo
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", wire.Stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", wire.Stream, err)
		}
		out = append(out, bundleInfo(msg.Subject(), meta, msg.Headers()))
		if meta.NumPending == 0 {
			return out, nil
		}
	}
}

// bundleInfo reads what a message's headers say, leniently: a header that
// is missing or malformed leaves its field zero.
func bundleInfo(subject string, meta *jetstream.MsgMetadata, h map[string][]string) BundleInfo {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	b := BundleInfo{
		Sequence:   meta.Sequence.Stream,
		Subject:    subject,
		Recipients: get(wire.HeaderRecipients),
		Published:  meta.Timestamp,
	}
	b.Serial = get(wire.HeaderSerial)
	b.Fingerprint, _ = crypto.ParseFingerprint(get(wire.HeaderFingerprint))
	b.Name, _ = wire.NameFromSubject(subject)
	b.NotBefore, _ = time.Parse(time.RFC3339, get(wire.HeaderNotBefore))
	b.NotAfter, _ = time.Parse(time.RFC3339, get(wire.HeaderNotAfter))
	b.Version, _ = strconv.ParseUint(get(wire.HeaderVersion), 10, 64)
	b.Format, _ = strconv.Atoi(get(wire.HeaderFormat))
	b.Size, _ = strconv.Atoi(get(msgSizeHeader))
	b.Hold = get(wire.HeaderHold) == "true"
	for text := range strings.SplitSeq(get(wire.HeaderWithdrawn), ",") {
		if fp, err := crypto.ParseFingerprint(text); err == nil && len(b.Withdrawn) < maxWithdrawn {
			b.Withdrawn = append(b.Withdrawn, fp)
		}
	}
	return b
}
