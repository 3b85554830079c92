// Recipient groups: a certificate for more nodes than one envelope holds
// (more than groupCapacity, 256, or more bytes than the server's max
// payload) is sealed once per group of nodes, every group under the same
// version, each on its own subject certsync.group.<k>.<name> with the
// signed group record k of count (docs/FORMAT.md, "The recipient group
// record"). This file lays the nodes out: which group each node is in
// (groupOf, rendezvous hashing), how many groups (layout, check); the
// store is store.go's.

package publisher

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// groupCapacity is the most recipients the publisher seals into one
// envelope (Publisher.groupCapacity, which tests set lower, overrides it):
// a certificate for more nodes is sealed in recipient groups of at most
// this many. Why 256 and not age's limit of 1,024 (docs/BENCHMARKS.md,
// "Recipient groups"): a node's open costs a constant (its one unwrap,
// the signature's fixed part, the payload) plus about 0.3 µs per recipient
// of its envelope (the signature's hash over the whole envelope, the age
// header's scan and its MAC), so the last node of a group of 256 opens
// within about 1.6x of a node alone in its envelope, where one of 1,024
// took 3x; a node downloads a quarter of the bytes, and a change of one
// node seals a group of up to 256 again, not of 1,024. What it costs: more
// messages per version (about 45 for 10,000 nodes instead of 11), each
// with its headers, its signature and a copy of the certificate files
// (about 3 KB), a small part of a publish; and a certificate is for at
// most wire.MaxGroups groups of 256, about 50,000 nodes once rendezvous
// hashing's uneven groups are counted.
const groupCapacity = 256

// groupOf is the recipient group of node among count groups, by
// rendezvous hashing: the k below count for which SHA-256(node || k), k
// as two bytes big-endian, is highest. A node's group depends on its name
// and count alone, so adding or removing a node changes the recipients of
// its own group only, and a change of count moves about 1/count of the
// nodes. rendezvous computes the same for many nodes and growing counts.
func groupOf(node string, count int) int {
	var best [sha256.Size]byte
	group := 0
	for k := range count {
		h := sha256.Sum256(binary.BigEndian.AppendUint16([]byte(node), uint16(k)))
		if k == 0 || bytes.Compare(h[:], best[:]) > 0 {
			best, group = h, k
		}
	}
	return group
}

// assignGroups splits nodes (sorted) into count groups by groupOf; each
// group's nodes stay sorted, and a group may be empty.
func assignGroups(nodes []string, count int) [][]string {
	r := newRendezvous(nodes)
	r.grow(count)
	return r.groups()
}

// rendezvous is groupOf for every node of a certificate, kept for the
// count reached so far, so that layout, trying counts one after another,
// hashes each node with each group number once (n × count hashes in all,
// not n × count for every count tried), on up to GOMAXPROCS goroutines.
type rendezvous struct {
	nodes []string
	count int
	group []int
	best  [][sha256.Size]byte
}

// newRendezvous is the rendezvous of nodes (sorted), at count 0.
func newRendezvous(nodes []string) *rendezvous {
	return &rendezvous{nodes: nodes, group: make([]int, len(nodes)), best: make([][sha256.Size]byte, len(nodes))}
}

// minHashChunk is the fewest nodes a goroutine of grow hashes for.
const minHashChunk = 1024

// grow brings r to count groups (at least r.count): each node's hashes
// for the group numbers from r.count to count, its group the highest.
func (r *rendezvous) grow(count int) {
	from := r.count
	if count <= from {
		return
	}
	r.count = count
	hash := func(lo, hi int) {
		var buf []byte
		for i := lo; i < hi; i++ {
			buf = append(buf[:0], r.nodes[i]...)
			for k := from; k < count; k++ {
				h := sha256.Sum256(binary.BigEndian.AppendUint16(buf, uint16(k)))
				if k == 0 || bytes.Compare(h[:], r.best[i][:]) > 0 {
					r.best[i], r.group[i] = h, k
				}
			}
		}
	}
	n := len(r.nodes)
	workers := min(runtime.GOMAXPROCS(0), (n+minHashChunk-1)/minHashChunk)
	if workers <= 1 {
		hash(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { hash(n*w/workers, n*(w+1)/workers) })
	}
	wg.Wait()
}

// groups is r's nodes split into r.count groups, each sorted as the nodes.
func (r *rendezvous) groups() [][]string {
	groups := make([][]string, r.count)
	for i, n := range r.nodes {
		groups[r.group[i]] = append(groups[r.group[i]], n)
	}
	return groups
}

