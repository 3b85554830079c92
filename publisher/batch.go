// Atomic batches: how storeGroups stores a certificate's sealed groups
// together (storeSealed, storeBatch), and what the server's refusals of a
// batch mean: mended where they happen (batchLimit, batchDisabled) or
// passing, tried again by publish (batchAgain, one of session.go's
// transient failures).

package publisher

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/wire"
)

// storeSealed stores the sealed groups of out. On a stream that takes
// atomic batches, several groups are one batch (storeBatch): the server
// stores all or none, and acknowledges them once. On a stream without
// them, and for a single group, each is stored on its own, at most
// storeWindow at once.
//
// The server refuses a batch of more than its max_batch_size (jetstream {
// limits { batch { max_msgs } } } in its configuration; default 1,000,
// more than wire.MaxGroups; an admin may set it lower) whole, storing
// nothing (10199, "atomic publish batch is too large: N"), and would
// refuse every try of it the same way: the session learns the limit from
// that answer (batchLimit), warns once (atomic_batch_too_large) and sends
// the groups again at once, in batches of at most the limit. Why split
// rather than store one by one: each batch is still all or none, so a
// publish interrupted half way leaves whole batches stored instead of any
// subset of groups, and nodes of the same batch are never given different
// versions; at a limit of 1 it is one by one. A stream that stopped taking
// atomic batches after the session read it (10174, "atomic publish is
// disabled", an admin edited it) is served as a stream without them
// (atomic_batch_disabled). When a batch fails otherwise, the groups after
// it are not sent and fail with its error: publish's next try reads every
// subject again and stores what is missing.
func (s *session) storeSealed(ctx context.Context, j *job, d seal, out []groupStore) {
	for rest := out; len(rest) > 0; {
		n := len(rest)
		if s.maxBatch > 0 {
			n = min(n, s.maxBatch)
		}
		if !s.atomic || n == 1 {
			inWindow(len(rest), func(i int) {
				rest[i].ack, rest[i].err = s.js.PublishMsg(ctx, groupMsg(j, d, &rest[i]))
			})
			return
		}
		part := rest[:n]
		s.storeBatch(ctx, j, d, part)
		err := part[0].err
		if err == nil {
			rest = rest[n:]
			continue
		}
		if batchDisabled(err) {
			s.atomic = false
			s.log.Warn("atomic_batch_disabled", "name", j.bundle.Name, "stream", wire.Stream, "groups", len(rest),
				"reason", "the stream no longer takes atomic batches (allow_atomic); its groups are stored one by one",
				"hint", "certsync setup turns them on again")
			clearErrs(part)
			continue
		}
		if limit, ok := batchLimit(err, n); ok && limit < n {
			s.maxBatch = limit
			s.log.Warn("atomic_batch_too_large", "name", j.bundle.Name, "groups", len(out), "max_batch_size", limit,
				"batches", (len(out)+limit-1)/limit,
				"reason", "the NATS server takes at most max_batch_size messages in an atomic batch; the groups are stored in batches of that size",
				"hint", fmt.Sprintf("set jetstream { limits { batch { max_msgs: %d } } } or more in the server's configuration, or leave it unset (1000)", wire.MaxGroups))
			clearErrs(part)
			continue
		}
		for i := range rest[n:] {
			rest[n+i].err = err
		}
		return
	}
}

// clearErrs forgets the failed store of each of out, sent again.
func clearErrs(out []groupStore) {
	for i := range out {
		out[i].ack, out[i].err = nil, nil
	}
}

// batchLimit tells the refusal of an atomic batch of n messages as larger
// than the server's max_batch_size (10199), and returns the most a batch
// may hold: the limit the server's answer names ("atomic publish batch is
// too large: 2", as nats-server 2.15 words it) or, when its text does not
// name one below n, half of n, so that sending again always sends less.
func batchLimit(err error, n int) (int, bool) {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrCodeBatchTooLarge {
		return 0, false
	}
	desc := apiErr.Description
	limit, perr := strconv.Atoi(strings.TrimSpace(desc[strings.LastIndexByte(desc, ':')+1:]))
	if perr != nil || limit < 1 || limit >= n {
		limit = max(1, n/2)
	}
	return limit, true
}

