package main

// The configuration files, read strictly: an unknown key, a value of the
// wrong type, a duplicate key, a second YAML document, an anchor or an alias
// is an error naming the line and the key. Every error is one line:
//
//	reading config "/etc/certsync/node.yaml": line 7: certificates.example.com: unknown key "instal_dir" (did you mean "install_dir"?)
//
// Relative paths are taken relative to the working directory.
//
// publisher.yaml, on the management host (default /etc/certsync/publisher.yaml):
//
//	nats:                          # optional; how to reach NATS
//	  url: nats://mgmt.example.net:4222   # default nats://127.0.0.1:4222; several servers comma-separated;
//	                               # schemes nats, tls, ws, wss, or a bare HOST:PORT
//	  creds: /etc/certsync/publisher.creds  # JWT credentials file; at most one of creds, nkey, user+password
//	  nkey: /etc/certsync/publisher.nk      # file holding an nkey seed (as `certsync auth` writes)
//	  user: certsync               # user and password go together
//	  password: "…"
//	  tls:                         # optional
//	    ca: /etc/certsync/ca.pem   # private CA that signed the servers' certificates
//	    cert: /etc/certsync/client.pem   # client certificate; cert and key go together
//	    key: /etc/certsync/client.key
//	signing_key: /etc/certsync/signing.key   # required; Ed25519 key from `certsync keygen signing`, 0600
//	lineages: /etc/letsencrypt/live          # default; where republish finds each certificate's lineage
//	nodes:                         # node name -> age recipient; names: letters, digits, '_', '-'
//	  web1: age1…                  # from `certsync keygen node`
//	  web2: ssh-ed25519 AAAA…      # or the node's SSH host key (ssh-ed25519 or ssh-rsa)
//	certificates:                  # required, at least one; certificate (certbot lineage) name -> node names
//	  example.com: [web1, web2]    # at least one node, each listed under nodes
//	stream:                        # optional; the CERTSYNC stream, applied when publish creates it
//	  replicas: 1                  # 1..5 (default 1); 3 or 5 in a cluster
//	  history: 5                   # bundles kept per certificate, 1..100 (default 5)
//	  duplicate_window: 24h        # a repeated publish within it is dropped (default 24h)
//	timeout: 30s                   # how long publish keeps trying to reach NATS and store a bundle (default 30s)
//
// A node listed under nodes but in no certificate is allowed. Two nodes may not
// share a recipient.
//
// node.yaml, on every node (default /etc/certsync/node.yaml):
//
//	name: web1                     # required; this node's name, as in the publisher's nodes
//	nats: {url: nats://mgmt.example.net:4222, nkey: /etc/certsync/web1.nk}   # as for the publisher
//	identity: /etc/certsync/node.key   # required; age identity file from `certsync keygen node`,
//	                               # or an OpenSSH private key such as /etc/ssh/ssh_host_ed25519_key
//	trusted_publishers:            # required, at least one; public keys printed by `certsync keygen signing`;
//	  - "…"                        # several allow rotating the signing key
//	stage_dir: /certsync/live      # default; absolute; staged bundles, one folder per certificate
//	metrics_listen: 127.0.0.1:9469 # optional; Prometheus metrics of `node run`; off when absent
//	status_interval: 5m            # default 5m; how often `node run` refreshes its status records
//	defaults:                      # optional; any per-certificate key below, for every certificate
//	  reload: systemctl reload nginx
//	certificates:                  # required, at least one; certificate name -> settings (may be empty)
//	  example.com:
//	    install_dir: /etc/letsencrypt/live/example.com   # absolute; default /etc/letsencrypt/live/<name>;
//	                               # may not share or nest with another's, nor with stage_dir;
//	                               # stage_dir may not nest with <its parent>/.certsync either
//	    schedule: "0 3 * * *"      # immediate (default) | manual | five cron fields
//	                               # (minute hour day-of-month month day-of-week), local time;
//	                               # no @descriptors, no seconds field, no TZ=
//	    check: nginx -t            # optional; must pass before reload; a failure rolls back
//	    reload: systemctl reload nginx   # optional; makes the service read the new files
//	    verify: 127.0.0.1:443      # optional HOST:PORT; after reload its TLS server must serve the new certificate
//	    owner: root                # optional; user name or numeric id of the installed files
//	    group: ssl-cert            # optional; group name or numeric id
//	    cert_mode: "0644"          # octal as chmod reads it, quoted or not (default 0644); never group- or other-writable
//	    key_mode: "0600"           # octal (default 0600); never readable, writable or executable by others
//	    keep: 3                    # installed versions kept for rollback, 1..50 (default 3)
//	    splay: 0s                  # random delay up to this before a scheduled install (default 0s)
//	    expiry_deadline: 168h      # install at once, whatever the schedule, when the installed
//	                               # certificate expires within it (default 168h; 0s turns it off)
//	    command_timeout: 60s       # bounds check and reload (default 60s)
//	    verify_timeout: 30s        # how long verify waits for the new certificate (default 30s)
//	    combined: false            # also install combined.pem (full chain + key) for HAProxy (default false)
//
// Each certificate's settings are the built-in defaults, overridden by
// defaults, overridden by the certificate's own entry. Durations are Go
// durations ("90s", "5m", "168h").

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// Where the commands look for their configuration when neither --config nor
// CERTSYNC_CONFIG names a file.
const (
	DefaultPublisherConfig = "/etc/certsync/publisher.yaml"
	DefaultNodeConfig      = "/etc/certsync/node.yaml"
)

