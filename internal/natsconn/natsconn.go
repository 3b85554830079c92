// Package natsconn connects certsync to NATS the same way on both sides: one or
// several server URLs, credentials (JWT creds, an nkey seed, or user and
// password), TLS with a private CA and optional client certificate, a bounded
// first connection, and reconnection forever after.
//
// NATS reports a denied permission only to the connection's error handler; the
// JetStream call that caused it just times out. Conn keeps the last such error
// so Explain can tell the user why instead of "timeout".
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Options say how to reach and authenticate to NATS. Zero values are fine for
// an open local server.
type Options struct {
	// URL is one server URL or several, comma-separated (default nats://127.0.0.1:4222).
	URL string
	// Creds is a JWT credentials file (decentralised auth).
	Creds string
	// NKey is a file holding an nkey seed (as `certsync auth` writes).
	NKey string
	// User and Password authenticate with a plain login.
	User, Password string
	// TLS configures TLS; see TLSOptions.
	TLS TLSOptions
	// Name identifies the client in the server's monitoring.
	Name string
	// InboxPrefix replaces "_INBOX" so that a client's replies can be
	// permitted to it alone (least privilege).
	InboxPrefix string
}

// TLSOptions configure TLS. CA alone verifies the server with a private CA;
// Cert and Key add a client certificate.
type TLSOptions struct {
	CA, Cert, Key string
}

// DefaultURL is used when Options.URL is empty.
const DefaultURL = "nats://127.0.0.1:4222"

// Conn is a NATS connection that remembers the last asynchronous error.
type Conn struct {
	*nats.Conn
	mu      sync.Mutex
	lastErr error
	denied  chan struct{} // closed, and replaced, at each permissions violation
}

// ErrDenied means the server refused a call for lack of permission. Errors
// that wrap it also say what the server said.
var ErrDenied = errors.New("denied by the server's permissions")

// Connect connects to NATS, retrying with a capped backoff until ctx ends, so
// the caller bounds the wait with ctx. Once connected, the client reconnects
// forever on its own.
func Connect(ctx context.Context, o Options, log *slog.Logger) (*Conn, error) {
	c := &Conn{denied: make(chan struct{})}
	opts, err := o.natsOptions(c, log)
	if err != nil {
		return nil, err
	}
	url := o.URL
	if url == "" {
		url = DefaultURL
	}
	wait := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			c.Conn = nc
			return c, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrNoServers) && strings.Contains(err.Error(), "authorization") {
			return nil, fmt.Errorf("connecting to %s: %w", url, err)
		}
		log.Debug("nats_connect_failed", "url", url, "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w (gave up: %w)", url, err, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

func (o Options) natsOptions(c *Conn, log *slog.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.Timeout(5 * time.Second),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			c.mu.Lock()
			c.lastErr = err
			if errors.Is(err, nats.ErrPermissionViolation) {
				close(c.denied)
				c.denied = make(chan struct{})
			}
			c.mu.Unlock()
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats_error", "error", err, "subject", subject)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats_disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats_reconnected", "url", nc.ConnectedUrlRedacted())
		}),
	}
	n := 0
	if o.Creds != "" {
		n++
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		n++
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed %q: %w", o.NKey, err)
		}
		opts = append(opts, opt)
	}
	if o.User != "" || o.Password != "" {
		n++
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if n > 1 {
		return nil, errors.New("nats: set only one of creds, nkey or user/password")
	}
	if o.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(o.TLS.CA))
	}
	if (o.TLS.Cert == "") != (o.TLS.Key == "") {
		return nil, errors.New("nats: tls cert and key go together")
	}
	if o.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(o.TLS.Cert, o.TLS.Key))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	return opts, nil
}

// LastAsyncError returns the last error the server reported asynchronously,
// such as a permissions violation, or nil.
func (c *Conn) LastAsyncError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Explain adds the reason the server gave asynchronously to err, when a
// permissions violation is the likely cause of a timeout. It returns err
// unchanged otherwise.
func (c *Conn) Explain(err error) error {
	if err == nil {
		return nil
	}
	last := c.LastAsyncError()
	if last == nil || !errors.Is(last, nats.ErrPermissionViolation) {
		return err
	}
	return fmt.Errorf("%w (server said: %v)", err, last)
}

// Call runs fn, ending its context early when the server reports a
// permissions violation while it runs: the server denies a request without
// answering it, so fn would otherwise wait for its whole timeout. The error
// then wraps ErrDenied and says what the server said; any other error of fn
// is returned through Explain.
func (c *Conn) Call(ctx context.Context, fn func(ctx context.Context) error) error {
	c.mu.Lock()
	denied := c.denied
	c.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	select {
	case err := <-done:
		return c.Explain(err)
	case <-denied:
		cancel()
		<-done
		return fmt.Errorf("%w (server said: %v)", ErrDenied, c.LastAsyncError())
	}
}
