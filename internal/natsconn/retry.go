// Deadlines and retries of JetStream calls, the same on both sides: each
// request has its own short deadline (RequestTimeout) inside the call's
// overall one (Overall), and a request that failed for a passing reason is
// tried again with backoff (Retry, Transient) until the overall one ends.

package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RequestTimeout is how long one JetStream API request, or the
// acknowledgement of one publish, waits for its answer, within what is
// left of the call's overall timeout.
//
// Why 6 seconds. In a cluster, a request on a stream or a consumer is
// answered by its leader alone. When the leader dies, the request is never
// answered (there is no error to wait for, only silence), and the cluster
// elects a new leader 4 to 9 seconds later (nats-server's raft election
// timeout). Waiting for the whole overall timeout (30s by default) on such
// a request is what made a publish fail although the cluster had a leader
// again after 6 seconds. A healthy server answers in milliseconds, a busy
// one within a second or two. The floor is nats-server's own wait: a
// listing of a stream's consumers gathers each one's state from its leader
// and answers after at most 4 seconds with those that did not answer left
// out; a deadline of 4 seconds or less gives up on every listing while any
// consumer has no leader, just before the server answers. 6 seconds is past
// that with room for a busy API queue, sends a request lost to a dead
// leader again about when a new leader is elected, and leaves five tries
// within the 30s default timeout (two within 12s). Every request certsync
// retries is idempotent: reads, creates and updates to the same
// configuration, and publishes that the server deduplicates (Nats-Msg-Id,
// the expected last subject sequence).
const RequestTimeout = 6 * time.Second

// Backoff between tries of Retry: the first wait is about retryFirst, each
// next one twice the last, up to retryMax, each drawn at random from its
// upper half so that many clients that failed together do not come back
// together.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 2 * time.Second
)

// Backoff is a jittered, doubling delay, for Retry and for the node's
// long-running loop (subscriber's pacing): each Next is the current delay's
// upper half at random ([d/2, d)), so that clients that failed together do
// not come back together, and the delay doubles up to its max.
type Backoff struct {
	base, max, d time.Duration
	rand         func(n int64) int64 // rand.Int64N unless a test sets it
}

// NewBackoff is a Backoff from base up to max.
func NewBackoff(base, max time.Duration) *Backoff {
	return &Backoff{base: base, max: max, d: base, rand: rand.Int64N}
}

// Next is the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	half := b.d / 2
	d := half + time.Duration(b.rand(int64(b.d-half)))
	b.d = min(2*b.d, b.max)
	return d
}

// Reset starts again from the base delay, after a success.
func (b *Backoff) Reset() { b.d = b.base }

