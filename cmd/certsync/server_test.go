package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/treetest"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/internal/testing/natstest"
)

// TestServerReloadsOnSIGHUP: after `certsync auth` changes users, SIGHUP
// makes the running server apply its configuration file again.
func TestServerReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	addr := loopback.FreeAddr(t)
	conf := filepath.Join(dir, "server.conf")
	write := func(password string) {
		t.Helper()
		data := fmt.Sprintf("listen: %q\njetstream { store_dir: %q }\nauthorization { user: certsync, password: %q }\n",
			addr, filepath.Join(dir, "store"), password)
		treetest.WriteFile(t, conf, []byte(data), 0o600)
	}
	login := func(password string) error {
		nc, err := nats.Connect("nats://"+addr, nats.UserInfo("certsync", password), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
		}
		return err
	}
	write("one")
	p := startCertsync(t, nil, "server", "--config", conf)
	p.WaitLog(t, serverReady, "server_ready")
	if err := login("one"); err != nil {
		t.Fatalf("login with the first password: %v", err)
	}

	write("two")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.WaitLog(t, 10*time.Second, "server_reloaded")
	natstest.WaitFor(t, 10*time.Second, "the new password to work", func() bool { return login("two") == nil })
	if err := login("one"); err == nil {
		t.Fatal("the old password still works after the reload")
	}
	if code := p.Stop(t); code != 0 {
		t.Fatalf("server exited with %d:\n%s", code, p.Log())
	}
}

// TestServerLogRedactsURLs: `certsync server` logs no user information of
// the URLs in its configuration (leafnode remotes and routes holding a
// token or a password), even with --verbose while it keeps failing to
// reach them.
func TestServerLogRedactsURLs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ports := loopback.FreePorts(t, 4)
	const token, password = "leaf-t0ken-s3cret", "route-passw0rd-s3cret"
	conf := filepath.Join(dir, "server.conf")
	data := fmt.Sprintf(`listen: "127.0.0.1:%d"
debug: true
trace: true
jetstream { store_dir: %q }
leafnodes { remotes: [ { url: "nats-leaf://%s@127.0.0.1:%d" }, { url: "nats-leaf://leaf:%s@127.0.0.1:%d" } ] }
cluster { name: c, listen: "127.0.0.1:%d", routes: [ "nats-route://route:%s@127.0.0.1:%d" ] }
`, ports[0], filepath.Join(dir, "store"), token, ports[1], password, ports[1], ports[2], password, ports[3])
	treetest.WriteFile(t, conf, []byte(data), 0o600)
	p := startCertsync(t, nil, "server", "--config", conf, "--verbose")
	p.WaitLog(t, serverReady, "server_ready")
	// Wait for attempts at both remotes and the route to be logged.
	natstest.WaitFor(t, 20*time.Second, "failed leafnode and route connects in the log", func() bool {
		log := p.Log()
		return strings.Count(log, fmt.Sprintf("127.0.0.1:%d", ports[1])) >= 2 && strings.Contains(log, fmt.Sprintf("127.0.0.1:%d", ports[3]))
	})
	p.Stop(t)
	for _, secret := range []string{token, password} {
		if strings.Contains(p.Log(), secret) {
			t.Errorf("the server's log holds %q:\n%s", secret, p.Log())
		}
	}

	// A URL nats-server cannot parse is repeated by its error, password
	// and all; certsync's error line hides it.
	bad := filepath.Join(dir, "bad.conf")
	data = fmt.Sprintf("listen: \"127.0.0.1:%d\"\njetstream { store_dir: %q }\ncluster { name: c, listen: \"127.0.0.1:%d\", routes: [ \"nats-route://route:%s@127.0.0.1:notaport\" ] }\n",
		ports[0], filepath.Join(dir, "store"), ports[2], password)
	treetest.WriteFile(t, bad, []byte(data), 0o600)
	res := certsyncCmd(t, "server", "--config", bad)
	if res.Code == 0 || len(res.errorLines()) != 1 || strings.Contains(res.Stderr, password) {
		t.Errorf("certsync server with an unparsable route URL: exit %d, want one error line without the password:\n%s", res.Code, res.Stderr)
	}
}
