package wire

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the stream settings an operator may choose.
type StreamOptions struct {
	// Replicas is the number of servers holding the stream: 1 on a single
	// server (the default), 3 or 5 in a cluster.
	Replicas int
	// History is how many bundles are kept per certificate (default 5).
	// Older ones are dropped; the newest is always kept.
	History int64
	// DuplicateWindow is how long a repeated Nats-Msg-Id is recognised and
	// dropped by the server (default 24h).
	DuplicateWindow time.Duration
	// ConsumerReplicas is the number of servers holding each node's
	// consumer when the publisher creates it (default 1, at most
	// Replicas). A replicated consumer is a raft group of its own on each
	// of its servers: at 1,000 nodes on three servers, R3 consumers took
	// 62 s to create and a third of a core idle, where R1 took 2 ms each
	// and nothing (docs/BENCHMARKS.md). A consumer holds only where its
	// node is in the stream, which the node can lose without harm (a new
	// one delivers the newest bundle of each subject, which the node
	// holds or needs), while the bundles themselves are the stream's, on
	// Replicas servers.
	ConsumerReplicas int
}

// Stream defaults and limits. StreamConfig applies the defaults to fields
// left zero; publisher.Config.Validate refuses values beyond the limits.
const (
	DefaultReplicas        = 1
	DefaultHistory         = 5
	DefaultDuplicateWindow = 24 * time.Hour
	// DefaultConsumerReplicas is StreamOptions.ConsumerReplicas' default,
	// and the replicas of a consumer ConsumerConfig describes.
	DefaultConsumerReplicas = 1
	// MaxReplicas is the most servers a stream may be replicated on.
	MaxReplicas = 5
	// MaxHistory is the most bundles a stream may keep per certificate.
	MaxHistory = 100
	// MaxConsumers is the most consumers StreamConfig lets the stream
	// have: one per node (node-<name>), and the short-lived ones of
	// operators' nats CLI. nats-server caps a stream that sets no limit of
	// its own at 1,000 consumers (its default_max_consumers, which a limit
	// of -1, "unlimited", does not lift), fewer than a fleet of one
	// certificate sealed in recipient groups can have; certsync sets its
	// own. 100,000 is ten times the largest fleet certsync is measured
	// with (docs/BENCHMARKS.md) and still bounds what a mistaken
	// configuration can make the server hold. A NATS account with a
	// JetStream max_consumers limit below it cannot hold the stream: the
	// server refuses to create or update it (docs/OPERATIONS.md).
	MaxConsumers = 100_000
)

// StreamConfig is the configuration of the CERTSYNC stream.
//
// It holds the bundle, rollout and recipient group subjects; one set up
// before rollouts or groups gains the missing ones from `certsync setup`.
//
// MaxAge stays unset so a certificate that is not renewed for a while does not
// vanish for nodes that join later; the history per subject bounds the size.
//
// MaxConsumers is MaxConsumers, so that the stream holds more than the
// 1,000 consumers nats-server allows a stream by default.
//
// The stream refuses purges, message deletes and roll-ups (DenyPurge,
// DenyDelete, no AllowRollup): a bundle leaves it only when the history per
// subject drops it. Nothing in certsync purges or deletes bundles. The
// server lets these protections be turned on in an existing stream but
// never off again, so once set they hold against every credential.
func StreamConfig(o StreamOptions) jetstream.StreamConfig {
	if o.Replicas <= 0 {
		o.Replicas = DefaultReplicas
	}
	if o.History <= 0 {
		o.History = DefaultHistory
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
	}
	return jetstream.StreamConfig{
		Name:              Stream,
		Description:       "certsync: sealed certificate bundles, one subject per certificate",
		Subjects:          []string{Subjects, RolloutSubjects, GroupSubjects},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: o.History,
		MaxConsumers:      MaxConsumers,
		Duplicates:        o.DuplicateWindow,
		Replicas:          o.Replicas,
		// No direct get: its replies carry the stored message's own headers,
		// so a message published with a forged Nats-Sequence header would
		// mislead readers about its sequence. The stream API's answer does not.
		AllowDirect: false,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowRollup: false,
		// Atomic batches: the publisher stores a certificate's recipient
		// groups as one batch, all or none, acknowledged once.
		AllowAtomicPublish: true,
	}
}

// ConsumerConfig is the configuration of a node's durable consumer: a pull
// consumer on exactly the subjects of the node's certificates (their
// bundles, and their rollout records when rollouts is true: the stream
// holds RolloutSubjects), starting at the newest message of each,
// acknowledged one by one.
//
// InactiveThreshold stays unset: a node that is away for a long time must find
// its consumer, and its pending bundles, when it comes back.
//
// Replicas is DefaultConsumerReplicas, 1, whatever the stream's: see
// StreamOptions.ConsumerReplicas (the publisher sets its own).
func ConsumerConfig(node string, certs []string, rollouts bool) jetstream.ConsumerConfig {
	subjects := make([]string, 0, 2*len(certs))
	for _, c := range certs {
		subjects = append(subjects, Subject(c))
		if rollouts {
			subjects = append(subjects, RolloutSubject(c))
		}
	}
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName(node),
		Description:    "certsync node " + node,
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        2 * time.Minute,
		MaxDeliver:     -1,
		MaxAckPending:  1000,
		Replicas:       DefaultConsumerReplicas,
	}
}
