package testutil

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// FaultProxy is an HTTP reverse proxy on a free loopback port in front of a
// registry. Clients use Addr instead of the registry's address. Blob GETs
// (/v2/<repo>/blobs/<digest>) can be made to fail in the ways a real network
// and registry fail; every request is counted.
//
// Faults queue up in the order they are set, and each blob GET takes the next
// one: after Fail(503, 2) and Reset(1), the next two blob GETs answer 503, the
// third is reset, and later ones pass. HEADs of blobs and all other requests
// (manifests, uploads, /v2/, tokens) always pass through untouched.
//
// Accounting is live: a request is counted when it arrives and its body
// bytes just before they are written, so once a client has seen a response,
// an error or a reset, Stats and Requests already include it. Bytes are body
// bytes as sent to the client (headers not included).
//
// All methods are safe for concurrent use, also while requests are in flight.
// The proxy is closed in t.Cleanup, which ends stalls and open connections
// and waits for its handlers.
type FaultProxy struct {
	Addr     string // 127.0.0.1:PORT
	upstream string

	srv       *http.Server
	transport *http.Transport
	closed    chan struct{}
	handlers  sync.WaitGroup

	mu     sync.Mutex // guards shut, faults, stats and log; handlers.Add happens under it
	shut   bool       // set by Cleanup: no new handler may start
	faults []fault
	stats  ProxyStats
	log    []*ProxyRequest // in arrival order; a handler updates its entry in place
}

type faultKind int

const (
	faultFail faultKind = iota + 1
	faultReset
	faultStall
	faultCorrupt
	faultShort
)

func (k faultKind) String() string {
	return [...]string{"", "fail", "reset", "stall", "corrupt", "short"}[k]
}

type fault struct {
	kind   faultKind
	n      int
	status int
	d      time.Duration
}

// ProxyStats counts what went through the proxy.
type ProxyStats struct {
	BlobRequests  int   // GETs and HEADs of blobs, faulted ones included
	BlobBytes     int64 // blob body bytes sent to clients
	OtherRequests int   // everything else
	OtherBytes    int64 // their response body bytes
	Blobs         map[digest.Digest]BlobStats
}

// BlobStats counts the requests for one blob.
type BlobStats struct {
	Requests int
	Bytes    int64    // body bytes sent to clients
	Ranges   []string // Range headers as sent, "" for none, in arrival order
}

// ProxyRequest is one request as the proxy handled it.
type ProxyRequest struct {
	Method string
	Path   string
	Digest digest.Digest // "" unless a blob request
	Range  string
	Fault  string // "", "fail", "reset", "stall", "corrupt" or "short"
	Status int    // as sent to the client; 0 if none was sent
	Bytes  int64  // body bytes sent to the client
}

var proxyBlobRe = regexp.MustCompile(`^/v2/.+/blobs/([a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$`)

// NewFaultProxy starts a proxy to upstream (host:port, plain HTTP).
func NewFaultProxy(t testing.TB, upstream string) *FaultProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("NewFaultProxy: %v", err)
	}
	p := &FaultProxy{
		Addr:     l.Addr().String(),
		upstream: upstream,
		transport: &http.Transport{
			Proxy:               nil,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 16,
		},
		closed: make(chan struct{}),
	}
	p.stats.Blobs = map[digest.Digest]BlobStats{}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: log.New(io.Discard, "", 0)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = p.srv.Serve(l)
	}()
	t.Cleanup(func() {
		p.mu.Lock()
		p.shut = true
		p.mu.Unlock()
		_ = p.srv.Close()
		close(p.closed)
		<-served
		done := make(chan struct{})
		go func() { p.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("FaultProxy: handlers still running 10 s after close")
		}
		p.transport.CloseIdleConnections()
	})
	return p
}

// URL returns "http://" + p.Addr.
func (p *FaultProxy) URL() string { return "http://" + p.Addr }

func (p *FaultProxy) push(f fault) {
	if f.n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f)
}

// Fail makes the next n blob GETs answer status with a registry-style JSON
// error body, without asking the registry.
func (p *FaultProxy) Fail(status, n int) { p.push(fault{kind: faultFail, n: n, status: status}) }

// Reset makes the next n blob GETs send the registry's headers and the first
// half of the body, then reset the TCP connection (RST, not FIN).
func (p *FaultProxy) Reset(n int) { p.push(fault{kind: faultReset, n: n}) }

// Stall makes the next n blob GETs wait d (or until the client goes away or
// the proxy closes) before being forwarded; after d they are served normally.
func (p *FaultProxy) Stall(n int, d time.Duration) { p.push(fault{kind: faultStall, n: n, d: d}) }

// Corrupt makes the next n blob GETs send the registry's answer with the
// middle byte of the body inverted (the first byte if the length is unknown).
func (p *FaultProxy) Corrupt(n int) { p.push(fault{kind: faultCorrupt, n: n}) }

// Short makes the next n blob GETs announce the registry's Content-Length but
// send only half of the body before closing the connection.
func (p *FaultProxy) Short(n int) { p.push(fault{kind: faultShort, n: n}) }

// ClearFaults drops every fault not yet used.
func (p *FaultProxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// PendingFaults returns how many blob GETs will still be faulted.
func (p *FaultProxy) PendingFaults() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, f := range p.faults {
		n += f.n
	}
	return n
}

// Stats returns a copy of the counters.
func (p *FaultProxy) Stats() ProxyStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Blobs = make(map[digest.Digest]BlobStats, len(p.stats.Blobs))
	for d, b := range p.stats.Blobs {
		b.Ranges = append([]string(nil), b.Ranges...)
		s.Blobs[d] = b
	}
	return s
}

