package natsconn

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://alice:s3cret@127.0.0.1:4222", "nats://alice:***@127.0.0.1:4222"},
		{"nats://t0ken@127.0.0.1:4222", "nats://***@127.0.0.1:4222"},
		{"tls://alice:p@ss:w/rd@h:1", "tls://alice:***@h:1"},
		{"nats://a:pw1@h1:1,nats://h2:2,tls://tok@h3:3", "nats://a:***@h1:1,nats://h2:2,tls://***@h3:3"},
		{"nats://h1:1,nats://b:pw2@h2:2", "nats://h1:1,nats://b:***@h2:2"},
		{`connecting to "nats://a:pw@h:1": dial tcp h:1: refused`, `connecting to "nats://a:***@h:1": dial tcp h:1: refused`},
		{"no url here, user@example.com", "no url here, user@example.com"},
		{"nats://:pw@h:1", "nats://:***@h:1"},
		{"", ""},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestConnectRedactsSecrets: a password or token in the URL reaches no
// error and no log line, whether the server is away, refuses the
// password, or the URL does not parse.
func TestConnectRedactsSecrets(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.Users = []*server.User{{Username: "alice", Password: "the-right-one"}}
	srv := natstest.Start(t, opts)
	addr := strings.TrimPrefix(srv.ClientURL(), "nats://")
	closed := loopback.FreeAddr(t)

	const secret = "s3cret-Passw0rd"
	for _, tc := range []struct {
		name, url string
	}{
		{"closed port, password", "nats://alice:" + secret + "@" + closed},
		{"closed port, token", "nats://" + secret + "@" + closed},
		{"closed port, list", "nats://" + closed + ",nats://alice:" + secret + "@" + closed},
		{"wrong password", "nats://alice:" + secret + "@" + addr},
		{"bare host:port", "alice:" + secret + "@" + closed},
		{"invalid port", "nats://alice:" + secret + "@127.0.0.1:notaport"},
		{"invalid escape", "nats://alice:%zz" + secret + "@" + closed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs logtest.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			c, err := Connect(ctx, Options{URL: tc.url}, log)
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the secret: %v", err)
			}
			if strings.Contains(logs.String(), secret) {
				t.Errorf("log holds the secret:\n%s", logs.String())
			}
		})
	}
}

// TestReconnectLogRedacted: the reconnect log line of a token URL hides the
// token (the client's own redaction hides passwords only).
func TestReconnectLogRedacted(t *testing.T) {
	t.Parallel()
	const token = "t0ken-s3cret"
	port := loopback.FreePort(t)
	serve := func() *server.Server {
		opts := natstest.Options(t.TempDir())
		opts.Port = port
		opts.Authorization = token
		return natstest.Start(t, opts)
	}
	srv := serve()
	var logs logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Connect(context.Background(), Options{URL: "nats://" + token + "@127.0.0.1:" + strconv.Itoa(port)}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv.Shutdown()
	srv.WaitForShutdown()
	serve()
	natstest.WaitFor(t, 20*time.Second, "the client's reconnect", func() bool { return len(logs.Events("nats_reconnected")) > 0 })
	if strings.Contains(logs.String(), token) {
		t.Errorf("log holds the token:\n%s", logs.String())
	}
	if ev := logs.Events("nats_reconnected")[0]; ev["url"] != "nats://***@127.0.0.1:"+strconv.Itoa(port) {
		t.Errorf("nats_reconnected url = %v, want the redacted URL", ev["url"])
	}
}

// TestConnectChecksKeyFiles: the nkey seed, creds and TLS key files are
// refused like every key file when group or others may read them, before
// any connection is tried.
func TestConnectChecksKeyFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	treetest.WriteFile(t, open, []byte("secret\n"), 0o600)
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + loopback.FreeAddr(t)
	for _, o := range []Options{
		{URL: closed, NKey: open},
		{URL: closed, Creds: open},
		{URL: closed, TLS: TLSOptions{Cert: filepath.Join(dir, "cert.pem"), Key: open}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := Connect(ctx, o, slog.New(slog.DiscardHandler))
		cancel()
		var kpe *crypto.KeyPermissionsError
		if !errors.Is(err, crypto.ErrKeyPermissions) || !errors.As(err, &kpe) || kpe.Path != open {
			t.Errorf("Connect(%+v) = %v, want a key permissions error for %s", o, err, open)
		}
	}
}
