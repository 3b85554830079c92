// Package nginxtest runs Debian's real nginx for end-to-end tests: one TLS
// server on a loopback random port, its prefix, configuration, logs, pid file
// and temp folders all in the test's temporary folder, reloaded for real.
//
// A test points nginx at certificate files, swaps them, reloads and watches
// what a TLS handshake shows:
//
//	n := nginxtest.StartNginx(t, nginxtest.TLSFiles(certFile, keyFile))
//	leaf := nginxtest.ServedLeaf(t, n.Addr, "www.example.test")
//	… replace certFile and keyFile …
//	n.Reload(t)
//	natstest.WaitFor(t, 10*time.Second, "new leaf", func() bool { … FetchLeaf … })
//
// nginx runs in the foreground (daemon off) as a master with one worker; the
// master reads the certificate and key, at start and at every reload. Run as
// root, the configuration says "user root;" so the worker keeps access to the
// temp folders under the test's 0700 temporary folder (otherwise it would
// switch to nobody); run as another user, nginx stays that user and needs no
// user directive. A reload that fails (a bad certificate, a key that does not
// match) leaves nginx serving the old files and logs why in ErrorLog: that is
// nginx's own behaviour, which certsync's verify step relies on.
//
// Command gives the nginx command line with this instance's -p, -c and -e, so
// a node's check and reload commands can be the real ones:
// n.Command("-t", "-q") and n.Command("-s", "reload").
package nginxtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/proctest"
)

// startTimeout bounds how long StartNginx waits for the port to accept TLS;
// stopTimeout how long the cleanup waits for nginx to exit after SIGTERM
// before it kills the process group.
const (
	startTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// Nginx is a running nginx master, stopped when the test ends.
type Nginx struct {
	// Addr is the loopback host:port of the TLS server.
	Addr string
	// Bin is the nginx program.
	Bin string
	// Prefix is nginx's -p folder, holding everything below.
	Prefix string
	// ConfFile is the configuration file (-c).
	ConfFile string
	// ErrorLog is the error log (-e and error_log).
	ErrorLog string
	// PIDFile is where the master writes its process id.
	PIDFile string

	proc *proctest.Process
}

// TLSFiles returns server directives that serve certFile (the full chain)
// with keyFile: the argument StartNginx usually gets.
func TLSFiles(certFile, keyFile string) string {
	return fmt.Sprintf("ssl_certificate %s;\nssl_certificate_key %s;\n", quote(certFile), quote(keyFile))
}

// StartNginx writes a configuration with one server listening with TLS on a
// loopback random port, with serverConf (for example TLSFiles) inside its
// server block, starts nginx in the foreground, waits until the port
// completes a TLS handshake, and stops nginx when the test ends. It skips or
// fails the test as acmetest.RequireTool does when nginx is not installed.
func StartNginx(t testing.TB, serverConf string) *Nginx {
	t.Helper()
	bin := acmetest.RequireTool(t, "nginx")
	prefix := t.TempDir()
	var lastErr error
	// The port is reserved by listening and closing, so another process
	// may take it before nginx binds it; nginx then exits and a new port
	// is tried.
	for attempt := range 3 {
		n, err := start(t, bin, prefix, attempt, serverConf)
		if err == nil {
			return n
		}
		lastErr = err
	}
	t.Fatalf("start nginx: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, prefix string, attempt int, serverConf string) (*Nginx, error) {
	t.Helper()
	addr := loopback.FreeAddr(t)
	n := &Nginx{
		Addr:     addr,
		Bin:      bin,
		Prefix:   prefix,
		ConfFile: filepath.Join(prefix, fmt.Sprintf("nginx-%d.conf", attempt)),
		ErrorLog: filepath.Join(prefix, "error.log"),
		PIDFile:  filepath.Join(prefix, "nginx.pid"),
	}
	if err := os.WriteFile(n.ConfFile, []byte(n.config(serverConf)), 0o600); err != nil {
		return nil, fmt.Errorf("write nginx config %q: %w", n.ConfFile, err)
	}
	args := n.Command("-g", "daemon off;")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = prefix
	out := &strings.Builder{}
	cmd.Stdout = out
	cmd.Stderr = out
	var err error
	if n.proc, err = proctest.Start(cmd); err != nil {
		return nil, err
	}
	err = n.proc.WaitServing(startTimeout, func() error {
		_, err := FetchLeaf(addr, "")
		return err
	})
	if err != nil {
		n.stop()
		return nil, fmt.Errorf("nginx on %s: %w\n%s%s", addr, err, out.String(), n.readErrorLog())
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("nginx error log:\n%s", n.readErrorLog())
		}
	})
	return n, nil
}