// configEnv names the configuration file when --config is not given.
const configEnv = "CERTSYNC_CONFIG"

// maxConfigSize bounds a configuration file.
const maxConfigSize = 1 << 20

// Built-in defaults of the configuration.
const (
	defaultLineages        = "/etc/letsencrypt/live"
	defaultInstallParent   = "/etc/letsencrypt/live"
	defaultStageDir        = "/certsync/live"
	defaultTimeout         = 30 * time.Second
	defaultStatusInterval  = 5 * time.Minute
	defaultSchedule        = "immediate"
	defaultCertMode        = 0o644
	defaultKeyMode         = 0o600
	defaultKeep            = 3
	defaultExpiryDeadline  = 168 * time.Hour
	defaultCommandTimeout  = 60 * time.Second
	defaultVerifyTimeout   = 30 * time.Second
	defaultStreamReplicas  = 1
	maxStreamReplicas      = 5
	maxStreamHistory       = 100
	maxKeep                = 50
	publisherClientName    = "certsync publisher"
	nodeClientNamePrefix   = "certsync node "
	scheduleImmediate      = "immediate"
	scheduleManual         = "manual"
	maxOwnerLen            = 256
	maxDurationConfigValue = 100 * 365 * 24 * time.Hour
)

// Keys of each mapping, in the order the schema above lists them.
var (
	publisherKeys = []string{"nats", "signing_key", "lineages", "nodes", "certificates", "stream", "timeout"}
	nodeKeys      = []string{"name", "nats", "identity", "trusted_publishers", "stage_dir", "metrics_listen", "status_interval", "defaults", "certificates"}
	natsKeys      = []string{"url", "creds", "nkey", "user", "password", "tls"}
	tlsKeys       = []string{"ca", "cert", "key"}
	streamKeys    = []string{"replicas", "history", "duplicate_window"}
	certKeys      = []string{"install_dir", "schedule", "check", "reload", "verify", "owner", "group", "cert_mode", "key_mode", "keep", "splay", "expiry_deadline", "command_timeout", "verify_timeout", "combined"}
)

// configPath returns the configuration file to read: the --config flag's
// value, else $CERTSYNC_CONFIG, else defaultPath.
func configPath(flagValue, defaultPath string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv(configEnv); env != "" {
		return env
	}
	return defaultPath
}

// loadPublisherConfig reads, validates and completes publisher.yaml at path,
// loading the signing key. A key file others may read fails with an error
// matching crypto.ErrKeyPermissions.
func loadPublisherConfig(path string) (*publisher.Config, error) {
	f, err := readPublisherFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := f.loadKeys()
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	return cfg, nil
}

// loadPublisherConfigWithoutKey reads and validates publisher.yaml at path
// like loadPublisherConfig but leaves SigningKey nil, for the commands that
// never sign (inspect, status, auth) so they run without access to the key.
func loadPublisherConfigWithoutKey(path string) (*publisher.Config, error) {
	f, err := readPublisherFile(path)
	if err != nil {
		return nil, err
	}
	cfg := f.config
	return &cfg, nil
}

// readPublisherFile reads and parses publisher.yaml at path.
func readPublisherFile(path string) (*publisherFile, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	f, err := parsePublisherFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	return f, nil
}

// loadNodeConfig reads, validates and completes node.yaml at path, loading
// the node's identities. A key file others may read fails with an error
// matching crypto.ErrKeyPermissions.
func loadNodeConfig(path string) (*subscriber.Config, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, err
	}
	f, err := parseNodeFile(data)
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	cfg, err := f.loadKeys()
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	return cfg, nil
}

// readConfigFile reads at most maxConfigSize bytes of the file at path.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, unwrapPathError(err))
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("reading config %q: larger than %d bytes", path, maxConfigSize)
	}
	return data, nil
}

