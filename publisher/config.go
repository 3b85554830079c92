package publisher

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/wire"
)

// Defaults of the Config fields left zero (the stream's are wire's:
// wire.DefaultReplicas, wire.DefaultHistory, wire.DefaultDuplicateWindow).
// These are the only copies: publisher.yaml's defaults are these.
const (
	// DefaultLineages is where Republish finds certbot's lineages.
	DefaultLineages = "/etc/letsencrypt/live"
	// DefaultTimeout is Config.Timeout's default.
	DefaultTimeout = 30 * time.Second
	// ClientName is NATS.Name's default.
	ClientName = "certsync publisher"
)

// FieldError is a setting Validate refused: its Path names the setting as
// publisher.yaml writes it ("nodes.web2", "certificates.example.com[1]").
type FieldError = field.Error

// Config is everything the publisher needs. Validate (which New calls)
// applies the defaults of the fields left zero and refuses what the
// publisher cannot follow; the command line builds it from publisher.yaml
// and calls Validate too.
type Config struct {
	// NATS says how to reach the servers. Name defaults to ClientName,
	// InboxPrefix to wire.PublisherInboxPrefix, the inbox `certsync auth`
	// permits the publisher alone. Validate holds them to
	// natsconn.Options.Validate.
	NATS natsconn.Options
	// SigningKey signs every bundle. Nodes trust its public key. It may be
	// nil for a Publisher that only reads the stream.
	SigningKey *crypto.SigningKey
	// Lineages is the folder holding one certbot lineage per certificate,
	// a clean absolute path (default DefaultLineages); republish reads it.
	Lineages string
	// Nodes maps a node name to its age recipient, as written in the
	// configuration: "age1…", "ssh-ed25519 …" or "ssh-rsa …". No two nodes
	// share a recipient.
	Nodes map[string]string
	// Certificates maps a certificate name to the names of the nodes that
	// receive it: each with at least one node, each listed once and under
	// Nodes. A node in no certificate is fine, and so is a Publisher
	// without certificates (for Setup, Bundles or Status; publisher.yaml
	// needs one).
	Certificates map[string][]string
	// Stream holds the stream's settings: Replicas 1 to wire.MaxReplicas,
	// History 1 to wire.MaxHistory, a positive DuplicateWindow, and the
	// replicas of the node consumers it creates, ConsumerReplicas, 1 to
	// Replicas; zero fields take wire's defaults.
	Stream wire.StreamOptions
	// Rollout is the rollout policy of every certificate without one of
	// its own in Rollouts; nil: none, each certificate goes into service
	// at once on every node (as before rollouts existed).
	Rollout *RolloutPolicy
	// Rollouts holds the policy of a certificate that has its own; a nil
	// entry means none for it, whatever Rollout says.
	Rollouts map[string]*RolloutPolicy
	// Timeout bounds how long publish and republish keep trying to reach NATS
	// and to have a bundle stored before they give up (default DefaultTimeout).
	Timeout time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
	// Progress, when set, is told how the consumer work of Publish,
	// Republish and Rollback goes (listing, updating, creating and
	// deleting the nodes' consumers: one request each, a while with
	// thousands of nodes), so that a program can show it. Each run of a
	// phase is reported from its start (Done 0) to its Final report, at
	// most every ProgressInterval in between. It is called on the
	// goroutine of the call, never while the publisher holds a lock, and
	// must return quickly. nil: nothing is reported. The library draws
	// nothing itself: cmd/certsync renders it on a terminal.
	Progress func(Progress)
}

