package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// testHandler sends log records to the test's output and fails the test on
// a record at Warn or above.
type testHandler struct {
	slog.Handler
	t *testing.T
}

func (h testHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.t.Errorf("unexpected log record: %s %s", r.Level, r.Message)
	}
	return h.Handler.Handle(ctx, r)
}

func (h testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return testHandler{h.Handler.WithAttrs(as), h.t}
}

func (h testHandler) WithGroup(name string) slog.Handler {
	return testHandler{h.Handler.WithGroup(name), h.t}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(testHandler{slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}), t})
}

// blobFixture is a fake registry holding one 100 000-byte blob in repo "lazy/blob".
type blobFixture struct {
	reg  *fakeRegistry
	repo string
	data []byte
	dgst digest.Digest
}

func newBlobFixture(t *testing.T) *blobFixture {
	reg := newFakeRegistry()
	data := testData(100_000, 1)
	d := reg.putBlob(data)
	return &blobFixture{reg: reg, repo: serve(t, reg) + "/lazy/blob", data: data, dgst: d}
}

func TestReadRange(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{UserAgent: "lazyfs-test/1"})
	size := int64(len(fx.data))
	for _, tc := range []struct {
		name   string
		off, n int64
	}{
		{"first byte", 0, 1},
		{"middle", 12_345, 4_096},
		{"last byte", size - 1, 1},
		{"whole blob", 0, size},
		{"tail", size - 10, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, tc.off, tc.n)
			if err != nil {
				t.Fatalf("ReadRange(%d, %d) = %v", tc.off, tc.n, err)
			}
			if want := fx.data[tc.off : tc.off+tc.n]; !bytes.Equal(got, want) {
				t.Fatalf("ReadRange(%d, %d) = %d bytes differing from the blob's", tc.off, tc.n, len(got))
			}
		})
	}
	if got := fx.reg.ranges[len(fx.reg.ranges)-1]; got != "bytes=99990-99999" {
		t.Errorf("last Range header = %q, want %q", got, "bytes=99990-99999")
	}
	if ua := fx.reg.userAgent; !strings.HasPrefix(ua, "lazyfs-test/1 go-containerregistry") {
		t.Errorf("User-Agent = %q, want ours then ggcr's", ua)
	}
	if s := c.Stats(); s.Retries != 0 || s.BytesFetched != 1+4096+1+size+10 {
		t.Errorf("Stats() = %+v, want 0 retries and %d bytes", s, 1+4096+1+size+10)
	}
}

func TestReadRangeErrors(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{})
	ctx := t.Context()
	size := int64(len(fx.data))

	if _, err := c.ReadRange(ctx, fx.repo, fx.dgst, size-5, 10); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange past the end = %v, want ErrRange", err)
	}
	if _, err := c.ReadRange(ctx, fx.repo, fx.dgst, size+5, 10); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange beyond the end = %v, want ErrRange", err)
	}
	if _, err := c.ReadRange(ctx, fx.repo, fx.dgst, -1, 10); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange(-1, 10) = %v, want ErrRange", err)
	}
	if b, err := c.ReadRange(ctx, fx.repo, fx.dgst, 5, 0); err != nil || len(b) != 0 {
		t.Errorf("ReadRange(5, 0) = %d bytes, %v; want 0 bytes, nil", len(b), err)
	}
	if _, err := c.ReadRange(ctx, fx.repo, fx.dgst, 0, MaxRangeLen+1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadRange of more than MaxRangeLen = %v, want ErrTooLarge", err)
	}
	if _, err := c.ReadRange(ctx, fx.repo, "sha256:nothex", 0, 1); err == nil {
		t.Errorf("ReadRange with a malformed digest succeeded")
	}

	before := fx.reg.gets()
	_, err := c.ReadRange(ctx, fx.repo, digest.FromString("missing"), 0, 10)
	var herr *HTTPError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &herr) || herr.Code != "BLOB_UNKNOWN" {
		t.Errorf("ReadRange of a missing blob = %v, want *HTTPError BLOB_UNKNOWN matching ErrNotFound", err)
	}
	if n := fx.reg.gets() - before; n != 1 {
		t.Errorf("a 404 took %d requests, want 1 (no retry)", n)
	}
	if s := c.Stats(); s.Retries != 0 {
		t.Errorf("Stats().Retries = %d after errors that must not be retried", s.Retries)
	}
}

