package fleetbench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/certsync/certsync/internal/testing/loopback"
	"github.com/certsync/certsync/internal/testing/proctest"
	"github.com/certsync/certsync/internal/testing/treetest"
)

// The scale benchmarks run the server as its own process, the real
// `certsync server` binary built from ./cmd/certsync, so that its memory
// and CPU are its own: read from /proc/<pid>, never mixed with the nodes'
// client side, which runs in the benchmark's process.
//
// Its configuration (serverConfig) has two accounts: APP, with JetStream,
// which every client without credentials lands in (no_auth_user, so the
// nodes and the publisher connect as they would to an open server), and
// SYS, the system account, whose user the benchmark uses to count the
// JetStream API requests the server dropped.

// build is the certsync binary, built once per test process.
var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// certsyncBinary builds ./cmd/certsync once and returns its path. TestMain
// removes it.
func certsyncBinary(tb testing.TB) string {
	tb.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "fleetbench-bin-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "certsync")
		out, err := exec.Command("go", "build", "-o", build.path, "github.com/certsync/certsync/cmd/certsync").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("building certsync: %w\n%s", err, out)
		}
	})
	if build.err != nil {
		tb.Fatal(build.err)
	}
	return build.path
}

// sysUser is the system account's user in serverConfig.
const sysUser, sysPassword = "sys", "sys"

// natsProc is one `certsync server` process, started and restarted on the
// same ports and store.
type natsProc struct {
	tb       testing.TB
	name     string
	dir      string // config, log and store
	port     int    // client port
	httpPort int    // monitoring: /jsz, /varz
	profPort int    // /debug/pprof: the heap after a GC
	p        *proctest.Process
	logs     []string // one log file per start
}

// newNATSProcs prepares n servers (a cluster of n when n > 1), each in its
// own folder under dir, and starts them. Each is stopped at the end.
func newNATSProcs(tb testing.TB, dir string, n int) []*natsProc {
	tb.Helper()
	ports := loopback.FreePorts(tb, 4*n)
	procs := make([]*natsProc, n)
	for i := range n {
		p := &natsProc{tb: tb, name: fmt.Sprintf("certsync-bench-%d", i+1), dir: filepath.Join(dir, fmt.Sprintf("server%d", i+1)),
			port: ports[4*i], httpPort: ports[4*i+1], profPort: ports[4*i+2]}
		treetest.MkdirAll(tb, p.dir, 0o700)
		var routes []string
		if n > 1 {
			for j := range n {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[4*j+3]))
			}
		}
		treetest.WriteFile(tb, p.configFile(), []byte(serverConfig(p, ports[4*i+3], routes)), 0o600)
		procs[i] = p
		tb.Cleanup(func() { p.stop() })
	}
	// A clustered server is ready for clients once it has peers: start all
	// of them before waiting.
	for _, p := range procs {
		p.launch()
	}
	for _, p := range procs {
		p.waitReady(2 * time.Minute)
	}
	if n > 1 {
		waitClusterReady(tb, procs)
	}
	return procs
}

func (s *natsProc) configFile() string { return filepath.Join(s.dir, "nats.conf") }

// URL is the client URL.
func (s *natsProc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// serverConfig is a nats-server configuration for the benchmark: loopback
// only, JetStream on file storage in the server's folder, the APP and SYS
// accounts (see above), monitoring and profiling ports; with routes, one
// server of a cluster.
func serverConfig(s *natsProc, routePort int, routes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server_name: %q\nlisten: \"127.0.0.1:%d\"\nhttp: \"127.0.0.1:%d\"\nprof_port: %d\n", s.name, s.port, s.httpPort, s.profPort)
	fmt.Fprintf(&b, "jetstream { store_dir: %q }\n", filepath.Join(s.dir, "store"))
	b.WriteString(`accounts {
  APP { jetstream: enabled, users: [{user: app, password: app}] }
  SYS { users: [{user: ` + sysUser + `, password: ` + sysPassword + `}] }
}
system_account: SYS
no_auth_user: app
`)
	if len(routes) > 0 {
		fmt.Fprintf(&b, "cluster { name: \"certsync-bench\", listen: \"127.0.0.1:%d\", routes: [%s] }\n", routePort, strings.Join(quoted(routes), ", "))
	}
	return b.String()
}

