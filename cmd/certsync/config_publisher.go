package main

// publisher.yaml: each key mapped to its field of publisher.Config, whose
// Validate holds every rule (see the schema in config.go).

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/strictyaml"
	"github.com/certsync/certsync/internal/wire"
	"github.com/certsync/certsync/publisher"
)

// publisherFile is publisher.yaml, parsed and validated, before its
// signing key (key) is loaded.
type publisherFile = configFile[publisher.Config]

// loadPublisherConfig reads, validates and completes publisher.yaml at path,
// loading the signing key. A key file others may read fails with an error
// matching crypto.ErrKeyPermissions.
func loadPublisherConfig(path string) (*publisher.Config, error) {
	return loadConfig(path, parsePublisherFile, crypto.LoadSigningKey, setSigningKey)
}

// setSigningKey puts the signing key a publisher.yaml names into its
// configuration.
func setSigningKey(c *publisher.Config, k *crypto.SigningKey) { c.SigningKey = k }

// loadPublisherConfigWithoutKey reads and validates publisher.yaml at path
// like loadPublisherConfig but leaves SigningKey nil, for the commands that
// never sign (inspect, status, auth) so they run without access to the key.
func loadPublisherConfigWithoutKey(path string) (*publisher.Config, error) {
	f, err := readConfig(path, parsePublisherFile)
	if err != nil {
		return nil, err
	}
	cfg := f.config
	return &cfg, nil
}