func TestReadRangeRetries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		faults   []fault
		attempts int
	}{
		{"503 twice", []fault{{kind: faultStatus, status: 503}, {kind: faultStatus, status: 503}}, 3},
		{"500 then 502", []fault{{kind: faultStatus, status: 500}, {kind: faultStatus, status: 502}}, 3},
		{"429", []fault{{kind: faultStatus, status: 429}}, 2},
		{"connection reset", []fault{{kind: faultReset}, {kind: faultReset}}, 3},
		{"short body", []fault{{kind: faultShort}}, 2},
		{"stalled answer", []fault{{kind: faultStall}}, 2},
		{"stalled body", []fault{{kind: faultStallMid}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newBlobFixture(t)
			c := testClient(t, Config{RequestTimeout: 300 * time.Millisecond, Transport: noKeepAlive()})
			fx.reg.setFaults(tc.faults...)
			got, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 1000, 50_000)
			if err != nil {
				t.Fatalf("ReadRange = %v", err)
			}
			if !bytes.Equal(got, fx.data[1000:51_000]) {
				t.Fatalf("ReadRange returned other bytes")
			}
			if n := fx.reg.gets(); n != tc.attempts {
				t.Errorf("blob GETs = %d, want %d", n, tc.attempts)
			}
			if s := c.Stats(); s.Retries != int64(tc.attempts-1) {
				t.Errorf("Stats().Retries = %d, want %d", s.Retries, tc.attempts-1)
			}
		})
	}
}

// noKeepAlive returns a transport that opens a connection per request: on a
// reused connection net/http itself silently resends a GET whose connection
// broke before the answer, which would blur the attempt counts.
func noKeepAlive() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DisableKeepAlives = true
	return t
}

func TestReadRangeNoRetry(t *testing.T) {
	for _, status := range []int{400, 403, 404, 405, 416} {
		fx := newBlobFixture(t)
		c := testClient(t, Config{})
		fx.reg.setFaults(fault{kind: faultStatus, status: status})
		_, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 0, 10)
		var herr *HTTPError
		if !errors.As(err, &herr) || herr.Status != status || herr.Temporary() {
			t.Errorf("ReadRange answered %d = %v, want a permanent *HTTPError %d", status, err, status)
		}
		if n := fx.reg.gets(); n != 1 {
			t.Errorf("status %d: blob GETs = %d, want 1", status, n)
		}
	}
}

func TestReadRangeGivesUp(t *testing.T) {
	for _, tc := range []struct {
		retries, attempts int
	}{{-1, 1}, {2, 3}, {0, 5}} {
		fx := newBlobFixture(t)
		c := testClient(t, Config{Retries: tc.retries})
		var fs []fault
		for range 10 {
			fs = append(fs, fault{kind: faultStatus, status: 503})
		}
		fx.reg.setFaults(fs...)
		_, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 0, 10)
		var herr *HTTPError
		if !errors.As(err, &herr) || herr.Status != 503 || !herr.Temporary() {
			t.Errorf("Retries %d: ReadRange = %v, want *HTTPError 503", tc.retries, err)
		}
		if herr != nil && (herr.Method != "GET" || herr.URL != "http://"+fx.repo[:len(fx.repo)-len("/lazy/blob")]+"/v2/lazy/blob/blobs/"+fx.dgst.String()) {
			t.Errorf("HTTPError = %+v, want GET of the blob URL", herr)
		}
		if n := fx.reg.gets(); n != tc.attempts {
			t.Errorf("Retries %d: blob GETs = %d, want %d", tc.retries, n, tc.attempts)
		}
	}
}

// delayRecorder replaces Client.sleep: it records the delays asked for and
// does not wait.
type delayRecorder struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (r *delayRecorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.delays = append(r.delays, d)
	r.mu.Unlock()
	return ctx.Err()
}

func TestReadRangeBackoff(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{Backoff: 100 * time.Millisecond})
	rec := &delayRecorder{}
	c.sleep = rec.sleep
	fx.reg.setFaults(
		fault{kind: faultStatus, status: 503},
		fault{kind: faultStatus, status: 503},
		fault{kind: faultStatus, status: 429, retryAfter: "7"},
		fault{kind: faultStatus, status: 503, retryAfter: "0"},
	)
	if _, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 0, 10); err != nil {
		t.Fatalf("ReadRange = %v", err)
	}
	want := []struct{ lo, hi time.Duration }{
		{75 * time.Millisecond, 125 * time.Millisecond},  // Backoff ±25%
		{150 * time.Millisecond, 250 * time.Millisecond}, // doubled
		{7 * time.Second, 7 * time.Second},               // Retry-After wins
		{600 * time.Millisecond, 1000 * time.Millisecond},
	}
	if len(rec.delays) != len(want) {
		t.Fatalf("delays = %v, want %d of them", rec.delays, len(want))
	}
	for i, w := range want {
		if d := rec.delays[i]; d < w.lo || d > w.hi {
			t.Errorf("delay %d = %v, want in [%v, %v]", i+1, d, w.lo, w.hi)
		}
	}
}

