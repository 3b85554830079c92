package natsconn

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/certsync/certsync/internal/field"
	"github.com/certsync/certsync/internal/testing/natstest"
)

// TestCallDenied: a request the server's permissions deny ends as soon as
// the server says so, with its reason, well before the call's own deadline.
func TestCallDenied(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.Users = []*server.User{{
		Username: "node", Password: "node",
		Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"allowed.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		},
	}}
	srv := natstest.Start(t, opts)
	c, err := Connect(context.Background(), Options{URL: srv.ClientURL(), User: "node", Password: "node"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The deadline is far off: only the denial can end this call.
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	err = c.Call(ctx, func(ctx context.Context) error {
		_, err := c.RequestWithContext(ctx, "forbidden.subject", nil)
		return err
	})
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `"forbidden.subject"`) {
		t.Fatalf("Call = %v, want ErrDenied naming the subject", err)
	}

	// An allowed call's own error comes back as it is.
	want := errors.New("done")
	if err := c.Call(context.Background(), func(context.Context) error { return want }); !errors.Is(err, want) {
		t.Fatalf("Call = %v, want %v", err, want)
	}
}

// TestValidate: Options.Validate is the one home of the rules of the nats
// settings; each refusal is a *field.Error naming the setting as the
// configuration files do, never repeating a URL's password, and Connect
// refuses the same options at once, before trying any server.
func TestValidate(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-Passw0rd"
	for _, o := range []Options{
		{},
		{URL: "nats://127.0.0.1:4222"},
		{URL: "127.0.0.1:4222, tls://a.example:4443,ws://a.example,wss://a.example:443"},
		{URL: "nats://alice:" + secret + "@127.0.0.1:4222", Creds: "a.creds"},
		{NKey: "a.nk", TLS: TLSOptions{CA: "ca.pem", Cert: "c.pem", Key: "c.key"}},
		{User: "u", Password: "p"},
	} {
		if err := o.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", o, err)
		}
	}
	for _, tt := range []struct {
		name string
		o    Options
		path string
		want string
	}{
		{"empty list entry", Options{URL: "nats://127.0.0.1:4222,,nats://127.0.0.1:4223"}, "nats.url", "server 2 of the list is empty"},
		{"blank list entry", Options{URL: "nats://127.0.0.1:4222, "}, "nats.url", "server 2 of the list is empty"},
		{"unknown scheme", Options{URL: "http://alice:" + secret + "@127.0.0.1:4222"}, "nats.url", `server 1: want scheme nats, tls, ws or wss, got "http"`},
		{"bare host without port", Options{URL: "mgmt"}, "nats.url", "server 1: want nats://HOST:PORT"},
		{"bare address with login", Options{URL: "alice:" + secret + "@mgmt:4222"}, "nats.url", "server 1: want nats://HOST:PORT"},
		{"bare port zero", Options{URL: "mgmt:0"}, "nats.url", "server 1: want nats://HOST:PORT"},
		{"invalid URL", Options{URL: "nats://alice:%zz" + secret + "@127.0.0.1:4222"}, "nats.url", "server 1 is not a valid URL"},
		{"no host", Options{URL: "nats://:4222"}, "nats.url", "server 1 has no host"},
		{"port too big", Options{URL: "nats://127.0.0.1:65536"}, "nats.url", `server 1: invalid port "65536"`},
		{"cert without key", Options{TLS: TLSOptions{Cert: "c.pem"}}, "nats.tls", "cert and key go together"},
		{"key without cert", Options{TLS: TLSOptions{Key: "c.key"}}, "nats.tls", "cert and key go together"},
		{"user alone", Options{User: "u"}, "nats.user", "user needs a password"},
		{"password alone", Options{Password: secret}, "nats.password", "password needs a user"},
		{"creds and nkey", Options{Creds: "a.creds", NKey: "a.nk"}, "nats", "set only one of creds, nkey or user and password"},
		{"creds and user", Options{Creds: "a.creds", User: "u", Password: "p"}, "nats", "set only one of"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.o.Validate()
			var fe *field.Error
			if !errors.As(err, &fe) || fe.Path != tt.path || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want a field.Error at %q with %q", err, tt.path, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error repeats a secret: %v", err)
			}
			// No server listens; Connect must refuse at once, not retry.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := Connect(ctx, tt.o, slog.New(slog.DiscardHandler))
			if err == nil {
				c.Close()
				t.Fatal("Connect succeeded")
			}
			if !errors.As(err, &fe) || fe.Path != tt.path || ctx.Err() != nil {
				t.Errorf("Connect = %v, want the field.Error at once", err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("Connect error repeats a secret: %v", err)
			}
		})
	}
}
