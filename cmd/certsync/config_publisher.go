package main

// publisher.yaml: each key mapped to its field of publisher.Config, whose
// Validate holds every rule (see the schema in config.go).

import (
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
	f, err := readConfig(path, parsePublisherFile)
	if err != nil {
		return nil, err
	}
	return loadKeys(f, path)
}

// loadKeys returns f's configuration with its signing key loaded; path
// names the configuration file in errors.
func loadKeys(f *publisherFile, path string) (*publisher.Config, error) {
	key, err := loadKey(path, f, f.config.NATS, crypto.LoadSigningKey)
	if err != nil {
		return nil, err
	}
	cfg := f.config
	cfg.SigningKey = key
	return &cfg, nil
}

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
			err = parsePublisherCertificates(v, cfg.Certificates, at)
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

// parsePublisherCertificates parses the certificates mapping (certificate
// name -> node names).
func parsePublisherCertificates(n *yaml.Node, certs map[string][]string, at *places) error {
	const key = "certificates"
	return strictyaml.Walk(n, key, nil, func(name string, k, v *yaml.Node) error {
		if err := wire.CheckCertName(name); err != nil {
			return strictyaml.At(k, key, err)
		}
		p := field.Join(key, name)
		at.mark(p, k)
		items, err := strictyaml.List(v, p)
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
		certs[name] = nodes
		return nil
	})
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
		}
		return err
	})
}
