// Package subscriber is the node side of certsync: it receives the bundles
// of the node's certificates from the node's durable JetStream consumer,
// checks them, stages them, installs them into service on each
// certificate's schedule, and reports what it holds.
//
// # Configuring
//
// A [Config] holds the node's settings and one [Certificate] per
// certificate; [Config.Validate] (which New calls) applies the defaults of
// the fields left zero and holds every rule of them, the command line's
// node.yaml included: its errors are a [FieldError] naming the setting.
// Schedules and commands are parsed once, by [ParseSchedule] and
// [ParseCommand], into the [Schedule] and [Command] a Certificate holds.
//
// # Receiving
//
// [New] builds a [Node] from a [Config]. [Node.Sync] makes one pass (for
// `certsync node sync`): it receives everything pending, decides, and
// returns a [Report]. [Node.Run] is the daemon (`certsync node run`): the
// same decisions on a continuous pull that survives server restarts,
// pacing its JetStream API requests so that a fleet does not make them all
// in the same second (pacing.go).
// Both bind the consumer "node-<node>"; when it is missing, the node tries
// to create it (an open server allows that) and otherwise fails with
// [ErrNoConsumer]: with least-privilege credentials the management side
// creates it.
//
// # Deciding
//
// Messages are judged in batches (what the server has pending). For each
// bundle, before anything is decrypted: its size (at most
// crypto.MaxEnvelopeSize), its subject's certificate name, the publisher's
// signature against the trusted keys, the signed name against the subject
// (a body moved to another subject is refused) and against the node's
// configuration. Of the verified bundles of one certificate only the
// newest is opened; older ones are acknowledged as superseded, so a node
// that was away across several renewals stages only the newest, once. The
// opened bundle must be a valid certificate, key and chain, and must not be
// older than what is staged ([ErrDowngrade]) nor another certificate with
// the staged version ([ErrConflict]); the same bundle again changes
// nothing. An older version than the staged one that was published before
// it (a lower stream sequence: a message retried while a newer one staged)
// is acknowledged as superseded, not refused.
//
// A refusal terminates the message (it is never delivered again), is
// logged as "bundle_refused" and shows in the certificate's status record.
// Such errors are [PermanentError]s ([IsPermanent]). A transient failure (a
// full disk, say) is retried later with a growing delay (5s doubling to 5m,
// by the message's deliveries; the consumer never gives up on a message).
// No message can block the ones after it.
//
// The node's clock: a bundle whose certificate has expired by the node's
// clock, or whose leaf is not valid until more than
// crypto.MaxFutureNotBefore ahead of it (a *crypto.ClockError from
// crypto.Bundle.Check, the one place this is decided), is not refused:
// the node cannot tell its clock is wrong. It is held back ([ErrClock]), a
// transient failure retried with the same delays, logged as a warning
// ("bundle_retry") on each delivery, shown failed in the status record with
// an error that names the node's clock, and counted as a refusal with
// reason "clock". It supersedes the older bundles of its batch, so a wrong
// clock never has an older bundle staged in its place. Once the clock is
// right its next delivery stages it.
//
// Recipient groups: a certificate with more nodes than one envelope holds
// comes on the subject of the node's group, certsync.group.<k>.<name>,
// sealed with the signed recipient group record k of count; the publisher's
// consumer filters the node's own group. An envelope whose group record
// does not match its subject (a group's on the bundle subject or another
// group's, an ungrouped one on a group subject) is refused as on the wrong
// subject. The groups of one version share it, so a node moved between
// groups finds the version it holds and changes nothing.
//
// Rollout records: when the stream holds the rollout subjects, the
// consumer delivers each certificate's records (certsync.rollout.<name>)
// beside its bundles; a consumer the node creates itself filters them only
// then, and a filter with bundle subjects alone (a stream set up before
// rollouts) is as right. A record is judged like a bundle, by its subject,
// size, signature (crypto.VerifyRollout with the trusted keys) and signed
// name; a refused one is terminated, logged as "rollout_refused", counted
// and shown in the status record, and releases nothing. A good one is kept
// (see Staging) and wakes the scheduler: the node plans again at once.
//
// # Staging
//
// [Stage] keeps one folder per certificate under the stage folder (0700,
// like it, whatever the umask; a new stage folder is synced into its parent),
// holding cert.pem, chain.pem, fullchain.pem and privkey.pem (0600) byte for
// byte as the publisher read them, and certsync.json, the [Staged] record.
// A certificate's set changes all at once (a folder exchanged with
// renameat2), and the record is the node's persisted version: the
// downgrade check survives restarts. [Stage.Load] reads one consistent
// set: it is how the installer takes a staged bundle as its candidate.
// The record says whether the bundle is held (Staged.Hold: the envelope's
// hold record). The rollout records kept for a certificate are in
// .rollout/<name>.json beside the folders (0600, in a 0700 folder): per
// version and fingerprint the newest (by generation, then time), at most
// four, none below the staged version; a record may come before its
// bundle. They are kept as signed and verified again on every read, so a
// release always rests on a trusted signature (rollout.go says why).
//
// # Installing
//
// A staged bundle is installed when its certificate's schedule says
// ([Certificate].Schedule): "immediate" (the default) at once; "manual" only
// by [Node.Install] (`certsync node install`); five cron fields (local
// time) not before the first time they match at or after the bundle was
// staged, plus a splay offset in [0, Splay) derived from the node, name,
// version and fingerprint (stable across restarts, different per node and
// renewal). A node that was down at that time, or a `node sync` that runs
// later, installs at its first chance after it. Whatever the schedule, a
// certificate with nothing installed installs at once, and one whose
// installed certificate expires within ExpiryDeadline installs at once.
// But a certificate that is not valid yet (its NotBefore ahead of the
// node's clock) never replaces what install_dir holds before its NotBefore,
// unless what it replaces has expired by then: a working certificate is
// not swapped for one clients reject. Into an empty install_dir it
// installs at once (clients reject it either way; the service gets files
// to start with, which turn valid without a reload). [Node.Sync] installs
// what is due after receiving and lists what waits ([Report].Scheduled);
// [Node.Run] sleeps until the next certificate is due (a window, a
// NotBefore, a retry) or something new is staged. The status record's
// install_at says when.
//
// A held bundle (Staged.Hold) is installed only once the kept record for
// its version and fingerprint releases the node (names it, or all, and is
// not aborted); then as its schedule says, the schedule starting when the
// node was released if that is after it was staged (a windowed node
// installs in its next window after its release). Not released, it waits,
// with nothing installed too, until the certificate in service comes
// within ExpiryDeadline of its expiry: then it installs regardless of the
// hold ("install_rollout_override", status rollout "expiry"). A held
// version whose install failed is tried again only when a record of a
// later generation than the one it failed under (state.json records it)
// releases the node, or as the expiry deadline's retries say. Node.Install
// ignores the hold. While a bundle waits, Report.Scheduled lists it with
// Why "rollout", the status record says rollout "waiting" without
// install_at, and certsync_rollout_waiting is 1.
//
// A higher version installs whatever certificate it carries: a rollback
// (an earlier certificate with a new version) is installed as any new
// version, reloaded and verified, even when it is the certificate in
// service, which then serves under the new version; a replay of the
// rolled-back-from envelope is a downgrade. Format 2 versions are the
// publisher's; a format 1 envelope's must be its leaf's NotBefore.
//
// The layout: install_dir is a symbolic link to a version folder kept
// beside it,
//
//	<parent>/<name>  ->  .certsync/<name>/<version>-<fp12>
//	<parent>/.certsync/<name>/<version>-<fp12>/  cert.pem chain.pem fullchain.pem privkey.pem [combined.pem] certsync.json
//	<parent>/.certsync/<name>/state.json  (0600) an install under way, the last failed version
//
// .certsync and .certsync/<name> are 0711, set at every install whatever
// the umask; install_dir's parent, when certsync creates it, 0755; each
// folder certsync creates is synced into its parent. A version folder is
// written under a temporary name (each file created 0600, the certificates
// and key given to Owner and Group and set to CertMode or KeyMode, synced)
// and moved into place once complete and synced. It stays root's (its
// group Group), 0700 plus group or other access where a mode grants
// reading, and others' x when Owner is another user; certsync.json in it
// is root's, 0644: Owner cannot change the record the downgrade check,
// the status, the expiry deadline and the metrics trust. A version folder
// or record that is not root's alone (an older certsync gave the folder to
// Owner) is not believed: it holds no known version, and installing that
// version again rebuilds it in one exchange. install_dir then changes with
// one rename of a new link over it, and the parent is synced.
// A reader sees all of one version or all of the other, and a kill -9 at
// any instant leaves install_dir pointing at one complete version; the next
// install removes the leftovers and completes the interrupted install,
// reload included (state.json records it as pending until it settles). A
// real folder found at install_dir (an old cron's) is moved aside to
// <install_dir>.certsync-backup-<UTC time>, in one exchange with the new
// link, and never deleted. Keep versions are kept (the one in service and
// the newest older ones) for rollback.
//
// After the swap: Check (if set), then Reload (if set), then Verify (if
// set): TLS handshakes with that address, sending the certificate's first
// DNS name as SNI ("*.example.com" as "certsync-verify.example.com"), until
// it serves the new leaf or VerifyTimeout passes. Any failure points
// install_dir back at the previous version and runs Reload again, and is
// reported (log, [Report], status record) with the tail of the command's
// output. A first install that fails has nothing to go back to: its files
// stay in place and it is reported failed. A failed version is recorded in
// state.json with how many times in a row it failed. It is not tried again
// on its own while the installed certificate has time left; a newer
// bundle, or `node install`, tries again. Under ExpiryDeadline, once the
// installed certificate expires within it (or has expired, or nothing
// that works is installed), it is tried again on its own: a minute after
// the failure, doubling up to an hour, across restarts, until it installs
// or a newer bundle replaces it. A downgrade or conflict is never retried. An identical bundle delivered again changes
// nothing and reloads nothing; a version lower than the installed one is
// refused ([ErrDowngrade]).
//
// Commands come only from the node's configuration, are split by
// [ParseCommand] (no shell), run with CommandTimeout in their own process
// group, and receive the node's environment plus CERTSYNC_NAME,
// CERTSYNC_INSTALL_DIR, CERTSYNC_SERIAL and CERTSYNC_FINGERPRINT. Once an
// install has started it runs to its end even if the node is asked to
// stop: a stop waits at most twice CommandTimeout plus VerifyTimeout (and
// a reload after a rollback).
//
// # Reporting
//
// After each decision, and every StatusInterval while Run runs, the node
// writes a wire.Status record per certificate to the status bucket: what is
// staged and installed, the last error, how a held bundle stands to its
// rollout (rollout, rollout_generation), whether the installed version
// passed verify (verified, recorded in state.json at the end of its
// install), the last failed version, and the certificate's schedule
// (schedule, next_window, splay, expiry_deadline). When the bucket cannot be
// reached the node warns once and goes on: status is not worth holding
// certificates back.
//
// # Files
//
// One job each, in the order a bundle meets them:
//
//   - config.go: Config, Certificate and Validate (defaults and rules);
//     schedule.go: the Schedule type and ParseSchedule; command.go:
//     Command, ParseCommand and running check and reload.
//   - node.go: the Node (New, Sync, Run, Install, ReportStatus);
//     consumer.go: binding the consumer and receiving batches; pacing.go:
//     how Run spreads a fleet's JetStream API requests (the check of the
//     consumer within ReconnectSpread after a reconnect or a missed
//     heartbeat, the jittered backoff of binding again).
//   - process.go: deciding on a batch (authenticate, apply, settle).
//   - stage.go: the Stage and its Staged record; rollout.go: the rollout
//     records it keeps, and what they release.
//   - scheduler.go: when each staged bundle installs, and Run's install
//     loop.
//   - installer.go: one install step by step (build, point, check, reload,
//     the served-certificate check, rollback) and its InstallResult;
//     layout.go: the install folder layout, install_dir's link, the store's
//     lock; records.go: certsync.json and state.json in it; versions.go:
//     building, cleaning up and pruning version folders; verify.go: the
//     served-certificate check.
//   - status.go: the status records; report.go: Report, Result and
//     Scheduled; metrics.go: the metrics.
//   - paths.go: the path-safety rule, opening without following links, the
//     lock; folders.go: creating and syncing folders; errors.go: the
//     sentinels and PermanentError.
package subscriber
