// Package natstest starts real, in-process NATS servers for tests: one server,
// or a cluster of several joined by routes, all with JetStream on file
// storage in the test's temporary folder and listening on loopback only.
package natstest

import (
	"fmt"
	"net/url"
	"strings"
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
	// Routes need each other's addresses before start, so reserve the
	// cluster ports first.
	ports := loopback.FreePorts(t, n)
	routes := make([]*url.URL, n)
	for i, port := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	}
	var servers []*server.Server
	for i := range n {
		o := Options(t.TempDir())
		o.ServerName = fmt.Sprintf("certsync-test-%d", i+1)
		o.Cluster.Name = "certsync-test"
		o.Cluster.Host = "127.0.0.1"
		o.Cluster.Port = ports[i]
		o.Routes = routes
		// A clustered server is ready for clients only once it has peers,
		// so start them all before waiting.
		servers = append(servers, start(t, o))
	}
	urls := make([]string, len(servers))
	for i, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("nats server %d of the cluster not ready", i+1)
		}
		urls[i] = s.ClientURL()
	}
	WaitFor(t, 20*time.Second, "jetstream cluster meta leader with every peer current", func() bool {
		for _, s := range servers {
			if !s.JetStreamIsCurrent() || s.NumRoutes() < n-1 {
				return false
			}
		}
		// The meta leader must know every other server as a current peer:
		// until then, placing a stream with n replicas fails with "no
		// suitable peers for placement".
		if !metaPeersCurrent(servers, n) {
			return false
		}
		nc, err := nats.Connect(urls[0])
		if err != nil {
			return false
		}
		defer nc.Close()
		_, err = nc.Request("$JS.API.INFO", nil, time.Second)
		return err == nil
	})
	return servers, strings.Join(urls, ",")
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
