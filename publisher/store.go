// Storing a certificate's envelopes: session.publish reads the newest
// message of each of its subjects (readHeads), decides (decide.go), lays
// the nodes out in groups (groups.go), moves the consumers to their
// groups' subjects (followLayout), then seals and stores what changed,
// several groups at once (storeGroups), each with its message id and
// headers (msgID, setHeaders).

package publisher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/wire"
)

// readHeads reads the newest message of each subject of certificate name
// that holds one: its bundle subject and, when the stream holds them, its
// group subjects. By subject.
func (s *session) readHeads(ctx context.Context, name string) (map[string]*jetstream.RawStreamMsg, error) {
	subjects := []string{wire.Subject(name)}
	if s.groups {
		info, err := s.stream.Info(ctx, jetstream.WithSubjectFilter(wire.GroupSubjectsOf(name)))
		if err != nil {
			return nil, fmt.Errorf("reading the group subjects of %q: %w", name, err)
		}
		subjects = append(subjects, slices.Sorted(maps.Keys(info.State.Subjects))...)
	}
	heads := map[string]*jetstream.RawStreamMsg{}
	for _, subject := range subjects {
		msg, err := s.stream.GetLastMsgForSubject(ctx, subject)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("reading the newest bundle on %s: %w", subject, err)
		}
		heads[subject] = msg
	}
	return heads, nil
}

// storeWindow is how many groups a publish seals at once and, on a stream
// without atomic batches, stores at once, each store awaiting the
// server's acknowledgement: a publish to 10,000 nodes sends its 45 groups
// together instead of waiting 45 times while the server delivers the
// first groups to their nodes. At most 64 envelopes of at most the
// server's max_payload are in flight (64 MB at the default 1 MB; 256
// recipients take about 31 KB); an atomic batch holds every group, at
// most wire.MaxGroups, or as many as the server's max_batch_size allows
// (storeSealed). The publisher does not pace the fan-out: the nodes
// do, each waiting its delivery spread before it acts on an envelope of a
// grouped certificate (subscriber's pacing.go), so the server is not
// asked for every node's acknowledgement and status at once.
const storeWindow = 64

// groupStore is what became of one group's store.
type groupStore struct {
	g       *group
	id      string // the message id
	env     []byte
	ack     *jetstream.PubAck
	err     error // the store's
	sealErr error
}

// storeGroups seals (sealGroup) each group of todo, at most storeWindow at
// once, and once every one is sealed stores them (storeSealed), each
// expecting its subject's last sequence (group.prev). It returns what
// became of each, in todo's order; when a group could not be sealed,
// nothing is stored.
func (s *session) storeGroups(ctx context.Context, j *job, d seal, todo []*group) []groupStore {
	out := make([]groupStore, len(todo))
	inWindow(len(out), func(i int) {
		g := todo[i]
		out[i] = groupStore{g: g, id: msgID(j, g, g.prev), env: g.env}
		if out[i].env == nil {
			out[i].env, out[i].sealErr = s.sealGroup(j, d, g)
		}
	})
	if !slices.ContainsFunc(out, func(r groupStore) bool { return r.sealErr != nil }) {
		s.storeSealed(ctx, j, d, out)
	}
	return out
}

// inWindow calls fn(i) for each i below n, at most storeWindow at once, and
// returns once every call has.
func inWindow(n int, fn func(i int)) {
	window := make(chan struct{}, storeWindow)
	var wg sync.WaitGroup
	for i := range n {
		window <- struct{}{}
		wg.Go(func() {
			defer func() { <-window }()
			fn(i)
		})
	}
	wg.Wait()
}

// groupMsg is r's group as stored: its envelope, its headers, its message
// id, and the expected stream and last sequence of its subject.
func groupMsg(j *job, d seal, r *groupStore) *nats.Msg {
	msg := nats.NewMsg(r.g.subject)
	msg.Data = r.env
	setHeaders(msg.Header, j, d, r.g)
	msg.Header.Set(jetstream.MsgIDHeader, r.id)
	msg.Header.Set(jetstream.ExpectedStreamHeader, wire.Stream)
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(r.g.prev, 10))
	return msg
}

// sealGroup seals j as d says to g's recipients, with g's group record, or
// returns the envelope it sealed so before. storeGroups calls it for
// several groups at once.
func (s *session) sealGroup(j *job, d seal, g *group) ([]byte, error) {
	key := fmt.Sprintf("%d/%t/%s/%s/%s", d.version, d.hold, withdrawnHeader(d.withdrawn), g.rec, g.digest)
	j.mu.Lock()
	env, ok := j.sealed[key]
	j.mu.Unlock()
	if ok {
		return env, nil
	}
	b := j.bundle
	b.Version = d.version
	opts := []crypto.SealOption{crypto.WithRecipientsDigest(g.digest), crypto.WithWithdrawn(d.withdrawn...)}
	if d.hold {
		opts = append(opts, crypto.WithHold())
	}
	if !g.rec.IsZero() {
		opts = append(opts, crypto.WithGroup(g.rec.Index, g.rec.Count))
	}
	env, err := crypto.Seal(&b, s.p.cfg.SigningKey, g.recipients, opts...)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.sealed == nil {
		j.sealed = map[string][]byte{}
	}
	j.sealed[key] = env
	return env, nil
}

