// Package natstest starts real, in-process NATS servers for tests: one server,
// or a cluster of several joined by routes, all with JetStream on file
// storage in the test's temporary folder and listening on loopback only.
//
// Faults: a Cluster's members can be killed (their routes cut first, so the
// others hear nothing more, as from a killed process) and restarted on the
// same ports and store folders (Cluster.Kill, Restart, StartAll), and a
// Proxy in front of a server cuts a client's connection after a chosen
// request, or runs a hook as one goes by.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certsync/certsync/internal/testing/loopback"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options returns server options for a test server: loopback, a random port,
// JetStream on file storage under dir.
func Options(dir string) *server.Options {
	return &server.Options{
		ServerName: "certsync-test",
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
	}
}

// Start starts a server with opts, waits until it accepts clients, and stops
// it when the test ends.
func Start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s := start(t, opts)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats server %s not ready", opts.ServerName)
	}
	return s
}

func start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("new nats server: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	s.Start()
	return s
}

// RunServer starts one server with JetStream and returns it.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return Start(t, Options(t.TempDir()))
}

// URL is the client URL of s.
func URL(s *server.Server) string { return s.ClientURL() }

// RunCluster starts n servers joined in one JetStream cluster and waits until
// the cluster has a meta leader. It returns the servers and a comma-separated
// URL list of all of them.
func RunCluster(t testing.TB, n int) ([]*server.Server, string) {
	t.Helper()
	c := StartCluster(t, n)
	return c.Servers(), c.URLs
}

// Cluster is a JetStream cluster of in-process servers whose members can be
// killed (the others lose it with no word from it) and started again on the
// same client and route ports and the same store folder, as a server
// restarted by its operator comes back. The members reach each other's
// routes through proxies (routes), which is how a kill cuts them.
type Cluster struct {
	// URLs is the comma-separated client URL list of every member.
	URLs string

	t      testing.TB
	opts   []*server.Options // each member's options, its client port fixed after the first start
	routes *routes

	mu      sync.Mutex       // guards servers: a test may kill a member from another goroutine
	servers []*server.Server // nil while stopped
}

// StartCluster starts n servers joined in one JetStream cluster and waits
// until the cluster has a meta leader that knows every peer as current.
// Every running member stops when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// Routes need each other's addresses before start, so reserve the
	// cluster ports first; the members dial and advertise the proxies in
	// front of them.
	ports := loopback.FreePorts(t, n)
	targets := make([]string, n)
	for i, port := range ports {
		targets[i] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	c := &Cluster{t: t, opts: make([]*server.Options, n), servers: make([]*server.Server, n), routes: startRoutes(t, targets)}
	routeURLs := make([]*url.URL, n)
	for i, addr := range c.routes.addrs {
		routeURLs[i] = &url.URL{Scheme: "nats", Host: addr}
	}
	for i := range n {
		o := Options(t.TempDir())
		o.ServerName = fmt.Sprintf("certsync-test-%d", i+1)
		o.Cluster.Name = "certsync-test"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = ports[i]
		o.Cluster.Advertise = c.routes.addrs[i]
		o.Routes = routeURLs
		c.opts[i] = o
		// A clustered server is ready for clients only once it has peers,
		// so start them all before waiting.
		c.servers[i] = c.start(i)
	}
	urls := make([]string, n)
	for i, s := range c.servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("nats server %d of the cluster not ready", i+1)
		}
		urls[i] = s.ClientURL()
		// Started again, it listens where its clients know it.
		c.opts[i].Port = s.Addr().(*net.TCPAddr).Port
	}
	c.URLs = strings.Join(urls, ",")
	c.WaitFormed()
	return c
}

// start starts member i with its options, its routes let through.
func (c *Cluster) start(i int) *server.Server {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("new nats server %s: %v", c.Name(i), err)
	}
	c.t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	c.routes.setID(i, s.ID())
	c.routes.restore(i)
	s.Start()
	return s
}

// Servers returns the members, nil for a stopped one.
func (c *Cluster) Servers() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.servers)
}

// member returns member i, nil when stopped.
func (c *Cluster) member(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// set records member i's server (nil: stopped).
func (c *Cluster) set(i int, s *server.Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.servers[i] = s
}

// URL is the client URL of member i.
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port) }

// Name is the server name of member i.
func (c *Cluster) Name(i int) string { return c.opts[i].ServerName }

