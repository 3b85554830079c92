package subscriber

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// Defaults of the Config and Certificate fields left zero, and the limits
// Validate holds them to. These are the only copies: node.yaml's defaults
// are these.
const (
	DefaultStageDir       = "/certsync/live"
	DefaultStatusInterval = 5 * time.Minute
	// MinStatusInterval is the shortest StatusInterval.
	MinStatusInterval = time.Second

	DefaultInstallParent  = "/etc/letsencrypt/live"
	DefaultCertMode       = 0o644
	DefaultKeyMode        = 0o600
	DefaultKeep           = 3
	DefaultExpiryDeadline = 168 * time.Hour
	DefaultCommandTimeout = 60 * time.Second
	DefaultVerifyTimeout  = 30 * time.Second
	// MaxKeep is the most installed versions a certificate may keep.
	MaxKeep = 50
	// MaxOwnerLen bounds Owner and Group.
	MaxOwnerLen = 256
)

// ExpiryDeadlineOff, as Certificate.ExpiryDeadline, turns the expiry
// deadline off (node.yaml's "expiry_deadline: 0s").
const ExpiryDeadlineOff time.Duration = -1

// FieldError is a setting Validate refused: its Path names the setting as
// node.yaml writes it ("certificates.example.com.keep", "stage_dir").
type FieldError = field.Error

