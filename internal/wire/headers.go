package wire

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
