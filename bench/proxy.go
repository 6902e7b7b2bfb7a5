package bench

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DelayProxy is a TCP proxy that adds a round-trip time to every connection
// without limiting its throughput: the latency half of a shaped link (the
// rate half is tc's tbf on the veth pair).
//
// A connection is accepted at once (the client's connect returns on
// loopback), but the upstream connection is made only one RTT after the
// accept, as a TCP handshake over the link would take; each chunk read in
// either direction is written on RTT/2 after it was read (client to
// upstream: RTT/2 after the later of its arrival and the end of the
// handshake), through a timestamped queue per direction, in order. A
// request on a new connection so sees its first response byte after 2×RTT
// plus the server's time, and one on a kept-alive connection after 1×RTT.
//
// Unlike a real link, the proxy does not model TCP's slow start over the
// delayed path: the window towards the registry grows at the speed of the
// veth, not of the RTT.
type DelayProxy struct {
	// Addr is the address it listens on (127.0.0.1:PORT).
	Addr string

	upstream string
	rtt      time.Duration
	ln       net.Listener

	up, down, conns atomic.Int64

	mu     sync.Mutex // guards open and closed
	open   map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup // accept loop and connection handlers
}

// proxyQueueLen bounds the chunks in flight per direction of a connection
// (each at most proxyChunk bytes): 1024 × 64 KiB = 64 MiB, far more than a
// link's bandwidth × delay, so the queue never limits throughput.
const (
	proxyQueueLen = 1024
	proxyChunk    = 64 << 10
)

// StartDelayProxy listens on a free port of 127.0.0.1 and forwards each
// connection to upstream (host:port) with rtt added. Close stops it.
func StartDelayProxy(upstream string, rtt time.Duration) (*DelayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &DelayProxy{Addr: ln.Addr().String(), upstream: upstream, rtt: rtt, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

// ProxyStats counts what went through the proxy.
type ProxyStats struct {
	Conns int64 // connections accepted
	Up    int64 // bytes client → upstream
	Down  int64 // bytes upstream → client
}

// Stats returns the counts so far.
func (p *DelayProxy) Stats() ProxyStats {
	return ProxyStats{Conns: p.conns.Load(), Up: p.up.Load(), Down: p.down.Load()}
}

// Sub returns s − o, the traffic between two Stats calls.
func (s ProxyStats) Sub(o ProxyStats) ProxyStats {
	return ProxyStats{Conns: s.Conns - o.Conns, Up: s.Up - o.Up, Down: s.Down - o.Down}
}

// Close stops accepting, closes every connection and waits for the
// handlers. It is idempotent.
func (p *DelayProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	err := p.ln.Close()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track registers c to be closed by Close; false when Close ran already.
func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *DelayProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.conns.Add(1)
		p.wg.Go(func() { p.serve(c, time.Now()) })
	}
}

// chunk is bytes read from one side, to be written to the other at due.
type chunk struct {
	b   []byte
	due time.Time
}

// serve relays one client connection accepted at t0.
func (p *DelayProxy) serve(client net.Conn, t0 time.Time) {
	defer p.untrack(client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Either side failing, or Close, ends both directions.
	stopClient := context.AfterFunc(ctx, func() { client.Close() })
	defer stopClient()
	defer client.Close()

	var wg sync.WaitGroup
	defer wg.Wait() // runs before the deferred cancel: cancel explicitly first
	handshake := t0.Add(p.rtt)
	upq := make(chan chunk, proxyQueueLen)
	// The client's bytes are read from the start; they leave after the
	// handshake.
	wg.Go(func() {
		p.read(ctx, client, upq, func(now time.Time) time.Time { return later(now, handshake).Add(p.rtt / 2) }, &p.up)
	})
	upstream, err := p.dial(ctx, handshake)
	if err != nil {
		cancel()
		return
	}
	defer p.untrack(upstream)
	stopUpstream := context.AfterFunc(ctx, func() { upstream.Close() })
	defer stopUpstream()
	defer upstream.Close()
	downq := make(chan chunk, proxyQueueLen)
	wg.Go(func() {
		p.read(ctx, upstream, downq, func(now time.Time) time.Time { return now.Add(p.rtt / 2) }, &p.down)
	})
	var writers sync.WaitGroup
	writers.Go(func() { write(ctx, cancel, upstream, upq) })
	writers.Go(func() { write(ctx, cancel, client, downq) })
	writers.Wait()
	cancel()
}

// dial connects to the upstream at the end of the simulated handshake.
func (p *DelayProxy) dial(ctx context.Context, at time.Time) (net.Conn, error) {
	if !sleepUntil(ctx, at) {
		return nil, ctx.Err()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.upstream)
	if err != nil {
		return nil, err
	}
	if !p.track(c) {
		c.Close()
		return nil, net.ErrClosed
	}
	return c, nil
}

// read moves src's bytes into q, each chunk stamped with due(arrival), and
// closes q at EOF, on an error, or when ctx ends.
func (p *DelayProxy) read(ctx context.Context, src net.Conn, q chan<- chunk, due func(time.Time) time.Time, count *atomic.Int64) {
	defer close(q)
	for {
		buf := make([]byte, proxyChunk)
		n, err := src.Read(buf)
		if n > 0 {
			count.Add(int64(n))
			select {
			case q <- chunk{b: buf[:n], due: due(time.Now())}:
			case <-ctx.Done():
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// write writes q's chunks to dst, each not before its due time; at q's end
// it half-closes dst, so that EOF travels as data does. A write error
// cancels the connection.
func write(ctx context.Context, cancel context.CancelFunc, dst net.Conn, q <-chan chunk) {
	for c := range q {
		if !sleepUntil(ctx, c.due) {
			return
		}
		if _, err := dst.Write(c.b); err != nil {
			cancel()
			return
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			cancel()
		}
	}
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

var _ io.Closer = (*DelayProxy)(nil)