// batchDisabled tells the refusal of an atomic batch by a stream that does
// not take them (10174).
func batchDisabled(err error) bool { return apiError(err, jsErrCodeBatchDisabled) }

// The headers of an atomic batch (nats-server 2.12 and later, on a stream
// with AllowAtomicPublish): the batch's id, each message's place in it,
// and the last message's commit.
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// storeBatch stores the sealed groups of out as one atomic batch: each
// message but the last published without awaiting an answer, the last
// with the commit, whose acknowledgement is the batch's. The server stages
// the messages, checks every one (its expected last sequence, its message
// id against the duplicate window) when the commit arrives, and stores
// all of them at consecutive sequences, or none: nodes never see a publish
// stored for some groups only, and no consumer is woken before the last
// group is stored, which keeps the acknowledgement from waiting behind the
// delivery of the first groups (docs/BENCHMARKS.md, "Fleet at scale"). A
// failure is every group's.
func (s *session) storeBatch(ctx context.Context, j *job, d seal, out []groupStore) {
	id := rand.Text() // 26 characters; the server takes up to 64
	var ack *jetstream.PubAck
	var err error
	for i := range out {
		msg := groupMsg(j, d, &out[i])
		msg.Header.Set(headerBatchID, id)
		msg.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
		if i < len(out)-1 {
			if err = s.nc.PublishMsg(msg); err != nil {
				err = fmt.Errorf("publishing message %d of batch %s: %w", i+1, id, err)
				break
			}
			continue
		}
		msg.Header.Set(headerBatchCommit, "1")
		ack, err = s.js.PublishMsg(ctx, msg)
	}
	for i := range out {
		if err != nil {
			out[i].err = err
			continue
		}
		out[i].ack = &jetstream.PubAck{Stream: ack.Stream, Domain: ack.Domain, Sequence: ack.Sequence - uint64(len(out)-1-i)}
	}
}

// batchAgain tells the errors of an atomic batch (storeBatch) that reading
// and deciding again mends: a message of it is in the duplicate window (a
// twin call stored the same bundle first: read again, it is unchanged), or
// is a twin's still being stored (a cluster applying its batch: read
// again, it is stored), or the server did not receive all of it or gave
// up waiting for the rest (incomplete: the connection broke or stalled
// past the server's max_batch_timeout, 10 s by default, between two
// messages; the server also answers so the messages after a first one it
// refused for too many batches in flight, 10210, which natsconn.Transient
// counts as passing when it comes itself).
//
// The other refusals of a batch are not tried again: too large (10199)
// and disabled (10174) are mended where they happen, in storeSealed,
// without a retry; a missing sequence, a bad id or commit, or a header a
// batch may not carry (10175, 10179, 10200, 10177) would fail every try
// the same way, and storeBatch never sends them.
func batchAgain(err error) bool {
	return apiError(err, jsErrCodeBatchDuplicate, jsErrCodeBatchIncomplete, jsErrCodeDuplicateInProcess)
}

// nats-server's error codes (jetstream_errors_generated.go) of an atomic
// batch with a message id already stored (or twice in the batch), with
// one a batch being stored holds (a twin's, not yet applied), of one the
// server did not receive whole, of one with more messages than its
// max_batch_size, and of one sent to a stream without AllowAtomicPublish;
// nats.go names none of them.
const (
	jsErrCodeBatchDuplicate     jetstream.ErrorCode = 10201
	jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158
	jsErrCodeBatchIncomplete    jetstream.ErrorCode = 10176
	jsErrCodeBatchTooLarge      jetstream.ErrorCode = 10199
	jsErrCodeBatchDisabled      jetstream.ErrorCode = 10174
)