// fewestGroups is the fewest groups, from ceil(nodes / capacity) up to
// wire.MaxGroups, whose groups by r each hold at most capacity nodes, with
// r grown to it; 0 when none does.
func (r *rendezvous) fewestGroups(capacity int) int {
	for count := max(1, (len(r.nodes)+capacity-1)/capacity); count <= wire.MaxGroups; count++ {
		if count == 1 {
			// One group holds every node: no hash is needed.
			if len(r.nodes) <= capacity {
				return 1
			}
			continue
		}
		r.grow(count)
		sizes := make([]int, count)
		fits := true
		for _, k := range r.group {
			sizes[k]++
			fits = fits && sizes[k] <= capacity
		}
		if fits {
			return count
		}
	}
	return 0
}

// group is one recipient group of a certificate's layout, and what its
// subject holds.
type group struct {
	// rec is the group record (zero: the one ungrouped envelope, on the
	// bundle subject).
	rec        crypto.Group
	subject    string
	nodes      []string
	recipients []age.Recipient
	// digest is the RecipientsDigest of the group's recipients: its
	// envelope's seal record and Certsync-Recipients header.
	digest string
	// prev is the subject's last sequence (0: empty), which the store
	// expects; unchanged says the subject's newest message is this group
	// sealed as decided already.
	prev      uint64
	unchanged bool
	// env is the sealed envelope; nil for an unchanged group, sealed only
	// if it is stored again.
	env []byte
}

// layout is how a certificate's nodes are split: count groups (1: one
// envelope on the bundle subject), the non-empty ones in groups.
type layout struct {
	count  int
	groups []*group
}

// subjects maps each node of l to its group's subject.
func (l *layout) subjects() map[string]string {
	m := map[string]string{}
	for _, g := range l.groups {
		for _, n := range g.nodes {
			m[n] = g.subject
		}
	}
	return m
}

// check is nil when l is a layout of nodes that may be stored: each node
// in exactly one group, every group holding 1 to capacity nodes (at most
// crypto.MaxRecipients) and, once sealed, at most limit bytes, the groups
// in order of their record, each on its own subject. Else it says what is
// wrong, in one line: layout refuses to store anything of it. Layout
// builds nothing else (assignGroups is a partition); check is what keeps a
// node from being sealed into two groups, where it would hold two copies
// of a version its consumer may not both be delivered, whatever changes
// in the code that lays the groups out.
func (l *layout) check(nodes []string, capacity, limit int) error {
	capacity = min(capacity, crypto.MaxRecipients)
	if l.count < 1 || l.count > wire.MaxGroups || len(l.groups) == 0 || len(l.groups) > l.count {
		return fmt.Errorf("recipient group layout: %d groups of a count of %d, want 1 to %d of 1 to %d", len(l.groups), l.count, l.count, wire.MaxGroups)
	}
	in := make(map[string]int, len(nodes))
	for _, n := range nodes {
		in[n] = -1
	}
	for i, g := range l.groups {
		k := g.rec.Index
		switch {
		case l.count == 1 && !g.rec.IsZero(), l.count > 1 && g.rec.Count != l.count:
			return fmt.Errorf("recipient group layout: group %s in a layout of %d groups", g.rec, l.count)
		case i > 0 && k <= l.groups[i-1].rec.Index:
			return fmt.Errorf("recipient group layout: group %d after group %d", k, l.groups[i-1].rec.Index)
		case len(g.nodes) == 0 || len(g.nodes) > capacity:
			return fmt.Errorf("recipient group layout: group %d holds %d nodes, want 1 to %d", k, len(g.nodes), capacity)
		case g.env != nil && len(g.env) > limit:
			return fmt.Errorf("recipient group layout: group %d's envelope is %d bytes, over the limit of %d", k, len(g.env), limit)
		}
		for _, n := range g.nodes {
			switch prev, ok := in[n]; {
			case !ok:
				return fmt.Errorf("recipient group layout: node %s in group %d is not a node of the certificate", n, k)
			case prev >= 0:
				return fmt.Errorf("recipient group layout: node %s is in groups %d and %d", n, prev, k)
			}
			in[n] = k
		}
	}
	for _, n := range nodes {
		if in[n] < 0 {
			return fmt.Errorf("recipient group layout: node %s is in no group", n)
		}
	}
	return nil
}

// newGroup is group k of count of j's nodes.
func (p *Publisher) newGroup(j *job, k, count int, nodes []string) *group {
	g := &group{subject: wire.Subject(j.bundle.Name), nodes: nodes}
	if count > 1 {
		g.rec = crypto.Group{Index: k, Count: count}
		g.subject = wire.GroupSubject(k, j.bundle.Name)
	}
	for _, n := range nodes {
		g.recipients = append(g.recipients, p.recipients[n])
	}
	g.digest = p.nodesDigest(nodes)
	return g
}

// nodesDigest is the RecipientsDigest of the configured recipients of
// nodes.
func (p *Publisher) nodesDigest(nodes []string) string {
	texts := make([]string, len(nodes))
	for i, n := range nodes {
		texts[i] = strings.TrimSpace(p.cfg.Nodes[n])
	}
	return RecipientsDigest(texts)
}