// Kill takes member i away as if its process were killed: its routes are
// cut first, so the others hear nothing from it (a shut down server would
// hand its leaderships over on its way out) and elect new leaders only
// after their election timeout; then it shuts down, closing its clients'
// connections.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	s := c.member(i)
	if s == nil {
		c.t.Fatalf("nats server %s is stopped already", c.Name(i))
	}
	c.routes.cut(i)
	s.Shutdown()
	s.WaitForShutdown()
	c.set(i, nil)
}

// Restart starts a stopped member i again on its ports and store folder,
// and waits until it accepts clients. It does not wait for the cluster to
// elect leaders: see WaitFormed and WaitStreamLeader.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.member(i) != nil {
		c.t.Fatalf("nats server %s is running", c.Name(i))
	}
	s := c.start(i)
	if !s.ReadyForConnections(20 * time.Second) {
		c.t.Fatalf("nats server %s not ready after a restart", c.Name(i))
	}
	c.set(i, s)
}

// StartAll starts every stopped member at once, as a cluster whose servers
// all come back after a power cut, and waits until each accepts clients.
func (c *Cluster) StartAll() {
	c.t.Helper()
	var started []int
	for i, s := range c.Servers() {
		if s == nil {
			// A clustered server is ready only once it has peers: start
			// them all before waiting.
			c.set(i, c.start(i))
			started = append(started, i)
		}
	}
	for _, i := range started {
		if !c.member(i).ReadyForConnections(30 * time.Second) {
			c.t.Fatalf("nats server %s not ready after a restart", c.Name(i))
		}
	}
}

// WaitFormed waits until every member runs, is current, has its routes and
// the meta leader knows every other member as a current peer. It fails the
// test saying how each member stood when it gave up.
func (c *Cluster) WaitFormed() {
	c.t.Helper()
	n := len(c.opts)
	var state string
	formed := func() bool {
		servers := c.Servers()
		var b strings.Builder
		ok := true
		for i, s := range servers {
			if s == nil {
				fmt.Fprintf(&b, "%s stopped; ", c.Name(i))
				ok = false
				continue
			}
			fmt.Fprintf(&b, "%s current=%t routes=%d leader=%t; ", c.Name(i), s.JetStreamIsCurrent(), s.NumRoutes(), s.JetStreamIsLeader())
			if !s.JetStreamIsCurrent() || s.NumRoutes() < n-1 {
				ok = false
			}
		}
		state = b.String()
		// The meta leader must know every other server as a current peer:
		// until then, placing a stream with n replicas fails with "no
		// suitable peers for placement".
		if !ok || !metaPeersCurrent(servers, n) {
			return false
		}
		nc, err := nats.Connect(c.URLs)
		if err != nil {
			return false
		}
		defer nc.Close()
		_, err = nc.Request("$JS.API.INFO", nil, time.Second)
		return err == nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for !formed() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after 30s waiting for the jetstream cluster to form (a meta leader with every peer current): %s", state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StreamLeader returns the member that leads stream (of the default
// account), or -1 when no running member does.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Servers() {
		if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// ConsumerLeader returns the member that leads consumer of stream (of the
// default account), or -1 when no running member does.
func (c *Cluster) ConsumerLeader(stream, consumer string) int {
	for i, s := range c.Servers() {
		if s != nil && s.JetStreamIsConsumerLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream, consumer) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a running member leads stream, and returns
// it.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	WaitFor(c.t, timeout, "a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream)
		return leader >= 0
	})
	return leader
}

// ServerOf returns the member holding the client connection named name
// (nats.Name, as certsync names a node's connections), or -1.
func (c *Cluster) ServerOf(name string) int {
	for i, s := range c.Servers() {
		if s == nil {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, ci := range cz.Conns {
			if ci.Name == name {
				return i
			}
		}
	}
	return -1
}

// metaPeersCurrent reports whether one of servers is the JetStream meta
// leader and knows the n-1 others as current peers.
func metaPeersCurrent(servers []*server.Server, n int) bool {
	for _, s := range servers {
		if !s.JetStreamIsLeader() {
			continue
		}
		info, err := s.Jsz(nil)
		if err != nil || info.Meta == nil {
			return false
		}
		current := 0
		for _, p := range info.Meta.Replicas {
			if p.Current && !p.Offline {
				current++
			}
		}
		return current >= n-1
	}
	return false
}

// WaitFor polls cond every 20ms until it holds or the deadline passes, then
// fails the test naming what it waited for.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// JetStream connects a test client to url (one or several comma-separated
// servers) with opts, within 5 seconds, and returns its JetStream context;
// the connection closes when the test ends.
func JetStream(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
