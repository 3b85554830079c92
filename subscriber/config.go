package subscriber

import (
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/natsconn"
)

// Config is everything a node needs. The command line builds it from
// node.yaml, already validated: defaults merged into each certificate, names
// checked, keys loaded.
type Config struct {
	// Node is this node's name; its consumer is "node-<Node>".
	Node string
	// NATS says how to reach the servers.
	NATS natsconn.Options
	// Identities open the bundles sealed to this node.
	Identities []age.Identity
	// Trusted are the publisher keys whose signatures this node accepts.
	Trusted []crypto.PublicKey
	// StageDir holds one folder per staged certificate (default /certsync/live).
	StageDir string
	// MetricsListen is the address of the Prometheus endpoint of `node run`;
	// empty turns it off.
	MetricsListen string
	// StatusInterval is how often `node run` refreshes its status records so a
	// silent node shows as stale (default 5m).
	StatusInterval time.Duration
	// Certificates are the certificates this node holds, by name. A bundle for
	// any other name is refused.
	Certificates map[string]Certificate
	// Version is certsync's own version, reported in the status records
	// (the CLI sets it from its build).
	Version string
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Certificate is one certificate's settings on a node, with the node's
// defaults already applied.
type Certificate struct {
	// Name is the certificate's name (certbot's lineage name).
	Name string
	// InstallDir is where the service reads the files
	// (default /etc/letsencrypt/live/<Name>).
	InstallDir string
	// Schedule is "immediate" (the default when empty), "manual", or a
	// five-field cron expression in local time.
	Schedule string
	// Check runs before reload; a failure rolls back. Empty: no check.
	// Check and Reload are split into arguments by ParseCommand; no shell
	// runs them.
	Check string
	// Reload makes the service read the new files. Empty: no reload.
	Reload string
	// Verify, if set, is a HOST:PORT whose TLS server must serve the new
	// certificate after the reload.
	Verify string
	// Owner and Group own the installed files; empty keeps the process's.
	Owner, Group string
	// CertMode is the mode of cert.pem, chain.pem, fullchain.pem and
	// certsync.json (0 means the default 0644).
	CertMode uint32
	// KeyMode is the mode of privkey.pem and combined.pem (0 means the
	// default 0600); never open to others.
	KeyMode uint32
	// Keep is how many installed versions are kept for rollback (default 3).
	Keep int
	// Splay delays a scheduled install by a random time up to Splay, so a
	// fleet does not reload at the same second (default 0).
	Splay time.Duration
	// ExpiryDeadline installs at once, whatever the schedule, when the
	// installed certificate expires within it (a certificate not valid yet
	// still waits for its NotBefore), and then tries a version whose
	// install failed again, 1m doubling to 1h. 0 turns both off; the
	// command line's default is 168h.
	ExpiryDeadline time.Duration
	// CommandTimeout bounds check and reload, each (default 60s).
	CommandTimeout time.Duration
	// VerifyTimeout bounds how long verify waits for the new certificate
	// (default 30s).
	VerifyTimeout time.Duration
	// Combined also installs combined.pem: the full chain followed by the
	// private key, for services such as HAProxy.
	Combined bool
}
