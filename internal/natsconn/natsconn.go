// Package natsconn connects certsync to NATS the same way on both sides: one or
// several server URLs, credentials (JWT creds, an nkey seed, or user and
// password), TLS with a private CA and optional client certificate, a bounded
// first connection, and reconnection forever after.
//
// NATS reports a denied permission only to the connection's error handler; the
// JetStream call that caused it just times out. Conn keeps the last such error
// so Explain can tell the user why instead of "timeout".
//
// # Secrets
//
// A server URL may carry a password (nats://user:password@host) or a token
// (nats://token@host). No URL reaches an error or a log line without going
// through [Redact], and the errors of the NATS client are redacted as well.
// The nkey seed, creds and TLS key files are secret files: Connect refuses
// them, before connecting, when group or others may read them
// ([crypto.CheckKeyFile], the rule of every key file).
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/field"
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
// forever on its own. Options that Validate refuses (an error wrapping its
// *field.Error), or a secret file group or others may read (an error
// wrapping crypto.ErrKeyPermissions), fail at once. Errors and logs show the URLs
// through Redact.
func Connect(ctx context.Context, o Options, log *slog.Logger) (*Conn, error) {
	c := &Conn{denied: make(chan struct{})}
	raw := o.URL
	if raw == "" {
		raw = DefaultURL
	}
	shown := Redact(withSchemes(raw))
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", shown, err)
	}
	opts, err := o.natsOptions(c, log)
	if err != nil {
		return nil, err
	}
	wait := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(raw, opts...)
		if err == nil {
			c.Conn = nc
			return c, nil
		}
		err = RedactError(err)
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrNoServers) && strings.Contains(err.Error(), "authorization") {
			return nil, fmt.Errorf("connecting to %s: %w", shown, err)
		}
		log.Debug("nats_connect_failed", "url", shown, "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to %s: %w (gave up: %w)", shown, err, context.Cause(ctx))
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// Validate refuses options Connect could not follow, reading no file: a
// server URL list with an empty entry, a scheme other than nats, tls, ws or
// wss, no host or an invalid port (a URL without a scheme is HOST:PORT,
// the port required); a TLS client certificate without its key or the
// reverse; a user without a password or the reverse; more than one of
// creds, nkey, and user and password. The error is a *field.Error whose
// path names the setting as the configuration files spell it, under their
// nats key ("nats.url", "nats.tls", "nats.user", "nats.password", "nats"
// for the choice of login); subscriber.Config.Validate and
// publisher.Config.Validate return it as it is. It checks the URLs in
// order, then TLS, then the login, and returns the first fault. Its
// messages name a URL by its position in the list only: a URL may carry a
// password or a token.
//
// This is the one home of these rules: the command line reads nats: into
// Options and leaves them to Validate.
func (o Options) Validate() error {
	if o.URL != "" {
		if err := checkURLs(o.URL); err != nil {
			return field.Wrap(field.Join(configKey, "url"), err)
		}
	}
	if (o.TLS.Cert == "") != (o.TLS.Key == "") {
		return field.Errorf(field.Join(configKey, "tls"), "cert and key go together")
	}
	switch {
	case o.User != "" && o.Password == "":
		return field.Errorf(field.Join(configKey, "user"), "user needs a password")
	case o.Password != "" && o.User == "":
		return field.Errorf(field.Join(configKey, "password"), "password needs a user")
	}
	methods := 0
	for _, set := range []bool{o.Creds != "", o.NKey != "", o.User != ""} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		return field.Errorf(configKey, "set only one of creds, nkey or user and password")
	}
	return nil
}

// configKey is the key the configuration files give Options under.
const configKey = "nats"

// checkURLs checks a comma-separated list of server URLs, so that the
// client never reports a parse error, whose text repeats the URL. Its
// errors name a URL by its position only.
func checkURLs(list string) error {
	for i, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			// The client would skip it; in a configuration it is a slip.
			return fmt.Errorf("server %d of the list is empty", i+1)
		}
		if !strings.Contains(s, "://") {
			if host, port, err := net.SplitHostPort(s); err != nil || host == "" || !validPort(port) {
				return fmt.Errorf("server %d: want nats://HOST:PORT (or tls://, ws://, wss://) or HOST:PORT", i+1)
			}
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			// url.Error repeats the URL; its innermost reason may quote a
			// piece of it (an invalid escape, a port), so none is shown.
			return fmt.Errorf("server %d is not a valid URL", i+1)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("server %d: want scheme nats, tls, ws or wss, got %q", i+1, u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("server %d has no host", i+1)
		}
		if p := u.Port(); p != "" {
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return fmt.Errorf("server %d: invalid port %q", i+1, p)
			}
		}
	}
	return nil
}