// unwrapPathError drops the operation and path of a *fs.PathError, which the
// caller's message already names.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// publisherFile is publisher.yaml, parsed and validated, before its key is
// loaded.
type publisherFile struct {
	// config is complete but for SigningKey.
	config publisher.Config
	// signingKey is the path of the signing key, given on signingKeyLine.
	signingKey     string
	signingKeyLine int
	// natsLines are the lines of the NATS secret files, by natsconn.KeyFile key.
	natsLines map[string]int
}

// nodeFile is node.yaml, parsed and validated, before its identities are
// loaded.
type nodeFile struct {
	// config is complete but for Identities.
	config subscriber.Config
	// identity is the path of the identity file, given on identityLine.
	identity     string
	identityLine int
	// natsLines are the lines of the NATS secret files, by natsconn.KeyFile key.
	natsLines map[string]int
}

// loadKeys loads the signing key and returns the complete configuration.
func (f *publisherFile) loadKeys() (*publisher.Config, error) {
	key, err := crypto.LoadSigningKey(f.signingKey)
	if err != nil {
		return nil, &configError{line: f.signingKeyLine, path: "signing_key", err: err}
	}
	if err := checkNATSKeyFiles(f.config.NATS, f.natsLines); err != nil {
		return nil, err
	}
	cfg := f.config
	cfg.SigningKey = key
	return &cfg, nil
}

// loadKeys loads the node's identities and returns the complete configuration.
func (f *nodeFile) loadKeys() (*subscriber.Config, error) {
	ids, err := crypto.LoadIdentities(f.identity)
	if err != nil {
		return nil, &configError{line: f.identityLine, path: "identity", err: err}
	}
	if err := checkNATSKeyFiles(f.config.NATS, f.natsLines); err != nil {
		return nil, err
	}
	cfg := f.config
	cfg.Identities = ids
	return &cfg, nil
}

// checkNATSKeyFiles applies the rule of every key file to the NATS secret
// files (nkey seed, creds, TLS key) when the configuration is loaded, so a
// file others may read is refused before any work, at its line. A missing
// file is left to the connection, which refuses it too (natsconn checks
// every one again when it connects): `node install` needs no NATS and
// installs without the seed deployed.
func checkNATSKeyFiles(o natsconn.Options, lines map[string]int) error {
	for _, kf := range o.KeyFiles() {
		if err := crypto.CheckKeyFile(kf.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return &configError{line: lines[kf.Key], path: "nats." + kf.Key, err: err}
		}
	}
	return nil
}

// configError is an error at a line of the configuration, about the key at
// path (dotted, empty for the top level).
type configError struct {
	line int
	path string
	err  error
}

func (e *configError) Error() string {
	if e.path == "" {
		return fmt.Sprintf("line %d: %v", e.line, e.err)
	}
	return fmt.Sprintf("line %d: %s: %v", e.line, e.path, e.err)
}

func (e *configError) Unwrap() error { return e.err }

// errAt returns a configError at n's line.
func errAt(n *yaml.Node, path, format string, args ...any) error {
	return &configError{line: n.Line, path: path, err: fmt.Errorf(format, args...)}
}

// parseDocument parses data as exactly one YAML document whose top level is a
// mapping, and refuses anchors and aliases anywhere.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration")
		}
		return nil, yamlError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(err)
	default:
		return nil, errAt(&next, "", "a second YAML document: the configuration is one document")
	}
	if err := refuseAliases(&doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("empty configuration")
	}
	root := doc.Content[0]
	if isNull(root) {
		return nil, errors.New("empty configuration")
	}
	if root.Kind != yaml.MappingNode {
		return nil, errAt(root, "", "want a mapping of keys at the top level, got %s", describe(root))
	}
	return root, nil
}

// yamlError turns a YAML syntax error into one line starting with its line.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "\n", "; ")
	return errors.New(msg)
}

// refuseAliases refuses anchors, aliases and unusual tags anywhere in n.
func refuseAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return errAt(n, "", "anchors and aliases (& and *) are not supported; use defaults for shared settings")
	}
	for _, c := range n.Content {
		if err := refuseAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// isNull reports whether n is an empty value (null, ~ or nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names n's type for an error message, never its value.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!null":
			return "nothing"
		case "!!timestamp":
			return "a timestamp"
		default:
			return "a value tagged " + tag
		}
	}
	return "an unsupported YAML node"
}

