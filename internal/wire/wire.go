// Package wire holds what the publisher and the nodes must agree on outside the
// envelope: the JetStream stream, subject, consumer and key/value names, the
// message headers, the rules for certificate and node names, and the status
// record nodes write. These names are part of certsync's outside contract
// (operators address them with the nats CLI), so they change only with it.
package wire

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
)

// NATS names. See docs/CONTRACT.md, "On NATS".
const (
	// Stream is the JetStream stream that holds every bundle.
	Stream = "CERTSYNC"
	// SubjectPrefix starts every bundle subject; the certificate name follows.
	SubjectPrefix = "certsync.bundle."
	// Subjects is the filter of every bundle subject.
	Subjects = SubjectPrefix + ">"
	// RolloutSubjectPrefix starts every rollout record subject; the
	// certificate name follows. RolloutSubjects is their filter. The
	// stream holds both (StreamConfig); one set up before rollouts holds
	// only Subjects until `certsync setup` adds the rollout subjects.
	RolloutSubjectPrefix = "certsync.rollout."
	RolloutSubjects      = RolloutSubjectPrefix + ">"
	// GroupSubjectPrefix starts every recipient group subject,
	// certsync.group.<k>.<name>: a certificate whose nodes one envelope
	// cannot hold is sealed once per group of nodes, group k (from 0) on
	// its own subject (docs/FORMAT.md, "The recipient group record"). The
	// group number comes before the name, which holds dots. GroupSubjects
	// is their filter; a stream set up before groups lacks it until
	// `certsync setup` adds it.
	GroupSubjectPrefix = "certsync.group."
	GroupSubjects      = GroupSubjectPrefix + ">"
	// MaxGroups is the most recipient groups one certificate is split
	// into: the group record holds the group count in 16 bits, and the
	// publisher reads every group's history.
	MaxGroups = 256
	// StatusBucket is the key/value bucket nodes report into.
	StatusBucket = "certsync-status"
	// StatusStream is the stream behind the status bucket, named as
	// JetStream's key/value layer names it.
	StatusStream = "KV_" + StatusBucket
	// StatusSubjectPrefix starts the subject of every key of the status
	// bucket; StatusSubjects is its stream's subject filter.
	StatusSubjectPrefix = "$KV." + StatusBucket + "."
	StatusSubjects      = StatusSubjectPrefix + ">"
	// ConsumerPrefix starts every node's durable consumer name.
	ConsumerPrefix = "node-"
)

// Message headers. None of them ever carries a secret.
const (
	HeaderMsgID       = "Nats-Msg-Id"
	HeaderName        = "Certsync-Name"
	HeaderSerial      = "Certsync-Serial"      // leaf serial, lowercase hex
	HeaderFingerprint = "Certsync-Fingerprint" // "sha256:" + hex of the leaf's DER
	HeaderNotBefore   = "Certsync-Not-Before"  // RFC 3339, UTC
	HeaderNotAfter    = "Certsync-Not-After"   // RFC 3339, UTC
	HeaderFormat      = "Certsync-Format"      // the envelope's format version, decimal
	HeaderVersion     = "Certsync-Version"     // the bundle's signed version, decimal
	// HeaderRecipients is "sha256:" + hex of the sorted recipient strings the
	// bundle was sealed to, one per line. It is informational only, like
	// every header: republish compares the same digest from the envelope's
	// signed seal record (docs/FORMAT.md), never this header.
	HeaderRecipients = "Certsync-Recipients"
	// HeaderHold is "true" on a bundle sealed with the hold record (it
	// installs only once a rollout record releases it); absent otherwise.
	HeaderHold = "Certsync-Hold"
	// HeaderWithdrawn lists, comma separated in ascending order, the
	// "sha256:" fingerprints of the envelope's withdrawn record (the
	// certificates a rollback took out of service); absent when it has
	// none. Informational, as every header: the publisher reads the signed
	// record, never this header.
	HeaderWithdrawn = "Certsync-Withdrawn"
	// HeaderGroup is "<k>/<count>" on an envelope sealed for recipient
	// group k of count (the envelope's signed group record); absent on an
	// ungrouped one. Informational, as every header.
	HeaderGroup = "Certsync-Group"
	// HeaderRolloutState and HeaderRolloutGeneration are a rollout
	// record's state and generation (with HeaderName, HeaderVersion and
	// HeaderFingerprint of the bundle it releases).
	HeaderRolloutState      = "Certsync-Rollout-State"
	HeaderRolloutGeneration = "Certsync-Rollout-Generation"
	// HeaderRolloutReason is a rollout record's reason (paused, halted or
	// aborted: one line, never a secret), so that `certsync status`, which
	// needs no signing key, can say why a rollout halted. Like every
	// header it is not signed; the record's body is.
	HeaderRolloutReason = "Certsync-Rollout-Reason"
)

