// Pacing: how a node spreads the JetStream API requests that thousands of
// nodes would otherwise make in the same second.
//
// The server serves JetStream API requests (consumer info and create,
// stream info…) from two queues, and when one holds 10,000 requests (its
// request_queue_limit or info_queue_limit) it drops every request it
// holds: their callers only see a timeout. A server restart puts a whole
// fleet in step: every node reconnects within about a second of the server
// coming back (the client retries every second). Three rules keep a fleet's
// requests apart (docs/OPERATIONS.md, "Many nodes"; the figures are
// docs/BENCHMARKS.md's):
//
//   - After a reconnect, Run checks that its consumer still exists, after
//     a random delay uniform in [0, ReconnectSpread): a server that came
//     back without it (a store restored from an older backup, a replaced
//     disk) would otherwise leave the node pulling from nothing, silent.
//     Receiving does not wait for the check: the client renews its pull
//     request at once on a reconnect, and a pull request is not a
//     JetStream API request (it goes to the consumer, not to the queues).
//     When the check finds the consumer gone, Run binds again (creating it
//     where the node may, as at its start).
//   - A missed heartbeat is treated the same way: the pull starts again at
//     once and the consumer is checked within the spread. A server that
//     stops sending them stops for every node at once (a server shutting
//     down stops its consumers one by one, about 10 ms each with file
//     storage, with the connections still open; a server too busy), and
//     binding again at once, as Run did, is one API request per node in
//     the same second.
//   - A JetStream API request that failed (a timeout, which is what a
//     dropped request looks like; JetStream not available yet) is tried
//     again after a jittered, doubling delay (natsconn.Backoff): half
//     the delay, plus a random part of the other half, from backoffBase
//     up to backoffMax. Nodes that failed together do not come back
//     together.
//   - An envelope of a certificate sealed in recipient groups reaches
//     every node of the fleet within about a second: the publisher stores
//     the groups at once. Before it acts on one (opens and stages it,
//     acknowledges it, writes its status), Run waits a random delay
//     uniform in [0, deliverySpread(count)), count being the groups of its
//     Certsync-Group header: (count-1) x SpreadPerGroup, at most
//     MaxDeliverySpread. A fleet of n groups (up to 256 nodes each) so
//     reaches the server at about 512 nodes a second, not 10,000 at once;
//     a certificate of one envelope (256 nodes or fewer) is not delayed.
//     The header is not signed: a forged one can delay a node by at most
//     MaxDeliverySpread, and the envelope's signed record is checked as
//     ever. Sync (a one-shot command) does not wait.

package subscriber

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// ReconnectSpread bounds the random delay after a reconnect before Run
// checks its consumer. 30 seconds spread a fleet of 10,000 nodes to about
// 330 requests a second, which one server serves as they come (a consumer
// info takes it well under a millisecond), and 100,000 nodes to 3,300 a
// second; the check is for a consumer lost across the restart, which is
// rare, so waiting for it costs nothing in the usual case.
const ReconnectSpread = 30 * time.Second

// SpreadPerGroup and MaxDeliverySpread make the delivery spread: a node
// of a certificate sealed in count recipient groups waits a random delay
// below (count-1) x SpreadPerGroup, at most MaxDeliverySpread, before it
// acts on the envelope (Run only). 500 ms per group of at most 256 nodes
// is about 512 nodes a second: what one server on the benchmarks' two
// cores, shared with 10,000 nodes, serves as they come (each node's
// acknowledgement and status write; docs/BENCHMARKS.md, "Fleet at
// scale"), so 10,000 nodes in 45 groups stage a renewal within 22 s.
// MaxDeliverySpread is well below the consumers' AckWait (2 minutes), so
// no envelope is delivered again while its node waits.
const (
	SpreadPerGroup    = 500 * time.Millisecond
	MaxDeliverySpread = time.Minute
)

// deliverySpread bounds the delay before Run acts on an envelope sealed
// for count recipient groups; 0 for an ungrouped one (count 0 or 1).
func deliverySpread(count int, perGroup time.Duration) time.Duration {
	if count <= 1 || perGroup <= 0 {
		return 0
	}
	return min(time.Duration(count-1)*perGroup, MaxDeliverySpread)
}

// groupCount is the count of a message's Certsync-Group header
// (crypto.ParseGroup), 0 when it has none, it does not parse, or it names
// more groups than a publisher makes (wire.MaxGroups).
func groupCount(m jetstream.Msg) int {
	g, ok := crypto.ParseGroup(m.Headers().Get(wire.HeaderGroup))
	if !ok || g.Count > wire.MaxGroups {
		return 0
	}
	return g.Count
}