// config is the whole configuration: every path nginx writes is under the
// prefix, so it runs without root and leaves nothing behind.
func (n *Nginx) config(serverConf string) string {
	var b strings.Builder
	if os.Geteuid() == 0 {
		b.WriteString("user root;\n")
	}
	p := func(name string) string { return quote(filepath.Join(n.Prefix, name)) }
	fmt.Fprintf(&b, `worker_processes 1;
pid %s;
lock_file %s;
error_log %s info;
events {
    worker_connections 64;
}
http {
    access_log %s;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;
    server {
        listen %s ssl;
        server_name _;
%s
        location / {
            return 200 "certsync nginxtest\n";
        }
    }
}
`, quote(n.PIDFile), p("nginx.lock"), quote(n.ErrorLog), p("access.log"),
		p("client_body_temp"), p("proxy_temp"), p("fastcgi_temp"), p("uwsgi_temp"), p("scgi_temp"),
		n.Addr, serverConf)
	return b.String()
}

// Command returns the nginx command line for this instance, its -p, -c and
// -e followed by args: n.Command("-t", "-q") checks the configuration,
// n.Command("-s", "reload") reloads the running master.
func (n *Nginx) Command(args ...string) []string {
	return append([]string{n.Bin, "-p", n.Prefix + "/", "-c", n.ConfFile, "-e", n.ErrorLog}, args...)
}

// Reload reloads the running master's configuration and certificates with
// `nginx -s reload`, as an operator does, and fails the test if that command
// fails. The command parses the whole configuration first, certificates and
// keys included, and signals nothing when they are bad. nginx applies a
// reload asynchronously: poll FetchLeaf until the new certificate is served.
func (n *Nginx) Reload(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := n.Command("-s", "reload")
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("reload nginx: %v\n%s", err, out)
	}
}

// SignalReload sends SIGHUP straight to the master, skipping the checks of
// `nginx -s reload`. A master that cannot load the new configuration logs
// why in ErrorLog and keeps serving the old one.
func (n *Nginx) SignalReload(t testing.TB) {
	t.Helper()
	if err := n.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("signal nginx master to reload: %v", err)
	}
}

// ErrorLogText returns nginx's error log so far.
func (n *Nginx) ErrorLogText() string { return n.readErrorLog() }

func (n *Nginx) readErrorLog() string {
	data, err := os.ReadFile(n.ErrorLog)
	if err != nil {
		return fmt.Sprintf("(no error log: %v)", err)
	}
	return string(data)
}

// stop ends nginx with SIGTERM (fast shutdown) and waits; if it lingers, it
// kills nginx's process group.
func (n *Nginx) stop() { n.proc.Stop(stopTimeout) }

// FetchLeaf makes a TLS handshake with addr, sending sni as the server name
// when it is not empty, and returns the leaf certificate the server sent. It
// verifies nothing: tests compare the leaf with what they expect.
func FetchLeaf(addr, sni string) (*x509.Certificate, error) {
	d := &tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{
			ServerName:         sni,
			InsecureSkipVerify: true, // the test checks the leaf itself
			MinVersion:         tls.VersionTLS12,
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tls handshake with %q: %w", addr, err)
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("tls handshake with " + addr + ": no certificate")
	}
	return certs[0], nil
}

// ServedLeaf is FetchLeaf that fails the test on error.
func ServedLeaf(t testing.TB, addr, sni string) *x509.Certificate {
	t.Helper()
	leaf, err := FetchLeaf(addr, sni)
	if err != nil {
		t.Fatalf("served leaf: %v", err)
	}
	return leaf
}

// WaitServes waits until a TLS handshake with addr (sni as the server name)
// gets want as the leaf, and fails the test after timeout. After a reload
// nginx's old workers finish what they accepted and may still take a new
// connection for a moment, so one handshake that sees the new leaf does
// not mean every next one will: tests wait for the leaf they expect.
func WaitServes(t testing.TB, addr, sni string, want *x509.Certificate, timeout time.Duration) {
	t.Helper()
	natstest.WaitFor(t, timeout, fmt.Sprintf("%s to serve the certificate with serial %x", addr, want.SerialNumber), func() bool {
		leaf, err := FetchLeaf(addr, sni)
		return err == nil && leaf.Equal(want)
	})
}

// quote makes s one nginx configuration token.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
