// Package wire holds what the publisher and the nodes must agree on outside the
// envelope: the JetStream stream, subject, consumer and key/value names, the
// message headers, the rules for certificate and node names, and the status
// record nodes write. These names are part of certsync's outside contract
// (operators address them with the nats CLI), so they change only with it.
//
// The files, one job each: wire.go the stream, subject, consumer, bucket
// and inbox names and the subjects' builders and parsers; names.go the
// rules for certificate and node names; headers.go the message headers;
// stream.go the stream's and the consumers' configuration; status.go the
// status record and its bucket's stream.
package wire

import (
	"fmt"
	"strconv"
	"strings"
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
