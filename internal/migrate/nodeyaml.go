package migrate

import (
	"path"
	"strings"

	"go.yaml.in/yaml/v3"
)

// NodeOptions are the contents of a node.yaml written by [NodeYAML].
type NodeOptions struct {
	// Header is a comment put at the top, one or several lines without '#'.
	Header string
	// Name, NATS (nats.url), Identity and TrustedPublisher are required.
	Name, NATS, Identity, TrustedPublisher string
	// NKey (nats.nkey) and CA (nats.tls.ca) are left out when empty.
	NKey, CA string
	// StageDir is stage_dir.
	StageDir string
	// InstallParent holds each certificate's install_dir, InstallParent/<name>.
	InstallParent string
	// Check and Reload go under defaults, for every certificate; left out
	// when empty.
	Check, Reload string
	// DefaultsComment, when not empty, is a comment put where defaults is
	// (or would be).
	DefaultsComment string
	// Certificates are the certificates to install, in order.
	Certificates []string
}

// NodeYAML renders a node.yaml. It validates nothing: the caller loads the
// result with the real configuration loader.
func NodeYAML(o NodeOptions) ([]byte, error) {
	natsMap := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{str("url"), str(o.NATS)}}
	if o.NKey != "" {
		natsMap.Content = append(natsMap.Content, str("nkey"), str(o.NKey))
	}
	if o.CA != "" {
		natsMap.Content = append(natsMap.Content, str("tls"), &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{str("ca"), str(o.CA)}})
	}
	trusted := &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: o.TrustedPublisher, Style: yaml.DoubleQuotedStyle}}}
	root := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
		str("name"), str(o.Name),
		str("nats"), natsMap,
		str("identity"), str(o.Identity),
		str("trusted_publishers"), trusted,
		str("stage_dir"), str(o.StageDir),
	}}
	root.Content[0].HeadComment = comment(strings.TrimSpace(o.Header))
	defaults := &yaml.Node{Kind: yaml.MappingNode}
	if o.Check != "" {
		defaults.Content = append(defaults.Content, str("check"), str(o.Check))
	}
	if o.Reload != "" {
		defaults.Content = append(defaults.Content, str("reload"), str(o.Reload))
	}
	certsKey := str("certificates")
	if len(defaults.Content) > 0 {
		k := str("defaults")
		k.HeadComment = comment(o.DefaultsComment)
		root.Content = append(root.Content, k, defaults)
	} else {
		certsKey.HeadComment = comment(o.DefaultsComment)
	}
	certs := &yaml.Node{Kind: yaml.MappingNode}
	for _, c := range o.Certificates {
		certs.Content = append(certs.Content, str(c), &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{
			str("install_dir"), str(path.Join(o.InstallParent, c)),
		}})
	}
	root.Content = append(root.Content, certsKey, certs)
	return encode(root)
}
