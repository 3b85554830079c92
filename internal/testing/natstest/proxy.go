package natstest

import (
	"bytes"
	"net"
	"sync"
	"testing"
)

// Proxy is a TCP proxy on loopback in front of a NATS server, which can cut
// a client's connection at a chosen moment: the fault of a network that
// loses what the server sent back. Clients connect to Addr; each
// connection is forwarded to the server as it is, until CutAfter arms it.
type Proxy struct {
	// Addr is the proxy's HOST:PORT, and URL its nats:// URL.
	Addr, URL string

	target string
	ln     net.Listener

	mu       sync.Mutex
	sent     []byte // what a client must send to arm the cut
	answered []byte // what the server then answers, which is never delivered
	cuts     int
	onSend   []byte // what a client must send for hook to run
	hook     func()
}

// StartProxy starts a proxy to the server at target (HOST:PORT); it stops
// when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln}
	p.URL = "nats://" + p.Addr
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { p.serve(c) })
		}
	})
	return p
}

// CutAfter arms the proxy once: after a client sends bytes holding sent,
// the next bytes from the server that hold answered are dropped and the
// client's connection is closed, the server's a moment later. The server
// has then done what the client asked (stored a message, say), and the
// client never hears of it: it reconnects and must find out by itself.
func (p *Proxy) CutAfter(sent, answered string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sent, p.answered = []byte(sent), []byte(answered)
}

// OnSend arms the proxy once: when a client sends bytes holding sent, fn
// runs before they go on to the server (to kill a server while a request
// is on its way, say).
func (p *Proxy) OnSend(sent string, fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onSend, p.hook = []byte(sent), fn
}

// Cuts is how many connections the proxy cut.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// serve forwards one client connection.
func (p *Proxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	// armed is closed once the client sent what arms the cut; answered is
	// then what to drop, and the cut is this connection's.
	armed := make(chan []byte, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		buf := make([]byte, 64<<10)
		var tail []byte // the end of what came before, for a pattern split across reads
		for {
			n, err := client.Read(buf)
			if n > 0 {
				seen := append(tail, buf[:n]...)
				p.mu.Lock()
				if p.sent != nil && bytes.Contains(seen, p.sent) {
					armed <- p.answered
					p.sent, p.answered = nil, nil
				}
				var hook func()
				if p.onSend != nil && bytes.Contains(seen, p.onSend) {
					hook = p.hook
					p.onSend, p.hook = nil, nil
				}
				p.mu.Unlock()
				if hook != nil {
					hook()
				}
				if _, werr := server.Write(buf[:n]); werr != nil {
					return
				}
				tail = append([]byte(nil), seen[max(0, len(seen)-256):]...)
			}
			if err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	var drop []byte
	var tail []byte
	for {
		n, err := server.Read(buf)
		if n > 0 {
			if drop == nil {
				select {
				case drop = <-armed:
				default:
				}
			}
			seen := append(tail, buf[:n]...)
			if drop != nil && bytes.Contains(seen, drop) {
				p.mu.Lock()
				p.cuts++
				p.mu.Unlock()
				client.Close()
				<-done
				return
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				return
			}
			tail = append([]byte(nil), seen[max(0, len(seen)-256):]...)
		}
		if err != nil {
			client.Close()
			<-done
			return
		}
	}
}