// followLayout brings the consumers of j's nodes in line, adding only
// (updateConsumers): each filters the certificate's subject that lay
// gives it (its own group's, or the bundle subject), before anything is
// stored. A node whose group changed, or that gained the certificate, is
// delivered the envelope of its subject as a new message (publish stores
// it again). The listing it needs was started before the stream was read
// and the groups sealed (prefetchConsumers).
func (s *session) followLayout(ctx context.Context, j *job, lay *layout) (*consumerPlan, error) {
	name := j.bundle.Name
	if s.layouts == nil {
		s.layouts = map[string]map[string]string{}
	}
	s.layouts[name] = lay.subjects()
	return s.updateConsumers(ctx, s.wantOf(j), false)
}

// refusedBy reports whether err is a refusal, and sets *to to the error it
// refuses with: publish's try ends without an error then (a refusal is
// not tried again) and publish returns it.
func refusedBy(err error, to *error) bool {
	var r refusal
	if !errors.As(err, &r) {
		return false
	}
	*to = r.error
	return true
}

// wantOf is, for each of j's nodes, its configured certificates: what
// updateConsumers and createConsumers bring its consumer to.
func (s *session) wantOf(j *job) map[string][]string {
	want := make(map[string][]string, len(j.nodes))
	for _, node := range j.nodes {
		want[node] = s.p.certsOf(node)
	}
	return want
}

// publish stores j as decide says, in the groups layout says: unless each
// group's subject holds it already (and force is false), a refusal, or a
// message per group that changed. The consumers of j's nodes follow the
// layout first (followLayout, whose plan it returns, nil when it was
// refused or failed before); a group whose subject a consumer gained is
// stored again, as with force. Every group is stored only if its
// subject's newest sequence is still the one read: when another publisher
// stored first, everything is read and decided again.
func (s *session) publish(ctx context.Context, j *job, force bool) (*Result, *consumerPlan, error) {
	name := j.bundle.Name
	res := &Result{
		Name:       name,
		Release:    j.info.Release,
		Recipients: j.digest,
		Nodes:      j.nodes,
	}
	var refused error
	var lay *layout
	stored := map[string]uint64{} // subject -> sequence, across tries
	// unanswered are the message ids of this call's publishes that got no
	// answer, across tries: one whose acknowledgement was lost (a leader
	// died, the connection broke) may have stored its message. The next try
	// finds it as the subject's newest, the same bundle (unchanged), or the
	// server answers its repeat as a duplicate: either way this call stored
	// it, once. A publish the server answered (stored, a duplicate of
	// another call's, refused for the last sequence) is known. The ids are
	// the same for the same bundle (msgID), so a twin call that stored it
	// while this one's publish went unanswered counts as this one's too:
	// the bundle is stored once all the same.
	unanswered := map[string]bool{}
	size := 0
	var plan *consumerPlan
	s.prefetchConsumers(ctx)
	err := s.do(ctx, "storing the bundle", func(ctx context.Context) error {
		refused = nil
		heads, err := s.readHeads(ctx, name)
		if err != nil {
			return err
		}
		d, err := s.decide(ctx, j, heads)
		if refusedBy(err, &refused) {
			return nil
		}
		if err != nil {
			return err
		}
		res.Version, res.Hold, res.Withdrawn = d.version, d.hold, d.withdrawn
		if d.hold {
			if refused = s.needRollouts("a held bundle (the certificate has a rollout policy)"); refused != nil {
				return nil
			}
		}
		// The server's max payload, as the server announced it to this
		// connection.
		lay, err = s.layout(j, d, heads, s.nc.Conn.MaxPayload())
		if refusedBy(err, &refused) {
			return nil
		}
		if err != nil {
			return err
		}
		if lay.count > 1 {
			if refused = s.needGroups(len(j.nodes), lay.count); refused != nil {
				return nil
			}
		}
		plan, err = s.followLayout(ctx, j, lay)
		if err != nil {
			plan = nil
			return err
		}
		var todo []*group
		for _, g := range lay.groups {
			res.Sequence = max(res.Sequence, g.prev)
			if head := heads[g.subject]; g.unchanged && (unanswered[head.Header.Get(wire.HeaderMsgID)] || stored[g.subject] == head.Sequence) {
				// Stored by an earlier try of this call: once is enough,
				// forced or not.
				stored[g.subject] = head.Sequence
				size = max(size, len(head.Data))
				continue
			}
			if g.unchanged && !force && !plan.addedSubjects[g.subject] {
				continue
			}
			todo = append(todo, g)
		}
		out := s.storeGroups(ctx, j, d, todo)
		if i := slices.IndexFunc(out, func(r groupStore) bool { return r.sealErr != nil }); i >= 0 {
			refused = fmt.Errorf("sealing: %w", out[i].sealErr)
			return nil
		}
		var failed []error
		for _, r := range out {
			switch {
			case r.err != nil:
				var apiErr *jetstream.APIError
				if !errors.As(r.err, &apiErr) && !errors.Is(r.err, jetstream.ErrNoStreamResponse) && !errors.Is(r.err, nats.ErrNoResponders) {
					unanswered[r.id] = true
				}
				failed = append(failed, fmt.Errorf("storing the bundle on %s: %w", r.g.subject, r.err))
				continue
			}
			// A duplicate of an id an earlier try sent unanswered is that
			// try's message; one of another call's (the same hook run
			// twice) is not this call's doing.
			if !r.ack.Duplicate || unanswered[r.id] {
				stored[r.g.subject] = r.ack.Sequence
				size = max(size, len(r.env))
				s.log.Debug("bundle_group_stored", "name", name, "subject", r.g.subject, "sequence", r.ack.Sequence,
					"group", r.g.rec.String(), "nodes", len(r.g.nodes), "size", len(r.env))
			}
			res.Sequence = max(res.Sequence, r.ack.Sequence)
		}
		switch len(failed) {
		case 0:
		case 1:
			return failed[0]
		default:
			// The first, whose error the retry logs; the others failed
			// the same way as a rule (the stream had no leader).
			return fmt.Errorf("%w (and %d more groups)", failed[0], len(failed)-1)
		}
		return nil
	})
	if err != nil {
		return nil, plan, err
	}
	if refused != nil {
		return nil, plan, refusal{refused}
	}
	res.Groups = lay.count
	res.Action = Unchanged
	if len(stored) > 0 {
		res.Action = Published
		for _, g := range lay.groups {
			if _, ok := stored[g.subject]; ok {
				res.Stored = append(res.Stored, g.subject)
			}
		}
	}
	if res.Action == Unchanged {
		s.log.Info("bundle_unchanged", "name", name, "sequence", res.Sequence, "version", res.Version,
			"fingerprint", res.Fingerprint, "forced", force, "groups", lay.count)
		return res, plan, nil
	}
	s.log.Info("bundle_published", "name", name, "sequence", res.Sequence, "version", res.Version,
		"serial", res.Serial, "fingerprint", res.Fingerprint, "not_after", res.NotAfter,
		"nodes", FirstNames(res.Nodes, 10, ","), "recipients", len(j.recipients), "size", size,
		"hold", res.Hold, "withdrawn", len(res.Withdrawn), "rollback", j.rollback,
		"groups", lay.count, "stored", len(res.Stored))
	return res, plan, nil
}