// JetStream returns a JetStream handle on c whose every API request and
// publish acknowledgement waits at most RequestTimeout, unless the context
// it is given has a deadline of its own: the client gives its default
// timeout (jetstream.WithDefaultTimeout) to a context without one. Use it
// with contexts from Overall, which have none, so that each request has its
// own deadline.
func (c *Conn) JetStream() (jetstream.JetStream, error) {
	js, err := jetstream.New(c.Conn, jetstream.WithDefaultTimeout(RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("opening jetstream: %w", err)
	}
	return js, nil
}

// Overall bounds a call of several JetStream requests: the context it
// returns ends when ctx ends or, when d > 0, once d has passed (its cause is
// then cause, or context.DeadlineExceeded when cause is nil), and it has no
// deadline. That is the point: the JetStream client waits for the answer of
// a request until its context's deadline, when the context has one, so a
// request under context.WithTimeout(ctx, 30s) sent to a dead leader waits
// all of the 30 seconds. Without a deadline, each request gets its own
// RequestTimeout (Conn.JetStream), and Retry sends it again. A deadline ctx
// itself carries becomes a cancellation in the same way; its cause is kept.
// Always call the returned cancel.
func Overall(ctx context.Context, d time.Duration, cause error) (context.Context, context.CancelFunc) {
	if cause == nil {
		cause = context.DeadlineExceeded
	}
	inner, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	var timer *time.Timer
	if d > 0 {
		timer = time.AfterFunc(d, func() { cancel(cause) })
	}
	return inner, func() {
		if timer != nil {
			timer.Stop()
		}
		stop()
		cancel(context.Canceled)
	}
}

// Retry runs fn through Call until it succeeds, fails for good, or ctx
// ends. An error retry reports true for (Transient when retry is nil) is
// tried again after a backoff (about 100ms, doubling to 2s, at random in
// the upper half of each); any other is returned as it is, and so is a
// denied permission (Call knows it at once). fn should send requests that
// each have their own deadline (a context from Overall, a handle from
// Conn.JetStream) and must be safe to run again. When ctx ends, Retry
// returns the last error fn returned before (not the one ctx's end caused,
// when there is one) and why it gave up, context.Cause(ctx). what names
// the step in the debug log line of each retry (nats_retry).
func (c *Conn) Retry(ctx context.Context, log *slog.Logger, what string, retry func(error) bool, fn func(ctx context.Context) error) error {
	if retry == nil {
		retry = Transient
	}
	wait := NewBackoff(retryFirst, retryMax)
	var last error
	for {
		err := c.Call(ctx, fn)
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !retry(err) {
			return err
		}
		if ctx.Err() == nil || last == nil {
			// The error of a request cut short by ctx's end says only
			// "context canceled": the one before says what went wrong.
			last = err
		}
		if ctx.Err() == nil {
			pause := wait.Next()
			log.Debug("nats_retry", "doing", what, "error", err, "retry_in", pause)
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
				continue
			}
		}
		return fmt.Errorf("%w (gave up: %w)", last, context.Cause(ctx))
	}
}

// Transient tells the failures of a JetStream call worth trying again: the
// connection is away or coming back, no server answers the subject yet (no
// responders), the request was not answered within its deadline (a leader
// that died, a cluster electing one), or the server says JetStream or the
// cluster is not available now (503), has too much under way now (429: too
// many atomic or fast batches in flight on the stream or the server, 10210
// and 10211, or a stream's ingest queue full, 10167; each ends as the
// others' work does), this server cannot handle the request now (not the
// leader, not assigned yet) or has too few current peers to place a
// replicated stream or consumer (a peer is down or catching up). Anything
// else (not found, a refused configuration, a denied permission) is not.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsClusterNotLeader, jsClusterNotAssigned, jsClusterNoPeers, jsStreamOffline, jsConsumerOffline:
			return true
		}
		return apiErr.Code == 503 || apiErr.Code == 408 || apiErr.Code == 429
	}
	return errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, jetstream.ErrServerShutdown) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}

// nats-server's error codes (errors.json) of a cluster that cannot answer
// now: "JetStream cluster can not handle request" (this server is not the
// leader any more), "JetStream cluster not assigned to this server" (not
// yet), "no suitable peers for placement" (too few current peers), and
// "stream is offline" or "consumer is offline" (assigned, but not running
// yet on its servers: a consumer just created on a cluster, or one whose
// only server is down and will serve again when it is back).
const (
	jsClusterNotLeader   jetstream.ErrorCode = 10009
	jsClusterNotAssigned jetstream.ErrorCode = 10007
	jsClusterNoPeers     jetstream.ErrorCode = 10005
	jsStreamOffline      jetstream.ErrorCode = 10118
	jsConsumerOffline    jetstream.ErrorCode = 10119
)

// Next returns the next message of it, waiting at most RequestTimeout for
// it, and no longer than ctx. For reading what a stream holds: a message the
// server has comes within milliseconds, and none within RequestTimeout means
// the consumer's server went away (its leader died) and the read must start
// again. The error then wraps context.DeadlineExceeded, which Transient
// counts as passing.
func Next(ctx context.Context, it jetstream.MessagesContext) (jetstream.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	return it.Next(jetstream.NextContext(ctx))
}
