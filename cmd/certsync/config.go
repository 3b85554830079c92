package main

// The configuration files, read strictly: an unknown key, a value of the
// wrong type, a duplicate key, a second YAML document, an anchor or an alias
// is an error naming the line and the key. Every error is one line:
//
//	reading config "/etc/certsync/node.yaml": line 7: certificates.example.com: unknown key "instal_dir" (did you mean "install_dir"?)
//
// Relative paths are taken relative to the working directory.
//
// The reading is in three layers: internal/strictyaml reads the document
// and each value's type; config_publisher.go and config_node.go map each
// key to its field of publisher.Config or subscriber.Config; the library's
// Validate applies the defaults and every rule, and its *field.Error,
// which names a setting by the path below, gets the line that setting was
// written on (places). The defaults and limits below are the libraries'.
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
//	  www.example.org:             # or a mapping, to give a certificate its own rollout policy
//	    nodes: [web1, web2, web3]
//	    rollout: {canary: [web3]}  # replaces the default policy whole; "rollout: none" turns it off
//	rollout:                       # optional: a staged rollout for every certificate (none by default:
//	                               # a renewal goes into service on every node at once)
//	  canary: [web1]               # nodes, or a percentage of the certificate's nodes rounded up ("10%"),
//	                               # that install first; none: the first wave starts at once
//	  waves: ["25%", "100%"]       # cumulative percentages of the other nodes, growing, the last 100% (default ["100%"])
//	  soak: 10m                    # every node of a wave healthy this long before the next (default 10m; 0s none)
//	  wave_deadline: 1h            # a released node that has not reported the new certificate installed by then failed (default 1h)
//	  max_failures: 0              # failed nodes tolerated, a number or a percentage of those released (default 0)
//	stream:                        # optional; the CERTSYNC stream, applied by `certsync setup` (by publish
//	                               # too on a server without permissions)
//	  replicas: 1                  # 1..5 (default 1); 3 or 5 in a cluster
//	  history: 5                   # bundles kept per certificate, 1..100 (default 5)
//	  duplicate_window: 24h        # a repeated publish within it is dropped (default 24h)
//	  consumer_replicas: 1         # servers holding each node's consumer, 1..replicas (default 1)
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
//	status_interval: 5m            # default 5m, at least 1s; how often `node run` refreshes its status records
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
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/atomicfile"
	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/strictyaml"
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

// Keys of each mapping, in the order the schema above lists them.
var (
	publisherKeys = []string{"nats", "signing_key", "lineages", "nodes", "certificates", "rollout", "stream", "timeout"}
	pubCertKeys   = []string{"nodes", "rollout"}
	rolloutKeys   = []string{"canary", "waves", "soak", "wave_deadline", "max_failures"}
	nodeKeys      = []string{"name", "nats", "identity", "trusted_publishers", "stage_dir", "metrics_listen", "status_interval", "defaults", "certificates"}
	natsKeys      = []string{"url", "creds", "nkey", "user", "password", "tls"}
	tlsKeys       = []string{"ca", "cert", "key"}
	streamKeys    = []string{"replicas", "history", "duplicate_window", "consumer_replicas"}
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

// configFile is a configuration file, parsed and validated, before the key
// file it names (signing_key, identity) is loaded.
type configFile[C any] struct {
	// config is complete but for the key.
	config C
	// key is the path of the key file, given under keyName on keyLine.
	key     string
	keyName string
	keyLine int
	// nats is config's NATS options (set by walk), and natsLines the
	// lines of its secret files, by natsconn.KeyFile key.
	nats      *natsconn.Options
	natsLines map[string]int
}

// walk walks the top-level mapping root, whose keys are known, marking in
// at where each key is. The keys both files have it reads itself: nats into
// o, and keyName, the key file's path, into f; every other key it hands to
// each.
func (f *configFile[C]) walk(root *yaml.Node, known []string, at *places, keyName string, o *natsconn.Options, each func(key string, v *yaml.Node) error) error {
	f.keyName, f.nats = keyName, o
	return strictyaml.Walk(root, "", known, func(key string, _, v *yaml.Node) error {
		at.mark(key, v)
		switch key {
		case "nats":
			f.natsLines = map[string]int{}
			return parseNATS(v, key, o, at, f.natsLines)
		case keyName:
			var err error
			f.key, err = strictyaml.String(v, key)
			f.keyLine = v.Line
			return err
		}
		return each(key, v)
	})
}

// readConfig reads the configuration file at path and parses it with
// parse; errors name the file.
func readConfig[F any](path string, parse func([]byte) (F, error)) (F, error) {
	var f F
	data, err := readConfigFile(path)
	if err != nil {
		return f, err
	}
	if f, err = parse(data); err != nil {
		return f, fmt.Errorf("reading config %q: %w", path, err)
	}
	return f, nil
}

// loadConfig reads the configuration file at path with parse and returns
// its configuration with the key file it names loaded (withKey).
func loadConfig[C, K any](path string, parse func([]byte) (*configFile[C], error), load func(string) (K, error), set func(*C, K)) (*C, error) {
	f, err := readConfig(path, parse)
	if err != nil {
		return nil, err
	}
	return withKey(path, f, load, set)
}

// withKey returns a copy of f's configuration with the key file f names
// loaded by load and given to set, after checking the NATS secret files of
// f's NATS options. Errors name the configuration file at path and the
// line.
func withKey[C, K any](path string, f *configFile[C], load func(string) (K, error), set func(*C, K)) (*C, error) {
	k, err := load(f.key)
	if err != nil {
		err = &strictyaml.Error{Line: f.keyLine, Path: f.keyName, Err: err}
	} else {
		err = checkNATSKeyFiles(*f.nats, f.natsLines)
	}
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	cfg := f.config
	set(&cfg, k)
	return &cfg, nil
}

// readConfigFile reads at most maxConfigSize bytes of the file at path.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, atomicfile.Cause(err))
	}
	defer f.Close()
	data, err := atomicfile.ReadAtMost(f, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("reading config %q: %w", path, err)
	}
	return data, nil
}

