package bench

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// startBlobServer serves GET /N with N pattern bytes and POST /echo, which
// answers with the sha256 of the body.
func startBlobServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/echo" {
			h := sha256.New()
			if _, err := io.Copy(h, r.Body); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%x", h.Sum(nil))
			return
		}
		n, err := strconv.Atoi(r.URL.Path[1:])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = w.Write(pattern(n))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

func TestDelayProxy(t *testing.T) {
	const rtt = 40 * time.Millisecond
	p, err := StartDelayProxy(startBlobServer(t), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func(n int) time.Duration {
		t.Helper()
		start := time.Now()
		resp, err := client.Get("http://" + p.Addr + "/" + strconv.Itoa(n))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(body, pattern(n)) {
			t.Fatalf("GET /%d: %d bytes, not the pattern", n, len(body))
		}
		return time.Since(start)
	}

	// A new connection: handshake + request/response = 2 RTT. The upper
	// bounds leave room for a loaded machine (-race, shared cores).
	const slack = 500 * time.Millisecond
	if d := get(10); d < 2*rtt || d > 2*rtt+slack {
		t.Errorf("first GET took %v, want about %v", d, 2*rtt)
	}
	// Kept alive: 1 RTT.
	if d := get(10); d < rtt || d > rtt+slack {
		t.Errorf("second GET took %v, want about %v", d, rtt)
	}
	// Throughput is not limited by the delay: 32 MiB in well under the
	// 32 MiB / (64 KiB per RTT) = 20 s a window of one chunk would take.
	if d := get(32 << 20); d > 5*time.Second {
		t.Errorf("GET of 32 MiB took %v", d)
	}
	// The client's bytes arrive whole and in order.
	body := pattern(20 << 20)
	resp, err := client.Post("http://"+p.Addr+"/echo", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%x", sha256.Sum256(body)); string(got) != want {
		t.Errorf("POST /echo = %s, want %s", got, want)
	}
	st := p.Stats()
	if st.Conns != 1 || st.Up < 20<<20 || st.Down < 32<<20 {
		t.Errorf("Stats() = %+v, want 1 connection, ≥ 20 MiB up and ≥ 32 MiB down", st)
	}
}

func TestDelayProxyCloses(t *testing.T) {
	// An upstream that accepts and never answers: Close must not hang.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	p, err := StartDelayProxy(ln.Addr().String(), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the handshake happen: this test is about Close
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("client connection still open after Close")
	}
}