// msgID is the Nats-Msg-Id of a bundle: the name, the leaf's fingerprint,
// a prefix of the recipients digest (of the group's recipients) and the
// subject sequence it follows, then for a group envelope its group
// ("/g<k>of<count>"). The same hook run twice gives the same id, so the
// server drops the second copy; the sequence lets a certificate sealed
// again to an earlier recipient set (a node removed, then added back) be
// stored within the duplicate window.
func msgID(j *job, g *group, prev uint64) string {
	// The recipients digest has a fingerprint's text form (and parses:
	// crypto.RecipientsDigest made it).
	digest, _ := crypto.ParseFingerprint(g.digest)
	id := fmt.Sprintf("%s/%s/%s/%d", j.bundle.Name, j.info.Fingerprint.Hex(), digest.Hex()[:16], prev)
	if !g.rec.IsZero() {
		id += fmt.Sprintf("/g%dof%d", g.rec.Index, g.rec.Count)
	}
	return id
}

// setHeaders sets the contract's headers of j sealed as d for group g.
// None holds a secret.
func setHeaders(h nats.Header, j *job, d seal, g *group) {
	h.Set(wire.HeaderName, j.bundle.Name)
	h.Set(wire.HeaderSerial, j.info.Serial)
	h.Set(wire.HeaderFingerprint, j.info.Fingerprint.String())
	h.Set(wire.HeaderNotBefore, j.info.NotBefore.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderNotAfter, j.info.NotAfter.UTC().Format(time.RFC3339))
	h.Set(wire.HeaderFormat, strconv.Itoa(crypto.Format))
	h.Set(wire.HeaderVersion, strconv.FormatUint(d.version, 10))
	h.Set(wire.HeaderRecipients, g.digest)
	if d.hold {
		h.Set(wire.HeaderHold, "true")
	}
	if len(d.withdrawn) > 0 {
		h.Set(wire.HeaderWithdrawn, withdrawnHeader(d.withdrawn))
	}
	if !g.rec.IsZero() {
		h.Set(wire.HeaderGroup, g.rec.String())
	}
}

// withdrawnHeader is the Certsync-Withdrawn header of fps: their text
// forms in ascending order (the withdrawn record's), comma separated.
func withdrawnHeader(fps []crypto.Fingerprint) string {
	texts := make([]string, len(fps))
	for i, fp := range fps {
		texts[i] = fp.String()
	}
	slices.Sort(texts)
	return strings.Join(texts, ",")
}
