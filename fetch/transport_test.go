package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"3", 3 * time.Second, true},
		{" 12 ", 12 * time.Second, true},
		{"59", 59 * time.Second, true},
		{"3600", maxRetryAfter, true},
		{"99999999999999999999999999", maxRetryAfter, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"3s", 0, false},
		{"Sat, 01 Mar 2025 12:00:30 GMT", 30 * time.Second, true},
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0, true}, // in the past
		{"Sun, 02 Mar 2025 12:00:00 GMT", maxRetryAfter, true},
		{"Saturday, 01-Mar-25 12:00:10 GMT", 10 * time.Second, true}, // RFC 850
		{"tomorrow", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "7", "120", "Sat, 01 Mar 2025 12:00:30 GMT", "Mon Jan  2 15:04:05 2006", "1e3", "+5", "٣"} {
		f.Add(s, int64(1740830400))
	}
	f.Fuzz(func(t *testing.T, s string, unix int64) {
		now := time.Unix(unix%(1<<40), 0).UTC()
		d, ok := parseRetryAfter(s, now)
		if d < 0 || d > maxRetryAfter || (!ok && d != 0) {
			t.Fatalf("parseRetryAfter(%q) = %v, %v: out of [0, %v]", s, d, ok, maxRetryAfter)
		}
		// Round trip: a delay we write is read back.
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && n >= 0 && n <= 60 && !strings.ContainsAny(s, "+-") {
			if d != time.Duration(n)*time.Second || !ok {
				t.Fatalf("parseRetryAfter(%q) = %v, %v; want %ds", s, d, ok, n)
			}
		}
		secs := int64(len(s) % 61)
		date := now.Add(time.Duration(secs) * time.Second).Format(http.TimeFormat)
		if d, ok := parseRetryAfter(date, now); !ok || d != time.Duration(secs)*time.Second {
			t.Fatalf("parseRetryAfter(%q) at %v = %v, %v; want %ds", date, now, d, ok, secs)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                 string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-0/1", 0, 0, 1, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"bytes 100-199/*", 100, 199, -1, true},
		{" bytes 5-9/10 ", 5, 9, 10, true},
		{"bytes 0-9223372036854775806/9223372036854775807", 0, 9223372036854775806, 9223372036854775807, true},
		{"bytes */1000", 0, 0, 0, false},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes 5-10/10", 0, 0, 0, false},
		{"bytes -5-9/10", 0, 0, 0, false},
		{"bytes +5-9/10", 0, 0, 0, false},
		{"bytes 5-9", 0, 0, 0, false},
		{"bits 5-9/10", 0, 0, 0, false},
		{"bytes 5-9/", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/*", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		first, last, total, ok := parseContentRange(tc.in)
		if first != tc.first || last != tc.last || total != tc.total || ok != tc.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d, %v",
				tc.in, first, last, total, ok, tc.first, tc.last, tc.total, tc.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-0/1", "bytes 100-199/1000", "bytes 1-2/*", "bytes */5", "bytes 5-4/10", "bytes 0--1/2", "bytes 1-2/3/4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		first, last, total, ok := parseContentRange(s)
		if !ok {
			return
		}
		if first < 0 || last < first || (total != -1 && last >= total) || total < -1 {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d: not a valid range", s, first, last, total)
		}
		// Round trip through the canonical form.
		size := "*"
		if total >= 0 {
			size = strconv.FormatInt(total, 10)
		}
		canon := fmt.Sprintf("bytes %d-%d/%s", first, last, size)
		f2, l2, t2, ok2 := parseContentRange(canon)
		if !ok2 || f2 != first || l2 != last || t2 != total {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d, %v; parsed from %q as %d, %d, %d", canon, f2, l2, t2, ok2, s, first, last, total)
		}
	})
}

func TestIsLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true, "[::1]": true,
		"::ffff:127.0.0.1": true, "10.0.0.1": false, "192.168.1.1": false, "example.com": false, "localhost.example": false, "": false,
	} {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
	for in, want := range map[string]string{
		"127.0.0.1:5000": "127.0.0.1", "[::1]:5000": "::1", "localhost:5000": "localhost", "localhost": "localhost",
		"registry.example:443": "registry.example", "[::1]": "::1",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestGuardTransport(t *testing.T) {
	var sent []string
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent = append(sent, r.URL.String())
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	for _, tc := range []struct {
		url      string
		insecure bool
		refused  bool
	}{
		{"http://registry.example/v2/", false, true},
		{"http://10.1.2.3:5000/v2/", false, true},
		{"http://registry.example/v2/?token=secret", true, false},
		{"https://registry.example/v2/", false, false},
		{"http://127.0.0.1:5000/v2/", false, false},
		{"http://localhost:5000/v2/", false, false},
		{"http://[::1]:5000/v2/", false, false},
	} {
		sent = nil
		g := &guardTransport{inner: inner, insecure: tc.insecure}
		req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
		_, err := g.RoundTrip(req)
		if refused := errors.Is(err, errPlainHTTP); refused != tc.refused || (len(sent) == 0) != tc.refused {
			t.Errorf("guard(%s, insecure %v) = %v, sent %v; want refused %v", tc.url, tc.insecure, err, sent, tc.refused)
		}
	}
}

func TestNameOptions(t *testing.T) {
	c := New(Config{})
	for ref, scheme := range map[string]string{
		"127.0.0.1:5000/a/b:t": "http",
		"localhost:5000/a":     "http",
		"localhost/a":          "http",
		"[::1]:5000/a":         "http",
		"registry.example/a":   "https",
		"busybox":              "https",
	} {
		r, err := c.parseReference(ref)
		if err != nil {
			t.Fatalf("parseReference(%s) = %v", ref, err)
		}
		if got := r.Context().Scheme(); got != scheme {
			t.Errorf("parseReference(%s) scheme = %s, want %s", ref, got, scheme)
		}
	}
	if r, _ := New(Config{Insecure: true}).parseReference("registry.example/a"); r.Context().Scheme() != "http" {
		t.Errorf("Insecure client: scheme of registry.example = %s, want http", r.Context().Scheme())
	}
}

// flaky answers the first n manifest requests with status, then passes on.
type flaky struct {
	inner  http.Handler
	n      atomic.Int32
	status int
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.Contains(r.URL.Path, "/manifests/") && f.n.Add(-1) >= 0 {
		w.Header().Set("Retry-After", "0")
		registryError(w, f.status, "UNAVAILABLE", "injected")
		return
	}
	f.inner.ServeHTTP(w, r)
}

func TestManifestRetries(t *testing.T) {
	var fl *flaky
	fx := newImageFixtureBehind(t, func(h http.Handler) http.Handler {
		fl = &flaky{inner: h, status: http.StatusServiceUnavailable}
		return fl
	})
	fl.n.Store(2)
	c := testClient(t, Config{Platform: platform("linux", "amd64", "")})
	if _, err := c.Resolve(t.Context(), fx.repo+":multi"); err != nil {
		t.Fatalf("Resolve after two 503s = %v", err)
	}
	if s := c.Stats(); s.Retries != 2 {
		t.Errorf("Stats().Retries = %d, want 2", s.Retries)
	}

	fl.n.Store(100)
	c = testClient(t, Config{Platform: platform("linux", "amd64", ""), Retries: 1})
	_, err := c.Resolve(t.Context(), fx.repo+":multi")
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.Status != 503 || !strings.HasSuffix(herr.URL, "/v2/lazy/img/manifests/multi") {
		t.Errorf("Resolve against a failing registry = %v, want *HTTPError 503 for the manifest", err)
	}
	if s := c.Stats(); s.Retries != 1 {
		t.Errorf("Stats().Retries = %d, want 1", s.Retries)
	}
}

// pingCounter counts requests for /v2/.
type pingCounter struct {
	inner http.Handler
	pings atomic.Int32
}

func (p *pingCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		p.pings.Add(1)
	}
	p.inner.ServeHTTP(w, r)
}

func TestConcurrentHandshake(t *testing.T) {
	reg := newFakeRegistry()
	data := testData(10_000, 6)
	d := reg.putBlob(data)
	pc := &pingCounter{inner: reg}
	repo := serve(t, pc) + "/lazy/x"
	c := testClient(t, Config{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			off := int64(i * 100)
			if got, err := c.ReadRange(t.Context(), repo, d, off, 100); err != nil || !bytes.Equal(got, data[off:off+100]) {
				t.Errorf("ReadRange(%d, 100) = %d bytes, %v", off, len(got), err)
			}
		})
	}
	wg.Wait()
	if n := pc.pings.Load(); n != 1 {
		t.Errorf("pings = %d, want 1 (one handshake per repository)", n)
	}
	if s := c.Stats(); s.Requests < 17 || s.BytesFetched != 1600 {
		t.Errorf("Stats() = %+v, want at least 17 requests and 1600 bytes", s)
	}
}

// handlerTransport serves requests with an http.Handler in memory, so that
// a synctest bubble sees no real network.
type handlerTransport struct{ h http.Handler }

func (ht handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	ht.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

func TestRetryAfterTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newFakeRegistry()
		data := testData(1000, 7)
		d := reg.putBlob(data)
		c := New(Config{Transport: handlerTransport{reg}, Keychain: anonKeychain{}, Backoff: 10 * time.Millisecond, Logger: testLogger(t)})
		repo := "127.0.0.1:5000/lazy/x"

		reg.setFaults(fault{kind: faultStatus, status: 429, retryAfter: "3"}, fault{kind: faultStatus, status: 503})
		start := time.Now()
		got, err := c.ReadRange(t.Context(), repo, d, 10, 20)
		if err != nil || !bytes.Equal(got, data[10:30]) {
			t.Fatalf("ReadRange = %d bytes, %v", len(got), err)
		}
		// 3s for Retry-After, then 20ms ±25% for the doubled backoff.
		if el := time.Since(start); el < 3*time.Second+15*time.Millisecond || el > 3*time.Second+25*time.Millisecond {
			t.Errorf("ReadRange took %v, want 3s plus the second backoff", el)
		}

		// A deadline shorter than Retry-After ends the wait, not the retries.
		reg.setFaults(fault{kind: faultStatus, status: 429, retryAfter: "30"})
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start = time.Now()
		_, err = c.ReadRange(ctx, repo, d, 0, 1)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("ReadRange with a 1s deadline = %v after %v, want DeadlineExceeded after 1s", err, time.Since(start))
		}
		if n := reg.gets(); n != 4 {
			t.Errorf("blob GETs = %d, want 4", n)
		}
	})
}