func TestReadRangeCancelDuringBackoff(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{Backoff: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	c.sleep = func(sctx context.Context, d time.Duration) error {
		cancel()
		return sleepCtx(sctx, d)
	}
	fx.reg.setFaults(fault{kind: faultStatus, status: 503})
	_, err := c.ReadRange(ctx, fx.repo, fx.dgst, 0, 10)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadRange cancelled in backoff = %v, want context.Canceled", err)
	}
	if n := fx.reg.gets(); n != 1 {
		t.Errorf("blob GETs = %d, want 1", n)
	}
}

func TestReadRangeIgnoredRange(t *testing.T) {
	fx := newBlobFixture(t)
	fx.reg.ignoreRange = true
	c := testClient(t, Config{})
	got, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 70_000, 100)
	if err != nil || !bytes.Equal(got, fx.data[70_000:70_100]) {
		t.Fatalf("ReadRange from a server ignoring Range = %d bytes, %v; want the range", len(got), err)
	}
	if s := c.Stats(); s.BytesFetched != 70_100 {
		t.Errorf("Stats().BytesFetched = %d, want 70100 (skipped bytes count)", s.BytesFetched)
	}
	// A whole-blob answer too short for the range is refused, not retried.
	before := fx.reg.gets()
	if _, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 99_990, 20); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange past the end from a server ignoring Range = %v, want ErrRange", err)
	}
	if n := fx.reg.gets() - before; n != 1 {
		t.Errorf("blob GETs = %d, want 1", n)
	}
	// A whole-blob answer cut short is retried.
	fx.reg.setFaults(fault{kind: faultShort})
	before = fx.reg.gets()
	got, err = c.ReadRange(t.Context(), fx.repo, fx.dgst, 80_000, 100)
	if err != nil || !bytes.Equal(got, fx.data[80_000:80_100]) {
		t.Fatalf("ReadRange after a short whole-blob answer = %d bytes, %v", len(got), err)
	}
	if n := fx.reg.gets() - before; n != 2 {
		t.Errorf("blob GETs = %d, want 2", n)
	}
}

// rangeHandler answers every blob GET with a fixed status and Content-Range.
type rangeHandler struct {
	body         []byte
	contentRange string
}

func (h rangeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		return
	}
	if h.contentRange != "" {
		w.Header().Set("Content-Range", h.contentRange)
	}
	w.WriteHeader(http.StatusPartialContent)
	w.Write(h.body)
}

func TestReadRangeContentRange(t *testing.T) {
	data := testData(1000, 2)
	d := digest.FromBytes(data)
	for _, tc := range []struct {
		name    string
		h       rangeHandler
		want    []byte
		wantErr error
	}{
		{"exact", rangeHandler{data[100:200], "bytes 100-199/1000"}, data[100:200], nil},
		{"wider, starting before", rangeHandler{data[50:300], "bytes 50-299/1000"}, data[100:200], nil},
		{"unknown total", rangeHandler{data[100:200], "bytes 100-199/*"}, data[100:200], nil},
		{"no Content-Range", rangeHandler{data[100:200], ""}, data[100:200], nil},
		{"other range", rangeHandler{data[150:250], "bytes 150-249/1000"}, nil, ErrUnsupported},
		{"shorter range", rangeHandler{data[100:150], "bytes 100-149/1000"}, nil, ErrUnsupported},
		{"malformed", rangeHandler{data[100:200], "bytes 100-199"}, nil, ErrUnsupported},
		{"past the end", rangeHandler{data[100:150], "bytes 100-149/150"}, nil, ErrRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testClient(t, Config{})
			got, err := c.ReadRange(t.Context(), serve(t, tc.h)+"/r", d, 100, 100)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("ReadRange = %v, want %v", err, tc.wantErr)
				}
				if s := c.Stats(); s.Retries != 0 {
					t.Errorf("Stats().Retries = %d, want 0", s.Retries)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("ReadRange = %d bytes, %v; want the range", len(got), err)
			}
		})
	}
}

