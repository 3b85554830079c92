// Package haproxytest runs Debian's real HAProxy for end-to-end tests: one
// frontend terminating TLS on a loopback random port with a combined PEM
// file (full chain followed by the key, certsync's combined.pem), its
// configuration, pid file and master socket in the test's temporary
// folders, reloaded for real.
//
// A test points HAProxy at a combined PEM file, swaps it, reloads and
// watches what a TLS handshake shows:
//
//	h := haproxytest.Start(t, combinedFile)
//	leaf := nginxtest.ServedLeaf(t, h.Addr, "www.example.test")
//	… replace combinedFile …
//	h.Reload(t)
//	natstest.WaitFor(t, 10*time.Second, "new leaf", func() bool { … FetchLeaf … })
//
// HAProxy runs in the foreground in master-worker mode (-W), as Debian's
// systemd unit runs it (-Ws): the master reads the configuration and the
// certificates at start and at every reload, and forks a worker that
// serves them. A reload is SIGUSR2 to the master, which is what the unit's
// `systemctl reload haproxy` sends; ReloadCommand is that signal as a
// command line (`kill -USR2 PID`), so that a node's reload command needs no
// shell. A reload whose configuration does not load (a syntax error, a
// certificate file that is missing or does not match its key) leaves the
// old worker serving the old certificate: that is HAProxy's own behaviour,
// which certsync's check and verify steps rely on. The master's command
// socket (-S) says how many reloads it handled and which workers run:
// Procs reads it, and WaitReloads waits on it.
//
// CheckCommand is `haproxy -c -f CONFIG`, the check an operator
// configures; not with -q, which hides why a configuration fails, so that
// certsync's error cannot say it. Running as root, HAProxy keeps root (the configuration names
// no user); it needs no root.
//
// Leaves are read with nginxtest.FetchLeaf, which speaks TLS to any server.
package haproxytest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/acmetest"
	"github.com/certsync/certsync/internal/testing/logtest"
	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/natstest"
	"github.com/certsync/certsync/internal/testing/nginxtest"
	"github.com/certsync/certsync/internal/testing/proctest"
)

// startTimeout bounds how long Start waits for the port to accept TLS,
// reloadTimeout how long WaitReloads waits for the master, and stopTimeout
// how long the cleanup waits for HAProxy to exit after SIGTERM before it
// kills the process group. hardStop is the configuration's
// hard-stop-after: how long an old worker may linger after a reload.
const (
	startTimeout  = 15 * time.Second
	reloadTimeout = 15 * time.Second
	stopTimeout   = 10 * time.Second
	hardStop      = 5 * time.Second
)

// HAProxy is a running HAProxy master, stopped when the test ends.
type HAProxy struct {
	// Addr is the loopback host:port of the TLS frontend.
	Addr string
	// Bin is the haproxy program.
	Bin string
	// ConfFile is the configuration file (-f); WriteConfig rewrites it.
	ConfFile string
	// PIDFile is where the master writes its process id.
	PIDFile string
	// Socket is the master's command socket (-S).
	Socket string
	// CrtFile is the combined PEM file the frontend serves.
	CrtFile string

	kill string // the kill program, for ReloadCommand
	proc *proctest.Process
	out  logtest.Buffer
}