func TestLoopbackNames(t *testing.T) {
	reg := newFakeRegistry()
	data := testData(5000, 8)
	d := reg.putBlob(data)
	hosts := []string{}
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	hosts = append(hosts, "127.0.0.1:"+port, "localhost:"+port)
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		srv6 := &httptest.Server{Listener: l, Config: &http.Server{Handler: reg}}
		srv6.Start()
		t.Cleanup(srv6.Close)
		hosts = append(hosts, strings.TrimPrefix(srv6.URL, "http://"))
	} else {
		t.Logf("no IPv6 loopback here (%v): [::1] not tested", err)
	}
	for _, host := range hosts {
		c := testClient(t, Config{})
		got, err := c.ReadRange(t.Context(), host+"/lazy/x", d, 100, 200)
		if err != nil || !bytes.Equal(got, data[100:300]) {
			t.Errorf("ReadRange on %s = %d bytes, %v", host, len(got), err)
		}
	}
}

func TestInsecureTLS(t *testing.T) {
	reg := newFakeRegistry()
	data := testData(5000, 9)
	d := reg.putBlob(data)
	srv := httptest.NewTLSServer(reg) // self-signed
	t.Cleanup(srv.Close)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	repo := strings.TrimPrefix(srv.URL, "https://") + "/lazy/x"

	if _, err := testClient(t, Config{}).ReadRange(t.Context(), repo, d, 0, 10); err == nil {
		t.Errorf("ReadRange from a self-signed registry succeeded without Insecure")
	}
	got, err := testClient(t, Config{Insecure: true}).ReadRange(t.Context(), repo, d, 0, 10)
	if err != nil || !bytes.Equal(got, data[:10]) {
		t.Errorf("ReadRange from a self-signed registry with Insecure = %d bytes, %v", len(got), err)
	}
}

func TestCheckRedirect(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"https://registry.example/v2/x/blobs/d", "https://storage.example/b?sig=1", true},
		{"https://registry.example/v2/x/blobs/d", "https://registry.example/other", true},
		{"https://registry.example/v2/x/blobs/d", "http://169.254.169.254/latest/meta-data", false},
		{"https://registry.example/v2/x/blobs/d", "http://10.0.0.5/x", false},
		{"https://registry.example/v2/x/blobs/d", "http://127.0.0.1:8080/x", false},
		{"https://203.0.113.7/v2/x/blobs/d", "http://[fe80::1]/x", false},
		{"http://127.0.0.1:5000/v2/x/blobs/d", "http://127.0.0.1:9000/x", true},
		{"http://127.0.0.1:5000/v2/x/blobs/d", "http://192.168.1.9:9000/x", true},
	} {
		from, _ := http.NewRequest(http.MethodGet, tc.from, nil)
		to, _ := http.NewRequest(http.MethodGet, tc.to, nil)
		if err := checkRedirect(to, []*http.Request{from}); (err == nil) != tc.ok {
			t.Errorf("checkRedirect(%s → %s) = %v, want allowed %v", tc.from, tc.to, err, tc.ok)
		}
	}
}

// An error response's body is read ahead, so that a request sent before
// the caller closes it reuses the connection; a large one is handed over
// whole, as it came.
func TestDrainTransportReusesConnections(t *testing.T) {
	big := strings.Repeat("x", errorBodyMax+10)
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.Error(w, `{"errors":[{"code":"NOT_FOUND"}]}`, http.StatusNotFound)
		case "/big":
			http.Error(w, big, http.StatusInternalServerError)
		default:
			fmt.Fprint(w, "ok")
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := &http.Client{Transport: &drainTransport{inner: srv.Client().Transport}}
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for range 3 {
		miss := get("/missing") // not closed before the next request
		ok := get("/ok")
		io.Copy(io.Discard, ok.Body)
		ok.Body.Close()
		b, _ := io.ReadAll(miss.Body)
		miss.Body.Close()
		if miss.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "NOT_FOUND") {
			t.Fatalf("the 404 read back as %d %q", miss.StatusCode, b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for error responses followed by requests, want 1", n)
	}
	resp := get("/big")
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.TrimSpace(string(b)) != big {
		t.Errorf("a large error body read back as %d bytes, %v; want it whole", len(b), err)
	}
}