// Inbox prefixes. A client receives every reply (JetStream API answers,
// pulled messages) on subjects under its inbox prefix; giving each client its
// own lets the server's permissions give each its own replies only (see
// internal/authconf). subscriber.New and publisher.New apply them when
// natsconn.Options.InboxPrefix is empty.
const (
	// PublisherInboxPrefix is the publisher's inbox prefix.
	PublisherInboxPrefix = "_INBOX_certsync_publisher"
	// NodeInboxPrefixPrefix starts every node's inbox prefix; the node's
	// name follows (see NodeInboxPrefix).
	NodeInboxPrefixPrefix = "_INBOX_certsync_node_"
	// AdminInboxPrefix is the NATS client's own default prefix, which the
	// admin (allowed everything in the account) uses.
	AdminInboxPrefix = "_INBOX"
)

// NodeInboxPrefix is the inbox prefix of the named node.
// node must have passed CheckNodeName.
func NodeInboxPrefix(node string) string { return NodeInboxPrefixPrefix + node }

// Limits on names, from the contract.
const (
	MaxCertNameLen = 253
	MaxNodeNameLen = 64
)

// A nameRule is what one kind of name must be: not empty, at most max
// bytes, and matching re, which allowed says in words. An error quotes at
// most shown bytes of a name too long.
type nameRule struct {
	kind    string
	max     int
	shown   int
	re      *regexp.Regexp
	allowed string
}

var (
	certName = nameRule{kind: "certificate", max: MaxCertNameLen, shown: 32,
		re: regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`), allowed: "letters, digits, '.', '_' or '-'"}
	nodeName = nameRule{kind: "node", max: MaxNodeNameLen, shown: 16,
		re: regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`), allowed: "letters, digits, '_' or '-'"}
)

// check reports why name breaks the rule, or nil.
func (r nameRule) check(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("invalid %s name %q: empty", r.kind, name)
	case len(name) > r.max:
		return fmt.Errorf("invalid %s name %q: longer than %d bytes", r.kind, name[:r.shown]+"…", r.max)
	case !r.re.MatchString(name):
		return fmt.Errorf("invalid %s name %q: want %s, starting with a letter or digit", r.kind, name, r.allowed)
	}
	return nil
}

// CheckCertName reports why name is not a valid certificate name, or nil.
// A valid name is safe as a path element and as subject tokens.
func CheckCertName(name string) error {
	if err := certName.check(name); err != nil {
		return err
	}
	switch {
	case strings.Contains(name, ".."):
		return fmt.Errorf("invalid certificate name %q: contains \"..\"", name)
	case strings.HasSuffix(name, "."):
		return fmt.Errorf("invalid certificate name %q: ends with '.'", name)
	}
	return nil
}

// CheckNodeName reports why name is not a valid node name, or nil.
func CheckNodeName(name string) error { return nodeName.check(name) }

// Subject is the subject a certificate's bundles are published on.
// name must have passed CheckCertName.
func Subject(name string) string { return SubjectPrefix + name }

// NameFromSubject returns the certificate name of a bundle subject, checked.
func NameFromSubject(subject string) (string, error) {
	return nameAfter(subject, SubjectPrefix, "bundle")
}

// nameAfter returns the certificate name that follows prefix in subject,
// checked; an error says subject is not a subject of that kind.
func nameAfter(subject, prefix, kind string) (string, error) {
	name, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return "", fmt.Errorf("subject %q is not a %s subject", subject, kind)
	}
	if err := CheckCertName(name); err != nil {
		return "", err
	}
	return name, nil
}

// GroupSubject is the subject of recipient group k's envelopes of a
// certificate. name must have passed CheckCertName, k is in 0..MaxGroups-1.
func GroupSubject(k int, name string) string {
	return GroupSubjectPrefix + strconv.Itoa(k) + "." + name
}

// GroupSubjectsOf is the filter of every recipient group subject of a
// certificate, certsync.group.*.<name>. name must have passed
// CheckCertName.
func GroupSubjectsOf(name string) string { return GroupSubjectPrefix + "*." + name }

// BundleSubjectsOf are the subject filters of every envelope of a
// certificate: its bundle subject and its group subjects.
func BundleSubjectsOf(name string) []string { return []string{Subject(name), GroupSubjectsOf(name)} }