// layout splits j's nodes into the fewest groups, from ceil(nodes /
// capacity) up, whose envelopes each fit: at most groupCapacity
// recipients, and at most envelopeLimit bytes.
// Every group is sealed in memory (cached in j, so a retry seals nothing
// twice), except one whose subject's newest message already is that group
// sealed as d says (unchanged: d.same, the same version, fingerprint,
// group record and recipients, and within the limit). A group of one
// node that does not fit, or more than wire.MaxGroups groups, is a
// refusal naming the limit.
func (s *session) layout(j *job, d seal, heads map[string]*jetstream.RawStreamMsg, payload int64) (*layout, error) {
	limit, room := envelopeLimit(j, d, payload)
	key := s.p.cfg.SigningKey.Public()
	name := j.bundle.Name
	capacity := min(cmp.Or(s.p.groupCapacity, groupCapacity), crypto.MaxRecipients)
	// The recipients bind first, and cost nothing to seal: the counts
	// whose groups do not all hold them are passed over before any group
	// is sealed.
	r := newRendezvous(j.nodes)
	count := r.fewestGroups(capacity)
	if count == 0 {
		return nil, refusal{fmt.Errorf("%d nodes need more than %d recipient groups of at most %d recipients each: seal part of them in another certificate",
			len(j.nodes), wire.MaxGroups, capacity)}
	}
	for ; count <= wire.MaxGroups; count++ {
		r.grow(count)
		groups := r.groups()
		if slices.ContainsFunc(groups, func(nodes []string) bool { return len(nodes) > capacity }) {
			continue
		}
		lay := &layout{count: count}
		fits := true
		for k, nodes := range groups {
			if len(nodes) == 0 {
				continue
			}
			g := s.p.newGroup(j, k, count, nodes)
			if head := heads[g.subject]; head != nil {
				g.prev = head.Sequence
				pub, ok := parsePublished(head, name, key)
				g.unchanged = ok && d.same && pub.Version == d.version && pub.Fingerprint == j.info.Fingerprint &&
					pub.Group == g.rec && pub.Recipients == g.digest && pub.Size <= limit
			}
			if !g.unchanged {
				env, err := s.sealGroup(j, d, g)
				tooLarge := errors.Is(err, crypto.ErrTooLarge) || err == nil && len(env) > limit
				switch {
				case tooLarge && len(nodes) == 1:
					return nil, refusal{fmt.Errorf("sealed to the one node %s, its envelope is over the limit of %d bytes (the NATS server's max_payload of %d bytes, less %d for the headers, and at most %d): raise max_payload in the NATS server's configuration",
						nodes[0], limit, payload, room, crypto.MaxEnvelopeSize)}
				case tooLarge:
					fits = false
				case err != nil:
					return nil, refusal{fmt.Errorf("sealing: %w", err)}
				}
				if !fits {
					break
				}
				g.env = env
			}
			lay.groups = append(lay.groups, g)
		}
		if fits {
			if err := lay.check(j.nodes, capacity, limit); err != nil {
				return nil, refusal{err}
			}
			return lay, nil
		}
	}
	return nil, refusal{fmt.Errorf("%d nodes need more than %d recipient groups to fit at most %d recipients and %d bytes (the NATS server's max_payload of %d, less the headers) in each envelope: raise max_payload in the NATS server's configuration",
		len(j.nodes), wire.MaxGroups, capacity, limit, payload)}
}

// envelopeLimit is the most bytes one envelope of j sealed as d may have:
// the server's max payload less room, the most its headers take, and at
// most crypto.MaxEnvelopeSize (what nodes accept).
func envelopeLimit(j *job, d seal, payload int64) (limit, room int) {
	// The headers of the longest group record and message id, and the
	// ones the JetStream client adds.
	g := &group{rec: crypto.Group{Index: 0xfffe, Count: 0xffff}, digest: j.digest}
	h := nats.Header{}
	setHeaders(h, j, d, g)
	h.Set(wire.HeaderMsgID, msgID(j, g, ^uint64(0)))
	h.Set(jetstream.ExpectedStreamHeader, wire.Stream)
	h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(^uint64(0), 10))
	room = len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			room += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return int(min(payload-int64(room), crypto.MaxEnvelopeSize)), room
}

// needGroups is nil when the stream holds the recipient group subjects,
// else why a certificate of nodes that one envelope cannot hold cannot be
// stored: ErrNotSetUp, for the admin's certsync setup.
func (s *session) needGroups(nodes, count int) error {
	if s.groups {
		return nil
	}
	return fmt.Errorf("its %d nodes need %d recipient groups, on the subjects %s, and stream %q is %w: it was set up before recipient groups; the admin adds them with certsync setup",
		nodes, count, wire.GroupSubjects, wire.Stream, ErrNotSetUp)
}