// Requests returns every request so far in arrival order, with status and
// bytes as far as they got (a request still in flight shows what was sent).
func (p *FaultProxy) Requests() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ProxyRequest, len(p.log))
	for i, e := range p.log {
		out[i] = *e
	}
	return out
}

// ClearStats zeroes the counters and the request log (faults stay).
func (p *FaultProxy) ClearStats() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = ProxyStats{Blobs: map[digest.Digest]BlobStats{}}
	p.log = nil // in-flight handlers keep updating their detached entries
}

// takeFault returns the fault for the next blob GET, if any.
func (p *FaultProxy) takeFault() fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.faults) == 0 {
		return fault{}
	}
	f := p.faults[0]
	p.faults[0].n--
	if p.faults[0].n == 0 {
		p.faults = p.faults[1:]
	}
	return f
}

// track counts a request as it arrives and returns the tracker through
// which its handler reports status and bytes. Everything is counted before
// the client can see it: a client that got an answer finds it in Stats.
func (p *FaultProxy) track(r ProxyRequest) *tracker {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := &r
	p.log = append(p.log, e)
	if r.Digest == "" {
		p.stats.OtherRequests++
	} else {
		p.stats.BlobRequests++
		b := p.stats.Blobs[r.Digest]
		b.Requests++
		b.Ranges = append(b.Ranges, r.Range)
		p.stats.Blobs[r.Digest] = b
	}
	return &tracker{p: p, e: e}
}

// tracker updates one request's log entry and the totals. After
// ClearStats its entry is detached and only the new totals change.
type tracker struct {
	p *FaultProxy
	e *ProxyRequest
}

func (t *tracker) setFault(f string) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.e.Fault = f
}

func (t *tracker) setStatus(code int) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.e.Status = code
}

func (t *tracker) addBytes(n int64) {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	t.e.Bytes += n
	if t.e.Digest == "" {
		t.p.stats.OtherBytes += n
		return
	}
	t.p.stats.BlobBytes += n
	b := t.p.stats.Blobs[t.e.Digest]
	b.Bytes += n
	t.p.stats.Blobs[t.e.Digest] = b
}

// trackWriter counts bytes before writing them, so that the count already
// includes whatever reached the client.
type trackWriter struct {
	w io.Writer
	t *tracker
}

func (tw trackWriter) Write(p []byte) (int, error) {
	tw.t.addBytes(int64(len(p)))
	n, err := tw.w.Write(p)
	if n < len(p) {
		tw.t.addBytes(int64(n - len(p)))
	}
	return n, err
}

// hopHeaders are not forwarded (RFC 9110 section 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func (p *FaultProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.shut {
		p.mu.Unlock()
		http.Error(w, "testutil.FaultProxy: closed", http.StatusServiceUnavailable)
		return
	}
	p.handlers.Add(1)
	p.mu.Unlock()
	defer p.handlers.Done()
	rec := ProxyRequest{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range")}
	if m := proxyBlobRe.FindStringSubmatch(r.URL.Path); m != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		rec.Digest = digest.Digest(m[1])
	}
	tr := p.track(rec)

	var f fault
	if rec.Digest != "" && r.Method == http.MethodGet {
		f = p.takeFault()
		if f.kind != 0 {
			tr.setFault(f.kind.String())
		}
	}
	switch f.kind {
	case faultFail:
		body := fmt.Sprintf(`{"errors":[{"code":"UNAVAILABLE","message":"fault injected by testutil.FaultProxy: %d"}]}`+"\n", f.status)
		w.Header().Set("Content-Type", "application/json")
		tr.setStatus(f.status)
		w.WriteHeader(f.status)
		_, _ = io.WriteString(trackWriter{w, tr}, body)
		return
	case faultStall:
		timer := time.NewTimer(f.d)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-r.Context().Done():
			return
		case <-p.closed:
			// Returning would send an empty 200: drop the connection.
			panic(http.ErrAbortHandler)
		}
	}

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.URL.Host = p.upstream
	out.Host = r.Host // the registry builds Location URLs from it: they point back here
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		tr.setStatus(http.StatusBadGateway)
		http.Error(w, "testutil.FaultProxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	cl := resp.ContentLength
	var body io.Writer = trackWriter{w, tr}
	limit := int64(-1)
	switch f.kind {
	case faultCorrupt:
		at := int64(0)
		if cl > 0 {
			at = cl / 2
		}
		body = &flipWriter{w: body, at: at}
	case faultShort, faultReset:
		limit = max(cl/2, 0)
	}
	tr.setStatus(resp.StatusCode)
	w.WriteHeader(resp.StatusCode)
	if limit >= 0 {
		_, err = io.Copy(body, io.LimitReader(resp.Body, limit))
	} else {
		_, err = io.Copy(body, resp.Body)
	}
	if err != nil {
		return
	}
	switch f.kind {
	case faultShort:
		// Returning with less than Content-Length written makes net/http
		// close the connection: the client sees an unexpected EOF.
		if cl <= 0 {
			abort(w, false)
		}
	case faultReset:
		abort(w, true)
	}
}

// abort hijacks the connection behind w, after flushing what was written,
// and closes it; with rst the close sends a TCP reset.
func abort(w http.ResponseWriter, rst bool) {
	if fl, ok := w.(http.Flusher); ok {
		fl.Flush()
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = buf.Flush()
	if tc, ok := conn.(*net.TCPConn); ok && rst {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// flipWriter inverts the byte at offset at of what passes through it.
type flipWriter struct {
	w   io.Writer
	off int64
	at  int64
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if i := f.at - f.off; i >= 0 && i < int64(len(p)) {
		q := append([]byte(nil), p...)
		q[i] ^= 0xff
		p = q
	}
	n, err := f.w.Write(p)
	f.off += int64(n)
	return n, err
}