// parsePublisherFile parses and validates publisher.yaml without reading any
// file: recipients are parsed, the signing key is not loaded.
func parsePublisherFile(data []byte) (*publisherFile, error) {
	root, err := strictyaml.Parse(data)
	if err != nil {
		return nil, err
	}
	f := &publisherFile{config: publisher.Config{
		Nodes:        map[string]string{},
		Certificates: map[string][]string{},
	}}
	cfg := &f.config
	at := newPlaces(root)
	err = f.walk(root, publisherKeys, at, "signing_key", &cfg.NATS, func(key string, v *yaml.Node) error {
		var err error
		switch key {
		case "lineages":
			cfg.Lineages, err = strictyaml.AbsPath(v, key)
		case "nodes":
			err = parsePublisherNodes(v, cfg.Nodes, at)
		case "certificates":
			err = parsePublisherCertificates(v, cfg, at)
		case "rollout":
			cfg.Rollout, err = parseRollout(v, key, at)
		case "stream":
			err = parseStream(v, key, &cfg.Stream, at)
		case "timeout":
			cfg.Timeout, err = strictyaml.Duration(v, key, 1)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if f.key == "" {
		return nil, strictyaml.Errorf(root, "signing_key", "missing: name the file written by `certsync keygen signing`")
	}
	if len(cfg.Certificates) == 0 {
		// The library takes a publisher without certificates (setup,
		// inspect); a publisher.yaml without any is a mistake.
		return nil, at.locate(field.Errorf("certificates", "none: add at least one certificate with its nodes"))
	}
	if err := cfg.Validate(); err != nil {
		return nil, at.locate(err)
	}
	return f, nil
}

// parsePublisherNodes parses the nodes mapping (node name -> recipient).
func parsePublisherNodes(n *yaml.Node, nodes map[string]string, at *places) error {
	const key = "nodes"
	return strictyaml.Walk(n, key, nil, func(name string, k, v *yaml.Node) error {
		// The name is checked before its value is read, so that the error
		// is about the name (publisher.Config.Validate checks it too).
		if err := wire.CheckNodeName(name); err != nil {
			return strictyaml.At(k, key, err)
		}
		p := field.Join(key, name)
		r, err := strictyaml.String(v, p)
		if err != nil {
			return err
		}
		at.mark(p, v)
		nodes[name] = strings.TrimSpace(r)
		return nil
	})
}

// parsePublisherCertificates parses the certificates mapping: certificate
// name -> node names, or -> {nodes, rollout}.
func parsePublisherCertificates(n *yaml.Node, cfg *publisher.Config, at *places) error {
	const key = "certificates"
	return strictyaml.Walk(n, key, nil, func(name string, k, v *yaml.Node) error {
		if err := wire.CheckCertName(name); err != nil {
			return strictyaml.At(k, key, err)
		}
		p := field.Join(key, name)
		at.mark(p, k)
		list := v
		if v.Kind == yaml.MappingNode {
			list = nil
			err := strictyaml.Walk(v, p, pubCertKeys, func(key string, _, v *yaml.Node) error {
				switch key {
				case "nodes":
					list = v
				case "rollout":
					pol, err := parseRollout(v, field.Join(p, key), at)
					if err != nil {
						return err
					}
					if cfg.Rollouts == nil {
						cfg.Rollouts = map[string]*publisher.RolloutPolicy{}
					}
					cfg.Rollouts[name] = pol
				}
				return nil
			})
			if err != nil {
				return err
			}
			if list == nil {
				return strictyaml.Errorf(v, p, "no nodes: list them under nodes")
			}
		}
		items, err := strictyaml.List(list, p)
		if err != nil {
			return err
		}
		nodes := make([]string, 0, len(items))
		for i, item := range items {
			node, err := strictyaml.String(item, p)
			if err != nil {
				return err
			}
			at.markAs(field.Item(p, i), p, item)
			nodes = append(nodes, node)
		}
		cfg.Certificates[name] = nodes
		return nil
	})
}

// parseRollout parses a rollout mapping at path; "none" is nil, no
// rollout. Percentages are written "25%".
func parseRollout(n *yaml.Node, path string, at *places) (*publisher.RolloutPolicy, error) {
	at.mark(path, n)
	if n.Kind == yaml.ScalarNode && n.Value == "none" && n.ShortTag() == "!!str" {
		return nil, nil
	}
	pol := &publisher.RolloutPolicy{}
	err := strictyaml.Walk(n, path, rolloutKeys, func(key string, _, v *yaml.Node) error {
		p := field.Join(path, key)
		at.mark(p, v)
		var err error
		switch key {
		case "canary":
			if pct, ok, perr := percent(v, p); ok || perr != nil {
				pol.CanaryPercent, err = pct, perr
				break
			}
			var items []*yaml.Node
			if items, err = strictyaml.List(v, p); err != nil {
				break
			}
			for i, item := range items {
				var node string
				if node, err = strictyaml.String(item, field.Item(p, i)); err != nil {
					break
				}
				at.mark(field.Item(p, i), item)
				pol.Canary = append(pol.Canary, node)
			}
		case "waves":
			var items []*yaml.Node
			if items, err = strictyaml.List(v, p); err != nil {
				break
			}
			for i, item := range items {
				pct, ok, perr := percent(item, field.Item(p, i))
				if perr == nil && !ok {
					perr = strictyaml.Errorf(item, field.Item(p, i), `want a percentage such as "25%%", got %s`, strictyaml.Describe(item))
				}
				if perr != nil {
					return perr
				}
				at.mark(field.Item(p, i), item)
				pol.Waves = append(pol.Waves, pct)
			}
		case "soak":
			if pol.Soak, err = strictyaml.Duration(v, p, 0); err == nil && pol.Soak == 0 {
				pol.Soak = publisher.SoakZero
			}
		case "wave_deadline":
			pol.WaveDeadline, err = strictyaml.Duration(v, p, 1)
		case "max_failures":
			if pct, ok, perr := percent(v, p); ok || perr != nil {
				pol.MaxFailuresPercent, err = pct, perr
				break
			}
			var m int64
			m, err = strictyaml.Int(v, p, 0, 1_000_000)
			pol.MaxFailures = int(m)
		}
		return err
	})
	return pol, err
}

// percent reads a scalar written "N%", 0 to 100; ok is false (and the
// error nil) for anything else, which the caller reads as it may.
func percent(v *yaml.Node, path string) (pct int, ok bool, err error) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" || !strings.HasSuffix(v.Value, "%") {
		return 0, false, nil
	}
	num := strings.TrimSuffix(v.Value, "%")
	n, perr := strconv.Atoi(num)
	if perr != nil || n < 0 || n > 100 || num != strconv.Itoa(n) {
		return 0, false, strictyaml.Errorf(v, path, "want a percentage from 0%% to 100%%, got %q", v.Value)
	}
	return n, true, nil
}

// parseStream parses the stream mapping into o. A value of 0 is refused
// here: it would mean the default to the library.
func parseStream(n *yaml.Node, path string, o *wire.StreamOptions, at *places) error {
	return strictyaml.Walk(n, path, streamKeys, func(key string, _, v *yaml.Node) error {
		p := strictyaml.Join(path, key)
		at.mark(p, v)
		var err error
		switch key {
		case "replicas":
			var r int64
			r, err = strictyaml.Int(v, p, 1, wire.MaxReplicas)
			o.Replicas = int(r)
		case "history":
			o.History, err = strictyaml.Int(v, p, 1, wire.MaxHistory)
		case "duplicate_window":
			o.DuplicateWindow, err = strictyaml.Duration(v, p, 1)
		case "consumer_replicas":
			var r int64
			r, err = strictyaml.Int(v, p, 1, wire.MaxReplicas)
			o.ConsumerReplicas = int(r)
		}
		return err
	})
}
