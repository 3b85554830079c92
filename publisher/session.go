package publisher

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/natsconn"
)

// session is one call's connection to NATS.
type session struct {
	p      *Publisher
	log    *slog.Logger
	nc     *natsconn.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	status jetstream.KeyValue
	// rollouts is true when the stream holds the rollout subjects
	// (wire.RolloutSubjects): consumers then filter them too, and held
	// bundles and rollout records may be stored (needRollouts). A stream
	// set up before rollouts has only the bundle subjects until the admin
	// runs Setup.
	rollouts bool
	// groups is true when the stream holds the recipient group subjects
	// (wire.GroupSubjects): a certificate one envelope cannot hold may be
	// sealed in groups (needGroups). A stream set up before groups lacks
	// them until the admin runs Setup.
	groups bool
	// atomic is true when the stream takes atomic batches
	// (AllowAtomicPublish): a certificate's groups are stored as one
	// (storeGroups). A stream set up before lacks them until Setup.
	atomic bool
	// maxBatch is the most groups one atomic batch of this session holds
	// (storeSealed): 0 until the server refuses a batch as larger than
	// its max_batch_size, then the limit its answer named.
	maxBatch int
	// layouts is, by certificate, the recipient group layout this session
	// last stored (node -> its subject): consumers filter what it says
	// (consumerSubjects).
	layouts map[string]map[string]string
	// listed is the stream's node consumers as this session listed them
	// (listConsumers), with its own changes since; nil before the first
	// listing. A publish brings the consumers in line once (followLayout,
	// or deliver's updateConsumers when the publish was refused before
	// it), a republish once for every certificate: each reads the listing
	// of 10,000 consumers once.
	listed *consumerListing
	// listing is closed when the listing prefetchConsumers started has
	// ended (s.listed set, or left nil when it failed); nil when none is
	// under way.
	listing chan struct{}
}

// consumerListing is what listConsumers found: the node consumers by node
// name, and the nodes whose consumer the servers named but could not
// describe.
type consumerListing struct {
	existing    map[string]*jetstream.ConsumerInfo
	unreachable []string
}

// changed records a consumer this session created or updated (info), or
// deleted (nil), in its listing.
func (s *session) changed(node string, info *jetstream.ConsumerInfo) {
	if s.listed == nil {
		return
	}
	if info == nil {
		delete(s.listed.existing, node)
		return
	}
	s.listed.existing[node] = info
}

// connect connects to NATS, retrying until ctx ends. Each JetStream
// request of the session waits at most natsconn.RequestTimeout for its
// answer (natsconn.Conn.JetStream), inside the call's ctx (bound).
func (p *Publisher) connect(ctx context.Context) (*session, error) {
	nc, err := natsconn.Connect(ctx, p.cfg.NATS, p.log)
	if err != nil {
		return nil, err
	}
	js, err := nc.JetStream()
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &session{p: p, log: p.log, nc: nc, js: js}, nil
}

func (s *session) close() { s.nc.Close() }

// do runs fn until it succeeds, fails for good, or ctx ends
// (natsconn.Conn.Retry): a permission the server denies is for good, and
// is known at once. Transient failures (no servers, no JetStream leader, a
// request unanswered within its own natsconn.RequestTimeout) and a publish
// that lost the race for the subject's last sequence are retried with a
// capped backoff; others are returned as they are. When ctx ends, the last
// error is returned with why it gave up. fn's errors say what failed; what
// names the step in logs. fn runs again from the start on each try: it
// reads what it decides on again (session.publish reads the subject's head
// again, and finds there a bundle a try whose acknowledgement was lost
// stored).
func (s *session) do(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	return s.nc.Retry(ctx, s.log, what, transient, fn)
}

// transient tells the failures worth retrying: the server is away, busy
// electing a leader, did not answer in time, or has too much under way
// now, such as too many atomic batches in flight (natsconn.Transient),
// another publisher stored on the subject first, or an atomic batch must
// be read and sent again (batchAgain).
func transient(err error) bool {
	return natsconn.Transient(err) || wrongLastSequence(err) || batchAgain(err)
}

// wrongLastSequence tells the error of a publish whose expected last
// subject sequence was no longer the last: someone else published first.
func wrongLastSequence(err error) bool {
	return apiError(err, jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// apiError tells whether err is the server's answer with one of codes.
func apiError(err error, codes ...jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && slices.Contains(codes, apiErr.ErrorCode)
}
