package wire

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/crypto"
)

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
