package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/loopback"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/internal/natstest"
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
		if err := os.WriteFile(conf, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
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