// Start writes a configuration with one frontend that terminates TLS on a
// loopback random port with crtFile (a combined PEM file: the full chain
// followed by the private key), starts HAProxy in master-worker mode in the
// foreground, waits until the port completes a TLS handshake, and stops
// HAProxy when the test ends. It skips or fails the test as
// acmetest.RequireTool does when haproxy (or kill, for ReloadCommand) is
// not installed.
func Start(t testing.TB, crtFile string) *HAProxy {
	t.Helper()
	bin := acmetest.RequireTool(t, "haproxy")
	kill := acmetest.RequireTool(t, "kill")
	dir := t.TempDir()
	// A Unix socket's path is limited to about 100 bytes, which a test's
	// temporary folder (named after the test) can exceed.
	sockDir, err := os.MkdirTemp("", "haproxytest-")
	if err != nil {
		t.Fatalf("make a folder for the master socket: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	var lastErr error
	// The port is reserved by listening and closing, so another process
	// may take it before HAProxy binds it; HAProxy then exits and a new
	// port is tried.
	for attempt := range 3 {
		h := &HAProxy{
			Addr:     loopback.FreeAddr(t),
			Bin:      bin,
			ConfFile: filepath.Join(dir, fmt.Sprintf("haproxy-%d.cfg", attempt)),
			PIDFile:  filepath.Join(dir, "haproxy.pid"),
			Socket:   filepath.Join(sockDir, fmt.Sprintf("master-%d.sock", attempt)),
			CrtFile:  crtFile,
			kill:     kill,
		}
		if err := h.start(t); err != nil {
			lastErr = err
			continue
		}
		return h
	}
	t.Fatalf("start haproxy: %v", lastErr)
	return nil
}

func (h *HAProxy) start(t testing.TB) error {
	t.Helper()
	if err := os.WriteFile(h.ConfFile, []byte(h.config("")), 0o600); err != nil {
		return fmt.Errorf("write haproxy config %q: %w", h.ConfFile, err)
	}
	cmd := exec.Command(h.Bin, "-W", "-S", h.Socket, "-p", h.PIDFile, "-f", h.ConfFile)
	cmd.Stdout = &h.out
	cmd.Stderr = &h.out
	var err error
	if h.proc, err = proctest.Start(cmd); err != nil {
		return err
	}
	err = h.proc.WaitServing(startTimeout, func() error {
		if _, err := nginxtest.FetchLeaf(h.Addr, ""); err != nil {
			return err
		}
		// The master's socket answers a moment after the worker serves.
		_, err := h.Procs()
		return err
	})
	if err != nil {
		h.stop()
		return fmt.Errorf("haproxy on %s: %w\n%s", h.Addr, err, h.out.String())
	}
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("haproxy output:\n%s", h.out.String())
		}
	})
	return nil
}

// config is the whole configuration, with extra appended to the frontend.
// The pid file and the master socket are on the command line.
func (h *HAProxy) config(extra string) string {
	return fmt.Sprintf(`global
    hard-stop-after %dms
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend tls
    bind %s ssl crt %s
    http-request return status 200 content-type text/plain string "certsync haproxytest"
%s`, hardStop.Milliseconds(), h.Addr, quote(h.CrtFile), extra)
}

// WriteConfig replaces the configuration file with the one Start wrote
// plus extra, lines inside the frontend (as an operator's edit would); ""
// puts Start's back. Nothing is reloaded: the next check or reload reads
// it.
func (h *HAProxy) WriteConfig(t testing.TB, extra string) {
	t.Helper()
	if extra != "" && !strings.HasSuffix(extra, "\n") {
		extra += "\n"
	}
	tmp := h.ConfFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(h.config(extra)), 0o600); err != nil {
		t.Fatalf("write haproxy config: %v", err)
	}
	if err := os.Rename(tmp, h.ConfFile); err != nil {
		t.Fatalf("replace haproxy config: %v", err)
	}
}

// CheckCommand is the command line that checks the configuration and the
// certificates it names, as a node's check: haproxy -c -f CONFIG.
func (h *HAProxy) CheckCommand() []string {
	return []string{h.Bin, "-c", "-f", h.ConfFile}
}

// ReloadCommand is the command line that reloads the master, as a node's
// reload: kill -USR2 PID, what `systemctl reload haproxy` sends.
func (h *HAProxy) ReloadCommand() []string {
	return []string{h.kill, "-USR2", strconv.Itoa(h.MasterPID())}
}

// MasterPID is the master's process id. A reload re-executes the master in
// the same process, so it never changes.
func (h *HAProxy) MasterPID() int { return h.proc.Pid() }

// Output returns what HAProxy printed so far (it logs its reloads and why
// one failed on stderr).
func (h *HAProxy) Output() string { return h.out.String() }

