package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Published ports (-p): busybox httpd in a container of its own network
// namespace, fetched over HTTP through the supervisor's proxy.

const httpdScript = `mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www`

// httpGet fetches url until it answers 200 (the program in the container
// may not listen yet) or a minute has passed, and returns the body.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		resp, err := client.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return string(b)
			}
			err = fmt.Errorf("status %s, %v", resp.Status, rerr)
		}
		last = err
		time.Sleep(50 * time.Millisecond) // polling readiness: httpd says nothing when it listens
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

// portFree reports whether addr can be listened on again.
func portFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// supervisorSockets counts the sockets and namespaces the container's
// supervisor holds open.
func (e *env) supervisorSockets(t *testing.T, id string) int {
	t.Helper()
	sup, _ := e.state(t, id)["supervisorPid"].(float64)
	dir := fmt.Sprintf("/proc/%d/fd", int(sup))
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range ents {
		l, _ := os.Readlink(dir + "/" + d.Name())
		if strings.HasPrefix(l, "socket:") || strings.HasPrefix(l, "net:") {
			n++
		}
	}
	return n
}

func TestPorts(t *testing.T) {
	e := newEnv(t, v1.Config{})

	// A listener only the host's loopback has: the container must not
	// reach it.
	secret, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Close()
	go func() {
		for {
			c, err := secret.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nhost secret\n")
			c.Close()
		}
	}()

	id := e.runDetached(t, "--name", "web", "-p", "127.0.0.1::8080", "--publish", "8081", e.ref, "sh", "-c", httpdScript)

	out := e.mustRun(t, "port", "web")
	m := regexp.MustCompile(`^8080/tcp -> 127\.0\.0\.1:(\d+)\n8081/tcp -> 0\.0\.0\.0:(\d+)\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("port web = %q, want 8080/tcp -> 127.0.0.1:N and 8081/tcp -> 0.0.0.0:M", out)
	}
	addr, other := "127.0.0.1:"+m[1], "0.0.0.0:"+m[2]
	if out := e.mustRun(t, "port", "web", "8080/tcp"); out != addr+"\n" {
		t.Errorf("port web 8080/tcp = %q, want %q", out, addr)
	}
	if out := e.mustRun(t, "port", "web", "8081"); out != other+"\n" {
		t.Errorf("port web 8081 = %q, want %q", out, other)
	}
	if r := e.lazyrun(t, "", "port", "web", "81"); r.code != 1 || r.stdout != "" || r.stderr != "Error: No public port '81/tcp' published for web\n" {
		t.Errorf("port web 81 = exit %d, %q, %q; want docker's error, exit 1", r.code, r.stdout, r.stderr)
	}
	if line := e.psLine(t, "web"); !strings.Contains(line, addr+"->8080/tcp, "+other+"->8081/tcp") {
		t.Errorf("ps does not show the ports:\n%s", line)
	}

	if got, want := httpGet(t, "http://"+addr+"/index.html"), "hello from "+id[:12]+"\n"; got != want {
		t.Errorf("GET through the published port = %q, want %q", got, want)
	}
	// Nothing listens on 8081 in the container: the connection is closed.
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+m[2], 5*time.Second); err != nil {
		t.Errorf("dial the published 8081: %v", err)
	} else {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		if b, err := io.ReadAll(c); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("8081, where nothing listens in the container: read %q, %v; want the connection closed", b, err)
		}
		c.Close()
	}

	// Its own network namespace: only lo, and the host's loopback is not
	// its own.
	if out := e.mustRun(t, "exec", "web", "ls", "/sys/class/net"); out != "lo\n" {
		t.Errorf("interfaces in the container = %q, want lo only", out)
	}
	if r := e.lazyrun(t, "", "exec", "web", "wget", "-T", "5", "-q", "-O", "-", "http://"+secret.Addr().String()+"/"); r.code == 0 || strings.Contains(r.stdout, "secret") {
		t.Errorf("the container reached the host's loopback: exit %d, %q", r.code, r.stdout)
	}
	if out := e.mustRun(t, "exec", "web", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"); !strings.HasPrefix(out, "hello") {
		t.Errorf("the container's own loopback: %q", out)
	}

	// An open connection does not hold stop up, and ends with it.
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	io.WriteString(held, "GET /index.html HTTP/1.1\r\nHost: x\r\n") // unfinished: httpd waits for the rest
	start := time.Now()
	e.mustRun(t, "stop", "web")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop with an open connection took %v", d)
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(held); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection still open after stop")
	}
	for _, a := range []string{addr, other} {
		if err := portFree(a); err != nil {
			t.Errorf("after stop, %s is still bound: %v", a, err)
		}
	}
	if out := e.mustRun(t, "port", "web"); out != "" {
		t.Errorf("port of a stopped container = %q, want nothing", out)
	}
	if line := e.psLine(t, "web", "-a"); strings.Contains(line, "->") {
		t.Errorf("ps -a shows ports of a stopped container:\n%s", line)
	}

	// Started again: bound again, served again.
	e.mustRun(t, "start", "web")
	m2 := regexp.MustCompile(`^127\.0\.0\.1:(\d+)\n$`).FindStringSubmatch(e.mustRun(t, "port", "web", "8080"))
	if m2 == nil {
		t.Fatal("port web 8080 after start printed no address")
	}
	if got := httpGet(t, "http://127.0.0.1:"+m2[1]+"/index.html"); !strings.HasPrefix(got, "hello") {
		t.Errorf("GET after start = %q", got)
	}
	e.mustRun(t, "rm", "-f", "web")
	if err := portFree("127.0.0.1:" + m2[1]); err != nil {
		t.Errorf("after rm -f the port is still bound: %v", err)
	}
}

func TestPortsErrors(t *testing.T) {
	e := newEnv(t, v1.Config{})
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	hostPort := busy.Addr().(*net.TCPAddr).Port

	r := e.lazyrun(t, "", "run", "-d", "--name", "clash", "-p", fmt.Sprintf("127.0.0.1:%d:80", hostPort), e.ref, "sh", "-c", loopScript)
	if r.code != 125 || !strings.Contains(r.stderr, fmt.Sprintf("127.0.0.1:%d", hostPort)) || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("run -p on a port in use = exit %d, %q; want 125 naming the address", r.code, r.stderr)
	}
	if line := e.psLine(t, "clash", "-a"); !strings.Contains(line, "Exited (125)") {
		t.Errorf("ps -a after the failed start:\n%s", line)
	}
	// A foreground run too.
	r = e.lazyrun(t, "", "run", "--rm", "-p", fmt.Sprintf("127.0.0.1:%d:80", hostPort), e.ref, "true")
	if r.code != 125 || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("run --rm -p on a port in use = exit %d, %q; want 125", r.code, r.stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-p", "53:53/udp"}, `"53:53/udp": protocol udp: only tcp is supported`},
		{[]string{"-p", "abc"}, `invalid port "abc": invalid containerPort: abc`},
		{[]string{"-p", "99999:80"}, `invalid port "99999:80": invalid hostPort: 99999`},
		{[]string{"-p", "1.2.3:80:80"}, `invalid IP address: 1.2.3`},
		{[]string{"-p", "80", "--net=host"}, "conflicting options: -p/--publish and --net=host"},
		{[]string{"-p", "80", "--net", "none"}, "conflicting options: -p/--publish and --net=none"},
		{[]string{"--net=bridge"}, `--net "bridge": want host, private or none`},
	} {
		r := e.lazyrun(t, "", append(append([]string{"run", "--rm"}, tc.args...), e.ref, "true")...)
		if r.code != 125 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("run %s = exit %d, %q; want 125 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	// --net=private alone: loopback only, nothing published.
	if out := e.mustRun(t, "run", "--rm", "--net=private", e.ref, "ls", "/sys/class/net"); out != "lo\n" {
		t.Errorf("--net=private interfaces = %q, want lo", out)
	}
	if r := e.lazyrun(t, "", "port", "nosuch"); r.code != 1 || !strings.Contains(r.stderr, "no such container") {
		t.Errorf("port nosuch = exit %d, %q", r.code, r.stderr)
	}
}

// Across --restart the ports stay bound with the same numbers, each run is
// served, connections of a run end with it, and the supervisor's sockets do
// not pile up.
func TestPortsRestart(t *testing.T) {
	e := newEnv(t, v1.Config{})
	script := `mkdir -p /www && echo "run $(cat /www/n 2>/dev/null)" > /www/index.html && echo x >> /www/n && echo started && httpd -f -p 8080 -h /www & sleep 3; exit 1`
	id := e.runDetached(t, "--name", "flappy", "--restart", "always", "-p", "127.0.0.1::8080", e.ref, "sh", "-c", script)
	sockets := e.supervisorSockets(t, id) // no connection yet
	out := e.mustRun(t, "port", "flappy", "8080")
	addr := strings.TrimSpace(out)
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("port flappy 8080 = %q", out)
	}
	first := httpGet(t, "http://"+addr+"/index.html")
	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	e.waitLog(t, "flappy", "started", 3)
	// The held connection went with the run it was carried into.
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(held); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a connection outlived the run it was carried into")
	}
	if out := e.mustRun(t, "port", "flappy", "8080"); strings.TrimSpace(out) != addr {
		t.Errorf("after restarts port flappy 8080 = %q, want %s still", out, addr)
	}
	var again string
	deadline := time.Now().Add(time.Minute)
	for again = httpGet(t, "http://"+addr+"/index.html"); again == first && time.Now().Before(deadline); {
		again = httpGet(t, "http://"+addr+"/index.html")
	}
	if again == first {
		t.Errorf("the restarted program is not served: still %q", again)
	}
	// Once the fetches' connections are closed, the sockets are no more
	// than at the start: the listener, the control socket, the namespaces,
	// and then perhaps connections to the registry (frames, the prefetch
	// profile's lookup), which its idle timeout closes.
	n := e.supervisorSockets(t, id)
	for deadline := time.Now().Add(5 * time.Second); n > sockets && time.Now().Before(deadline); n = e.supervisorSockets(t, id) {
		time.Sleep(50 * time.Millisecond)
	}
	if n > sockets {
		t.Errorf("the supervisor holds %d sockets and namespaces after restarts, %d at the start", n, sockets)
	}
	start := time.Now()
	e.mustRun(t, "stop", "flappy")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v", d)
	}
	if err := portFree(addr); err != nil {
		t.Errorf("after stop %s is still bound: %v", addr, err)
	}
}
