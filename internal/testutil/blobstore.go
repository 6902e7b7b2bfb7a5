package testutil

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// BlobStore puts blob storage beside a docker-registry, as registries
// backed by S3 or GCS have it (docker-registry's filesystem driver cannot
// redirect). Its front, on Addr, passes every request to the registry
// except GETs and HEADs of blobs: for those it first asks the registry
// (a HEAD with the request's Authorization), and if the registry would
// serve the blob, answers 307 with a signed URL on the storage server,
// StoreAddr, valid for a minute; otherwise the registry answers the
// request itself (401 with its challenge, 404).
//
// The storage server serves blob bytes from the registry's own storage
// directory with Range support (http.ServeContent). Like S3 with a
// presigned URL it refuses a request that carries an Authorization header
// (400), and one whose signature is wrong or expired (403). Every request
// it gets is recorded.
//
// Safe for concurrent use. Closed in t.Cleanup.
type BlobStore struct {
	Addr      string // the front: clients use it instead of the registry's address
	StoreAddr string // the storage server the front redirects to

	reg       *Registry
	key       []byte // signs storage URLs
	front     *http.Server
	store     *http.Server
	proxy     *httputil.ReverseProxy
	transport *http.Transport
	handlers  sync.WaitGroup

	mu        sync.Mutex // guards shut, short, redirects and requests; handlers.Add happens under it
	shut      bool
	short     int
	redirects int
	requests  []StoreRequest
}

// StoreRequest is one request to the storage server.
type StoreRequest struct {
	Method        string
	Digest        digest.Digest // "" if the path names no blob
	Range         string        // the Range header, "" for none
	Authorization bool          // it carried an Authorization header
	Status        int
	Bytes         int64 // body bytes sent
	Short         bool  // cut short by Short
}

// StartBlobStore starts the front and the storage server for reg.
func StartBlobStore(t testing.TB, reg *Registry) *BlobStore {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatalf("StartBlobStore: %v", err)
	}
	b := &BlobStore{
		reg:       reg,
		key:       key,
		transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 16},
	}
	target := &url.URL{Scheme: "http", Host: reg.Addr}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the registry builds Location URLs from it: they point back here
		},
		Transport: b.transport,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	var served sync.WaitGroup
	listen := func(h http.HandlerFunc) (string, *http.Server) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("StartBlobStore: %v", err)
		}
		srv := &http.Server{Handler: b.track(h), ErrorLog: log.New(io.Discard, "", 0)}
		served.Add(1)
		go func() {
			defer served.Done()
			_ = srv.Serve(l)
		}()
		return l.Addr().String(), srv
	}
	b.Addr, b.front = listen(b.serveFront)
	b.StoreAddr, b.store = listen(b.serveStore)
	t.Cleanup(func() {
		b.mu.Lock()
		b.shut = true
		b.mu.Unlock()
		_ = b.front.Close()
		_ = b.store.Close()
		served.Wait()
		done := make(chan struct{})
		go func() { b.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("BlobStore: handlers still running 10 s after close")
		}
		b.transport.CloseIdleConnections()
	})
	return b
}

// track counts h's handlers so that Cleanup can wait for them.
func (b *BlobStore) track(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		if b.shut {
			b.mu.Unlock()
			http.Error(w, "testutil.BlobStore: closed", http.StatusServiceUnavailable)
			return
		}
		b.handlers.Add(1)
		b.mu.Unlock()
		defer b.handlers.Done()
		h(w, r)
	})
}

// Short makes the storage server's next n GETs (0: none, from now on)
// send the headers of the full answer (Content-Length included) and then
// half of the body before the connection is closed.
func (b *BlobStore) Short(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.short = n
}

// Redirects returns how many blob requests the front redirected.
func (b *BlobStore) Redirects() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.redirects
}

// Requests returns the storage server's requests so far, in arrival order
// (Status and Bytes as far as they got for one still in flight).
func (b *BlobStore) Requests() []StoreRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]StoreRequest(nil), b.requests...)
}

