package runtime

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	goruntime "runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

// serveIn answers every connection to l with name and what it read, once
// the client has half-closed: the proxy must pass the half-close on.
func serveIn(t *testing.T, l net.Listener, name string) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "%s:%s", name, b)
			}()
		}
	}()
}

// newNetns makes a network namespace with lo up on a thread of its own,
// listens there on 127.0.0.1:port, and returns the namespace's path. The
// thread never leaves it and ends with the test.
func newNetns(t *testing.T, port int) (string, net.Listener) {
	t.Helper()
	type made struct {
		path string
		l    net.Listener
		err  error
	}
	ch := make(chan made)
	end := make(chan struct{})
	t.Cleanup(func() { close(end) })
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- made{err: err}
			return
		}
		if err := loopbackUp(); err != nil {
			ch <- made{err: err}
			return
		}
		l, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		ch <- made{fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), l, err}
		<-end
	}()
	m := <-ch
	if m.err != nil {
		t.Fatalf("new network namespace: %v", m.err)
	}
	return m.path, m.l
}

// exchange sends msg through addr, half-closes, and returns the answer.
func exchange(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return "", err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestPortProxy(t *testing.T) {
	requireRootFS(t)
	// The same port on the host's loopback and in the container's: the
	// proxy must reach the container's.
	hostL, err := net.Listen("tcp4", "127.0.0.1:0") // the first: the poller's descriptors are made now
	if err != nil {
		t.Fatal(err)
	}
	goroutines := goruntime.NumGoroutine()
	fds := countFDs(t)
	port := hostL.Addr().(*net.TCPAddr).Port
	serveIn(t, hostL, "host")
	nsPath, ctrL := newNetns(t, port)
	serveIn(t, ctrL, "container")

	p, err := listenPorts([]spec.PortBinding{{HostIP: "127.0.0.1", Port: port, Proto: "tcp"}}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pub := p.Ports()
	if len(pub) != 1 || pub[0].HostIP != "127.0.0.1" || pub[0].HostPort == 0 || pub[0].Port != port {
		t.Fatalf("Ports() = %+v", pub)
	}
	addr := pub[0].HostAddr()
	if want := fmt.Sprintf("127.0.0.1:%d->%d/tcp", pub[0].HostPort, port); pub[0].String() != want {
		t.Errorf("String() = %q, want %q", pub[0].String(), want)
	}

	// Not attached: accepted and closed.
	if got, err := exchange(addr, "x"); got != "" {
		t.Errorf("before attach: got %q, %v; want the connection closed", got, err)
	}
	// A port in use fails with the binding named.
	if _, err := listenPorts([]spec.PortBinding{{HostIP: "127.0.0.1", HostPort: pub[0].HostPort, Port: 80, Proto: "tcp"}}, nil); !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d:80/tcp", pub[0].HostPort)) {
		t.Errorf("listenPorts on a bound port: %v; want EADDRINUSE naming it", err)
	}

	for run := range 3 { // as across restarts
		if err := p.attach(nsPath); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("run %d", run)
		if got, err := exchange(addr, msg); err != nil || got != "container:"+msg {
			t.Fatalf("through the proxy: %q, %v; want %q", got, err, "container:"+msg)
		}
		// An open connection ends with the run, and detach does not hang.
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "open")
		time.Sleep(50 * time.Millisecond) // let it reach the container: it must be closed, not refused
		start := time.Now()
		p.detach()
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("detach took %v", d)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(b) != 0 {
			t.Errorf("an open connection after detach: read %q, %v; want it closed", b, err)
		}
		c.Close()
	}
	p.Close()
	// The port is free again.
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Errorf("after Close the port is still bound: %v", err)
	} else {
		l.Close()
	}
	hostL.Close()
	ctrL.Close()
	deadline := time.Now().Add(5 * time.Second)
	// The test's servers close their ends on their own time.
	for (goruntime.NumGoroutine() > goroutines+1 || countFDs(t) != fds-1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := goruntime.NumGoroutine(); n > goroutines+1 { // the namespace's thread, until Cleanup
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines, had %d:\n%s", n, goroutines, buf[:goruntime.Stack(buf, true)])
	}
	if n := countFDs(t); n != fds-1 { // hostL was open then
		t.Errorf("%d sockets and namespaces open, had %d", n, fds)
	}
}

// countFDs counts this process's open sockets and namespaces: what the
// proxy may leak. (io.Copy splices through pipes that a pool keeps.)
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if strings.HasPrefix(l, "socket:") || strings.HasPrefix(l, "net:") {
			n++
		}
	}
	return n
}

// A host range takes its first free port.
func TestListenBindingRange(t *testing.T) {
	for range 10 {
		busy, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := busy.Addr().(*net.TCPAddr).Port
		if p >= 65535 {
			busy.Close()
			continue
		}
		l, err := listenBinding(spec.PortBinding{HostIP: "127.0.0.1", HostPort: p, HostPortEnd: p + 1, Port: 80, Proto: "tcp"})
		busy.Close()
		if errors.Is(err, syscall.EADDRINUSE) {
			continue // p+1 is someone else's: try other ports
		}
		if err != nil {
			t.Fatal(err)
		}
		got := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if got != p+1 {
			t.Fatalf("listenBinding(127.0.0.1:%d-%d:80) bound %d, want %d", p, p+1, got, p+1)
		}
		return
	}
	t.Skip("no two consecutive free ports found")
}

func TestCheckNet(t *testing.T) {
	ports := []spec.PortBinding{{Port: 80, Proto: "tcp"}}
	for _, tc := range []struct {
		net     string
		ports   []spec.PortBinding
		want    string // the mode given, or "" for an error
		wantErr error
	}{
		{"", nil, NetHost, nil},
		{"", ports, NetPrivate, nil},
		{NetPrivate, nil, NetPrivate, nil},
		{NetPrivate, ports, NetPrivate, nil},
		{NetNone, nil, NetNone, nil},
		{NetHost, ports, "", ErrConflict},
		{NetNone, ports, "", ErrConflict},
		{"bridge", nil, "", nil},
	} {
		s := Spec{Net: tc.net, Ports: tc.ports}
		err := checkNet(&s)
		switch {
		case tc.want != "" && (err != nil || s.Net != tc.want):
			t.Errorf("checkNet(%q, %d ports) = %q, %v; want %q", tc.net, len(tc.ports), s.Net, err, tc.want)
		case tc.want == "" && (err == nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr)):
			t.Errorf("checkNet(%q, %d ports) = %v; want an error (%v)", tc.net, len(tc.ports), err, tc.wantErr)
		}
	}
}
