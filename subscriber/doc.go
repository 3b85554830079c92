// Package subscriber is the node side of certsync: it receives the bundles
// of the node's certificates from the node's durable JetStream consumer,
// checks them and stages them, and reports what it holds.
//
// # Receiving
//
// [New] builds a [Node] from a [Config]. [Node.Sync] makes one pass (for
// `certsync node sync`): it receives everything pending, decides, and
// returns a [Report]. [Node.Run] is the daemon (`certsync node run`): the
// same decisions on a continuous pull that survives server restarts.
// Both bind the consumer "node-<node>"; when it is missing, the node tries
// to create it (an open server allows that) and otherwise fails with
// [ErrNoConsumer]: with least-privilege credentials the management side
// creates it.
//
// # Deciding
//
// Messages are judged in batches (what the server has pending). For each
// message, before anything is decrypted: its size (at most
// crypto.MaxEnvelopeSize), its subject's certificate name, the publisher's
// signature against the trusted keys, the signed name against the subject
// (a body moved to another subject is refused) and against the node's
// configuration. Of the verified bundles of one certificate only the
// newest is opened; older ones are acknowledged as superseded, so a node
// that was away across several renewals stages only the newest, once. The
// opened bundle must be a valid certificate, key and chain that has not
// expired, and must not be older than what is staged ([ErrDowngrade]) nor
// another certificate with the staged version ([ErrConflict]); the same
// bundle again changes nothing.
//
// A refusal terminates the message (it is never delivered again), is
// logged as "bundle_refused" and shows in the certificate's status record.
// Such errors are [PermanentError]s ([IsPermanent]). A transient failure (a
// full disk, say) is retried later with a growing delay. No message can
// block the ones after it.
//
// # Staging
//
// [Stage] keeps one folder per certificate under the stage folder, 0700,
// holding cert.pem, chain.pem, fullchain.pem and privkey.pem (0600) byte for
// byte as the publisher read them, and certsync.json, the [Staged] record.
// A certificate's set changes all at once (a folder exchanged with
// renameat2), and the record is the node's persisted version: the
// downgrade check survives restarts. [Stage.Load] reads one consistent
// set: it is how the installer takes a staged bundle as its candidate.
//
// # Reporting
//
// After each decision, and every StatusInterval while Run runs, the node
// writes a wire.Status record per certificate to the status bucket. When the
// bucket cannot be reached the node warns once and goes on: status is not
// worth holding certificates back.
package subscriber
