package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

// A container's published ports (-p) are served by its supervisor: a
// userspace TCP proxy per port, listening on the host from before the first
// start until the supervisor exits, so a port stays bound (and a random one
// keeps its number) across --restart. Each connection is carried to
// 127.0.0.1:PORT inside the container's network namespace, through a socket
// made there: the dialing goroutine locks its thread, enters the namespace
// (opened once per start from /proc/PID/ns/net), dials and goes back.
// Connections are closed when the program's run ends; between runs new
// ones are accepted and closed at once.

// maxProxyConns bounds the connections one container's ports carry at
// once; beyond it, new ones wait in the listeners' backlog.
const maxProxyConns = 1024

// proxyDialTimeout bounds a connection to the container's port.
const proxyDialTimeout = 5 * time.Second

// PublishedPort is a port that a running container's supervisor serves.
type PublishedPort struct {
	HostIP   string `json:"hostIp"`   // as listened on: 0.0.0.0 for every IPv4 address
	HostPort int    `json:"hostPort"` // the port bound, a random one resolved
	Port     int    `json:"port"`     // the container's
	Proto    string `json:"proto"`
}

// HostAddr is the host side as docker shows it: 0.0.0.0:8080, [::1]:8080.
func (p PublishedPort) HostAddr() string {
	return net.JoinHostPort(p.HostIP, strconv.Itoa(p.HostPort))
}

// String is docker ps' form: 127.0.0.1:32768->80/tcp.
func (p PublishedPort) String() string {
	return fmt.Sprintf("%s->%d/%s", p.HostAddr(), p.Port, p.Proto)
}

// portProxy serves a container's published ports. Close stops it and
// waits for every goroutine it started.
type portProxy struct {
	log    *slog.Logger
	ports  []PublishedPort
	ls     []net.Listener
	hostNS *os.File       // this process's own network namespace, to go back to
	sem    chan struct{}  // one token per connection being carried
	done   chan struct{}  // closed by Close
	wg     sync.WaitGroup // the accept loops and every connection's goroutine

	mu     sync.Mutex // guards cur and closed
	cur    *netnsRun  // the running program's namespace; nil between runs
	closed bool       // set by Close: no run may begin after it
	once   sync.Once
}

// netnsRun is one run of the container's program as the proxy sees it:
// its network namespace and the connections carried into it. end cancels
// the dials, closes the connections and waits for their goroutines.
type netnsRun struct {
	ns     *os.File
	ctx    context.Context // ends with the run
	cancel context.CancelFunc
	mu     sync.Mutex            // guards conns, ended
	conns  map[net.Conn]struct{} // both ends of each carried connection
	ended  bool
	wg     sync.WaitGroup // the run's connections' goroutines
}

// listenPorts binds every binding's host port, or none: a port in use fails
// here, before the container starts. The proxy accepts at once; until
// attach, connections are closed as they come. A nil log is silent.
func listenPorts(bindings []spec.PortBinding, log *slog.Logger) (_ *portProxy, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &portProxy{log: log, sem: make(chan struct{}, maxProxyConns), done: make(chan struct{})}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	// Any thread's will do: no goroutine is in another namespace yet.
	if p.hostNS, err = os.Open("/proc/thread-self/ns/net"); err != nil {
		return nil, fmt.Errorf("publish ports: %w", err)
	}
	for _, b := range bindings {
		l, err := listenBinding(b)
		if err != nil {
			return nil, err
		}
		p.ls = append(p.ls, l)
		a := l.Addr().(*net.TCPAddr)
		p.ports = append(p.ports, PublishedPort{HostIP: a.AddrPort().Addr().Unmap().String(), HostPort: a.Port, Port: b.Port, Proto: b.Proto})
	}
	for i, l := range p.ls {
		p.wg.Add(1)
		go p.accept(l, p.ports[i])
	}
	return p, nil
}

// listenBinding listens on b's host address: its port, the first free one
// of its range, or a random one.
func listenBinding(b spec.PortBinding) (net.Listener, error) {
	ip := b.HostIP
	if ip == "" {
		ip = "0.0.0.0"
	}
	network := "tcp4"
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
		network = "tcp6"
	}
	last := max(b.HostPortEnd, b.HostPort)
	var lc net.ListenConfig
	for port := b.HostPort; ; port++ {
		l, err := lc.Listen(context.Background(), network, net.JoinHostPort(ip, strconv.Itoa(port)))
		if err == nil {
			return l, nil
		}
		if port >= last || !errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("publish %s: %w", b, err)
		}
	}
}

// Ports are the ports served, with the host ports bound.
func (p *portProxy) Ports() []PublishedPort { return p.ports }

