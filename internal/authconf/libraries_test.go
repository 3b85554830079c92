package authconf_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/certsync/certsync/crypto"
	"github.com/certsync/certsync/internal/authconf"
	"github.com/certsync/certsync/internal/natsconn"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/publisher"
	"github.com/certsync/certsync/subscriber"
)

// TestLibrariesLeastPrivilege: a program that builds its publisher and its
// node with the libraries alone (no command line, no inbox prefix of its
// own), with the credentials `certsync auth` writes, gets its replies:
// publisher.New and subscriber.New apply the inbox prefixes auth.conf
// permits, so the bundle is published and the node stages it.
func TestLibrariesLeastPrivilege(t *testing.T) {
	t.Parallel()
	f := newFleet(t, map[string][]string{"example.com": {"web1"}}, "")
	bare := func(user string) natsconn.Options { return natsconn.Options{URL: f.url, NKey: f.seed(user)} }

	c := f.ca.Issue(t, testcert.Options{Names: []string{"example.com"}})
	testcert.WriteLineage(t, f.root, "example.com", c)
	b, err := publisher.ReadLineage(filepath.Join(f.root, "live", "example.com"), "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := publisher.New(publisher.Config{
		NATS:         bare(authconf.PublisherUser),
		SigningKey:   f.signer,
		Nodes:        map[string]string{"web1": f.ids["web1"].Recipient().String()},
		Certificates: map[string][]string{"example.com": {"web1"}},
		Timeout:      10 * time.Second,
	}, f.log())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := p.Publish(ctx, b)
	if err != nil || res.Action != publisher.Published {
		t.Fatalf("Publish with the publisher's credential: %+v, %v; want published", res, err)
	}

	logs := &logtest.Buffer{}
	n, err := subscriber.New(subscriber.Config{
		Node:         "web1",
		NATS:         bare("web1"),
		Identities:   []age.Identity{f.ids["web1"]},
		Trusted:      []crypto.PublicKey{f.signer.Public()},
		StageDir:     filepath.Join(t.TempDir(), "stage"),
		Certificates: map[string]subscriber.Certificate{"example.com": {InstallDir: filepath.Join(t.TempDir(), "example.com")}},
	}, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	rep, err := n.Sync(sctx)
	if err != nil {
		t.Fatalf("Sync with web1's credential: %v", err)
	}
	if err := rep.Err(); err != nil || rep.Count(subscriber.OutcomeStaged) != 1 {
		t.Fatalf("Sync: %d staged, %v; want 1 staged\n%s", rep.Count(subscriber.OutcomeStaged), err, logs)
	}
}