// ParseBundleSubject returns the certificate name and the recipient group
// of a subject that holds envelopes: a bundle subject (group -1) or a
// group subject certsync.group.<k>.<name> (k decimal, no leading zero,
// below MaxGroups), the name checked.
func ParseBundleSubject(subject string) (name string, group int, err error) {
	if name, err := NameFromSubject(subject); err == nil {
		return name, -1, nil
	}
	rest, ok := strings.CutPrefix(subject, GroupSubjectPrefix)
	if !ok {
		return "", 0, fmt.Errorf("subject %q is not a bundle or group subject", subject)
	}
	num, name, _ := strings.Cut(rest, ".")
	k, err := strconv.Atoi(num)
	if err != nil || k < 0 || k >= MaxGroups || strconv.Itoa(k) != num {
		return "", 0, fmt.Errorf("subject %q: group %q is not a number from 0 to %d", subject, num, MaxGroups-1)
	}
	if err := CheckCertName(name); err != nil {
		return "", 0, err
	}
	return name, k, nil
}

// RolloutSubject is the subject of a certificate's rollout records.
// name must have passed CheckCertName.
func RolloutSubject(name string) string { return RolloutSubjectPrefix + name }

// NameFromRolloutSubject returns the certificate name of a rollout record
// subject, checked.
func NameFromRolloutSubject(subject string) (string, error) {
	return nameAfter(subject, RolloutSubjectPrefix, "rollout")
}

// ConsumerName is the name of a node's durable consumer.
func ConsumerName(node string) string { return ConsumerPrefix + node }

// StatusKey is a node's key for one certificate in the status bucket.
func StatusKey(node, cert string) string { return node + "." + cert }

// SplitStatusKey splits a status key into node and certificate names.
func SplitStatusKey(key string) (node, cert string, err error) {
	node, cert, ok := strings.Cut(key, ".")
	if !ok || CheckNodeName(node) != nil || CheckCertName(cert) != nil {
		return "", "", fmt.Errorf("invalid status key %q", key)
	}
	return node, cert, nil
}

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

// Node states in a status record.
const (
	StateInstalled = "installed"
	StateStaged    = "staged"
	StateFailed    = "failed"
	StateMissing   = "missing"
	StateStale     = "stale"
)

// How a staged bundle stands to a rollout, in Status.Rollout.
const (
	// RolloutWaiting: held, not released to this node yet.
	RolloutWaiting = "waiting"
	// RolloutReleased: held and released to this node.
	RolloutReleased = "released"
	// RolloutExpiry: held and not released, but installed anyway because
	// the installed certificate reaches its expiry deadline.
	RolloutExpiry = "expiry"
)

// Kinds of error in a status record.
const (
	// ErrorKindBundle is the last refusal or failure of a bundle (or of
	// the node's stage folder, which stops it taking bundles): it holds
	// until a later bundle is staged, across restarts of the node.
	ErrorKindBundle = "bundle"
	// ErrorKindInstall is the failure of an install, or of reading what
	// is installed: the node's install state on disk says whether it
	// still holds.
	ErrorKindInstall = "install"
	// ErrorKindStage is a staged record the node cannot read.
	ErrorKindStage = "stage"
)

// Status is the record a node keeps under StatusKey(node, cert) in the status
// bucket. It never holds key material: only public facts about certificates
// and the text of the last error, which is built to hold no secret.
type Status struct {
	Node        string `json:"node"`
	Certificate string `json:"certificate"`
	State       string `json:"state"`

	StagedVersion     uint64    `json:"staged_version,omitempty"`
	StagedSerial      string    `json:"staged_serial,omitempty"`
	StagedFingerprint string    `json:"staged_fingerprint,omitempty"`
	StagedNotAfter    time.Time `json:"staged_not_after,omitzero"`

	InstalledVersion     uint64    `json:"installed_version,omitempty"`
	InstalledSerial      string    `json:"installed_serial,omitempty"`
	InstalledFingerprint string    `json:"installed_fingerprint,omitempty"`
	InstalledNotAfter    time.Time `json:"installed_not_after,omitzero"`
	InstalledAt          time.Time `json:"installed_at,omitzero"`
	// InstallAt is when the node will install the staged bundle on its
	// own: its schedule's window, its NotBefore (a certificate not valid
	// yet waits for it), or the next retry of a failed install. Zero when
	// nothing waits to be installed, or it waits for `node install`.
	InstallAt time.Time `json:"install_at,omitzero"`

	// Rollout says how the staged bundle stands to a rollout: "" (not
	// held), RolloutWaiting, RolloutReleased or RolloutExpiry; with the
	// generation of the newest rollout record the node holds for it.
	Rollout           string `json:"rollout,omitempty"`
	RolloutGeneration uint64 `json:"rollout_generation,omitempty"`
	// Verified is true when the installed version passed the node's
	// served-certificate check (verify:); false without one.
	Verified bool `json:"verified,omitempty"`
	// FailedVersion and FailedFingerprint are the version whose install
	// failed and is held back (not tried again on its own), when one is.
	FailedVersion     uint64 `json:"failed_version,omitempty"`
	FailedFingerprint string `json:"failed_fingerprint,omitempty"`
	// FailedGeneration is the generation of the rollout record under
	// which that install failed (0: not held, or a node from before it
	// was reported), so the controller tells a failure under the
	// current release from one under an earlier (a resume).
	FailedGeneration uint64 `json:"failed_generation,omitempty"`
	// Schedule is the certificate's schedule as configured ("immediate",
	// "manual" or a cron expression), NextWindow the next time it lets the
	// node install (cron schedules only), Splay the most it delays a
	// scheduled install (a Go duration, "" for none), and ExpiryDeadline
	// (a Go duration, "0s" off): what `certsync plan` needs to say what
	// the node will do with a bundle it has not received yet.
	Schedule       string    `json:"schedule,omitempty"`
	NextWindow     time.Time `json:"next_window,omitzero"`
	Splay          string    `json:"splay,omitempty"`
	ExpiryDeadline string    `json:"expiry_deadline,omitempty"`
	Error          string    `json:"error"`
	ErrorTime      time.Time `json:"error_time,omitzero"`
	// ErrorKind says where Error comes from, and so how long it holds:
	// ErrorKindBundle, ErrorKindInstall or ErrorKindStage. Empty when
	// Error is, and in records written before it existed.
	ErrorKind string    `json:"error_kind,omitempty"`
	LastSeen  time.Time `json:"last_seen"`
	Version   string    `json:"certsync_version,omitempty"`
}

