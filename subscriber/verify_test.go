package subscriber

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certsync/certsync/crypto"

	"github.com/certsync/certsync/internal/testing/testcert"
)

// tlsServer serves whichever certificate cur holds and records the SNI of
// the last handshake.
func tlsServer(t *testing.T, cur *atomic.Pointer[tls.Certificate], sni *atomic.Value) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.TLS = &tls.Config{GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
		sni.Store(h.ServerName)
		return cur.Load(), nil
	}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func keyPair(t *testing.T, c *testcert.Cert) *tls.Certificate {
	t.Helper()
	kp, err := tls.X509KeyPair(c.FullChain, c.PrivKey)
	if err != nil {
		t.Fatal(err)
	}
	return &kp
}

func TestVerifyServed(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	oldCert := ca.Issue(t, testcert.Options{})
	newCert := ca.Issue(t, testcert.Options{})
	var cur atomic.Pointer[tls.Certificate]
	var sni atomic.Value
	cur.Store(keyPair(t, oldCert))
	addr := tlsServer(t, &cur, &sni)
	want := crypto.FingerprintOf(newCert.Leaf.Raw)

	// Never served: fails after the timeout, saying what was served.
	err := verifyServed(context.Background(), addr, "example.com", want, 600*time.Millisecond)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), fingerprint(oldCert.Leaf.Raw)) {
		t.Errorf("old certificate served: %v", err)
	}
	if got := sni.Load(); got != "example.com" {
		t.Errorf("SNI %v, want example.com", got)
	}

	// Served a moment later (as after nginx's reload): passes.
	go func() {
		time.Sleep(300 * time.Millisecond)
		cur.Store(keyPair(t, newCert))
	}()
	if err := verifyServed(context.Background(), addr, "example.com", want, 20*time.Second); err != nil {
		t.Errorf("new certificate served: %v", err)
	}

	// Nothing listening: the last dial error.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	// Long enough that the first dial ends on its own (refused) even on a
	// loaded machine; a dial the deadline cuts short never replaces it.
	err = verifyServed(context.Background(), closed, "", want, 3*time.Second)
	if !errors.Is(err, ErrNotServed) || !strings.Contains(err.Error(), "refused") {
		t.Errorf("nothing listening: %v", err)
	}
}

func TestServerName(t *testing.T) {
	t.Parallel()
	ca := testcert.NewCA(t)
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"example.com", "*.example.com"}, "example.com"},
		{[]string{"*.example.com", "example.com"}, wildcardLabel + ".example.com"},
		{[]string{"www.example.org"}, "www.example.org"},
	} {
		c := ca.Issue(t, testcert.Options{Names: tc.names})
		if got := serverName(c.Leaf); got != tc.want {
			t.Errorf("serverName(%v) = %q, want %q", tc.names, got, tc.want)
		}
	}
}