// Config is everything a node needs. Validate (which New calls) applies the
// defaults of the fields left zero and refuses settings the node cannot
// follow; the command line builds it from node.yaml and calls Validate too.
type Config struct {
	// Node is this node's name; its consumer is "node-<Node>".
	Node string
	// NATS says how to reach the servers. Name defaults to
	// "certsync node <Node>", InboxPrefix to wire.NodeInboxPrefix(Node),
	// the inbox `certsync auth` permits this node alone. Validate holds them to
	// natsconn.Options.Validate.
	NATS natsconn.Options
	// Identities open the bundles sealed to this node. New requires at
	// least one; Validate does not look at them, so a configuration can be
	// checked before its keys are loaded.
	Identities []age.Identity
	// Trusted are the publisher keys whose signatures this node accepts;
	// at least one.
	Trusted []crypto.PublicKey
	// StageDir holds one folder per staged certificate: a clean absolute
	// path (default /certsync/live), which overlaps no certificate's
	// InstallDir nor its install store (InstallStore).
	StageDir string
	// MetricsListen is the HOST:PORT (or :PORT) of the Prometheus endpoint
	// of `node run`; empty turns it off.
	MetricsListen string
	// StatusInterval is how often `node run` refreshes its status records so a
	// silent node shows as stale (default 5m, at least MinStatusInterval).
	StatusInterval time.Duration
	// Certificates are the certificates this node holds, by name; at least
	// one. A bundle for any other name is refused.
	Certificates map[string]Certificate
	// Version is certsync's own version, reported in the status records
	// (the CLI sets it from its build).
	Version string
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Certificate is one certificate's settings on a node. Fields left zero
// take the defaults Config.Validate applies.
type Certificate struct {
	// Name is the certificate's name (certbot's lineage name); empty, or
	// the name it is filed under in Config.Certificates.
	Name string
	// InstallDir is where the service reads the files: a clean absolute
	// path (default /etc/letsencrypt/live/<Name>). Certsync keeps the
	// versions in its install store beside it (InstallStore). No two
	// certificates' install_dirs may nest, nor one nest with another's
	// store or the stage folder.
	InstallDir string
	// Schedule says when a staged bundle is installed; the zero value is
	// immediate. See ParseSchedule.
	Schedule Schedule
	// Check runs before reload; a failure rolls back. Zero: no check.
	// See ParseCommand; no shell runs it.
	Check Command
	// Reload makes the service read the new files. Zero: no reload.
	Reload Command
	// Verify, if set, is a HOST:PORT whose TLS server must serve the new
	// certificate after the reload.
	Verify string
	// Owner and Group own the installed files, a name or a numeric id;
	// empty keeps the process's.
	Owner, Group string
	// CertMode is the mode of cert.pem, chain.pem and fullchain.pem
	// (default 0644); never group- or other-writable.
	CertMode uint32
	// KeyMode is the mode of privkey.pem and combined.pem (default 0600);
	// never open to others.
	KeyMode uint32
	// Keep is how many installed versions are kept for rollback, 1 to
	// MaxKeep (default 3).
	Keep int
	// Splay delays a scheduled install by a random time up to Splay, so a
	// fleet does not reload at the same second (default 0).
	Splay time.Duration
	// ExpiryDeadline installs at once, whatever the schedule, when the
	// installed certificate expires within it (a certificate not valid yet
	// still waits for its NotBefore), and then tries a version whose
	// install failed again, 1m doubling to 1h. Zero means the default,
	// 168h; ExpiryDeadlineOff turns both off.
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

// Validate applies the defaults of the fields left zero, in c and in each
// of its certificates (it writes them back into c.Certificates), and
// refuses settings the node cannot follow. The error is a *FieldError
// naming the first setting at fault, certificates in the order of their
// names.
func (c *Config) Validate() error {
	if err := wire.CheckNodeName(c.Node); err != nil {
		return field.Wrap("name", err)
	}
	if c.NATS.Name == "" {
		c.NATS.Name = "certsync node " + c.Node
	}
	if c.NATS.InboxPrefix == "" {
		c.NATS.InboxPrefix = wire.NodeInboxPrefix(c.Node)
	}
	if err := c.NATS.Validate(); err != nil {
		return err // a *FieldError under "nats"
	}
	if len(c.Trusted) == 0 {
		return field.Errorf("trusted_publishers", "empty: list at least one publisher key")
	}
	if c.StageDir == "" {
		c.StageDir = DefaultStageDir
	}
	if err := checkDir(c.StageDir); err != nil {
		return field.Wrap("stage_dir", err)
	}
	if c.MetricsListen != "" {
		if err := checkHostPort(c.MetricsListen, true); err != nil {
			return field.Wrap("metrics_listen", err)
		}
	}
	switch {
	case c.StatusInterval == 0:
		c.StatusInterval = DefaultStatusInterval
	case c.StatusInterval < MinStatusInterval:
		return field.Errorf("status_interval", "want %v or more, got %v", MinStatusInterval, c.StatusInterval)
	}
	if len(c.Certificates) == 0 {
		return field.Errorf("certificates", "none: add at least one certificate")
	}
	names := slices.Sorted(maps.Keys(c.Certificates))
	installs := make([]string, 0, len(names)) // the install_dirs checked so far, by names
	for _, name := range names {
		cert := c.Certificates[name]
		if err := cert.validate(name); err != nil {
			return err
		}
		if err := checkOverlaps(c.StageDir, cert, names[:len(installs)], installs); err != nil {
			return err
		}
		installs = append(installs, cert.InstallDir)
		c.Certificates[name] = cert
	}
	return nil
}

// validate applies the defaults of c, the certificate filed under name,
// and checks each setting on its own.
func (c *Certificate) validate(name string) error {
	p := field.Join("certificates", name)
	if err := wire.CheckCertName(name); err != nil {
		return field.Wrap("certificates", err)
	}
	if c.Name != "" && c.Name != name {
		return field.Errorf(p, "certificate %q has name %q", name, c.Name)
	}
	c.Name = name
	if c.InstallDir == "" {
		c.InstallDir = filepath.Join(DefaultInstallParent, name)
	}
	if err := checkDir(c.InstallDir); err != nil {
		return field.Wrap(field.Join(p, "install_dir"), err)
	}
	if c.Verify != "" {
		if err := checkHostPort(c.Verify, false); err != nil {
			return field.Wrap(field.Join(p, "verify"), err)
		}
	}
	if err := checkOwner(c.Owner); err != nil {
		return field.Wrap(field.Join(p, "owner"), err)
	}
	if err := checkOwner(c.Group); err != nil {
		return field.Wrap(field.Join(p, "group"), err)
	}
	if err := checkMode(&c.CertMode, DefaultCertMode, 0o022, "group- or other-writable"); err != nil {
		return field.Wrap(field.Join(p, "cert_mode"), err)
	}
	if err := checkMode(&c.KeyMode, DefaultKeyMode, 0o007, "open to others"); err != nil {
		return field.Wrap(field.Join(p, "key_mode"), err)
	}
	switch {
	case c.Keep == 0:
		c.Keep = DefaultKeep
	case c.Keep < 1 || c.Keep > MaxKeep:
		return field.Errorf(field.Join(p, "keep"), "want an integer from 1 to %d, got %d", MaxKeep, c.Keep)
	}
	if c.Splay < 0 {
		return field.Errorf(field.Join(p, "splay"), "want a duration of 0s or more, got %v", c.Splay)
	}
	switch {
	case c.ExpiryDeadline == 0:
		c.ExpiryDeadline = DefaultExpiryDeadline
	case c.ExpiryDeadline < 0 && c.ExpiryDeadline != ExpiryDeadlineOff:
		return field.Errorf(field.Join(p, "expiry_deadline"), "want a positive duration (or ExpiryDeadlineOff), got %v", c.ExpiryDeadline)
	}
	if err := checkTimeout(&c.CommandTimeout, DefaultCommandTimeout); err != nil {
		return field.Wrap(field.Join(p, "command_timeout"), err)
	}
	if err := checkTimeout(&c.VerifyTimeout, DefaultVerifyTimeout); err != nil {
		return field.Wrap(field.Join(p, "verify_timeout"), err)
	}
	return nil
}

// checkTimeout applies def to a zero *d and refuses a negative one.
func checkTimeout(d *time.Duration, def time.Duration) error {
	switch {
	case *d == 0:
		*d = def
	case *d < 0:
		return fmt.Errorf("want a positive duration, got %v", *d)
	}
	return nil
}

// checkOverlaps refuses what c's installs write overlapping the stage folder
// or what the certificates checked before it (others, with their
// install_dirs dirs) write: install_dir, and the install store beside it (<parent>/.certsync,
// shared by the certificates of one parent). A stage swapped or cleaned up
// in the store, or versions pruned in the stage, would lose keys.
func checkOverlaps(stageDir string, c Certificate, others, dirs []string) error {
	p := field.Join("certificates", c.Name)
	store := InstallStore(c.InstallDir)
	switch {
	case nested(c.InstallDir, stageDir):
		return field.Errorf(p, "install_dir %q overlaps stage_dir %q", c.InstallDir, stageDir)
	case nested(store, stageDir):
		return field.Errorf(p, "stage_dir %q overlaps the install store %q that install_dir %q keeps its versions in", stageDir, store, c.InstallDir)
	case nested(c.InstallDir, store):
		return field.Errorf(p, "install_dir %q overlaps its own install store %q", c.InstallDir, store)
	}
	for i, dir := range dirs {
		other := others[i]
		switch otherStore := InstallStore(dir); {
		case nested(c.InstallDir, dir):
			return field.Errorf(p, "install_dir %q overlaps certificate %q's %q", c.InstallDir, other, dir)
		case nested(c.InstallDir, otherStore):
			return field.Errorf(p, "install_dir %q overlaps certificate %q's install store %q", c.InstallDir, other, otherStore)
		case nested(dir, store):
			return field.Errorf(p, "install_dir %q keeps its versions in %q, which overlaps certificate %q's install_dir %q", c.InstallDir, store, other, dir)
		}
	}
	return nil
}

// nested reports whether one of the clean absolute paths a and b is the
// other or holds it.
func nested(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// checkDir accepts a clean absolute path other than the root.
func checkDir(dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("want a clean absolute path below /, got %q", dir)
	}
	return nil
}

// checkMode applies def to a zero *mode and refuses a mode beyond 0777 or
// with a forbidden bit (why says what it would be).
func checkMode(mode *uint32, def, forbidden uint32, why string) error {
	switch m := *mode; {
	case m == 0:
		*mode = def
	case m > 0o777:
		return fmt.Errorf("want an octal mode from 0000 to 0777, got %04o", m)
	case m&forbidden != 0:
		return fmt.Errorf("mode %04o is %s", m, why)
	}
	return nil
}

// checkOwner accepts empty, a user or group name, or a numeric id; it is
// resolved when files are installed.
func checkOwner(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxOwnerLen || strings.HasPrefix(s, "-") ||
		strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == ':' || r == '/' || r == 0x7f }) {
		return fmt.Errorf("want a name or a numeric id, got %q", s)
	}
	return nil
}

// checkHostPort checks a HOST:PORT address with a numeric port. listen
// allows ":PORT" (every interface) and port 0.
func checkHostPort(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want HOST:PORT, got %q", s)
	}
	if host == "" && !listen {
		return fmt.Errorf("want HOST:PORT, got %q: no host", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 && !listen {
		return fmt.Errorf("want HOST:PORT with a numeric port from 1 to 65535, got %q", s)
	}
	return nil
}