// validPort reports whether p is a port number from 1 to 65535.
func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// withSchemes gives each URL of a list without a scheme the one the client
// assumes, nats://, so that Redact recognises its user information.
func withSchemes(list string) string {
	urls := strings.Split(list, ",")
	for i, s := range urls {
		if s = strings.TrimSpace(s); s != "" && !strings.Contains(s, "://") {
			urls[i] = "nats://" + s
		}
	}
	return strings.Join(urls, ",")
}

// Redact returns s with the user information of every URL in it hidden: a
// user and password become "user:***", a token (a user alone) "***", so
// "nats://alice:s3cret@host:4222" shows as "nats://alice:***@host:4222"
// and "nats://t0ken@host" as "nats://***@host". s may be one URL, a
// comma-separated list, or any text that holds URLs (an error message, a
// log line). Whatever stands between "://" and the last "@" before the
// next space or the next URL counts as user information, so an unusual
// password (one holding "/" or "@") is hidden too; redacting too much is
// preferred to showing a secret.
func Redact(s string) string {
	var b strings.Builder
	rest := s
	for {
		i := strings.Index(rest, "://")
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		start := i + len("://")
		b.WriteString(rest[:start])
		rest = rest[start:]
		// The authority ends at a space or where the next URL's scheme begins.
		end := len(rest)
		if j := strings.IndexAny(rest, " \t\r\n"); j >= 0 {
			end = j
		}
		if j := strings.Index(rest[:end], "://"); j >= 0 {
			k := j
			for k > 0 && isSchemeByte(rest[k-1]) {
				k--
			}
			end = k
		}
		at := strings.LastIndexByte(rest[:end], '@')
		if at < 0 {
			continue
		}
		user, _, hasPassword := strings.Cut(rest[:at], ":")
		if hasPassword && !strings.ContainsAny(user, ",/?#[]") {
			b.WriteString(user + ":***")
		} else {
			b.WriteString("***")
		}
		rest = rest[at:]
	}
}

// isSchemeByte tells the bytes a URL scheme is made of.
func isSchemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// redactedError is an error whose message passed through Redact; errors.Is
// and errors.As still see the error it redacts.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// RedactError returns err with its message passed through Redact (errors.Is
// and errors.As still see err), or err itself when its message holds no URL
// user information. Use it on errors of code that may repeat a URL (the NATS
// client, nats-server's configuration parser).
func RedactError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if red := Redact(msg); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
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
			log.Warn("nats_error", "error", RedactError(err), "subject", subject)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats_disconnected", "error", RedactError(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats_reconnected", "url", Redact(nc.ConnectedUrl()))
		}),
	}
	if err := o.checkKeyFiles(); err != nil {
		return nil, err
	}
	// Validate, which Connect calls first, allows one login at most.
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("reading nkey seed %q: %w", o.NKey, err)
		}
		opts = append(opts, opt)
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.TLS.CA != "" {
		opts = append(opts, nats.RootCAs(o.TLS.CA))
	}
	if o.TLS.Cert != "" {
		opts = append(opts, nats.ClientCert(o.TLS.Cert, o.TLS.Key))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	return opts, nil
}

// KeyFiles returns the secret files o names, each with its configuration
// key: the creds file ("creds"), the nkey seed ("nkey") and the TLS client
// key ("tls.key"). Connect checks each with crypto.CheckKeyFile; a
// configuration loader may check them earlier.
func (o Options) KeyFiles() []KeyFile {
	var files []KeyFile
	for _, f := range []KeyFile{{"creds", o.Creds}, {"nkey", o.NKey}, {"tls.key", o.TLS.Key}} {
		if f.Path != "" {
			files = append(files, f)
		}
	}
	return files
}

// KeyFile is a secret file named by Options.
type KeyFile struct {
	// Key is the option's configuration key: "creds", "nkey" or "tls.key".
	Key string
	// Path is the file.
	Path string
}

// checkKeyFiles refuses a secret file that is missing or that group or
// others may read.
func (o Options) checkKeyFiles() error {
	for _, f := range o.KeyFiles() {
		if err := crypto.CheckKeyFile(f.Path); err != nil {
			return fmt.Errorf("nats %s: %w", f.Key, err)
		}
	}
	return nil
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
// then wraps ErrDenied and says what the server said, unless fn ended by
// itself meanwhile (a Call inside fn saw the denial, and fn's error says
// more); any other error of fn is returned through Explain.
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
		if err := <-done; !errors.Is(err, context.Canceled) {
			// fn ended by itself meanwhile: it succeeded, or says more
			// of the denial (a Call inside it saw it first).
			return c.Explain(err)
		}
		return fmt.Errorf("%w (server said: %v)", ErrDenied, c.LastAsyncError())
	}
}