// SetStaged fills the Staged fields of s from r.
func (s *Status) SetStaged(r crypto.Release) {
	s.StagedVersion, s.StagedSerial, s.StagedFingerprint, s.StagedNotAfter = r.Version, r.Serial, r.Fingerprint.String(), r.NotAfter
}

// SetInstalled fills the Installed fields of s (but InstalledAt) from r.
func (s *Status) SetInstalled(r crypto.Release) {
	s.InstalledVersion, s.InstalledSerial, s.InstalledFingerprint, s.InstalledNotAfter = r.Version, r.Serial, r.Fingerprint.String(), r.NotAfter
}

// Staged is the release s says is staged; zero when none. A fingerprint
// that does not parse (a record is the node's word, not signed) is zero.
func (s *Status) Staged() crypto.Release {
	return release(s.StagedVersion, s.StagedSerial, s.StagedFingerprint, s.StagedNotAfter)
}

// Installed is the release s says is installed; zero when none, and a
// fingerprint that does not parse zero, as for Staged.
func (s *Status) Installed() crypto.Release {
	return release(s.InstalledVersion, s.InstalledSerial, s.InstalledFingerprint, s.InstalledNotAfter)
}

func release(version uint64, serial, fingerprint string, notAfter time.Time) crypto.Release {
	fp, _ := crypto.ParseFingerprint(fingerprint)
	return crypto.Release{Version: version, Serial: serial, Fingerprint: fp, NotAfter: notAfter}
}

// Status bucket limits. A record is well under 2 KiB; the bucket's total
// bound keeps a stolen node credential, which may write any number of keys
// under its own prefix, from filling the server's storage. When it is full,
// status writes fail; bundles and installs go on.
const (
	MaxStatusValueSize = 16 << 10
	MaxStatusBytes     = 256 << 20
)

// StatusDuplicateWindow is the status stream's duplicate window, the one
// JetStream's key/value layer gives a bucket without a TTL.
const StatusDuplicateWindow = 2 * time.Minute

// StatusStreamConfig is the configuration of the stream behind the status
// bucket: one value per key (history 1), bounded, replicated like the
// stream, laid out as JetStream's key/value layer lays out a bucket
// (subjects, direct gets, discard new), so that js.KeyValue and the nats
// CLI's kv commands work on it.
//
// It is not made with CreateKeyValue, which turns roll-ups on for every
// bucket: with them, one put to a node's own key with the header
// "Nats-Rollup: all" would wipe every node's record. The stream refuses
// roll-ups, purges and message deletes instead. A key is still deleted the
// key/value way, with a delete marker (nats kv del, KeyValue.Delete), which
// is an ordinary put; KeyValue.Purge and nats kv purge, which roll up, are
// refused.
func StatusStreamConfig(replicas int) jetstream.StreamConfig {
	if replicas <= 0 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:              StatusStream,
		Description:       "certsync: what each node holds, one key per node and certificate",
		Subjects:          []string{StatusSubjects},
		Storage:           jetstream.FileStorage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardNew,
		MaxMsgsPerSubject: 1,
		MaxBytes:          MaxStatusBytes,
		MaxMsgSize:        MaxStatusValueSize,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Duplicates:        StatusDuplicateWindow,
		Replicas:          replicas,
		AllowDirect:       true,
		DenyDelete:        true,
		DenyPurge:         true,
		AllowRollup:       false,
	}
}