func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

// launch starts the process, its log in a new file.
func (s *natsProc) launch() {
	s.tb.Helper()
	log := filepath.Join(s.dir, fmt.Sprintf("server.%d.log", len(s.logs)+1))
	f, err := os.Create(log)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(certsyncBinary(s.tb), "server", "--config", s.configFile())
	cmd.Stdout, cmd.Stderr = f, f
	s.p, err = proctest.Start(cmd)
	if err != nil {
		s.tb.Fatal(err)
	}
	s.logs = append(s.logs, log)
}

// waitReady waits until the server answers on its monitoring port as
// healthy for JetStream.
func (s *natsProc) waitReady(timeout time.Duration) {
	s.tb.Helper()
	err := s.p.WaitServing(timeout, func() error {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", s.httpPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		s.tb.Fatalf("server %s: %v\n%s", s.name, err, s.tail())
	}
}

// start starts the server again on the same ports and store and returns
// when it is ready (JetStream recovered).
func (s *natsProc) start(timeout time.Duration) {
	s.tb.Helper()
	s.launch()
	s.waitReady(timeout)
}

// stop stops the server with SIGTERM (its clean shutdown: streams and
// consumers are kept), SIGKILL after 2 minutes, and returns how long it
// took. A stopped server stays stopped.
func (s *natsProc) stop() time.Duration {
	if s.p == nil {
		return 0
	}
	select {
	case <-s.p.Exited():
		return 0
	default:
	}
	start := time.Now()
	s.p.Stop(2 * time.Minute)
	return time.Since(start)
}

// kill ends the server with SIGKILL, as a crash would.
func (s *natsProc) kill() {
	s.tb.Helper()
	if err := s.p.Signal(syscall.SIGKILL); err != nil {
		s.tb.Fatal(err)
	}
	<-s.p.Exited()
}

// tail is the end of the current log, for a failure message.
func (s *natsProc) tail() string {
	if len(s.logs) == 0 {
		return ""
	}
	b, _ := os.ReadFile(s.logs[len(s.logs)-1])
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// rss is the process's resident memory (VmRSS), in bytes.
func (s *natsProc) rss() uint64 {
	s.tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.p.Pid()))
	if err != nil {
		s.tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				s.tb.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb * 1024
		}
	}
	s.tb.Fatal("no VmRSS in /proc status")
	return 0
}

// cpu is the CPU time the process has used (user and system).
func (s *natsProc) cpu() time.Duration {
	s.tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.p.Pid()))
	if err != nil {
		s.tb.Fatal(err)
	}
	// Fields after the command (which may hold spaces) in parentheses:
	// utime and stime are the 14th and 15th fields of the line.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		s.tb.Fatalf("parsing /proc stat %q", rest)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}

// heap is the Go heap in use after garbage collection (HeapAlloc) and
// the goroutine stacks (StackInuse), from the server's profiling port.
func (s *natsProc) heap() (heapAlloc, stacks uint64) {
	s.tb.Helper()
	// Twice: what a sync.Pool held survives one collection (its victim
	// cache) and is freed by the second.
	for range 2 {
		heapAlloc, stacks = s.heapOnce()
	}
	return heapAlloc, stacks
}

func (s *natsProc) heapOnce() (heapAlloc, stacks uint64) {
	s.tb.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?debug=1&gc=1", s.profPort))
	if err != nil {
		s.tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			heapAlloc, _ = strconv.ParseUint(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "# Stack = "); ok {
			// "# Stack = inuse / sys"
			stacks, _ = strconv.ParseUint(strings.Fields(v)[0], 10, 64)
		}
	}
	if heapAlloc == 0 {
		s.tb.Fatal("no HeapAlloc in the heap profile")
	}
	return heapAlloc, stacks
}

