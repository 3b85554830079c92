package authconf

import (
	"github.com/certsync/certsync/internal/wire"
)

// Account is the NATS account every certsync user belongs to. JetStream is
// enabled in it; the stream, the consumers and the status bucket live there.
const Account = "CERTSYNC"

// Permissions are the subjects a user may publish to and subscribe to. A
// user with nil Permissions (the admin) may do everything in the account.
type Permissions struct {
	Publish   []string
	Subscribe []string
}

// JetStream API subjects, as nats-server names them (jetstream_api.go).
const (
	apiPrefix = "$JS.API."
	ackPrefix = "$JS.ACK."
	fcPrefix  = "$JS.FC."
	// kvStream is the stream behind the status bucket.
	kvStream = wire.StatusStream
	// kvPrefix starts the subject of every key of the status bucket.
	kvPrefix = wire.StatusSubjectPrefix
)

// NodePermissions are the permissions of a node: it reads its own durable
// consumer and acknowledges its own messages, reads and writes its own keys
// of the status bucket, and receives replies on its own inbox. It cannot
// publish a bundle (on a bundle or a group subject) or a rollout record, create, change or delete any consumer, read another
// node's consumer, inbox or status, or read the stream except through its
// consumer (which delivers only its certificates' subjects).
//
// node must have passed wire.CheckNodeName.
func NodePermissions(node string) Permissions {
	consumer := wire.ConsumerName(node)
	return Permissions{
		Publish: []string{
			// Bind the consumer (and see how much is pending).
			apiPrefix + "CONSUMER.INFO." + wire.Stream + "." + consumer,
			// Pull from it.
			apiPrefix + "CONSUMER.MSG.NEXT." + wire.Stream + "." + consumer,
			// Acknowledge, nak or terminate what it delivered: the ack
			// subjects of nats-server's v1 format ($JS.ACK.<stream>.<consumer>.…)
			// and of its v2 format ($JS.ACK.<domain>.<account>.<stream>.<consumer>.…,
			// feature flag js_ack_fc_v2). The v2 form asks for at least nine
			// tokens after $JS.ACK, so it never reaches another consumer's
			// v1 subject, which has exactly seven.
			ackPrefix + wire.Stream + "." + consumer + ".>",
			ackPrefix + "*.*." + wire.Stream + "." + consumer + ".*.*.*.*.>",
			// Bind the status bucket: its stream's configuration.
			apiPrefix + "STREAM.INFO." + kvStream,
			// Put its own keys.
			kvPrefix + node + ".>",
			// Get its own keys back (the bucket allows direct gets, and the
			// subject names the key, so the permission can be this precise).
			apiPrefix + "DIRECT.GET." + kvStream + "." + kvPrefix + node + ".>",
		},
		Subscribe: []string{wire.NodeInboxPrefix(node) + ".>"},
	}
}

// PublisherPermissions are the permissions of the publisher: it publishes
// bundles (on the bundle subjects, and on the recipient group subjects for
// a certificate sealed in groups) and rollout records (certsync rollout run and its commands, and
// Republish, which stores a record again for a node that gains a
// certificate); reads the stream's and the status bucket's configuration and
// state; reads the newest bundle of a subject; creates, updates, lists,
// reads and deletes consumers of both (its node consumers, and the
// short-lived ordered consumers that list bundles and watch the status
// bucket); answers their flow control; and receives replies on its own
// inbox. It cannot create, update, delete or purge the stream or the
// bucket (the admin creates and upgrades them: certsync setup), delete
// messages, or write a node's status: STREAM.UPDATE would let it turn
// roll-ups on, or add a source or republish that copies its messages into
// the status bucket, which is writing every node's status.
func PublisherPermissions() Permissions {
	pub := []string{wire.Subjects, wire.GroupSubjects, wire.RolloutSubjects}
	for _, stream := range []string{wire.Stream, kvStream} {
		pub = append(pub,
			apiPrefix+"STREAM.INFO."+stream,
			apiPrefix+"STREAM.MSG.GET."+stream,
			apiPrefix+"DIRECT.GET."+stream,
			apiPrefix+"DIRECT.GET."+stream+".>",
			apiPrefix+"CONSUMER.CREATE."+stream,
			apiPrefix+"CONSUMER.CREATE."+stream+".>",
			apiPrefix+"CONSUMER.DURABLE.CREATE."+stream+".*",
			apiPrefix+"CONSUMER.INFO."+stream+".*",
			apiPrefix+"CONSUMER.DELETE."+stream+".*",
			apiPrefix+"CONSUMER.LIST."+stream,
			apiPrefix+"CONSUMER.NAMES."+stream,
			apiPrefix+"CONSUMER.MSG.NEXT."+stream+".*",
			fcPrefix+stream+".>",
			fcPrefix+"*.*."+stream+".>",
		)
	}
	return Permissions{
		Publish:   pub,
		Subscribe: []string{wire.PublisherInboxPrefix + ".>"},
	}
}