// places remembers where each setting was written, under the path the
// libraries name it by in a *field.Error, so that their errors get a line.
type places struct {
	root *yaml.Node
	at   map[string]place
}

// place is a setting's line, and the path an error about it shows.
type place struct {
	line  int
	shown string
}

func newPlaces(root *yaml.Node) *places {
	return &places{root: root, at: map[string]place{}}
}

// mark records that the setting at path is written at n.
func (p *places) mark(path string, n *yaml.Node) { p.markAs(path, path, n) }

// markAs records that the setting at path is written at n, under another
// path, shown (a certificate's setting taken from defaults, a list item).
func (p *places) markAs(path, shown string, n *yaml.Node) {
	p.at[path] = place{line: n.Line, shown: shown}
}

// locate returns a *field.Error of a library as an error at the line of the
// setting it names: where it was written, else where the closest enclosing
// setting was (a default applied to a certificate: the certificate's),
// else the top of the document. Other errors are returned as they are.
func (p *places) locate(err error) error {
	var fe *field.Error
	if !errors.As(err, &fe) {
		return err
	}
	for path := fe.Path; ; {
		if pl, ok := p.at[path]; ok {
			shown := pl.shown
			if path != fe.Path {
				shown = fe.Path
			}
			return &strictyaml.Error{Line: pl.line, Path: shown, Err: fe.Err}
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return &strictyaml.Error{Line: p.root.Line, Path: fe.Path, Err: fe.Err}
		}
		path = path[:i]
	}
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
			return &strictyaml.Error{Line: lines[kf.Key], Path: "nats." + kf.Key, Err: err}
		}
	}
	return nil
}

// parseNATS parses the nats mapping into o, marking in at where each
// setting natsconn.Options.Validate may name is written (a login
// setting's error is shown under nats, as the choice of login is).
// lines receives the line of each secret file's key (natsconn.KeyFile keys).
// The rules are natsconn's, applied by the library's Validate.
func parseNATS(n *yaml.Node, path string, o *natsconn.Options, at *places, lines map[string]int) error {
	return strictyaml.Walk(n, path, natsKeys, func(key string, _, v *yaml.Node) error {
		p := strictyaml.Join(path, key)
		var err error
		switch key {
		case "url":
			at.mark(p, v)
			o.URL, err = strictyaml.String(v, p)
		case "creds":
			o.Creds, err = strictyaml.String(v, p)
			lines["creds"] = v.Line
		case "nkey":
			o.NKey, err = strictyaml.String(v, p)
			lines["nkey"] = v.Line
		case "user":
			at.markAs(p, path, v)
			o.User, err = strictyaml.String(v, p)
		case "password":
			at.markAs(p, path, v)
			o.Password, err = strictyaml.String(v, p)
		case "tls":
			at.mark(p, v)
			err = strictyaml.Walk(v, p, tlsKeys, func(key string, _, v *yaml.Node) error {
				var err error
				switch key {
				case "ca":
					o.TLS.CA, err = strictyaml.String(v, strictyaml.Join(p, key))
				case "cert":
					o.TLS.Cert, err = strictyaml.String(v, strictyaml.Join(p, key))
				case "key":
					o.TLS.Key, err = strictyaml.String(v, strictyaml.Join(p, key))
					lines["tls.key"] = v.Line
				}
				return err
			})
		}
		return err
	})
}
