package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestSecretsNeverPrintedE2E: a password or token in the NATS URL reaches
// no line certsync prints, with --verbose, whether the server is away or
// refuses the password, for every command that connects.
func TestSecretsNeverPrintedE2E(t *testing.T) {
	t.Parallel()
	opts := natstest.Options(t.TempDir())
	opts.Users = []*server.User{{Username: "alice", Password: "the-right-password"}}
	srv := natstest.Start(t, opts)
	refusing := strings.TrimPrefix(srv.ClientURL(), "nats://")
	closed := loopback.FreeAddr(t)
	lin := newLineages(t)
	live, _ := lin.Write("example.com", certOptions{})

	const secret = "s3cret-Passw0rd"
	for _, tc := range []struct{ name, url string }{
		{"wrong password", "nats://alice:" + secret + "@" + refusing},
		{"closed port", "nats://alice:" + secret + "@" + closed},
		{"token, closed port", "tls://" + secret + "@" + closed},
		{"list", "nats://" + closed + ",nats://alice:" + secret + "@" + refusing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFleet(t, fleetOptions{URL: tc.url, Lineages: lin.Live(), Timeout: "2s",
				Certificates: map[string][]string{"example.com": {"web1"}}})
			for _, args := range [][]string{
				{"publish", "--config", f.Publisher, "--lineage", live, "--verbose"},
				{"republish", "--config", f.Publisher, "--verbose"},
				{"inspect", "--config", f.Publisher, "--verbose"},
				{"status", "--config", f.Publisher, "--verbose"},
				{"node", "sync", "--config", f.Nodes["web1"].Config, "--timeout", "2s", "--verbose"},
			} {
				res := certsyncCmd(t, args...)
				if res.Code == 0 {
					t.Errorf("certsync %s succeeded", args[0])
				}
				if strings.Contains(res.Stderr+res.Stdout, secret) {
					t.Errorf("certsync %s printed the secret:\n%s%s", strings.Join(args, " "), res.Stdout, res.Stderr)
				}
				if len(res.errorLines()) != 1 {
					t.Errorf("certsync %s: want one error line, got:\n%s", args[0], res.Stderr)
				}
			}
		})
	}
}

// TestNATSKeyFilesCheckedE2E: the nkey seed, creds file and TLS key named
// under nats: in publisher.yaml and node.yaml are refused like the signing
// key and the identity when group or others may read them: one error line
// naming the file and its line, the chmod hint, and nothing done.
func TestNATSKeyFilesCheckedE2E(t *testing.T) {
	t.Parallel()
	srv := natstest.RunServer(t)
	lin := newLineages(t)
	live, _ := lin.Write("example.com", certOptions{})
	f := newFleet(t, fleetOptions{URL: srv.ClientURL(), Lineages: lin.Live(), Timeout: "5s",
		Certificates: map[string][]string{"example.com": {"web1"}}})
	open := filepath.Join(f.Dir, "open.secret")
	treetest.WriteFile(t, open, []byte("not a real secret\n"), 0o600)
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(f.Dir, "client.pem")
	treetest.WriteFile(t, cert, []byte("public\n"), 0o644)
	for _, tc := range []struct {
		key  string
		nats natsConfig
	}{
		{"nats.nkey", natsConfig{URL: srv.ClientURL(), NKey: open}},
		{"nats.creds", natsConfig{URL: srv.ClientURL(), Creds: open}},
		{"nats.tls.key", natsConfig{URL: srv.ClientURL(), TLS: &natsTLSConfig{Cert: cert, Key: open}}},
	} {
		pc := f.PublisherConfig
		pc.NATS = tc.nats
		pub := writePublisherConfig(t, filepath.Join(f.Dir, "publisher-"+tc.key+".yaml"), pc)
		node := writeNodeConfig(t, filepath.Join(f.Dir, "node-"+tc.key+".yaml"), nodeConfig{
			Name: "web1", NATS: tc.nats, Identity: filepath.Join(f.Dir, "web1", "node.key"),
			TrustedPublishers: []string{f.Signing}, StageDir: f.Nodes["web1"].StageDir,
			Certificates: map[string]map[string]string{"example.com": nil},
		})
		for _, args := range [][]string{
			{"publish", "--config", pub, "--lineage", live},
			{"republish", "--config", pub},
			{"node", "sync", "--config", node, "--timeout", "5s"},
			{"node", "install", "--config", node},
			// inspect and status load publisher.yaml without the signing
			// key; the connection refuses the file.
			{"inspect", "--config", pub},
			{"status", "--config", pub},
		} {
			res := certsyncCmd(t, args...)
			errs := append(res.errorLines(), "")
			want := "certsync: hint: a key file must be readable by its owner only: chmod 600 " + open + "\n"
			if res.Code == 0 || len(errs) != 2 || !strings.Contains(errs[0], open) || !strings.Contains(errs[0], "0644") ||
				!strings.HasSuffix(res.Stderr, want) {
				t.Errorf("%s: certsync %s: exit %d, want one error line naming %s and its mode, then %q; stderr:\n%s",
					tc.key, strings.Join(args[:2], " "), res.Code, open, want, res.Stderr)
			}
			if args[0] != "inspect" && args[0] != "status" && !strings.Contains(errs[0], tc.key) {
				t.Errorf("%s: certsync %s: the error does not name the key: %s", tc.key, args[0], errs[0])
			}
		}
	}
	// Nothing was published: the stream was never even created.
	if _, err := natstest.JetStream(t, srv.ClientURL()).Stream(t.Context(), "CERTSYNC"); err == nil {
		t.Error("the stream exists: something was done despite the refusal")
	}
	if _, err := os.Stat(filepath.Join(f.Nodes["web1"].StageDir, "example.com")); err == nil {
		t.Error("something was staged despite the refusal")
	}
}