func (b *BlobStore) serveFront(w http.ResponseWriter, r *http.Request) {
	m := proxyBlobRe.FindStringSubmatch(r.URL.Path)
	if m == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		b.proxy.ServeHTTP(w, r)
		return
	}
	d, err := digest.Parse(m[1])
	if err != nil || d.Algorithm() != digest.SHA256 {
		b.proxy.ServeHTTP(w, r)
		return
	}
	check, err := http.NewRequestWithContext(r.Context(), http.MethodHead, "http://"+b.reg.Addr+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if a := r.Header.Get("Authorization"); a != "" {
		check.Header.Set("Authorization", a)
	}
	resp, err := b.transport.RoundTrip(check)
	if err != nil {
		http.Error(w, "testutil.BlobStore: "+err.Error(), http.StatusBadGateway)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.proxy.ServeHTTP(w, r) // the registry's own answer, body included
		return
	}
	b.mu.Lock()
	b.redirects++
	b.mu.Unlock()
	expires := strconv.FormatInt(time.Now().Add(time.Minute).Unix(), 10)
	loc := fmt.Sprintf("http://%s/blobs/%s?expires=%s&signature=%s", b.StoreAddr, d, expires, b.sign(d, expires))
	http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
}

func (b *BlobStore) sign(d digest.Digest, expires string) string {
	mac := hmac.New(sha256.New, b.key)
	fmt.Fprintf(mac, "%s\n%s", d, expires)
	return hex.EncodeToString(mac.Sum(nil))
}

func (b *BlobStore) serveStore(w http.ResponseWriter, r *http.Request) {
	rec := StoreRequest{Method: r.Method, Range: r.Header.Get("Range"), Authorization: r.Header.Get("Authorization") != ""}
	if s, ok := strings.CutPrefix(r.URL.Path, "/blobs/"); ok {
		if d, err := digest.Parse(s); err == nil && d.Algorithm() == digest.SHA256 {
			rec.Digest = d
		}
	}
	b.mu.Lock()
	i := len(b.requests)
	b.requests = append(b.requests, rec)
	short := false
	if r.Method == http.MethodGet && b.short > 0 && !rec.Authorization {
		b.short--
		short = true
		b.requests[i].Short = true
	}
	b.mu.Unlock()
	cw := &storeWriter{ResponseWriter: w, b: b, i: i, short: short}

	q := r.URL.Query()
	exp, _ := strconv.ParseInt(q.Get("expires"), 10, 64)
	switch {
	case rec.Authorization:
		// S3: "Only one auth mechanism allowed".
		http.Error(cw, "testutil.BlobStore: a signed URL and an Authorization header", http.StatusBadRequest)
		return
	case rec.Digest == "":
		http.Error(cw, "testutil.BlobStore: no such blob", http.StatusNotFound)
		return
	case !hmac.Equal([]byte(q.Get("signature")), []byte(b.sign(rec.Digest, q.Get("expires")))) || time.Now().Unix() > exp:
		http.Error(cw, "testutil.BlobStore: bad or expired signature", http.StatusForbidden)
		return
	}
	hexd := rec.Digest.Encoded()
	f, err := os.Open(filepath.Join(b.reg.Dir, "data", "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data"))
	if err != nil {
		http.Error(cw, "testutil.BlobStore: "+err.Error(), http.StatusNotFound)
		return
	}
	defer f.Close()
	cw.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(cw, r, "", time.Time{}, f)
}

// storeWriter records a storage answer's status and bytes, and cuts it
// short when asked: half of the Content-Length it announced, then nothing
// (net/http closes a connection whose handler wrote less than it
// announced).
type storeWriter struct {
	http.ResponseWriter
	b     *BlobStore
	i     int
	short bool
	limit int64 // body bytes still allowed when short
}

func (w *storeWriter) WriteHeader(code int) {
	w.b.mu.Lock()
	w.b.requests[w.i].Status = code
	w.b.mu.Unlock()
	if w.short {
		cl, _ := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64)
		w.limit = cl / 2
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *storeWriter) Write(p []byte) (int, error) {
	cut := false
	if w.short {
		if int64(len(p)) > w.limit {
			p, cut = p[:w.limit], true
		}
		w.limit -= int64(len(p))
	}
	n, err := w.ResponseWriter.Write(p)
	w.b.mu.Lock()
	w.b.requests[w.i].Bytes += int64(n)
	w.b.mu.Unlock()
	if err == nil && cut {
		err = io.ErrShortWrite
	}
	return n, err
}
