package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// TestUnitsUnderSystemd runs the shipped units under systemd as PID 1, with
// every directive they hold (the sandbox, the system call filter, the
// state directory): a container booted by systemd-nspawn on an overlay of
// this machine's own root, on a network of its own. In it
// certsync-server.service serves from its state directory, `certsync
// publish` stores a certificate, and certsync-node.service (node run)
// installs it into /etc/letsencrypt/live/<name> over the old cron's copy,
// checked with nginx -t, reloaded with systemctl reload nginx (PID 1 does
// it, from inside the node's sandbox) and verified as served by the real
// nginx.service; it installs a renewal the same way on its own, and
// reports it; certsync-republish.timer is scheduled and its oneshot finds
// nothing to do; certsync-rollout.service runs; and stopping each daemon
// ends it cleanly.
func TestUnitsUnderSystemd(t *testing.T) {
	t.Parallel()
	c := bootContainer(t)
	const name = "example.com"
	bin := certsyncBin(t)
	treetest.MkdirAll(t, c.path("/usr/local/bin"), 0o755)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	treetest.WriteFile(t, c.path("/usr/local/bin/certsync"), data, 0o755)
	for _, unit := range []string{"certsync-server.service", "certsync-node.service", "certsync-republish.service", "certsync-republish.timer", "certsync-rollout.service"} {
		data, err := os.ReadFile(filepath.Join(unitsDir, unit))
		if err != nil {
			t.Fatal(err)
		}
		treetest.WriteFile(t, c.path("/etc/systemd/system/"+unit), data, 0o644)
	}

	// The management host: the server, the signing key, certbot's lineage.
	treetest.MkdirAll(t, c.path("/etc/certsync"), 0o700)
	treetest.WriteFile(t, c.path("/etc/certsync/nats-server.conf"),
		[]byte("server_name: certsync-unit-test\nlisten: 127.0.0.1:4222\njetstream {\n  store_dir: /var/lib/certsync/nats\n}\n"), 0o600)
	signing := strings.TrimSpace(c.must(t, "/usr/local/bin/certsync", "keygen", "signing", "--out", "/etc/certsync/signing.key"))
	recipient := strings.TrimSpace(c.must(t, "/usr/local/bin/certsync", "keygen", "node", "--out", "/etc/certsync/node.key"))
	le := newLineagesAt(t, c.path("/srv/letsencrypt"))
	le.Write(name, certOptions{})
	// The old cron's copy, which nginx serves until certsync installs.
	treetest.MkdirAll(t, c.path("/etc/letsencrypt/live"), 0o755)
	treetest.CopyFiles(t, filepath.Join(le.Live(), name), c.path("/etc/letsencrypt/live/"+name))
	le.Write(name, certOptions{})
	treetest.WriteFile(t, c.path("/etc/nginx/conf.d/certsync-test.conf"), []byte(`server {
	listen 127.0.0.1:8443 ssl;
	server_name `+name+`;
	ssl_certificate /etc/letsencrypt/live/`+name+`/fullchain.pem;
	ssl_certificate_key /etc/letsencrypt/live/`+name+`/privkey.pem;
}
`), 0o644)
	nats := natsConfig{URL: "nats://127.0.0.1:4222"}
	writePublisherConfig(t, c.path("/etc/certsync/publisher.yaml"), publisherConfig{
		NATS: nats, SigningKey: "/etc/certsync/signing.key", Lineages: "/srv/letsencrypt/live",
		Nodes: map[string]string{"web1": recipient}, Certificates: map[string][]string{name: {"web1"}},
	})
	// The node, on the same machine: the default install folder, which the
	// unit may write, and nginx.
	writeNodeConfig(t, c.path("/etc/certsync/node.yaml"), nodeConfig{
		Name: "web1", NATS: nats, Identity: "/etc/certsync/node.key", TrustedPublishers: []string{signing},
		StageDir: "/var/lib/certsync/stage",
		Certificates: map[string]map[string]string{name: {
			"install_dir": "/etc/letsencrypt/live/" + name, "check": "nginx -t", "reload": "systemctl reload nginx",
			"verify": "127.0.0.1:8443",
		}},
	})

	c.must(t, "systemctl", "daemon-reload")
	c.start(t, "nginx.service")
	c.start(t, "certsync-server.service")
	natstest.WaitFor(t, 30*time.Second, "the server to serve", func() bool {
		_, err := c.run("/usr/local/bin/certsync", "inspect", "--config", "/etc/certsync/publisher.yaml")
		return err == nil
	})
	publish := func() {
		t.Helper()
		c.mustEnv(t, []string{"RENEWED_LINEAGE=/srv/letsencrypt/live/" + name},
			"/usr/local/bin/certsync", "publish", "--config", "/etc/certsync/publisher.yaml")
	}
	publish()
	if _, err := os.Stat(c.path("/var/lib/certsync/nats/jetstream")); err != nil {
		t.Errorf("the server's store, in its unit's state directory: %v", err)
	}
	c.start(t, "certsync-node.service")
	// installed waits until the node has installed its k-th version, each
	// checked, reloaded and verified as served (install_done comes only
	// after verify, a failure rolls back instead), and wants certbot's
	// current files in install_dir.
	installed := func(what string, k int) {
		t.Helper()
		c.waitFor(t, 60*time.Second, what, "certsync-node.service", func() bool {
			journal := c.journal("certsync-node.service")
			if strings.Contains(journal, `"msg":"install_failed"`) {
				t.Fatalf("the node unit failed an install:\n%s", journal)
			}
			return strings.Count(journal, `"msg":"install_done"`) == k
		})
		if n := strings.Count(c.journal("certsync-node.service"), `"msg":"install_verify_passed"`); n != k {
			t.Errorf("%d installs verified as served by nginx, want %d", n, k)
		}
		want, err := os.ReadFile(filepath.Join(le.Live(), name, "fullchain.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(c.path("/etc/letsencrypt/live/" + name + "/fullchain.pem")); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: install_dir holds another fullchain.pem than certbot's current one (%v)", what, err)
		}
	}
	installed("the node unit to install the certificate over the old copy", 1)
	if backups, _ := filepath.Glob(c.path("/etc/letsencrypt/live/" + name + ".certsync-backup-*")); len(backups) != 1 {
		t.Errorf("the old copy moved aside: %v, want one backup", backups)
	}

	// A renewal: the running node installs it on its own.
	le.Write(name, certOptions{})
	publish()
	installed("the node unit to install the renewal", 2)
	natstest.WaitFor(t, 30*time.Second, "the node's report", func() bool {
		out, err := c.run("/usr/local/bin/certsync", "status", "--config", "/etc/certsync/publisher.yaml")
		return err == nil && strings.Contains(out, "installed")
	})

	// The republish timer, and its oneshot: nothing changed, so it
	// succeeds storing nothing.
	c.start(t, "certsync-republish.timer")
	if out := c.must(t, "systemctl", "show", "--property=NextElapseUSecMonotonic", "certsync-republish.timer"); !strings.HasPrefix(out, "NextElapseUSecMonotonic=") || strings.Contains(out, "infinity") {
		t.Errorf("certsync-republish.timer is not scheduled: %s", out)
	}
	c.must(t, "systemctl", "start", "certsync-republish.service")
	if out := c.must(t, "systemctl", "show", "--property=Result,ExecMainStatus", "certsync-republish.service"); !strings.Contains(out, "Result=success") || !strings.Contains(out, "ExecMainStatus=0") {
		t.Errorf("certsync-republish.service: %s\n%s", out, c.journal("certsync-republish.service"))
	}

	// The rollout controller, with no certificate under a rollout policy.
	c.start(t, "certsync-rollout.service")

	// A stop ends each daemon cleanly, well within its unit's stop timeout.
	for _, unit := range []string{"certsync-rollout.service", "certsync-node.service", "certsync-server.service"} {
		c.must(t, "systemctl", "stop", unit)
		if out := c.must(t, "systemctl", "show", "--property=Result", unit); strings.TrimSpace(out) != "Result=success" {
			t.Errorf("%s after stop: %s\n%s", unit, out, c.journal(unit))
		}
	}
}

