package testutil

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fakeUpstream serves one blob with http.ServeContent (so Range works), a
// manifest and /v2/.
func fakeUpstream(t *testing.T) (addr string, blob []byte, d digest.Digest) {
	t.Helper()
	blob = make([]byte, 1<<20+17)
	PatternAt(11, 0, blob)
	d = digest.FromBytes(blob)
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") })
	mux.HandleFunc("/v2/test/blobs/"+d.String(), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Content-Digest", d.String())
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	})
	mux.HandleFunc("/v2/test/manifests/latest", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		io.WriteString(w, `{"schemaVersion":2}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), blob, d
}

// fetch does one request through a fresh connection and returns status,
// body and the error of reading it.
func fetch(t *testing.T, ctx context.Context, method, url, rng string) (int, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	tr := &http.Transport{DisableCompression: true, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func TestFaultProxyPassesThroughAndCounts(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	blobURL := p.URL() + "/v2/test/blobs/" + d.String()

	if st, body, err := fetch(t, t.Context(), "GET", blobURL, ""); err != nil || st != 200 || !bytes.Equal(body, blob) {
		t.Errorf("GET blob = %d, %d bytes, %v; want 200 and the blob", st, len(body), err)
	}
	if st, body, err := fetch(t, t.Context(), "GET", blobURL, "bytes=100-199"); err != nil || st != 206 || !bytes.Equal(body, blob[100:200]) {
		t.Errorf("GET range = %d, %d bytes, %v; want 206 and 100 bytes", st, len(body), err)
	}
	if st, _, err := fetch(t, t.Context(), "HEAD", blobURL, ""); err != nil || st != 200 {
		t.Errorf("HEAD blob = %d, %v", st, err)
	}
	if st, body, err := fetch(t, t.Context(), "GET", p.URL()+"/v2/test/manifests/latest", ""); err != nil || st != 200 || string(body) != `{"schemaVersion":2}` {
		t.Errorf("GET manifest = %d %q %v", st, body, err)
	}
	fetch(t, t.Context(), "GET", p.URL()+"/v2/", "")

	s := p.Stats()
	want := BlobStats{Requests: 3, Bytes: int64(len(blob)) + 100, Ranges: []string{"", "bytes=100-199", ""}}
	got := s.Blobs[d]
	if s.BlobRequests != 3 || s.BlobBytes != want.Bytes || s.OtherRequests != 2 || s.OtherBytes != int64(len(`{"schemaVersion":2}`)+2) ||
		got.Requests != want.Requests || got.Bytes != want.Bytes || strings.Join(got.Ranges, ",") != strings.Join(want.Ranges, ",") {
		t.Errorf("Stats() = %+v, blob %+v; want 3 blob requests %+v and 2 others", s, got, want)
	}
	if reqs := p.Requests(); len(reqs) != 5 || reqs[1].Range != "bytes=100-199" || reqs[1].Status != 206 || reqs[3].Digest != "" {
		t.Errorf("Requests() = %+v", reqs)
	}
	p.ClearStats()
	if s := p.Stats(); s.BlobRequests != 0 || len(s.Blobs) != 0 || len(p.Requests()) != 0 {
		t.Errorf("after ClearStats: %+v", s)
	}
}

func TestFaultProxyFaultsQueueInOrder(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	blobURL := p.URL() + "/v2/test/blobs/" + d.String()
	p.Fail(503, 2)
	p.Fail(429, 1)
	p.Short(1)
	if n := p.PendingFaults(); n != 4 {
		t.Errorf("PendingFaults() = %d, want 4", n)
	}
	// HEADs and other requests take no fault.
	if st, _, _ := fetch(t, t.Context(), "HEAD", blobURL, ""); st != 200 {
		t.Errorf("HEAD during faults = %d, want 200", st)
	}
	if st, _, _ := fetch(t, t.Context(), "GET", p.URL()+"/v2/test/manifests/latest", ""); st != 200 {
		t.Errorf("manifest GET during faults = %d, want 200", st)
	}
	for i, want := range []int{503, 503, 429} {
		st, body, err := fetch(t, t.Context(), "GET", blobURL, "")
		if err != nil || st != want || !strings.Contains(string(body), "UNAVAILABLE") {
			t.Errorf("GET %d = %d %q %v, want %d with a registry error body", i, st, body, err, want)
		}
	}
	if _, _, err := fetch(t, t.Context(), "GET", blobURL, ""); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("GET after the fails = %v, want the short body", err)
	}
	if st, body, err := fetch(t, t.Context(), "GET", blobURL, ""); err != nil || st != 200 || !bytes.Equal(body, blob) {
		t.Errorf("GET after all faults = %d, %d bytes, %v; want the blob", st, len(body), err)
	}
	var faults []string
	for _, r := range p.Requests() {
		faults = append(faults, r.Fault)
	}
	if got := strings.Join(faults, ","); got != ",,fail,fail,fail,short," {
		t.Errorf("faults seen = %q", got)
	}
	p.Reset(3)
	p.ClearFaults()
	if p.PendingFaults() != 0 {
		t.Errorf("ClearFaults left %d", p.PendingFaults())
	}
}

func TestFaultProxyReset(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	p.Reset(1)
	st, body, err := fetch(t, t.Context(), "GET", p.URL()+"/v2/test/blobs/"+d.String(), "")
	if st != 200 || !errors.Is(err, syscall.ECONNRESET) || len(body) > len(blob)/2 {
		t.Errorf("GET with Reset = %d, %d bytes, %v; want 200, at most half the body, connection reset", st, len(body), err)
	}
	if !bytes.Equal(body, blob[:len(body)]) {
		t.Errorf("bytes before the reset differ from the blob")
	}
	if s := p.Stats().Blobs[d]; s.Bytes != int64(len(blob)/2) {
		t.Errorf("bytes sent = %d, want %d", s.Bytes, len(blob)/2)
	}
}

func TestFaultProxyShort(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	p.Short(1)
	st, body, err := fetch(t, t.Context(), "GET", p.URL()+"/v2/test/blobs/"+d.String(), "bytes=0-999")
	if st != 206 || !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(body, blob[:500]) {
		t.Errorf("GET with Short = %d, %d bytes, %v; want 206, the first 500 bytes, unexpected EOF", st, len(body), err)
	}
}

func TestFaultProxyCorrupt(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	p.Corrupt(2)
	for _, tc := range []struct {
		rng        string
		want       []byte
		flippedAt  int
		wantStatus int
	}{
		{"", blob, len(blob) / 2, 200},
		{"bytes=1000-1099", blob[1000:1100], 50, 206},
	} {
		st, body, err := fetch(t, t.Context(), "GET", p.URL()+"/v2/test/blobs/"+d.String(), tc.rng)
		if err != nil || st != tc.wantStatus || len(body) != len(tc.want) {
			t.Fatalf("GET %q with Corrupt = %d, %d bytes, %v", tc.rng, st, len(body), err)
		}
		var diff []int
		for i := range body {
			if body[i] != tc.want[i] {
				diff = append(diff, i)
			}
		}
		if len(diff) != 1 || diff[0] != tc.flippedAt || body[tc.flippedAt] != ^tc.want[tc.flippedAt] {
			t.Errorf("GET %q with Corrupt differs at %v, want only at %d (inverted)", tc.rng, diff, tc.flippedAt)
		}
	}
}

func TestFaultProxyStall(t *testing.T) {
	up, blob, d := fakeUpstream(t)
	p := NewFaultProxy(t, up)
	blobURL := p.URL() + "/v2/test/blobs/" + d.String()

	// A short stall delays the answer, which then comes whole.
	p.Stall(1, 50*time.Millisecond)
	start := time.Now()
	st, body, err := fetch(t, t.Context(), "GET", blobURL, "")
	if el := time.Since(start); err != nil || st != 200 || !bytes.Equal(body, blob) || el < 50*time.Millisecond {
		t.Errorf("GET with Stall(50ms) = %d, %d bytes, %v after %v; want the blob after ≥ 50ms", st, len(body), err, el)
	}

	// A long stall ends when the client gives up.
	p.Stall(1, time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := fetch(t, ctx, "GET", blobURL, ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("GET with Stall(1h) = %v, want the client's deadline", err)
	}
	if st, _, err := fetch(t, t.Context(), "GET", blobURL, ""); err != nil || st != 200 {
		t.Errorf("GET after the stall = %d, %v", st, err)
	}
	var stalled []ProxyRequest
	for _, r := range p.Requests() {
		if r.Fault == "stall" {
			stalled = append(stalled, r)
		}
	}
	if len(stalled) != 2 || stalled[1].Status != 0 || stalled[1].Bytes != 0 {
		t.Errorf("stalled requests = %+v, want two, the abandoned one with nothing sent", stalled)
	}
	t.Run("Cleanup ends a stall", func(t *testing.T) {
		done := make(chan error, 1)
		// Registered before the proxy, so it runs after the proxy's Cleanup.
		t.Cleanup(func() {
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("stalled request succeeded after the proxy closed")
				}
			case <-time.After(10 * time.Second):
				t.Errorf("stalled request still running 10 s after the proxy closed")
			}
		})
		p := NewFaultProxy(t, up)
		p.Stall(1, time.Hour)
		go func() {
			resp, err := http.Get(p.URL() + "/v2/test/blobs/" + d.String())
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		deadline := time.Now().Add(5 * time.Second)
		for p.PendingFaults() != 0 { // until the handler has taken the stall
			if time.Now().After(deadline) {
				t.Fatalf("the request did not reach the proxy within 5 s")
			}
			time.Sleep(time.Millisecond)
		}
	})
}

func TestFaultProxyInFrontOfRegistry(t *testing.T) {
	reg := StartRegistry(t)
	p := NewFaultProxy(t, reg.Addr)
	// Pushing through the proxy: upload Locations point back at it.
	files := []File{{Path: "data", Size: 3 << 20, Seed: 2}}
	pushed := PushImageInfo(t, p.Addr, "test/proxied:v1", []Layer{WriteLayer(t, files, "application/vnd.oci.image.layer.v1.tar+gzip")}, ImageConfig{})
	layer := digest.Digest(pushed.Layers[0].Digest.String())
	if s := p.Stats(); s.OtherRequests == 0 || s.BlobRequests == 0 {
		t.Errorf("push through proxy: %+v", s)
	}
	p.ClearStats()
	p.Fail(500, 1)
	url := p.URL() + "/v2/test/proxied/blobs/" + layer.String()
	if st, _, _ := fetch(t, t.Context(), "GET", url, "bytes=4096-8191"); st != 500 {
		t.Errorf("GET with Fail(500) = %d", st)
	}
	st, body, err := fetch(t, t.Context(), "GET", url, "bytes=4096-8191")
	if err != nil || st != 206 || len(body) != 4096 {
		t.Errorf("GET range through proxy = %d, %d bytes, %v", st, len(body), err)
	}
	s := p.Stats().Blobs[layer]
	if s.Requests != 2 || s.Bytes != 4096+int64(len(`{"errors":[{"code":"UNAVAILABLE","message":"fault injected by testutil.FaultProxy: 500"}]}`+"\n")) ||
		strings.Join(s.Ranges, ",") != "bytes=4096-8191,bytes=4096-8191" {
		t.Errorf("proxy stats for layer = %+v", s)
	}
	// The registry saw only the request that got through.
	var seen []BlobRequest
	for _, g := range reg.BlobGets(t) {
		if g.Digest == layer && g.Method == "GET" {
			seen = append(seen, g)
		}
	}
	if len(seen) != 1 || seen[0].Offset != 4096 || seen[0].Written != 4096 || seen[0].Status != 206 {
		t.Errorf("registry log for layer = %+v, want one 206 at 4096 of 4096 bytes", seen)
	}
}
