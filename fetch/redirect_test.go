package fetch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// blobStorage is blob storage a registry redirects blob GETs to: it serves
// the fake registry's blobs by digest with Range support, records what it
// was sent, and can cut answers short or answer less than the range asked.
type blobStorage struct {
	reg *fakeRegistry

	mu       sync.Mutex // guards the fields below
	reqs     []storageRequest
	short    int // the next GETs: half the body, then the connection is cut
	truncate int // the next GETs: a 206 of the first half of the range asked, headers to match
}

type storageRequest struct {
	method, rng string
	auth        bool // an Authorization header came with it
}

func (s *blobStorage) requests() []storageRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]storageRequest(nil), s.reqs...)
}

func (s *blobStorage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, storageRequest{r.Method, r.Header.Get("Range"), r.Header.Get("Authorization") != ""})
	short, truncate := s.short > 0, s.truncate > 0 && s.short == 0
	if short {
		s.short--
	} else if truncate {
		s.truncate--
	}
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "" {
		http.Error(w, "a signed URL and an Authorization header", http.StatusBadRequest)
		return
	}
	s.reg.mu.Lock()
	b, ok := s.reg.blobs[digest.Digest(strings.TrimPrefix(r.URL.Path, "/b/"))]
	s.reg.mu.Unlock()
	if !ok || r.URL.Query().Get("sig") != "ok" {
		http.Error(w, "no such object", http.StatusForbidden)
		return
	}
	var first, last int64
	if truncate {
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last); err == nil {
			last = first + (last-first+1)/2 - 1
			r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", first, last))
		}
	}
	if short {
		w = &halfWriter{ResponseWriter: w}
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
}

// halfWriter writes half of the Content-Length it announces, then fails.
type halfWriter struct {
	http.ResponseWriter
	left int64
}

func (w *halfWriter) WriteHeader(code int) {
	fmt.Sscan(w.Header().Get("Content-Length"), &w.left)
	w.left /= 2
	w.ResponseWriter.WriteHeader(code)
}

func (w *halfWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		n, _ := w.ResponseWriter.Write(p[:w.left])
		w.left = 0
		return n, io.ErrShortWrite
	}
	w.left -= int64(len(p))
	return w.ResponseWriter.Write(p)
}

// redirectBlobs answers blob GETs and HEADs with a 307 to storage, as
// registries backed by S3 or GCS do, and passes everything else to inner.
type redirectBlobs struct {
	inner   http.Handler
	storage string // base URL
}

func (h redirectBlobs) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if i := strings.LastIndex(r.URL.Path, "/blobs/"); i >= 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		http.Redirect(w, r, h.storage+"/b/"+r.URL.Path[i+len("/blobs/"):]+"?sig=ok", http.StatusTemporaryRedirect)
		return
	}
	h.inner.ServeHTTP(w, r)
}

// TestRedirectedBlobReads reads blobs of a registry with bearer auth that
// redirects blob GETs to storage on another port of the same host: the
// reads get the right bytes, the Range header reaches the storage and the
// registry's token does not (Go's http.Client would forward an
// Authorization header the caller set to the same host name on another
// port; go-containerregistry sets it inside its transport, for the
// registry's host:port only). An expired token is refreshed on the
// registry's 401 before the redirect.
func TestRedirectedBlobReads(t *testing.T) {
	storage := &blobStorage{}
	storageURL := "http://" + serve(t, storage)
	var as *authServer
	fx := newImageFixtureBehind(t, func(h http.Handler) http.Handler {
		as = &authServer{inner: redirectBlobs{inner: h, storage: storageURL}, bearer: true, user: "lazy", pass: "s3cret-pass", valid: map[string]bool{}}
		return as
	})
	storage.reg = fx.reg
	blob := testData(100_000, 7)
	d := fx.reg.putBlob(blob)
	dockerConfig(t, fx.host, "lazy", "s3cret-pass")
	c := defaultKeychainClient(t)
	ctx := t.Context()

	got, err := c.ReadRange(ctx, fx.repo, d, 1000, 5000)
	if err != nil || !bytes.Equal(got, blob[1000:6000]) {
		t.Fatalf("ReadRange through the redirect = %d bytes, %v; want the blob's bytes 1000-5999", len(got), err)
	}
	got, err = c.ReadBlob(ctx, fx.repo, d, 1<<20)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob through the redirect = %d bytes, %v", len(got), err)
	}
	rc, err := c.OpenBlob(ctx, fx.repo, d)
	if err != nil {
		t.Fatalf("OpenBlob through the redirect: %v", err)
	}
	got, err = io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("OpenBlob through the redirect read %d bytes, %v", len(got), err)
	}

	// The token expires: refreshed on the registry's 401, then redirected.
	as.revoke()
	if got, err := c.ReadRange(ctx, fx.repo, d, 50_000, 10); err != nil || !bytes.Equal(got, blob[50_000:50_010]) {
		t.Fatalf("ReadRange after the token expired = %q, %v", got, err)
	}
	if n := len(as.tokenRequests()); n != 2 {
		t.Errorf("token requests = %d, want 2 (one refresh)", n)
	}

	// An answer cut short is fetched again.
	storage.mu.Lock()
	storage.short = 1
	storage.mu.Unlock()
	if got, err := c.ReadRange(ctx, fx.repo, d, 20_000, 30_000); err != nil || !bytes.Equal(got, blob[20_000:50_000]) {
		t.Fatalf("ReadRange with the storage's answer cut short = %d bytes, %v; want it fetched again", len(got), err)
	}

	// A 206 of less than the range asked is refused, not taken for it.
	storage.mu.Lock()
	storage.truncate = 1
	storage.mu.Unlock()
	if got, err := c.ReadRange(ctx, fx.repo, d, 20_000, 30_000); !errors.Is(err, ErrUnsupported) || got != nil {
		t.Errorf("ReadRange answered with half the range = %d bytes, %v; want ErrUnsupported", len(got), err)
	}

	want := []storageRequest{
		{"GET", "bytes=1000-5999", false},
		{"GET", "", false},
		{"GET", "", false},
		{"GET", "bytes=50000-50009", false},
		{"GET", "bytes=20000-49999", false}, // cut short
		{"GET", "bytes=20000-49999", false},
		{"GET", "bytes=20000-49999", false}, // answered with half
	}
	reqs := storage.requests()
	if len(reqs) != len(want) {
		t.Fatalf("storage requests = %+v, want %+v", reqs, want)
	}
	for i := range want {
		if reqs[i] != want[i] {
			t.Errorf("storage request %d = %+v, want %+v", i, reqs[i], want[i])
		}
	}
}
