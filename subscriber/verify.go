// The served-certificate check (a certificate's Verify setting): TLS
// handshakes with the service until it serves the new leaf. "Verify" means
// only this; the publisher's signature is checked by authenticate
// (process.go).

package subscriber

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/certsync/certsync/crypto"
)

const (
	// verifyInterval is the pause between two handshakes of verify.
	verifyInterval = 250 * time.Millisecond
	// verifyDialTimeout bounds one handshake.
	verifyDialTimeout = 5 * time.Second
	// wildcardLabel stands for "*" when the certificate's first name is a
	// wildcard: "*.example.com" is verified as "certsync-verify.example.com",
	// a name the certificate covers and a wildcard server_name matches.
	wildcardLabel = "certsync-verify"
)

// ErrNotServed means verify did not see the new certificate served in time.
var ErrNotServed = errors.New("new certificate not served")

// serverName is the name verify sends as SNI for leaf: its first DNS name
// (a wildcard's "*" replaced by wildcardLabel), else its common name, else
// none.
func serverName(leaf *x509.Certificate) string {
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		name = wildcardLabel + "." + rest
	}
	if net.ParseIP(name) != nil {
		return "" // SNI carries no IP addresses
	}
	return name
}

// verifyServed makes TLS handshakes with addr, sending sni, until the server
// presents the leaf whose fingerprint is want, or timeout passes. It checks
// no chain and no name: it only compares the leaf with the one just
// installed. The error says what was served last, or why no handshake
// succeeded, and wraps ErrNotServed.
func verifyServed(ctx context.Context, addr, sni string, want crypto.Fingerprint, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &tls.Dialer{
		Config: &tls.Config{
			ServerName:         sni,
			InsecureSkipVerify: true, // the leaf is compared byte for byte below
			MinVersion:         tls.VersionTLS12,
		},
	}
	var last string
	for {
		dctx, dcancel := context.WithTimeout(ctx, verifyDialTimeout)
		conn, err := d.DialContext(dctx, "tcp", addr)
		dcancel()
		if err == nil {
			certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
			conn.Close()
			if len(certs) == 0 {
				last = "no certificate"
			} else if got := crypto.FingerprintOf(certs[0].Raw); got == want {
				return nil
			} else {
				last = "served " + got.String()
			}
		} else if ctx.Err() == nil || last == "" {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify %s (SNI %q): %s after %v, want %s: %w", addr, sni, last, timeout, want, ErrNotServed)
		case <-time.After(verifyInterval):
		}
	}
}