// container is a machine booted by systemd-nspawn, systemd its PID 1. Its
// root is an overlay of this machine's: it sees every program installed
// here, and what it writes (its /etc, /var, its systemd-tmpfiles' clean-up
// of /tmp) stays in the test's folder. It has a network of its own, with a
// loopback only, and boots to basic.target, so that none of this machine's
// services starts in it.
type container struct {
	root    string
	leader  int    // systemd's pid, as this machine sees it
	nsenter string // the program that runs commands in it
	log     *logtest.Buffer
}

// bootContainer boots a container and waits until its systemd has reached
// basic.target; it is stopped, and its root unmounted, when the test ends.
func bootContainer(t *testing.T) *container {
	t.Helper()
	acmetest.RequireRoot(t, "mounts an overlay and boots a container with systemd-nspawn")
	nspawn := acmetest.RequireTool(t, "systemd-nspawn")
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		t.Fatalf("systemd: %v", err)
	}
	dir := t.TempDir()
	c := &container{root: filepath.Join(dir, "root"), nsenter: acmetest.RequireTool(t, "nsenter"), log: &logtest.Buffer{}}
	for _, d := range []string{"upper", "work", "root"} {
		treetest.MkdirAll(t, filepath.Join(dir, d), 0o755)
	}
	opts := fmt.Sprintf("lowerdir=/,upperdir=%s,workdir=%s", filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", c.root, "overlay", 0, opts); err != nil {
		t.Fatalf("mounting the container's root: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(c.root, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting the container's root: %v", err)
		}
	})
	// nspawn keeps a folder per container here, and removes it only from
	// a file system in memory.
	propagate := "/run/systemd/nspawn"
	treetest.MkdirAll(t, propagate, 0o755)
	ms, err := mounts()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ms, func(m mountPoint) bool { return m.path == propagate }) {
		if err := syscall.Mount("tmpfs", propagate, "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mounting %s: %v", propagate, err)
		}
		t.Cleanup(func() { syscall.Unmount(propagate, syscall.MNT_DETACH) })
	}

	suffix := make([]byte, 4)
	rand.Read(suffix)
	machine := "certsync-test-" + hex.EncodeToString(suffix)
	cmd := exec.Command(nspawn, "--directory", c.root, "--machine", machine, "--private-network",
		"--register=no", "--keep-unit", "--console=passive", "--boot", "systemd.unit=basic.target")
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// systemd shuts down on SIGRTMIN+3, nspawn's signal for it on
		// SIGTERM; a second SIGTERM ends the container at once.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("the container did not shut down within 30s:\n%s", c.log.String())
		}
	})
	natstest.WaitFor(t, 30*time.Second, "systemd to start in the container", func() bool {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil {
			return false
		}
		fields := strings.Fields(string(data))
		if len(fields) == 0 {
			return false
		}
		pid, _ := strconv.Atoi(fields[0])
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
			return false
		}
		c.leader = pid
		return true
	})
	natstest.WaitFor(t, 60*time.Second, "the container to reach basic.target", func() bool {
		out, err := c.run("systemctl", "is-active", "basic.target")
		return err == nil && strings.TrimSpace(out) == "active"
	})
	return c
}

