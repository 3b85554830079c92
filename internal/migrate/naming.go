package migrate

import (
	"fmt"
	"strings"

	"github.com/certsync/certsync/internal/wire"
)

// NodeName returns the certsync node name of a server, by this rule:
//
//   - an IPv4 address: its dots become '-': 192.0.2.10 -> 192-0-2-10;
//   - an IPv6 address: "ip6-" and its canonical form with ':' (and '.')
//     made '-': 2001:db8::1 -> ip6-2001-db8--1;
//   - a hostname: its first label, as `hostname -s` prints it:
//     web1.example.net -> web1; with full, the whole name with dots made
//     '-': web1.example.net -> web1-example-net.
//
// Hostnames are lowercase already ([ParseServer]). The result fits the node
// name rule (wire.CheckNodeName); a full name longer than 64 bytes is an
// error.
func NodeName(s Server, full bool) (string, error) {
	var name string
	switch {
	case s.IP && strings.Contains(s.Host, ":"):
		name = "ip6-" + strings.NewReplacer(":", "-", ".", "-").Replace(s.Host)
	case s.IP:
		name = strings.ReplaceAll(s.Host, ".", "-")
	case full:
		name = strings.ReplaceAll(s.Host, ".", "-")
	default:
		name, _, _ = strings.Cut(s.Host, ".")
	}
	if err := wire.CheckNodeName(name); err != nil {
		return "", fmt.Errorf("naming server %q: %w", s.Host, err)
	}
	return name, nil
}
