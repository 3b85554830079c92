package migrate

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SeedNode is one node of a seeded publisher.yaml.
type SeedNode struct {
	// Name is the node name (NodeName), Server the server it was made from.
	Name   string
	Server Server
	// Recipient is the server's ssh-ed25519 host key.
	Recipient string
	// Certificates are the certificates whose lists name the server, sorted.
	Certificates []string
	// From is where the server was first named, "FILE line N".
	From string
}

// SeedSkip is a server left out, and why.
type SeedSkip struct {
	Server       Server
	Certificates []string
	From         string
	// Others are the key types known_hosts holds for it instead.
	Others []string
}

// Seed is a publisher.yaml planned from the old script's lists.
type Seed struct {
	// Nodes are sorted by name.
	Nodes []SeedNode
	// Skipped are the servers with no ssh-ed25519 host key, sorted by host.
	Skipped []SeedSkip
	// Certificates maps each certificate kept to its nodes, sorted; a
	// certificate none of whose servers has a key is left out.
	Certificates map[string][]string
	// Empty are the certificates left out for having no node, sorted.
	Empty []string
}

// SeedOptions tune [PlanSeed].
type SeedOptions struct {
	// FullNames names nodes by their whole hostname (see NodeName).
	FullNames bool
}

// PlanSeed plans publisher.yaml from the lists and the host keys. A server
// named in several lists is one node. Two servers that map to one node
// name, or share a host key (the same machine listed by IP and by name),
// are an error naming both and where they are listed. No node at all is an
// error.
func PlanSeed(lists []List, kh *KnownHosts, o SeedOptions) (*Seed, error) {
	type server struct {
		srv   Server
		from  string
		certs []string
	}
	byHost := map[string]*server{}
	var hosts []string
	for _, l := range lists {
		for _, e := range l.Servers {
			s, ok := byHost[e.Value]
			if !ok {
				srv, err := ParseServer(e.Value)
				if err != nil {
					return nil, fmt.Errorf("%s line %d: %w", l.File, e.Line, err)
				}
				s = &server{srv: srv, from: fmt.Sprintf("%s line %d", l.File, e.Line)}
				byHost[e.Value] = s
				hosts = append(hosts, e.Value)
			}
			s.certs = append(s.certs, l.Certificate)
		}
	}
	sort.Strings(hosts)
	seed := &Seed{Certificates: map[string][]string{}}
	byName := map[string]*server{}
	byKey := map[string]*server{}
	for _, h := range hosts {
		s := byHost[h]
		sort.Strings(s.certs)
		name, err := NodeName(s.srv, o.FullNames)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.from, err)
		}
		if other, ok := byName[name]; ok {
			return nil, fmt.Errorf("servers %q (%s) and %q (%s) both make node name %q: name nodes by their whole hostname (--full-names) or list each server once", other.srv.Host, other.from, s.srv.Host, s.from, name)
		}
		byName[name] = s
		hk, err := kh.Lookup(s.srv)
		if err != nil {
			return nil, err
		}
		if hk.Ed25519 == "" {
			seed.Skipped = append(seed.Skipped, SeedSkip{Server: s.srv, Certificates: s.certs, From: s.from, Others: hk.Others})
			continue
		}
		if other, ok := byKey[hk.Ed25519]; ok {
			return nil, fmt.Errorf("servers %q (%s) and %q (%s) have the same ssh-ed25519 host key: one machine listed under two names; list it under one", other.srv.Host, other.from, s.srv.Host, s.from)
		}
		byKey[hk.Ed25519] = s
		seed.Nodes = append(seed.Nodes, SeedNode{Name: name, Server: s.srv, Recipient: hk.Ed25519, Certificates: s.certs, From: s.from})
		for _, c := range s.certs {
			seed.Certificates[c] = append(seed.Certificates[c], name)
		}
	}
	sort.Slice(seed.Nodes, func(i, j int) bool { return seed.Nodes[i].Name < seed.Nodes[j].Name })
	for _, l := range lists {
		if nodes, ok := seed.Certificates[l.Certificate]; ok {
			sort.Strings(nodes)
		} else {
			seed.Empty = append(seed.Empty, l.Certificate)
		}
	}
	if len(seed.Nodes) == 0 {
		return nil, errors.New("no server of any list has an ssh-ed25519 host key in the known hosts: nothing to write")
	}
	return seed, nil
}

// PublisherOptions are the settings of a seeded publisher.yaml that do not
// come from the lists.
type PublisherOptions struct {
	// NATS is nats.url; SigningKey is signing_key.
	NATS, SigningKey string
	// Header is a comment put at the top, one or several lines without '#'.
	Header string
}

// PublisherYAML renders the planned publisher.yaml: nodes with their host
// key and, as a comment, the server they were made from; certificates in
// flow style; the left-out servers and certificates named in the header.
func (s *Seed) PublisherYAML(o PublisherOptions) ([]byte, error) {
	header := strings.TrimSpace(o.Header)
	for _, sk := range s.Skipped {
		header += fmt.Sprintf("\nleft out, no ssh-ed25519 host key: %s (%s)", sk.Server.Host, strings.Join(sk.Certificates, ", "))
	}
	for _, c := range s.Empty {
		header += fmt.Sprintf("\nleft out, no node with a host key: certificate %s", c)
	}
	nodes := &yaml.Node{Kind: yaml.MappingNode}
	for _, n := range s.Nodes {
		v := str(n.Recipient)
		v.LineComment = "# " + n.Server.Host
		nodes.Content = append(nodes.Content, str(n.Name), v)
	}
	certs := &yaml.Node{Kind: yaml.MappingNode}
	names := make([]string, 0, len(s.Certificates))
	for c := range s.Certificates {
		names = append(names, c)
	}
	slices.Sort(names)
	for _, c := range names {
		seq := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, n := range s.Certificates[c] {
			seq.Content = append(seq.Content, str(n))
		}
		certs.Content = append(certs.Content, str(c), seq)
	}
	root := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		str("nats"), {Kind: yaml.MappingNode, Content: []*yaml.Node{str("url"), str(o.NATS)}},
		str("signing_key"), str(o.SigningKey),
		str("nodes"), nodes,
		str("certificates"), certs,
	}}
	root.Content[0].HeadComment = comment(header)
	return encode(root)
}

// str is a string scalar node.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// comment turns lines into a YAML comment.
func comment(text string) string {
	if text == "" {
		return ""
	}
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight("# "+l, " ")
	}
	return strings.Join(lines, "\n")
}

// encode renders a document with two-space indentation.
func encode(root *yaml.Node) ([]byte, error) {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
		return nil, fmt.Errorf("rendering YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("rendering YAML: %w", err)
	}
	return []byte(b.String()), nil
}