// spreadDelay is how long Run waits before it acts on batch: a random
// delay below the longest deliverySpread of its envelopes.
func (n *Node) spreadDelay(batch []jetstream.Msg, randN func(int64) int64) time.Duration {
	count := 0
	for _, m := range batch {
		count = max(count, groupCount(m))
	}
	spread := deliverySpread(count, n.spreadPerGroup)
	if spread <= 0 {
		return 0
	}
	return time.Duration(randN(int64(spread)))
}

const (
	// backoffBase and backoffMax bound the delay before a failed
	// JetStream API request is tried again (binding the consumer, checking
	// it after a reconnect).
	backoffBase = time.Second
	backoffMax  = time.Minute
)

// errConsumerGone is the cause Run's consume ends with when the check
// after a reconnect found the consumer (or its stream) gone.
var errConsumerGone = errors.New("consumer gone after a reconnect")

// reconnectDelay is the delay after a reconnect before the consumer is
// checked: uniform in [0, spread).
func reconnectDelay(spread time.Duration, randN func(int64) int64) time.Duration {
	if spread <= 0 {
		return 0
	}
	return time.Duration(randN(int64(spread)))
}

// consumeChecked is consume, with the consumer checked after every
// reconnect and every missed heartbeat (checkConsumerPaced). A missed
// heartbeat (the server stopped sending them: it is shutting down, or
// too busy) ends the pull, which starts again at once, without a
// JetStream API request, while the check waits its turn: every node of a
// fleet misses it at the same moment. When the check finds the consumer
// gone, consumeChecked ends with an error wrapping errConsumerGone, and
// Run binds again.
func (n *Node) consumeChecked(ctx context.Context, js jetstream.JetStream, nc *natsconn.Conn, cons jetstream.Consumer) (bool, error) {
	cctx, stop := context.WithCancelCause(ctx)
	missed := make(chan struct{}, 1)
	checked := make(chan struct{})
	go func() {
		defer close(checked)
		n.checkConsumerPaced(cctx, js, nc, missed, stop)
	}()
	defer func() {
		stop(nil)
		<-checked
	}()
	received := false
	for {
		got, err := n.consume(cctx, js, cons)
		received = received || got
		if cause := context.Cause(cctx); ctx.Err() == nil && errors.Is(cause, errConsumerGone) {
			return received, cause
		}
		if !errors.Is(err, jetstream.ErrNoHeartbeat) || cctx.Err() != nil {
			return received, err
		}
		n.log.Warn("consumer_heartbeat_missed", "consumer", wire.ConsumerName(n.cfg.Node), "error", err,
			"hint", "pulling again; the consumer is checked within the reconnect spread")
		select {
		case missed <- struct{}{}:
		default:
		}
	}
}

// checkConsumerPaced waits for reconnects of nc, and for missed
// heartbeats, until ctx ends. After each, it waits reconnectDelay, then
// looks the consumer up (one JetStream API request), again after an
// natsconn.Backoff while that fails, and calls gone when the server says the
// consumer or its stream does not exist.
func (n *Node) checkConsumerPaced(ctx context.Context, js jetstream.JetStream, nc *natsconn.Conn, missed <-chan struct{}, gone context.CancelCauseFunc) {
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	name := wire.ConsumerName(n.cfg.Node)
	for {
		select {
		case <-ctx.Done():
			return
		case <-reconnected:
		case <-missed:
		}
		delay := reconnectDelay(n.reconnectSpread, rand.Int64N)
		n.log.Debug("consumer_check_scheduled", "consumer", name, "in", delay)
		if !sleep(ctx, delay) {
			return
		}
		b := natsconn.NewBackoff(backoffBase, backoffMax)
		for {
			err := n.checkConsumer(ctx, js, nc)
			if err == nil {
				break
			}
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				n.log.Warn("consumer_lost", "consumer", name, "error", err, "hint", "binding it again")
				gone(fmt.Errorf("checking consumer %q: %w: %w", name, errConsumerGone, err))
				return
			}
			if ctx.Err() != nil {
				return
			}
			wait := b.Next()
			n.log.Warn("consumer_check_failed", "consumer", name, "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
		}
		// Reconnects and misses that came while this one was checked are
		// covered by it.
		for len(reconnected) > 0 {
			<-reconnected
		}
		select {
		case <-missed:
		default:
		}
	}
}

// checkConsumer looks the node's consumer up, within natsTimeout.
func (n *Node) checkConsumer(ctx context.Context, js jetstream.JetStream, nc *natsconn.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	return nc.Call(ctx, func(ctx context.Context) error {
		_, err := js.Consumer(ctx, wire.Stream, wire.ConsumerName(n.cfg.Node))
		return err
	})
}

// sleep waits d, and reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
