package main

// node.yaml: each key mapped to its field of subscriber.Config, whose
// Validate applies the defaults and holds every rule (see the schema in
// config.go). Schedules and commands are parsed here, once, into the
// library's types.

import (
	"strconv"
	"strings"

	"filippo.io/age"
	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/strictyaml"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/subscriber"
)

// nodeFile is node.yaml, parsed and validated, before its identity (key)
// is loaded.
type nodeFile = configFile[subscriber.Config]

// loadNodeConfig reads, validates and completes node.yaml at path, loading
// the node's identities. A key file others may read fails with an error
// matching crypto.ErrKeyPermissions.
func loadNodeConfig(path string) (*subscriber.Config, error) {
	return loadConfig(path, parseNodeFile, crypto.LoadIdentities, func(c *subscriber.Config, ids []age.Identity) { c.Identities = ids })
}

// parseNodeFile parses and validates node.yaml without reading any file:
// trusted publisher keys are parsed, the identity is not loaded.
func parseNodeFile(data []byte) (*nodeFile, error) {
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, err
	}
	f := &nodeFile{config: subscriber.Config{Certificates: map[string]subscriber.Certificate{}}}
	cfg := &f.config
	at := newPlaces(root)
	var (
		trustedNode, defaultsNode *yaml.Node
		certEntries               [][2]*yaml.Node // key and value of each certificate, in order
	)
	err = f.walk(root, nodeKeys, at, "identity", &cfg.NATS, func(key string, v *yaml.Node) error {
		var err error
		switch key {
		case "name":
			cfg.Node, err = strictyaml.String(v, key)
		case "trusted_publishers":
			trustedNode = v
			cfg.Trusted, err = parseTrusted(v, key, at)
		case "stage_dir":
			cfg.StageDir, err = strictyaml.AbsPath(v, key)
		case "metrics_listen":
			cfg.MetricsListen, err = strictyaml.String(v, key)
		case "status_interval":
			cfg.StatusInterval, err = strictyaml.Duration(v, key, 1)
		case "defaults":
			// Read on its own so that its errors name defaults even with no
			// certificate; applied to each certificate below.
			defaultsNode = v
			var scratch subscriber.Certificate
			err = applyCertificate(&scratch, v, key, nil)
		case "certificates":
			err = strictyaml.Walk(v, key, nil, func(name string, k, v *yaml.Node) error {
				if err := wire.CheckCertName(name); err != nil {
					return strictyaml.At(k, key, err)
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
		return nil, strictyaml.Errorf(root, "name", "missing: give this node's name, as in the publisher's nodes")
	case f.key == "":
		return nil, strictyaml.Errorf(root, "identity", "missing: name the node's age identity file or its OpenSSH host key")
	case trustedNode == nil:
		return nil, strictyaml.Errorf(root, "trusted_publishers", "missing: list the public key `certsync keygen signing` printed")
	}
	for _, e := range certEntries {
		k, v := e[0], e[1]
		name := k.Value
		p := field.Join("certificates", name)
		at.mark(p, k)
		// Built-in defaults (Validate's) < defaults < the entry.
		var c subscriber.Certificate
		mark := func(key string, v *yaml.Node) { at.markAs(field.Join(p, key), field.Join("defaults", key), v) }
		if defaultsNode != nil {
			if err := applyCertificate(&c, defaultsNode, "defaults", mark); err != nil {
				return nil, err
			}
		}
		mark = func(key string, v *yaml.Node) { at.mark(field.Join(p, key), v) }
		if err := applyCertificate(&c, v, p, mark); err != nil {
			return nil, err
		}
		cfg.Certificates[name] = c
	}
	if err := cfg.Validate(); err != nil {
		return nil, at.locate(err)
	}
	return f, nil
}

// parseTrusted parses the list of trusted publisher keys. A key listed
// twice is refused as a slip of the file, with the line of the first.
func parseTrusted(v *yaml.Node, path string, at *places) ([]crypto.PublicKey, error) {
	items, err := strictyaml.List(v, path)
	if err != nil {
		return nil, err
	}
	keys := make([]crypto.PublicKey, 0, len(items))
	lines := make(map[string]int, len(items))
	for i, item := range items {
		p := field.Item(path, i)
		s, err := strictyaml.String(item, p)
		if err != nil {
			return nil, err
		}
		s = strings.TrimSpace(s)
		if crypto.LooksLikePrivateKey(s) {
			return nil, strictyaml.Errorf(item, p, "this is a private key: give the public key `certsync keygen signing` printed")
		}
		k, err := crypto.ParsePublicKey(s)
		if err != nil {
			return nil, strictyaml.At(item, p, err)
		}
		if first, ok := lines[s]; ok {
			return nil, strictyaml.Errorf(item, p, "listed twice (first on line %d)", first)
		}
		lines[s] = item.Line
		at.mark(p, item)
		keys = append(keys, k)
	}
	return keys, nil
}

// applyCertificate sets in c the per-certificate keys of the mapping n at
// path, and calls mark (unless nil) with each key and its value.
func applyCertificate(c *subscriber.Certificate, n *yaml.Node, path string, mark func(key string, v *yaml.Node)) error {
	return strictyaml.Walk(n, path, certKeys, func(key string, _, v *yaml.Node) error {
		if mark != nil {
			mark(key, v)
		}
		p := strictyaml.Join(path, key)
		var err error
		switch key {
		case "install_dir":
			c.InstallDir, err = strictyaml.AbsPath(v, p)
		case "schedule":
			var s string
			if s, err = strictyaml.String(v, p); err == nil {
				c.Schedule, err = subscriber.ParseSchedule(s)
				err = atLine(v, p, err)
			}
		case "check":
			c.Check, err = commandOf(v, p)
		case "reload":
			c.Reload, err = commandOf(v, p)
		case "verify":
			c.Verify, err = strictyaml.String(v, p)
		case "owner":
			c.Owner, err = ownerOf(v, p)
		case "group":
			c.Group, err = ownerOf(v, p)
		case "cert_mode":
			c.CertMode, err = modeOf(v, p)
		case "key_mode":
			c.KeyMode, err = modeOf(v, p)
		case "keep":
			// 0 would mean the default to the library: refused here.
			var k int64
			k, err = strictyaml.Int(v, p, 1, subscriber.MaxKeep)
			c.Keep = int(k)
		case "splay":
			c.Splay, err = strictyaml.Duration(v, p, 0)
		case "expiry_deadline":
			c.ExpiryDeadline, err = strictyaml.Duration(v, p, 0)
			if err == nil && c.ExpiryDeadline == 0 {
				c.ExpiryDeadline = subscriber.ExpiryDeadlineOff // "0s" turns it off
			}
		case "command_timeout":
			c.CommandTimeout, err = strictyaml.Duration(v, p, 1)
		case "verify_timeout":
			c.VerifyTimeout, err = strictyaml.Duration(v, p, 1)
		case "combined":
			c.Combined, err = strictyaml.Bool(v, p)
		}
		return err
	})
}

// atLine returns err, if any, at v's line.
func atLine(v *yaml.Node, path string, err error) error {
	if err == nil {
		return nil
	}
	return strictyaml.At(v, path, err)
}

// commandOf reads a command line (check, reload), parsed once, here.
func commandOf(v *yaml.Node, path string) (subscriber.Command, error) {
	line, err := strictyaml.String(v, path)
	if err != nil {
		return subscriber.Command{}, err
	}
	cmd, err := subscriber.ParseCommand(line)
	return cmd, atLine(v, path, err)
}

// ownerOf reads a user or group: a name or a numeric id, checked by the
// library, not resolved here. Empty is refused: remove the key instead.
func ownerOf(v *yaml.Node, path string) (string, error) {
	s, err := strictyaml.Scalar(v, path, "a name or a numeric id", "!!str", "!!int")
	if err == nil && s == "" {
		err = strictyaml.Errorf(v, path, "want a name or a numeric id, got %q", s)
	}
	return s, err
}

// modeOf reads an octal file mode as chmod takes it ("0644", "644" or
// "0o644"), from 0000 to 0777; the library refuses the bits a mode may not
// have.
func modeOf(v *yaml.Node, path string) (uint32, error) {
	s, err := strictyaml.Scalar(v, path, `an octal mode such as "0644"`, "!!str", "!!int")
	if err != nil {
		return 0, err
	}
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || digits == "" || strings.HasPrefix(digits, "+") || m > 0o777 {
		return 0, strictyaml.Errorf(v, path, `want an octal mode from "0000" to "0777", such as "0644", got %q`, s)
	}
	return uint32(m), nil
}
