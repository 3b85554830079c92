package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/certsync/certsync/internal/testing/testcert"
	"github.com/certsync/certsync/internal/wire"
)

func TestSetupRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := authPublisherYAML(t, dir, "web1")
	tests := []struct {
		name string
		args []string
		want string // in the one error line
	}{
		{"argument", []string{"setup", "--config", cfg, "extra"}, `unexpected argument "extra"`},
		{"nkey and creds", []string{"setup", "--config", cfg, "--nkey", filepath.Join(dir, "a.nk"), "--creds", filepath.Join(dir, "a.creds")}, "--nkey and --creds exclude each other"},
		{"missing config", []string{"setup", "--config", filepath.Join(dir, "none.yaml")}, "none.yaml"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := certsyncCmd(t, tc.args...)
			if lines := res.errorLines(); res.Code != 1 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("exit %d, error lines %q; want one containing %q\nstderr: %s", res.Code, lines, tc.want, res.Stderr)
			}
		})
	}
}

// TestSetupLeastPrivilegeE2E is the first setup under least privilege, as
// README.md and docs/SECURITY.md tell it: before it, publish, republish and
// setup with the publisher's credential fail with one line and a hint
// naming certsync setup with the admin's nkey; setup with it (by flag, or
// by CERTSYNC_ADMIN_NKEY) is quiet, and then everything works.
func TestSetupLeastPrivilegeE2E(t *testing.T) {
	t.Parallel()
	const cert, node = "example.com", "web1"
	f := newAuthFleetFixtureWithoutSetup(t, map[string][]string{cert: {node}})
	live := testcert.WriteLineage(t, f.certbot, cert, f.ca.Issue(t, testcert.Options{Names: []string{cert}}))

	for _, args := range [][]string{
		{"publish", "--config", f.publisher, "--lineage", live},
		{"republish", "--config", f.publisher},
		{"setup", "--config", f.publisher},
	} {
		res := certsyncCmd(t, args...)
		lines := res.errorLines()
		if res.Code != 1 || len(lines) != 1 || !strings.Contains(lines[0], `stream "CERTSYNC" is not set up for certsync`) ||
			!strings.Contains(res.Stderr, "certsync: hint: ") || !strings.Contains(res.Stderr, "certsync setup --nkey ") {
			t.Errorf("certsync %s before setup: exit %d, error lines %q; want one saying the stream is not set up, and a hint naming certsync setup --nkey\nstderr:\n%s",
				args[0], res.Code, lines, res.Stderr)
		}
	}
	if streams := streamConfigs(t, f.js()); len(streams) != 0 {
		t.Fatalf("streams before setup: %d, want none", len(streams))
	}

	res := certsyncCmd(t, "setup", "--config", f.publisher, "--nkey", f.nkey("admin"))
	if res.Code != 0 || res.Stdout != "" || res.Stderr != "" {
		t.Fatalf("certsync setup --nkey admin.nk: exit %d, want 0 and quiet\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	res = certsyncCmdEnv(t, []string{adminNKeyEnv + "=" + f.nkey("admin")}, "setup", "--config", f.publisher)
	if res.Code != 0 || res.Stderr != "" {
		t.Fatalf("certsync setup with %s: exit %d\nstderr: %s", adminNKeyEnv, res.Code, res.Stderr)
	}
	streams := streamConfigs(t, f.js())
	if len(streams) != 2 {
		t.Errorf("streams after setup: %d, want the stream and the bucket", len(streams))
	}
	for name, st := range streams {
		if !st.DenyPurge || !st.DenyDelete || st.AllowRollup {
			t.Errorf("stream %s after setup: deny_purge %v, deny_delete %v, allow_rollup %v", name, st.DenyPurge, st.DenyDelete, st.AllowRollup)
		}
	}

	f.mustCLI("publish", "--config", f.publisher, "--lineage", live)
	f.mustCLI("republish", "--config", f.publisher)
	f.mustSync(node)
	if _, err := f.kv().Get(context.Background(), wire.StatusKey(node, cert)); err != nil {
		t.Errorf("%s's status after setup: %v", node, err)
	}
}

// streamConfigs returns the configuration of every stream, by name.
func streamConfigs(t *testing.T, js jetstream.JetStream) map[string]jetstream.StreamConfig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]jetstream.StreamConfig{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		out[info.Config.Name] = info.Config
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
