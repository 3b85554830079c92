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
	"github.com/certsync/certsync/internal/natsconn"
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
	// Subject is the message's subject, certsync.bundle.<name>, or
	// certsync.group.<k>.<name> for recipient group k's envelope.
	Subject string
	// Name is the certificate name, from the subject.
	Name string
	// Group is the recipient group the message is for, from its subject
	// (0 on the bundle subject), and Groups how many groups its version
	// was sealed in, from the Certsync-Group header (1 on the bundle
	// subject; 0 when a group subject's message does not say).
	Group, Groups int
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
// are not read (certsync rollout status shows them). A certificate sealed
// in recipient groups lists every group's message (Group, Groups).
func (p *Publisher) Bundles(ctx context.Context, names []string) ([]BundleInfo, error) {
	filters := []string{wire.Subjects, wire.GroupSubjects}
	if len(names) > 0 {
		filters = filters[:0]
		for _, name := range slices.Sorted(slices.Values(names)) {
			if err := wire.CheckCertName(name); err != nil {
				return nil, fmt.Errorf("listing bundles: %w", err)
			}
			filters = append(filters, wire.BundleSubjectsOf(name)...)
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

// streamIfAny looks up the stream for a call that only reads: nil, and
// no error, when it does not exist, which reads as empty.
func (s *session) streamIfAny(ctx context.Context) (jetstream.Stream, error) {
	st, err := s.js.Stream(ctx, wire.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", wire.Stream, err)
	}
	return st, nil
}

// bundles reads the headers of the messages on filters with an ordered,
// headers-only consumer. Filters on the group subjects are left out when
// the stream does not hold them (set up before groups).
func (s *session) bundles(ctx context.Context, filters []string) ([]BundleInfo, error) {
	st, err := s.streamIfAny(ctx)
	if st == nil || err != nil {
		return nil, err
	}
	if !slices.Contains(st.CachedInfo().Config.Subjects, wire.GroupSubjects) {
		filters = slices.DeleteFunc(slices.Clone(filters), func(f string) bool { return strings.HasPrefix(f, wire.GroupSubjectPrefix) })
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("certsync.>"))
	if err != nil {
		return nil, fmt.Errorf("looking up stream %s: %w", wire.Stream, err)
	}
	total := uint64(0)
	for subject, n := range info.State.Subjects {
		if slices.ContainsFunc(filters, func(f string) bool { return subjectMatches(f, subject) }) {
			total += n
		}
	}
	if total == 0 {
		return nil, nil
	}
	var out []BundleInfo
	err = readHeaders(ctx, st, filters, jetstream.DeliverAllPolicy, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
		out = append(out, bundleInfo(msg.Subject(), meta, msg.Headers()))
	})
	return out, err
}

// readHeaders calls visit with the headers and metadata of every message
// on filters (as deliver says: all, or the last of each subject), read
// with an ordered, headers-only consumer, until none is pending, each
// message within natsconn.RequestTimeout (else an error for session.do to
// try again: visit may see a message again then). The
// caller checks first that some message is there: with none, the
// consumer would wait for one until ctx ends.
func readHeaders(ctx context.Context, st jetstream.Stream, filters []string, deliver jetstream.DeliverPolicy,
	visit func(jetstream.Msg, *jetstream.MsgMetadata)) error {
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  deliver,
		HeadersOnly:    true,
	})
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", wire.Stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", wire.Stream, err)
	}
	defer it.Stop()
	for {
		msg, err := natsconn.Next(ctx, it)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", wire.Stream, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", wire.Stream, err)
		}
		visit(msg, meta)
		if meta.NumPending == 0 {
			return nil
		}
	}
}

// bundleInfo reads what a message's headers say, leniently: a header that
// is missing or malformed leaves its field zero, and text is made
// printable (wire.Printable): whoever may store a message sets its
// headers.
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
		Recipients: wire.Printable(get(wire.HeaderRecipients)),
		Published:  meta.Timestamp,
	}
	b.Serial = wire.Printable(get(wire.HeaderSerial))
	b.Fingerprint, _ = crypto.ParseFingerprint(get(wire.HeaderFingerprint))
	var group int
	b.Name, group, _ = wire.ParseBundleSubject(subject)
	b.Group, b.Groups = max(group, 0), 1
	if group >= 0 {
		b.Groups = 0
		if g, ok := crypto.ParseGroup(get(wire.HeaderGroup)); ok && g.Index == group {
			b.Groups = g.Count
		}
	}
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

// subjectMatches tells whether subject matches the NATS subject filter
// filter ('*' one token, '>' the rest).
func subjectMatches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, t := range ft {
		switch {
		case t == ">":
			return len(st) > i
		case i >= len(st):
			return false
		case t != "*" && t != st[i]:
			return false
		}
	}
	return len(ft) == len(st)
}