func (p *portProxy) accept(l net.Listener, port PublishedPort) {
	defer p.wg.Done()
	for {
		select {
		case p.sem <- struct{}{}:
		case <-p.done:
			return
		}
		conn, err := l.Accept()
		if err != nil {
			<-p.sem
			select {
			case <-p.done:
				return
			default:
			}
			// EMFILE and the like: wait a little rather than spin.
			p.log.Warn("cannot accept a connection", "port", port.String(), "err", err)
			select {
			case <-time.After(100 * time.Millisecond):
				continue
			case <-p.done:
				return
			}
		}
		p.mu.Lock()
		run := p.cur
		p.mu.Unlock()
		if run == nil || !run.begin(conn) {
			// The container is not running: as a refused connection.
			conn.Close()
			<-p.sem
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() { <-p.sem }()
			defer run.wg.Done()
			p.carry(run, conn, port)
		}()
	}
}

// attach starts carrying connections into the network namespace nsPath
// (/proc/PID/ns/net of the container's init), for one run of the program.
func (p *portProxy) attach(nsPath string) error {
	ns, err := os.Open(nsPath)
	if err != nil {
		return fmt.Errorf("publish ports: the container's network namespace: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &netnsRun{ns: ns, ctx: ctx, cancel: cancel, conns: make(map[net.Conn]struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.cur != nil {
		cancel()
		ns.Close()
		return errors.New("publish ports: the proxy is closed or serves another run")
	}
	p.cur = run
	return nil
}

// detach ends the current run: its connections are closed, and their
// goroutines have ended when it returns.
func (p *portProxy) detach() {
	p.mu.Lock()
	run := p.cur
	p.cur = nil
	p.mu.Unlock()
	if run != nil {
		run.end()
	}
}

// Close stops listening, ends the current run and waits for every
// goroutine of the proxy.
func (p *portProxy) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.done)
		for _, l := range p.ls {
			l.Close()
		}
		p.detach()
		p.wg.Wait()
		if p.hostNS != nil {
			p.hostNS.Close()
		}
	})
}

// begin registers c, an accepted connection, with the run and counts its
// goroutine; it reports false once the run has ended.
func (r *netnsRun) begin(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return false
	}
	r.conns[c] = struct{}{}
	r.wg.Add(1)
	return true
}

// track registers c, a connection into the container, with the run; it
// reports false once the run has ended.
func (r *netnsRun) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ended {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

// forget closes c and drops it from the run.
func (r *netnsRun) forget(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *netnsRun) end() {
	r.mu.Lock()
	r.ended = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.ns.Close()
}

// carry connects client to the container's port and copies between them
// until both sides are done or the run ends.
func (p *portProxy) carry(run *netnsRun, client net.Conn, port PublishedPort) {
	defer run.forget(client)
	up, err := p.dialIn(run, port.Port)
	if err != nil {
		// Nothing listens yet, or the container refuses: as docker's
		// proxy, the client sees its connection closed.
		p.log.Debug("cannot reach the container's port", "port", port.String(), "err", err)
		return
	}
	if !run.track(up) {
		up.Close()
		return
	}
	defer run.forget(up)
	splice(client, up)
}

// dialIn connects to 127.0.0.1:port in the run's network namespace. The
// socket is made on this goroutine's thread while it is in that namespace
// (a socket keeps the namespace it was made in), and the thread goes back
// to ours before it runs anything else; if it cannot, it stays locked and
// ends with the goroutine.
func (p *portProxy) dialIn(run *netnsRun, port int) (net.Conn, error) {
	goruntime.LockOSThread()
	if err := unix.Setns(int(run.ns.Fd()), unix.CLONE_NEWNET); err != nil {
		goruntime.UnlockOSThread()
		return nil, fmt.Errorf("enter the container's network namespace: %w", err)
	}
	ctx, cancel := context.WithTimeout(run.ctx, proxyDialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if rerr := unix.Setns(int(p.hostNS.Fd()), unix.CLONE_NEWNET); rerr != nil {
		p.log.Error("cannot return to the host's network namespace: the thread will end", "err", rerr)
		return conn, err
	}
	goruntime.UnlockOSThread()
	return conn, err
}

// splice copies both ways between a and b. A side that ends its stream
// has the other's write side shut (half-close), so either may go on
// sending; an error either way closes both.
func splice(a, b net.Conn) {
	half := func(dst, src net.Conn) {
		if _, err := io.Copy(dst, src); err != nil {
			a.Close()
			b.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() //nolint:errcheck // the peer may be gone: the other copy sees it
		} else {
			dst.Close()
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { half(b, a) })
	half(a, b)
	wg.Wait()
}
