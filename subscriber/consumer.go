// The node's durable JetStream consumer: binding it (bind, checkFilter) and
// receiving from it in batches (fetchPending for Sync, consume for Run).
// What is decided on each message is in process.go.

package subscriber

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// maxBatch bounds how many messages one batch holds; it matches the
	// consumer's MaxAckPending.
	maxBatch = 1000
	// batchWait is how long Run waits for the rest of a batch the server
	// announced (NumPending > 0) before it processes what it has.
	batchWait = 2 * time.Second
	// emptyWait is how long Sync waits for a message when the consumer
	// says none is pending (see fetchPending).
	emptyWait = 300 * time.Millisecond
)

// fetchPending fetches what the consumer holds for the node now, up to
// maxBatch messages, and says whether more is pending. It asks the server
// how many messages are pending and waits for exactly those (a no-wait
// request can miss a message stored a moment ago), then takes what is
// ready for redelivery.
func fetchPending(ctx context.Context, cons jetstream.Consumer) (msgs []jetstream.Msg, more bool, err error) {
	ictx, cancel := context.WithTimeout(ctx, natsconn.RequestTimeout)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		return nil, false, err
	}
	left := info.NumPending // what the server holds beyond what was fetched
	for len(msgs) < maxBatch {
		room := min(maxBatch-len(msgs), 256)
		var batch jetstream.MessageBatch
		if left > 0 {
			batch, err = cons.Fetch(int(min(left, uint64(room))), jetstream.FetchMaxWait(natsTimeout))
		} else if len(msgs) == 0 {
			// The server acknowledges a publish before it counts the
			// message as pending on each consumer, so "nothing pending"
			// right after a publish may be wrong: wait a little for it.
			batch, err = cons.Fetch(room, jetstream.FetchMaxWait(emptyWait))
		} else {
			batch, err = cons.FetchNoWait(room)
		}
		if err != nil {
			return msgs, false, err
		}
		got := 0
		for m := range batch.Messages() {
			msgs = append(msgs, m)
			got++
			left = pending(m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return msgs, false, err
		}
		if got == 0 {
			return msgs, false, nil
		}
	}
	return msgs, true, nil
}

// consume processes messages from cons until ctx ends or the pull
// subscription fails for good (the consumer was deleted, say), each batch
// after its delivery spread (spreadDelay, pacing.go). It reports whether
// it received anything.
func (n *Node) consume(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer) (bool, error) {
	it, err := cons.Messages()
	if err != nil {
		return false, fmt.Errorf("pulling from consumer %q: %w", wire.ConsumerName(n.cfg.Node), err)
	}
	defer it.Stop()
	got := false
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return got, fmt.Errorf("pulling from consumer %q: %w", wire.ConsumerName(n.cfg.Node), err)
		}
		got = true
		// The server says how many more it holds for us: gather them so
		// that superseded versions are skipped rather than staged in turn.
		batch := []jetstream.Msg{msg}
		for pending(msg) > 0 && len(batch) < maxBatch {
			m, err := it.Next(jetstream.NextMaxWait(batchWait))
			if err != nil {
				break // process what we have; the next Next reports a lasting failure
			}
			batch = append(batch, m)
			msg = m
		}
		n.metrics.Pending(pending(msg))
		if d := n.spreadDelay(batch, rand.Int64N); d > 0 {
			n.log.Info("delivery_spread", "consumer", wire.ConsumerName(n.cfg.Node), "wait", d)
			if !sleep(ctx, d) {
				return got, fmt.Errorf("pulling from consumer %q: %w", wire.ConsumerName(n.cfg.Node), context.Cause(ctx))
			}
		}
		n.process(ctx, js, batch)
	}
}

// pending is the number of messages the server holds for the consumer
// after m.
func pending(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.NumPending
}