// Validate applies the defaults of the fields left zero and refuses what
// the publisher cannot follow. The error is a *FieldError naming the
// first setting at fault, nodes and certificates in the order of their
// names. It reads no file: the signing key is the caller's to load.
func (c *Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate is Validate, returning the parsed recipients by node name.
func (c *Config) validate() (map[string]age.Recipient, error) {
	if c.NATS.Name == "" {
		c.NATS.Name = ClientName
	}
	if c.NATS.InboxPrefix == "" {
		c.NATS.InboxPrefix = wire.PublisherInboxPrefix
	}
	if err := c.NATS.Validate(); err != nil {
		return nil, err // a *FieldError under "nats"
	}
	if c.Lineages == "" {
		c.Lineages = DefaultLineages
	}
	if d := c.Lineages; !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
		return nil, field.Errorf("lineages", "want a clean absolute path below /, got %q", d)
	}
	if err := checkStream(&c.Stream); err != nil {
		return nil, err
	}
	switch {
	case c.Timeout == 0:
		c.Timeout = DefaultTimeout
	case c.Timeout < 0:
		return nil, field.Errorf("timeout", "want a positive duration, got %v", c.Timeout)
	}
	recipients, err := checkNodes(c.Nodes)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(c.Certificates)) {
		if err := wire.CheckCertName(name); err != nil {
			return nil, field.Wrap("certificates", err)
		}
		p := field.Join("certificates", name)
		nodes := c.Certificates[name]
		if len(nodes) == 0 {
			return nil, field.Errorf(p, "no nodes: list at least one node")
		}
		seen := make(map[string]bool, len(nodes))
		for i, node := range nodes {
			if err := wire.CheckNodeName(node); err != nil {
				return nil, field.Wrap(field.Item(p, i), err)
			}
			switch {
			case seen[node]:
				return nil, field.Errorf(field.Item(p, i), "node %q listed twice", node)
			case c.Nodes[node] == "":
				return nil, field.Errorf(field.Item(p, i), "unknown node %q: add it under nodes with its recipient", node)
			}
			seen[node] = true
		}
	}
	if err := c.checkRollouts(); err != nil {
		return nil, err
	}
	return recipients, nil
}

// checkStream applies wire's defaults to the zero fields of o and checks
// the others.
func checkStream(o *wire.StreamOptions) error {
	switch {
	case o.Replicas == 0:
		o.Replicas = wire.DefaultReplicas
	case o.Replicas < 1 || o.Replicas > wire.MaxReplicas:
		return field.Errorf("stream.replicas", "want an integer from 1 to %d, got %d", wire.MaxReplicas, o.Replicas)
	}
	switch {
	case o.History == 0:
		o.History = wire.DefaultHistory
	case o.History < 1 || o.History > wire.MaxHistory:
		return field.Errorf("stream.history", "want an integer from 1 to %d, got %d", wire.MaxHistory, o.History)
	}
	switch {
	case o.DuplicateWindow == 0:
		o.DuplicateWindow = wire.DefaultDuplicateWindow
	case o.DuplicateWindow < 0:
		return field.Errorf("stream.duplicate_window", "want a positive duration, got %v", o.DuplicateWindow)
	}
	switch {
	case o.ConsumerReplicas == 0:
		o.ConsumerReplicas = wire.DefaultConsumerReplicas
	case o.ConsumerReplicas < 1 || o.ConsumerReplicas > o.Replicas:
		return field.Errorf("stream.consumer_replicas", "want an integer from 1 to stream.replicas (%d), got %d", o.Replicas, o.ConsumerReplicas)
	}
	return nil
}

// checkNodes checks the node names and parses their recipients, refusing
// two nodes with one recipient: each node has its own key, and the record
// of who received what would be wrong.
func checkNodes(nodes map[string]string) (map[string]age.Recipient, error) {
	recipients := make(map[string]age.Recipient, len(nodes))
	owner := make(map[string]string, len(nodes)) // recipient key -> node
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		if err := wire.CheckNodeName(name); err != nil {
			return nil, field.Wrap("nodes", err)
		}
		p := field.Join("nodes", name)
		text := nodes[name]
		if crypto.LooksLikePrivateKey(text) {
			return nil, field.Errorf(p, "this is a private key, not a recipient: give the recipient `certsync keygen node` printed (age1…) or the node's public SSH host key")
		}
		r, err := crypto.ParseRecipient(text)
		if err != nil {
			return nil, field.Wrap(p, err)
		}
		// An SSH key line may end with a comment; the key is what counts.
		key := strings.TrimSpace(text)
		if f := strings.Fields(key); len(f) >= 2 && strings.HasPrefix(key, "ssh-") {
			key = f[0] + " " + f[1]
		}
		if other, ok := owner[key]; ok {
			return nil, field.Errorf(p, "same recipient as node %q: each node has its own key", other)
		}
		owner[key] = name
		recipients[name] = r
	}
	return recipients, nil
}

// errConfig wraps an error of Validate for New.
func errConfig(err error) error { return fmt.Errorf("configuring publisher: %w", err) }