func TestReadRangeConcurrent(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{})
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			off := int64(i * 5000)
			got, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, off, 5000)
			if err != nil || !bytes.Equal(got, fx.data[off:off+5000]) {
				t.Errorf("ReadRange(%d, 5000) = %d bytes, %v", off, len(got), err)
			}
		})
	}
	wg.Wait()
}

func TestOpenBlob(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{})
	rc, err := c.OpenBlob(t.Context(), fx.repo, fx.dgst)
	if err != nil {
		t.Fatalf("OpenBlob = %v", err)
	}
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, fx.data) {
		t.Fatalf("reading OpenBlob = %d bytes, %v; want the blob", len(got), err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := rc.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if s := c.Stats(); s.BytesFetched != int64(len(fx.data)) {
		t.Errorf("Stats().BytesFetched = %d, want %d", s.BytesFetched, len(fx.data))
	}
}

func TestOpenBlobFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		faults  []fault
		openErr bool
		readErr error
		gets    int
	}{
		{"503 then fine", []fault{{kind: faultStatus, status: 503}}, false, nil, 2},
		{"reset then fine", []fault{{kind: faultReset}}, false, nil, 2},
		{"corrupt", []fault{{kind: faultCorrupt}}, false, ErrDigestMismatch, 1},
		{"short", []fault{{kind: faultShort}}, false, io.ErrUnexpectedEOF, 1},
		{"stalls mid-body", []fault{{kind: faultStallMid}}, false, ErrStalled, 1},
		{"404", []fault{{kind: faultStatus, status: 404}}, true, nil, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx := newBlobFixture(t)
			c := testClient(t, Config{RequestTimeout: 300 * time.Millisecond, Transport: noKeepAlive()})
			fx.reg.setFaults(tc.faults...)
			rc, err := c.OpenBlob(t.Context(), fx.repo, fx.dgst)
			if tc.openErr {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("OpenBlob = %v, want ErrNotFound", err)
				}
			} else {
				if err != nil {
					t.Fatalf("OpenBlob = %v", err)
				}
				defer rc.Close()
				got, err := io.ReadAll(rc)
				switch {
				case tc.readErr == nil && (err != nil || !bytes.Equal(got, fx.data)):
					t.Errorf("reading = %d bytes, %v; want the blob", len(got), err)
				case tc.readErr != nil && !errors.Is(err, tc.readErr):
					t.Errorf("reading = %v, want %v", err, tc.readErr)
				}
				if _, again := rc.Read(make([]byte, 1)); tc.readErr != nil && !errors.Is(again, tc.readErr) {
					t.Errorf("Read after the error = %v, want the same error", again)
				}
			}
			if n := fx.reg.gets(); n != tc.gets {
				t.Errorf("blob GETs = %d, want %d", n, tc.gets)
			}
		})
	}
}

func TestReadBlob(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{})
	ctx := t.Context()
	got, err := c.ReadBlob(ctx, fx.repo, fx.dgst, int64(len(fx.data)))
	if err != nil || !bytes.Equal(got, fx.data) {
		t.Fatalf("ReadBlob = %d bytes, %v", len(got), err)
	}
	if _, err := c.ReadBlob(ctx, fx.repo, fx.dgst, int64(len(fx.data))-1); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadBlob with max one byte short = %v, want ErrTooLarge", err)
	}

	fx.reg.setFaults(fault{kind: faultCorrupt})
	before := fx.reg.gets()
	if _, err := c.ReadBlob(ctx, fx.repo, fx.dgst, 1<<20); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("ReadBlob of a corrupted answer = %v, want ErrDigestMismatch", err)
	}
	if n := fx.reg.gets() - before; n != 1 {
		t.Errorf("a digest mismatch took %d GETs, want 1", n)
	}

	fx.reg.setFaults(fault{kind: faultShort}, fault{kind: faultStatus, status: 502})
	before = fx.reg.gets()
	if got, err := c.ReadBlob(ctx, fx.repo, fx.dgst, 1<<20); err != nil || !bytes.Equal(got, fx.data) {
		t.Errorf("ReadBlob after a short body and a 502 = %d bytes, %v", len(got), err)
	}
	if n := fx.reg.gets() - before; n != 3 {
		t.Errorf("blob GETs = %d, want 3", n)
	}
}