// bind looks up the node's durable consumer. If it does not exist, the
// node tries to create it, as an open server allows; with least-privilege
// credentials that fails and the error wraps ErrNoConsumer. Each request
// waits at most natsconn.RequestTimeout: js is from natsconn's JetStream,
// and ctx (Run's, or Sync's from natsconn.Overall) has no deadline. A
// lookup that failed for a passing reason (natsconn.Transient) returns an
// error that wraps it, for the caller to try again.
func (n *Node) bind(ctx context.Context, js jetstream.JetStream, nc *natsconn.Conn) (jetstream.Consumer, error) {
	name := wire.ConsumerName(n.cfg.Node)
	var cons jetstream.Consumer
	err := nc.Call(ctx, func(ctx context.Context) (err error) {
		cons, err = js.Consumer(ctx, wire.Stream, name)
		return err
	})
	switch {
	case err == nil:
		n.checkFilter(cons.CachedInfo())
		return cons, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("binding consumer %q: stream %s not found (nothing published yet?): %w", name, wire.Stream, ErrNoConsumer)
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("binding consumer %q: %w", name, err)
	}
	err = nc.Call(ctx, func(ctx context.Context) (err error) {
		// The rollout subjects are in the filter only when the stream holds
		// them: the server refuses a filter on a subject it does not (a
		// stream set up before rollouts, until `certsync setup` runs).
		s, err := js.Stream(ctx, wire.Stream)
		if err != nil {
			return err
		}
		rollouts := slices.Contains(s.CachedInfo().Config.Subjects, wire.RolloutSubjects)
		cons, err = js.CreateConsumer(ctx, wire.Stream, wire.ConsumerConfig(n.cfg.Node, n.names, rollouts))
		if errors.Is(err, jetstream.ErrConsumerExists) {
			cons, err = js.Consumer(ctx, wire.Stream, name) // created meanwhile by someone else
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("binding consumer %q: it does not exist and this node may not create it (%v); the management side creates it when it runs certsync publish or republish: %w",
			name, err, ErrNoConsumer)
	}
	n.log.Info("consumer_created", "consumer", name, "certificates", n.names)
	n.checkFilter(cons.CachedInfo())
	return cons, nil
}

// checkFilter warns when the consumer does not deliver every configured
// certificate: the node may not change it, the management side must. A
// certificate is delivered on its bundle subject or, sealed in recipient
// groups, on the subject of the node's group. Both shapes of filter are
// right: the bundle subjects alone (a stream set up
// before rollouts), or with the rollout subjects of the same certificates.
// A filter with some rollout subjects but not every certificate's is a
// mismatch too: a held bundle of a certificate without one would wait for
// its release until its expiry deadline. It records which certificates'
// rollout records the consumer delivers (rolloutsDelivered).
func (n *Node) checkFilter(info *jetstream.ConsumerInfo) {
	if info == nil {
		return
	}
	have := slices.Clone(info.Config.FilterSubjects)
	if info.Config.FilterSubject != "" {
		have = append(have, info.Config.FilterSubject)
	}
	delivers := func(name string, subject func(string) string, all string) bool {
		return slices.Contains(have, subject(name)) || slices.Contains(have, all)
	}
	// A certificate sealed in recipient groups comes on the subject of the
	// node's group, certsync.group.<k>.<name>, instead of its bundle
	// subject.
	inGroup := func(name string) bool {
		return slices.Contains(have, wire.GroupSubjects) || slices.Contains(have, wire.GroupSubjectsOf(name)) ||
			slices.ContainsFunc(have, func(s string) bool {
				n, k, err := wire.ParseBundleSubject(s)
				return err == nil && k >= 0 && n == name
			})
	}
	anyRollout := slices.ContainsFunc(have, func(s string) bool { return strings.HasPrefix(s, wire.RolloutSubjectPrefix) })
	var missing, missingRollouts []string
	rollouts := make(map[string]bool, len(n.names))
	for _, name := range n.names {
		if !delivers(name, wire.Subject, wire.Subjects) && !inGroup(name) {
			missing = append(missing, name)
		}
		rollouts[name] = delivers(name, wire.RolloutSubject, wire.RolloutSubjects)
		if anyRollout && !rollouts[name] {
			missingRollouts = append(missingRollouts, name)
		}
	}
	n.mu.Lock()
	n.rolloutFilter = rollouts
	n.mu.Unlock()
	if len(missing) > 0 {
		n.log.Warn("consumer_filter_mismatch", "consumer", info.Name, "missing", missing,
			"hint", "add this node to these certificates on the management side and run certsync republish")
	}
	if len(missingRollouts) > 0 {
		n.log.Warn("consumer_filter_mismatch", "consumer", info.Name, "missing_rollouts", missingRollouts,
			"hint", "run certsync republish on the management side: it gives the consumer every certificate's rollout subject")
	}
}

// rolloutsDelivered reports whether the consumer, as last bound, delivers
// the rollout records of certificate name (true before it was bound: the
// node cannot tell). The caller holds n.mu.
func (n *Node) rolloutsDelivered(name string) bool {
	if n.rolloutFilter == nil {
		return true
	}
	return n.rolloutFilter[name]
}
