package fetch

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"
)

// faultKind is what a fakeRegistry does to one blob GET instead of serving it.
type faultKind int

const (
	faultStatus   faultKind = iota // answer status (with Retry-After if set)
	faultReset                     // reset the TCP connection before answering
	faultShort                     // send the headers of the right answer, then half the body, then abort
	faultStall                     // answer nothing until the request is cancelled
	faultStallMid                  // send headers and half the body, then stall until cancelled
	faultCorrupt                   // serve the blob with its first byte flipped
)

type fault struct {
	kind       faultKind
	status     int
	retryAfter string
}

// fakeRegistry is an in-process registry for reads: manifests and blobs put
// by the test, blobs served with http.ServeContent (every Range form), and
// fault switches for blob GETs. Safe for concurrent use.
type fakeRegistry struct {
	mu          sync.Mutex // guards every field below
	manifests   map[string]fakeManifest
	blobs       map[digest.Digest][]byte
	faults      []fault // applied to the next blob GETs, in order
	ignoreRange bool
	blobGets    int
	ranges      []string // Range header of each blob GET
	userAgent   string   // of the last blob GET
}

type fakeManifest struct {
	mediaType string
	body      []byte
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{manifests: map[string]fakeManifest{}, blobs: map[digest.Digest][]byte{}}
}

// putBlob stores b and returns its digest.
func (f *fakeRegistry) putBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	f.mu.Lock()
	f.blobs[d] = b
	f.mu.Unlock()
	return d
}

// putManifest stores body under repo by digest and, if tag is not "", by tag.
func (f *fakeRegistry) putManifest(repo, tag, mediaType string, body []byte) digest.Digest {
	d := digest.FromBytes(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	m := fakeManifest{mediaType, body}
	f.manifests[repo+"@"+d.String()] = m
	if tag != "" {
		f.manifests[repo+":"+tag] = m
	}
	return d
}

func (f *fakeRegistry) putJSON(t *testing.T, repo, tag, mediaType string, v any) (digest.Digest, []byte) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return f.putManifest(repo, tag, mediaType, b), b
}

func (f *fakeRegistry) setFaults(fs ...fault) {
	f.mu.Lock()
	f.faults = fs
	f.mu.Unlock()
}

func (f *fakeRegistry) gets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobGets
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/v2/" || path == "/v2" {
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		f.serveManifest(w, r, rest[:i], rest[i+len("/manifests/"):])
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 && r.Method == http.MethodGet {
		f.serveBlob(w, r, digest.Digest(rest[i+len("/blobs/"):]))
		return
	}
	registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "no such route")
}

func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func (f *fakeRegistry) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	key := repo + ":" + ref
	if strings.Contains(ref, ":") {
		key = repo + "@" + ref
	}
	f.mu.Lock()
	m, ok := f.manifests[key]
	f.mu.Unlock()
	if !ok {
		registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
		return
	}
	w.Header().Set("Content-Type", m.mediaType)
	w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(m.body))
}

func (f *fakeRegistry) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) {
	f.mu.Lock()
	f.blobGets++
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	f.userAgent = r.UserAgent()
	b, ok := f.blobs[d]
	var flt *fault
	if len(f.faults) > 0 {
		flt = &f.faults[0]
		f.faults = f.faults[1:]
	}
	ignoreRange := f.ignoreRange
	f.mu.Unlock()
	if !ok {
		registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	if ignoreRange {
		r.Header.Del("Range")
	}
	if flt == nil {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
		return
	}
	switch flt.kind {
	case faultStatus:
		if flt.retryAfter != "" {
			w.Header().Set("Retry-After", flt.retryAfter)
		}
		registryError(w, flt.status, "UNAVAILABLE", "injected")
	case faultReset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0) // close with RST
		}
		conn.Close()
	case faultShort, faultStallMid:
		rec := httptest.NewRecorder()
		http.ServeContent(rec, r, "", time.Time{}, bytes.NewReader(b))
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		body := rec.Body.Bytes()
		w.Write(body[:len(body)/2])
		http.NewResponseController(w).Flush()
		if flt.kind == faultStallMid {
			<-r.Context().Done()
		}
		panic(http.ErrAbortHandler)
	case faultStall:
		<-r.Context().Done()
	case faultCorrupt:
		c := bytes.Clone(b)
		c[0] ^= 0xff
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(c))
	}
}

// anonKeychain resolves every registry to anonymous, so tests do not read
// the machine's Docker config.
type anonKeychain struct{}

func (anonKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

// serve starts h on a loopback httptest server and returns its host:port.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// testClient returns a Client with fast retries and anonymous credentials.
func testClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	if cfg.Keychain == nil {
		cfg.Keychain = anonKeychain{}
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c := New(cfg)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// testData returns n bytes from a fixed seed.
func testData(n int, seed uint64) []byte {
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