// join appends key to a dotted key path.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// walkMapping calls fn for every key of the mapping n, in order, after
// refusing a non-mapping, a non-scalar or empty key, a duplicate key, and,
// when known is not nil, a key not in known. A null n is an empty mapping.
func walkMapping(n *yaml.Node, path string, known []string, fn func(key string, k, v *yaml.Node) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return errAt(n, path, "want a mapping, got %s", describe(n))
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNull(k) || k.Value == "" {
			return errAt(k, path, "want a name as key, got %s", describe(k))
		}
		key := k.Value
		if known != nil && !slices.Contains(known, key) {
			if s := suggest(key, known); s != "" {
				return errAt(k, path, "unknown key %q (did you mean %q?)", key, s)
			}
			return errAt(k, path, "unknown key %q", key)
		}
		if first, ok := seen[key]; ok {
			return errAt(k, path, "duplicate key %q (first on line %d)", key, first)
		}
		seen[key] = k.Line
		if err := fn(key, k, v); err != nil {
			return err
		}
	}
	return nil
}

// suggest returns the known key closest to key, if close enough to be a typo.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// scalarOf returns the text of the scalar v if its type is one of tags.
// Errors name the type found, never the value (it may be a password).
func scalarOf(v *yaml.Node, path, want string, tags ...string) (string, error) {
	if v.Kind == yaml.ScalarNode && slices.Contains(tags, v.ShortTag()) {
		return v.Value, nil
	}
	hint := ""
	if v.Kind == yaml.ScalarNode && !isNull(v) && len(tags) == 1 && tags[0] == "!!str" {
		hint = " (quote it)"
	}
	return "", errAt(v, path, "want %s, got %s%s", want, describe(v), hint)
}

// stringOf returns the non-empty string v.
func stringOf(v *yaml.Node, path string) (string, error) {
	s, err := scalarOf(v, path, "a string", "!!str")
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(s) == "" {
		return "", errAt(v, path, "empty; remove the key to leave it unset")
	}
	if strings.ContainsRune(s, 0) {
		return "", errAt(v, path, "contains a NUL byte")
	}
	return s, nil
}

// commandOf reads a command line (check, reload), refusing one the node
// could not run: it is split into words without a shell.
func commandOf(v *yaml.Node, path string) (string, error) {
	line, err := stringOf(v, path)
	if err != nil {
		return "", err
	}
	if _, err := subscriber.ParseCommand(line); err != nil {
		return "", &configError{line: v.Line, path: path, err: err}
	}
	return line, nil
}

// absPathOf returns the absolute path v, cleaned. The root is refused.
func absPathOf(v *yaml.Node, path string) (string, error) {
	s, err := stringOf(v, path)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(s) {
		return "", errAt(v, path, "want an absolute path, got %q", s)
	}
	s = filepath.Clean(s)
	if s == "/" {
		return "", errAt(v, path, "the root folder cannot be used")
	}
	return s, nil
}

// intOf returns the integer v, which must lie in [lo, hi].
func intOf(v *yaml.Node, path string, lo, hi int64) (int64, error) {
	if _, err := scalarOf(v, path, "an integer", "!!int"); err != nil {
		return 0, err
	}
	var i int64
	if err := v.Decode(&i); err != nil || i < lo || i > hi {
		return 0, errAt(v, path, "want an integer from %d to %d, got %s", lo, hi, v.Value)
	}
	return i, nil
}

// boolOf returns the boolean v.
func boolOf(v *yaml.Node, path string) (bool, error) {
	if _, err := scalarOf(v, path, "true or false", "!!bool"); err != nil {
		return false, err
	}
	var b bool
	if err := v.Decode(&b); err != nil {
		return false, errAt(v, path, "want true or false, got %q", v.Value)
	}
	return b, nil
}

// durationOf returns the Go duration v, which must be at least lo
// (positive when lo is 1ns).
func durationOf(v *yaml.Node, path string, lo time.Duration) (time.Duration, error) {
	s, err := scalarOf(v, path, `a duration such as "30s", "5m" or "168h"`, "!!str", "!!int")
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errAt(v, path, `want a duration such as "30s", "5m" or "168h", got %q`, s)
	}
	if d > maxDurationConfigValue {
		return 0, errAt(v, path, "duration %s is too long", s)
	}
	if d < lo {
		if lo > 0 {
			return 0, errAt(v, path, "want a positive duration, got %s", s)
		}
		return 0, errAt(v, path, "want a duration of 0s or more, got %s", s)
	}
	return d, nil
}

// listOf returns the items of the list v; null is an empty list.
func listOf(v *yaml.Node, path string) ([]*yaml.Node, error) {
	if isNull(v) {
		return nil, nil
	}
	if v.Kind != yaml.SequenceNode {
		return nil, errAt(v, path, "want a list, got %s", describe(v))
	}
	return v.Content, nil
}