// path is the container's path p as this machine reaches it.
func (c *container) path(p string) string { return filepath.Join(c.root, p) }

// run runs argv in the container, with its every namespace, and returns
// what it printed; an error says how it exited and holds its output.
func (c *container) run(argv ...string) (string, error) { return c.runEnv(nil, argv...) }

// runEnv is run with extra environment variables ("K=V").
func (c *container) runEnv(env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	args := append([]string{"--target", strconv.Itoa(c.leader), "--all", "--", "/usr/bin/env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CERTSYNC_LOG_FORMAT=json"}, env...)
	cmd := exec.CommandContext(ctx, c.nsenter, append(args, argv...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s in the container: %w\n%s", strings.Join(argv, " "), err, out.String())
	}
	return out.String(), nil
}

// must is run, failing the test unless argv exits 0.
func (c *container) must(t *testing.T, argv ...string) string {
	t.Helper()
	return c.mustEnv(t, nil, argv...)
}

// mustEnv is runEnv, failing the test unless argv exits 0.
func (c *container) mustEnv(t *testing.T, env []string, argv ...string) string {
	t.Helper()
	out, err := c.runEnv(env, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// start starts unit and waits until it is active.
func (c *container) start(t *testing.T, unit string) {
	t.Helper()
	if _, err := c.run("systemctl", "start", unit); err != nil {
		t.Fatalf("%v\n%s", err, c.journal(unit))
	}
	c.waitFor(t, 30*time.Second, unit+" to be active", unit, func() bool {
		out, _ := c.run("systemctl", "is-active", unit)
		return strings.TrimSpace(out) == "active"
	})
}

// waitFor polls cond until it holds, and fails the test with unit's
// journal if it does not within d.
func (c *container) waitFor(t *testing.T, d time.Duration, what, unit string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; the journal of %s:\n%s", d, what, unit, c.journal(unit))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// journal is what unit logged, for a failure's message.
func (c *container) journal(unit string) string {
	out, err := c.run("journalctl", "--no-pager", "--unit", unit, "--lines", "60")
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("(journalctl: %v)", err)
	}
	return out
}
