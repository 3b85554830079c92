// Package crypto holds certsync's keys, its sealed envelope and its signed
// rollout records.
//
// A publisher signs with an Ed25519 [SigningKey]; nodes pin the matching
// [PublicKey] (its [PublicKey.String] form is the line operators copy into
// trusted_publishers). Nodes decrypt with age identities: an age X25519
// identity file or an unencrypted OpenSSH ed25519 or rsa private key, so a
// node's SSH host key works with no extra key ([ParseIdentities]). Publishers
// address nodes by age recipients: "age1…", "ssh-ed25519 …" or "ssh-rsa …"
// ([ParseRecipient]).
//
// A [Bundle] is the four PEM files of a certbot lineage. [Bundle.Check]
// validates them and describes the leaf ([Info]); the version is not the
// certificate's but the envelope's: in envelope [Format] 2 the publisher
// assigns it (Unix milliseconds, strictly increasing per certificate), in
// format 1, which nodes still read, it was the leaf's NotBefore in seconds
// ([Format1Version]). [Seal] encrypts a bundle with age to its recipients
// and signs the result, optionally with the hold record ([WithHold]: nodes
// stage it but wait for a rollout record) and the withdrawn record
// ([WithWithdrawn]: certificates a rollback took out of service); [Verify]
// checks the signature against the trusted keys without decrypting, and
// [Open] verifies, then decrypts and checks that the plaintext repeats the
// signed name and version. Format 2 envelopes carry a signed stanza index,
// so that Open hands each identity only its own stanza, whatever the number
// of recipients, and Seal wraps the file key on every core (index.go). The
// byte layout is specified in docs/FORMAT.md and pinned by the vectors in
// testdata/vectors. envelope.go holds that API; format.go the wire format;
// parse.go its one bounded parser, with its typed [FormatError].
//
// A [RolloutRecord] is the publisher's signed word on a staged rollout:
// which nodes may install a held bundle of a given version and leaf
// fingerprint ([RolloutRecord.For], [RolloutRecord.Releases]).
// [SignRollout] writes one and [VerifyRollout] reads one, behind the same
// kind of bounded parser, with its own magic and signature context, in
// exactly one encoding (rollout.go; docs/FORMAT.md, "Rollout records";
// testdata/rollout).
//
// Errors wrap documented sentinels ([ErrMalformed], [ErrBadSignature],
// [ErrUntrustedSigner], [ErrNotRecipient], …) so callers can tell a permanent
// refusal from a transient failure; each is one line. No error, and nothing
// this package returns except the keys themselves, contains private key
// material.
//
// Key files ([WriteKeyFile], [ReadKeyFile]) are created whole, never over
// an existing file, with mode 0600, and refused when group or others may
// read or write them.
//
// The package knows nothing of NATS or of a node's file layout.
package crypto
