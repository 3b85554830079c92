package natsconn

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

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

func TestOptionsRefuseConflicts(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{Creds: "a.creds", NKey: "a.nk"},
		{Creds: "a.creds", User: "u", Password: "p"},
		{TLS: TLSOptions{Cert: "c.pem"}},
	} {
		if _, err := o.natsOptions(&Conn{}, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}