// apiStats are the server's JetStream API counters since it started.
type apiStats struct {
	Total  uint64 `json:"total"`
	Errors uint64 `json:"errors"`
}

// api reads the JetStream API counters from /jsz.
func (s *natsProc) api() apiStats {
	s.tb.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", s.httpPort))
	if err != nil {
		s.tb.Fatal(err)
	}
	defer resp.Body.Close()
	var jsz struct {
		API apiStats `json:"api"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jsz); err != nil {
		s.tb.Fatal(err)
	}
	return jsz.API
}

// dropWarnings counts the lines, in every log of the process, where the
// server said it dropped its JetStream API queue. The server writes it at
// most once a second (rateLimitFormatWarnf), so it counts events, not
// requests: none means none was dropped.
func (s *natsProc) dropWarnings() int {
	n := 0
	for _, log := range s.logs {
		b, err := os.ReadFile(log)
		if err != nil {
			s.tb.Fatal(err)
		}
		n += bytes.Count(b, []byte("limit reached, dropping"))
	}
	return n
}

// dropCounter counts the JetStream API requests the servers dropped, from
// their advisories ($JS.EVENT.ADVISORY.API.LIMIT_REACHED, in the system
// account; each says how many requests it dropped).
type dropCounter struct {
	nc      *nats.Conn
	dropped atomic.Int64
	events  atomic.Int64
}

// countDrops subscribes to the advisories on the servers at url.
func countDrops(tb testing.TB, url string) *dropCounter {
	tb.Helper()
	nc, err := nats.Connect(url, nats.UserInfo(sysUser, sysPassword), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.Timeout(5*time.Second))
	if err != nil {
		tb.Fatalf("system account: %v", err)
	}
	tb.Cleanup(nc.Close)
	d := &dropCounter{nc: nc}
	_, err = nc.Subscribe("$JS.EVENT.ADVISORY.API.LIMIT_REACHED", func(m *nats.Msg) {
		var adv struct {
			Dropped int64 `json:"dropped"`
		}
		if json.Unmarshal(m.Data, &adv) == nil {
			d.dropped.Add(adv.Dropped)
		}
		d.events.Add(1)
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return d
}

// waitClusterReady waits until every server of a cluster reports a
// JetStream meta leader and all its peers current.
func waitClusterReady(tb testing.TB, procs []*natsProc) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ready := true
		for _, p := range procs {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", p.httpPort))
			if err != nil {
				ready = false
				break
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				ready = false
			}
		}
		if ready && metaReady(tb, procs) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatal("timed out waiting for the cluster's meta leader and peers")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metaLeader is the name of the cluster's JetStream meta leader.
func metaLeader(tb testing.TB, procs []*natsProc) string {
	tb.Helper()
	for _, p := range procs {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", p.httpPort))
		if err != nil {
			continue
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jsz)
		resp.Body.Close()
		if err == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
			return jsz.Meta.Leader
		}
	}
	tb.Fatal("no server names a meta leader")
	return ""
}

// metaReady reports whether the meta leader knows every other server as a
// current peer.
func metaReady(tb testing.TB, procs []*natsProc) bool {
	for _, p := range procs {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?leader-only=true", p.httpPort))
		if err != nil {
			return false
		}
		var jsz struct {
			Meta *struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Current bool `json:"current"`
					Offline bool `json:"offline"`
				} `json:"replicas"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jsz)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || jsz.Meta == nil {
			continue
		}
		current := 0
		for _, r := range jsz.Meta.Replicas {
			if r.Current && !r.Offline {
				current++
			}
		}
		return current >= len(procs)-1
	}
	return false
}
