package natstest

import (
	"net"
	"regexp"
	"slices"
	"sync"
	"testing"
)

// routes carries the route connections of a Cluster: one proxy in front of
// each member's route port, which the members dial and advertise instead of
// the port itself. It knows which member dialed each connection (the
// server id its CONNECT names), so that it can cut every route of a member
// at once: the others then lose it the way they lose a server that was
// killed, with no word from it (no leadership handed over).
type routes struct {
	mu    sync.Mutex
	ids   []string // each member's current server id
	dead  []bool   // members whose routes are cut
	conns map[*routeConn]bool
	addrs []string // each proxy's HOST:PORT
}

// routeConn is one route connection through a proxy: from the member that
// dialed it (-1 until its CONNECT names it) to member to.
type routeConn struct {
	from, to       int
	dialer, target net.Conn
}

// startRoutes starts a proxy in front of each of targets (the members'
// route HOST:PORT); they stop when the test ends.
func startRoutes(t testing.TB, targets []string) *routes {
	t.Helper()
	r := &routes{ids: make([]string, len(targets)), dead: make([]bool, len(targets)), conns: map[*routeConn]bool{}}
	var wg sync.WaitGroup
	var lns []net.Listener
	t.Cleanup(func() {
		for _, ln := range lns {
			ln.Close()
		}
		r.mu.Lock()
		for c := range r.conns {
			c.dialer.Close()
			c.target.Close()
		}
		r.mu.Unlock()
		wg.Wait()
	})
	for i, target := range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("route proxy listen: %v", err)
		}
		lns = append(lns, ln)
		r.addrs = append(r.addrs, ln.Addr().String())
		wg.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Go(func() { r.serve(c, i, target) })
			}
		})
	}
	return r
}

// setID records member i's server id, as it starts.
func (r *routes) setID(i int, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids[i] = id
}

// cut closes every route of member i and refuses new ones until restore.
func (r *routes) cut(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead[i] = true
	for c := range r.conns {
		if c.from == i || c.to == i {
			c.dialer.Close()
			c.target.Close()
		}
	}
}

// restore lets member i's routes through again.
func (r *routes) restore(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dead[i] = false
}

// routeName finds the server id in a route's CONNECT.
var routeName = regexp.MustCompile(`CONNECT \{[^\r\n]*?"name":"([^"]+)"`)

// serve carries one route connection to member to.
func (r *routes) serve(dialer net.Conn, to int, target string) {
	defer dialer.Close()
	r.mu.Lock()
	dead := r.dead[to]
	r.mu.Unlock()
	if dead {
		return
	}
	conn, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer conn.Close()
	c := &routeConn{from: -1, to: to, dialer: dialer, target: conn}
	r.mu.Lock()
	r.conns[c] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyConn(dialer, conn)
		// The target closed (a duplicate route, say): the dialer must
		// know at once, not at its next ping, or it sends into the void.
		dialer.Close()
		conn.Close()
	}()
	// From the dialer: find who it is in its CONNECT, then carry on.
	buf := make([]byte, 32<<10)
	var head []byte
	for {
		n, err := dialer.Read(buf)
		if n > 0 {
			if c.from < 0 && len(head) < 64<<10 {
				head = append(head, buf[:n]...)
				if m := routeName.FindSubmatch(head); m != nil {
					r.mu.Lock()
					c.from = memberOf(r.ids, string(m[1]))
					gone := c.from >= 0 && r.dead[c.from]
					r.mu.Unlock()
					if gone {
						break
					}
				}
			}
			if _, werr := conn.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	conn.Close()
	dialer.Close()
	<-done
}

// copyConn copies what src sends to dst until either fails.
func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// memberOf is the member whose server id is id, or -1.
func memberOf(ids []string, id string) int {
	if id == "" {
		return -1
	}
	return slices.Index(ids, id)
}
