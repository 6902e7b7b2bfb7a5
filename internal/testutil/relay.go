package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Relay forwards TCP connections from a free loopback port to an upstream
// address, byte for byte, until Stop: then its port refuses connections and
// the connections it carried are closed, as if the server behind it had
// gone away, until Restart brings it back on the same port. Clients use Addr instead of the upstream's address (a registry
// builds its redirects from the Host header, so they point back here).
type Relay struct {
	Addr string // 127.0.0.1:PORT

	l        net.Listener
	upstream string
	wg       sync.WaitGroup // the accept loop and the copies

	mu      sync.Mutex // guards conns and stopped
	conns   map[net.Conn]struct{}
	stopped bool
}

// StartRelay starts a relay to upstream (host:port). It is stopped in
// t.Cleanup if the test did not stop it.
func StartRelay(t testing.TB, upstream string) *Relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartRelay: %v", err)
	}
	r := &Relay{Addr: l.Addr().String(), upstream: upstream}
	r.serve(l)
	t.Cleanup(r.Stop)
	return r
}

func (r *Relay) serve(l net.Listener) {
	r.mu.Lock()
	r.l, r.conns, r.stopped = l, map[net.Conn]struct{}{}, false
	r.mu.Unlock()
	r.wg.Add(1)
	go r.accept()
}

// Restart listens on Addr again after Stop: the server is back.
func (r *Relay) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	l, err := net.Listen("tcp", r.Addr)
	if err != nil {
		t.Fatalf("relay restart: %v", err)
	}
	r.serve(l)
}

func (r *Relay) accept() {
	defer r.wg.Done()
	r.mu.Lock()
	l := r.l
	r.mu.Unlock()
	for {
		c, err := l.Accept()
		if err != nil {
			return // stopped
		}
		up, err := net.Dial("tcp", r.upstream)
		if err != nil {
			c.Close()
			continue
		}
		if !r.track(c, up) {
			return
		}
		r.wg.Add(2)
		go r.pipe(c, up)
		go r.pipe(up, c)
	}
}

// track records a connection pair, or closes it if the relay has stopped.
func (r *Relay) track(a, b net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		a.Close()
		b.Close()
		return false
	}
	r.conns[a], r.conns[b] = struct{}{}, struct{}{}
	return true
}

// pipe copies src to dst, then closes both.
func (r *Relay) pipe(dst, src net.Conn) {
	defer r.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	r.mu.Lock()
	delete(r.conns, dst)
	delete(r.conns, src)
	r.mu.Unlock()
}

// Stop closes the port and every relayed connection and waits for the
// relay's goroutines. It is idempotent.
func (r *Relay) Stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	r.l.Close()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