// parseNATS parses the nats mapping into o.
// lines receives the line of each secret file's key (natsconn.KeyFile keys).
func parseNATS(n *yaml.Node, path string, o *natsconn.Options, lines map[string]int) error {
	var userNode, passNode *yaml.Node
	err := walkMapping(n, path, natsKeys, func(key string, _, v *yaml.Node) error {
		p := join(path, key)
		var err error
		switch key {
		case "url":
			if o.URL, err = stringOf(v, p); err == nil {
				err = checkNATSURLs(v, p, o.URL)
			}
		case "creds":
			o.Creds, err = stringOf(v, p)
			lines["creds"] = v.Line
		case "nkey":
			o.NKey, err = stringOf(v, p)
			lines["nkey"] = v.Line
		case "user":
			userNode = v
			o.User, err = stringOf(v, p)
		case "password":
			passNode = v
			o.Password, err = stringOf(v, p)
		case "tls":
			err = walkMapping(v, p, tlsKeys, func(key string, _, v *yaml.Node) error {
				var err error
				switch key {
				case "ca":
					o.TLS.CA, err = stringOf(v, join(p, key))
				case "cert":
					o.TLS.Cert, err = stringOf(v, join(p, key))
				case "key":
					o.TLS.Key, err = stringOf(v, join(p, key))
					lines["tls.key"] = v.Line
				}
				return err
			})
			if err == nil && (o.TLS.Cert == "") != (o.TLS.Key == "") {
				err = errAt(v, p, "cert and key go together")
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case userNode != nil && passNode == nil:
		return errAt(userNode, path, "user needs a password")
	case passNode != nil && userNode == nil:
		return errAt(passNode, path, "password needs a user")
	}
	methods := 0
	for _, set := range []bool{o.Creds != "", o.NKey != "", o.User != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return errAt(n, path, "set only one of creds, nkey or user and password")
	}
	return nil
}

// checkNATSURLs checks a comma-separated list of server URLs. Errors do not
// repeat a URL, which may carry a password.
func checkNATSURLs(v *yaml.Node, path, list string) error {
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return errAt(v, path, "server %d of the list is empty", i+1)
		}
		if !strings.Contains(s, "://") {
			if checkHostPort(s, false) != nil {
				return errAt(v, path, "server %d: want nats://HOST:PORT (or tls://, ws://, wss://) or HOST:PORT", i+1)
			}
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			return errAt(v, path, "server %d is not a valid URL", i+1)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return errAt(v, path, "server %d: want scheme nats, tls, ws or wss, got %q", i+1, u.Scheme)
		}
		if u.Hostname() == "" {
			return errAt(v, path, "server %d has no host", i+1)
		}
		if p := u.Port(); p != "" {
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return errAt(v, path, "server %d: invalid port %q", i+1, p)
			}
		}
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

// parsePublisherFile parses and validates publisher.yaml without reading any
// file: recipients are parsed, the signing key is not loaded.
func parsePublisherFile(data []byte) (*publisherFile, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	f := &publisherFile{config: publisher.Config{
		NATS:         natsconn.Options{Name: publisherClientName, InboxPrefix: authconf.PublisherInboxPrefix},
		Lineages:     defaultLineages,
		Nodes:        map[string]string{},
		Certificates: map[string][]string{},
		Stream: wire.StreamOptions{
			Replicas:        defaultStreamReplicas,
			History:         wire.DefaultHistory,
			DuplicateWindow: wire.DefaultDuplicateWindow,
		},
		Timeout: defaultTimeout,
	}}
	cfg := &f.config
	// Certificates may come before nodes: their node names are checked after.
	type nodeRef struct {
		cert string
		item *yaml.Node
	}
	var refs []nodeRef
	var certsNode *yaml.Node
	err = walkMapping(root, "", publisherKeys, func(key string, _, v *yaml.Node) error {
		var err error
		switch key {
		case "nats":
			f.natsLines = map[string]int{}
			err = parseNATS(v, key, &cfg.NATS, f.natsLines)
		case "signing_key":
			f.signingKey, err = stringOf(v, key)
			f.signingKeyLine = v.Line
		case "lineages":
			cfg.Lineages, err = absPathOf(v, key)
		case "nodes":
			err = parsePublisherNodes(v, cfg.Nodes)
		case "certificates":
			certsNode = v
			err = walkMapping(v, key, nil, func(name string, k, v *yaml.Node) error {
				if err := wire.CheckCertName(name); err != nil {
					return &configError{line: k.Line, path: key, err: err}
				}
				p := join(key, name)
				items, err := listOf(v, p)
				if err != nil {
					return err
				}
				if len(items) == 0 {
					return errAt(v, p, "no nodes: list at least one node")
				}
				nodes := make([]string, 0, len(items))
				for _, item := range items {
					node, err := stringOf(item, p)
					if err != nil {
						return err
					}
					if err := wire.CheckNodeName(node); err != nil {
						return &configError{line: item.Line, path: p, err: err}
					}
					if slices.Contains(nodes, node) {
						return errAt(item, p, "node %q listed twice", node)
					}
					nodes = append(nodes, node)
					refs = append(refs, nodeRef{cert: name, item: item})
				}
				cfg.Certificates[name] = nodes
				return nil
			})
		case "stream":
			err = parseStream(v, key, &cfg.Stream)
		case "timeout":
			cfg.Timeout, err = durationOf(v, key, 1)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if f.signingKey == "" {
		return nil, errAt(root, "signing_key", "missing: name the file written by `certsync keygen signing`")
	}
	if len(cfg.Certificates) == 0 {
		n := root
		if certsNode != nil {
			n = certsNode
		}
		return nil, errAt(n, "certificates", "none: add at least one certificate with its nodes")
	}
	for _, r := range refs {
		if _, ok := cfg.Nodes[r.item.Value]; !ok {
			return nil, errAt(r.item, join("certificates", r.cert), "unknown node %q: add it under nodes with its recipient", r.item.Value)
		}
	}
	return f, nil
}

// parsePublisherNodes parses the nodes mapping (node name -> recipient).
func parsePublisherNodes(n *yaml.Node, nodes map[string]string) error {
	const key = "nodes"
	owner := make(map[string]string) // recipient -> node
	return walkMapping(n, key, nil, func(name string, k, v *yaml.Node) error {
		if err := wire.CheckNodeName(name); err != nil {
			return &configError{line: k.Line, path: key, err: err}
		}
		p := join(key, name)
		r, err := stringOf(v, p)
		if err != nil {
			return err
		}
		r = strings.TrimSpace(r)
		if looksSecret(r) {
			return errAt(v, p, "this is a private key, not a recipient: give the recipient `certsync keygen node` printed (age1…) or the node's public SSH host key")
		}
		if _, err := crypto.ParseRecipient(r); err != nil {
			return &configError{line: v.Line, path: p, err: err}
		}
		// An SSH key line may end with a comment; the key is what counts.
		id := r
		if f := strings.Fields(r); len(f) >= 2 && strings.HasPrefix(r, "ssh-") {
			id = f[0] + " " + f[1]
		}
		if other, ok := owner[id]; ok {
			return errAt(v, p, "same recipient as node %q: each node has its own key", other)
		}
		owner[id] = name
		nodes[name] = r
		return nil
	})
}

// looksSecret reports whether s looks like private key material pasted where
// a public key belongs, so that errors do not repeat it.
func looksSecret(s string) bool {
	return strings.Contains(strings.ToUpper(s), "SECRET-KEY") || strings.Contains(s, "PRIVATE KEY")
}

// parseStream parses the stream mapping into o.
func parseStream(n *yaml.Node, path string, o *wire.StreamOptions) error {
	return walkMapping(n, path, streamKeys, func(key string, _, v *yaml.Node) error {
		p := join(path, key)
		var err error
		switch key {
		case "replicas":
			var r int64
			r, err = intOf(v, p, 1, maxStreamReplicas)
			o.Replicas = int(r)
		case "history":
			o.History, err = intOf(v, p, 1, maxStreamHistory)
		case "duplicate_window":
			o.DuplicateWindow, err = durationOf(v, p, 1)
		}
		return err
	})
}

// parseNodeFile parses and validates node.yaml without reading any file:
// trusted publisher keys are parsed, the identity is not loaded.
func parseNodeFile(data []byte) (*nodeFile, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	f := &nodeFile{config: subscriber.Config{
		StageDir:       defaultStageDir,
		StatusInterval: defaultStatusInterval,
		Certificates:   map[string]subscriber.Certificate{},
	}}
	cfg := &f.config
	var (
		trustedNode, defaultsNode, certsNode *yaml.Node
		certEntries                          [][2]*yaml.Node // key and value of each certificate, in order
	)
	err = walkMapping(root, "", nodeKeys, func(key string, _, v *yaml.Node) error {
		var err error
		switch key {
		case "name":
			if cfg.Node, err = stringOf(v, key); err == nil {
				if err = wire.CheckNodeName(cfg.Node); err != nil {
					err = &configError{line: v.Line, path: key, err: err}
				}
			}
		case "nats":
			f.natsLines = map[string]int{}
			err = parseNATS(v, key, &cfg.NATS, f.natsLines)
		case "identity":
			f.identity, err = stringOf(v, key)
			f.identityLine = v.Line
		case "trusted_publishers":
			trustedNode = v
			cfg.Trusted, err = parseTrusted(v, key)
		case "stage_dir":
			cfg.StageDir, err = absPathOf(v, key)
		case "metrics_listen":
			if cfg.MetricsListen, err = stringOf(v, key); err == nil {
				if err = checkHostPort(cfg.MetricsListen, true); err != nil {
					err = &configError{line: v.Line, path: key, err: err}
				}
			}
		case "status_interval":
			cfg.StatusInterval, err = durationOf(v, key, time.Second)
		case "defaults":
			defaultsNode = v
			// Checked on its own so its errors name defaults even with no
			// certificate; applied to each certificate below.
			var scratch subscriber.Certificate
			err = applyCertificate(&scratch, v, key)
		case "certificates":
			certsNode = v
			err = walkMapping(v, key, nil, func(name string, k, v *yaml.Node) error {
				if err := wire.CheckCertName(name); err != nil {
					return &configError{line: k.Line, path: key, err: err}
				}
				certEntries = append(certEntries, [2]*yaml.Node{k, v})
				return nil
			})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.Node == "":
		return nil, errAt(root, "name", "missing: give this node's name, as in the publisher's nodes")
	case f.identity == "":
		return nil, errAt(root, "identity", "missing: name the node's age identity file or its OpenSSH host key")
	case trustedNode == nil:
		return nil, errAt(root, "trusted_publishers", "missing: list the public key `certsync keygen signing` printed")
	case len(cfg.Trusted) == 0:
		return nil, errAt(trustedNode, "trusted_publishers", "empty: list at least one publisher key")
	case len(certEntries) == 0:
		n := root
		if certsNode != nil {
			n = certsNode
		}
		return nil, errAt(n, "certificates", "none: add at least one certificate")
	}
	cfg.NATS.Name = nodeClientNamePrefix + cfg.Node
	cfg.NATS.InboxPrefix = authconf.NodeInboxPrefix(cfg.Node)

	installs := make(map[string]string) // install dir -> certificate
	for _, e := range certEntries {
		k, v := e[0], e[1]
		name := k.Value
		p := join("certificates", name)
		c := defaultCertificate(name)
		if defaultsNode != nil {
			if err := applyCertificate(&c, defaultsNode, "defaults"); err != nil {
				return nil, err
			}
		}
		if err := applyCertificate(&c, v, p); err != nil {
			return nil, err
		}
		// What each certificate's installs write: install_dir, and the
		// install store beside it (<parent>/.certsync, shared by the
		// certificates of one parent). Neither may overlap stage_dir, and
		// no install_dir another's, or any install store: a stage swapped
		// or cleaned up in the store, or versions pruned in the stage,
		// would lose keys.
		store := subscriber.InstallStore(c.InstallDir)
		switch {
		case nested(c.InstallDir, cfg.StageDir):
			return nil, errAt(k, p, "install_dir %q overlaps stage_dir %q", c.InstallDir, cfg.StageDir)
		case nested(store, cfg.StageDir):
			return nil, errAt(k, p, "stage_dir %q overlaps the install store %q that install_dir %q keeps its versions in", cfg.StageDir, store, c.InstallDir)
		case nested(c.InstallDir, store):
			return nil, errAt(k, p, "install_dir %q overlaps its own install store %q", c.InstallDir, store)
		}
		for dir, other := range installs {
			switch otherStore := subscriber.InstallStore(dir); {
			case nested(c.InstallDir, dir):
				return nil, errAt(k, p, "install_dir %q overlaps certificate %q's %q", c.InstallDir, other, dir)
			case nested(c.InstallDir, otherStore):
				return nil, errAt(k, p, "install_dir %q overlaps certificate %q's install store %q", c.InstallDir, other, otherStore)
			case nested(dir, store):
				return nil, errAt(k, p, "install_dir %q keeps its versions in %q, which overlaps certificate %q's install_dir %q", c.InstallDir, store, other, dir)
			}
		}
		installs[c.InstallDir] = name
		cfg.Certificates[name] = c
	}
	return f, nil
}

// nested reports whether one of the clean absolute paths a and b is the
// other or holds it.
func nested(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// parseTrusted parses the list of trusted publisher keys.
func parseTrusted(v *yaml.Node, path string) ([]crypto.PublicKey, error) {
	items, err := listOf(v, path)
	if err != nil {
		return nil, err
	}
	keys := make([]crypto.PublicKey, 0, len(items))
	lines := make(map[string]int, len(items))
	for i, item := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		s, err := stringOf(item, p)
		if err != nil {
			return nil, err
		}
		s = strings.TrimSpace(s)
		if looksSecret(s) {
			return nil, errAt(item, p, "this is a private key: give the public key `certsync keygen signing` printed")
		}
		k, err := crypto.ParsePublicKey(s)
		if err != nil {
			return nil, &configError{line: item.Line, path: p, err: err}
		}
		if first, ok := lines[s]; ok {
			return nil, errAt(item, p, "listed twice (first on line %d)", first)
		}
		lines[s] = item.Line
		keys = append(keys, k)
	}
	return keys, nil
}

// defaultCertificate returns the built-in settings of certificate name.
func defaultCertificate(name string) subscriber.Certificate {
	return subscriber.Certificate{
		Name:           name,
		InstallDir:     defaultInstallParent + "/" + name,
		Schedule:       defaultSchedule,
		CertMode:       defaultCertMode,
		KeyMode:        defaultKeyMode,
		Keep:           defaultKeep,
		ExpiryDeadline: defaultExpiryDeadline,
		CommandTimeout: defaultCommandTimeout,
		VerifyTimeout:  defaultVerifyTimeout,
	}
}

// applyCertificate sets in c the per-certificate keys of the mapping n.
func applyCertificate(c *subscriber.Certificate, n *yaml.Node, path string) error {
	return walkMapping(n, path, certKeys, func(key string, _, v *yaml.Node) error {
		p := join(path, key)
		var err error
		switch key {
		case "install_dir":
			c.InstallDir, err = absPathOf(v, p)
		case "schedule":
			if c.Schedule, err = stringOf(v, p); err == nil {
				if err = checkSchedule(c.Schedule); err != nil {
					err = &configError{line: v.Line, path: p, err: err}
				}
			}
		case "check":
			c.Check, err = commandOf(v, p)
		case "reload":
			c.Reload, err = commandOf(v, p)
		case "verify":
			if c.Verify, err = stringOf(v, p); err == nil {
				if err = checkHostPort(c.Verify, false); err != nil {
					err = &configError{line: v.Line, path: p, err: err}
				}
			}
		case "owner":
			c.Owner, err = ownerOf(v, p)
		case "group":
			c.Group, err = ownerOf(v, p)
		case "cert_mode":
			c.CertMode, err = modeOf(v, p, 0o022, "group- or other-writable")
		case "key_mode":
			c.KeyMode, err = modeOf(v, p, 0o007, "open to others")
		case "keep":
			var k int64
			k, err = intOf(v, p, 1, maxKeep)
			c.Keep = int(k)
		case "splay":
			c.Splay, err = durationOf(v, p, 0)
		case "expiry_deadline":
			c.ExpiryDeadline, err = durationOf(v, p, 0)
		case "command_timeout":
			c.CommandTimeout, err = durationOf(v, p, 1)
		case "verify_timeout":
			c.VerifyTimeout, err = durationOf(v, p, 1)
		case "combined":
			c.Combined, err = boolOf(v, p)
		}
		return err
	})
}

// checkSchedule accepts "immediate", "manual" or five cron fields.
func checkSchedule(s string) error {
	if s == scheduleImmediate || s == scheduleManual {
		return nil
	}
	switch {
	case strings.HasPrefix(strings.TrimSpace(s), "@"):
		return fmt.Errorf("descriptor %q not supported: write five cron fields, such as \"0 3 * * *\"", s)
	case strings.Contains(s, "TZ="):
		return fmt.Errorf("time zone in %q not supported: schedules use the node's local time", s)
	}
	if n := len(strings.Fields(s)); n != 5 {
		count := ""
		if n > 1 {
			count = fmt.Sprintf(" (%d fields)", n)
		}
		return fmt.Errorf("want immediate, manual or five cron fields (minute hour day-of-month month day-of-week), got %q%s", s, count)
	}
	sched, err := cron.ParseStandard(s)
	if err != nil {
		return fmt.Errorf("invalid cron expression %q: %v", s, err)
	}
	if sched.Next(time.Now()).IsZero() {
		return fmt.Errorf("cron expression %q never fires", s)
	}
	return nil
}

// ownerOf returns a user or group: a name or a numeric id, not resolved here.
func ownerOf(v *yaml.Node, path string) (string, error) {
	s, err := scalarOf(v, path, "a name or a numeric id", "!!str", "!!int")
	if err != nil {
		return "", err
	}
	if s == "" || len(s) > maxOwnerLen || strings.HasPrefix(s, "-") ||
		strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == ':' || r == '/' || r == 0x7f }) {
		return "", errAt(v, path, "want a name or a numeric id, got %q", s)
	}
	return s, nil
}

// modeOf returns an octal file mode (as chmod takes it, "0644", "644" or
// "0o644") with none of the forbidden bits.
func modeOf(v *yaml.Node, path string, forbidden uint32, why string) (uint32, error) {
	s, err := scalarOf(v, path, `an octal mode such as "0644"`, "!!str", "!!int")
	if err != nil {
		return 0, err
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || digits == "" || strings.HasPrefix(digits, "+") || m > 0o777 {
		return 0, errAt(v, path, `want an octal mode from "0000" to "0777", such as "0644", got %q`, s)
	}
	if uint32(m)&forbidden != 0 {
		return 0, errAt(v, path, "mode %04o is %s", m, why)
	}
	return uint32(m), nil
}