// Procs is what the master's "show proc" says.
type Procs struct {
	// Reloads counts the reloads the master handled, failed ones
	// included.
	Reloads int
	// Failed counts the failed reloads since the last one that loaded.
	Failed int
	// Workers are the workers of the configuration in service now; Old
	// are workers of an earlier one, finishing their connections, or still
	// serving after a reload failed.
	Workers, Old []int
}

// Procs asks the master's command socket which processes run.
func (h *HAProxy) Procs() (Procs, error) {
	var p Procs
	conn, err := net.DialTimeout("unix", h.Socket, 2*time.Second)
	if err != nil {
		return p, fmt.Errorf("connecting to haproxy master socket %q: %w", h.Socket, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The master answers once it sees the end of the request.
	if _, err := io.WriteString(conn, "show proc\n"); err != nil {
		return p, fmt.Errorf("asking haproxy master %q: %w", h.Socket, err)
	}
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		return p, fmt.Errorf("asking haproxy master %q: %w", h.Socket, err)
	}
	out, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return p, fmt.Errorf("reading haproxy master %q: %w", h.Socket, err)
	}
	return parseProcs(string(out))
}

// parseProcs reads "show proc" of HAProxy 2.6:
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	30245           master          1 [failed: 1]   0d00h00m05s     2.6.12-1+deb12u4
//	# workers
//	30248           worker          1               0d00h00m05s     2.6.12-1+deb12u4
//
// A worker's reloads count the master's reloads since it was forked: 0 for
// the workers in service.
func parseProcs(out string) (Procs, error) {
	var p Procs
	master := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		pid, err1 := strconv.Atoi(f[0])
		n, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			return p, fmt.Errorf("parsing haproxy show proc line %q", strings.TrimSpace(line))
		}
		switch f[1] {
		case "master":
			master = true
			p.Reloads = n
			if len(f) >= 5 && f[3] == "[failed:" {
				p.Failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case "worker":
			if n == 0 {
				p.Workers = append(p.Workers, pid)
			} else {
				p.Old = append(p.Old, pid)
			}
		}
	}
	if !master {
		return p, fmt.Errorf("haproxy show proc names no master:\n%s", out)
	}
	return p, nil
}

// WaitReloads waits until the master has handled at least n reloads in
// all and settled: the last one failed (the old worker serves on), or it
// loaded and the old workers are gone, so that every new connection
// reaches the new worker. It returns what the master says then.
func (h *HAProxy) WaitReloads(t testing.TB, n int) Procs {
	t.Helper()
	var p Procs
	natstest.WaitFor(t, reloadTimeout, fmt.Sprintf("haproxy's master to settle after reload %d", n), func() bool {
		select {
		case <-h.proc.Exited():
			t.Fatalf("haproxy exited:\n%s", h.out.String())
		default:
		}
		var err error
		p, err = h.Procs()
		if err != nil {
			return false // the master is re-executing itself
		}
		return p.Reloads >= n && (p.Failed > 0 || (len(p.Workers) > 0 && len(p.Old) == 0))
	})
	return p
}

// Reload signals the master with SIGUSR2 and waits until a new worker is
// the only one serving; it fails the test if the new configuration did not
// load.
func (h *HAProxy) Reload(t testing.TB) {
	t.Helper()
	before, err := h.Procs()
	if err != nil {
		t.Fatalf("reload haproxy: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := h.ReloadCommand()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("reload haproxy: %v\n%s", err, out)
	}
	if p := h.WaitReloads(t, before.Reloads+1); p.Failed > 0 {
		t.Fatalf("haproxy did not load its configuration on reload:\n%s", h.out.String())
	}
}

// stop ends HAProxy with SIGTERM to the master (which stops its workers)
// and waits; if it lingers, it kills HAProxy's process group.
func (h *HAProxy) stop() { h.proc.Stop(stopTimeout) }

// quote makes s one HAProxy configuration word: in double quotes, with
// the characters HAProxy gives a meaning there (\ " $) escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `\$`).Replace(s) + `"`
}
