package testutil

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestBlobStore checks the redirecting front and the storage server on
// docker-registry with token auth.
func TestBlobStore(t *testing.T) {
	ts := StartTokenServer(t, TokenServerConfig{})
	reg := StartRegistry(t, WithTokenAuth(ts))
	blob := Tar(t, []File{{Path: "big", Size: 1 << 20, Seed: 3}})
	p := PushImageInfo(t, reg.PushAddr, "test/store:v1", []Layer{{Blob: blob}}, ImageConfig{})
	bs := StartBlobStore(t, reg)
	blobURL := "http://" + bs.Addr + "/v2/test/store/blobs/" + p.Layers[0].Digest.String()

	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	noFollow := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, url string, hdr map[string]string) (*http.Response, []byte, error) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}

	// Without a token: the registry's own 401.
	resp, _, _ := do(http.MethodGet, blobURL, nil)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" || bs.Redirects() != 0 {
		t.Fatalf("GET blob without a token = %d (WWW-Authenticate %q), %d redirects; want the registry's 401, none",
			resp.StatusCode, resp.Header.Get("WWW-Authenticate"), bs.Redirects())
	}
	_, tok, _ := token(t, ts, "repository:test/store:pull", ts.User, ts.Password)
	resp, _, _ = do(http.MethodGet, blobURL, map[string]string{"Authorization": "Bearer " + tok, "Range": "bytes=100-199"})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || bs.Redirects() != 1 {
		t.Fatalf("GET blob with a token = %d, Location %q; want 307", resp.StatusCode, loc)
	}

	resp, body, err := do(http.MethodGet, loc, map[string]string{"Range": "bytes=100-199"})
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, blob[100:200]) {
		t.Errorf("GET the storage URL with Range bytes=100-199 = %d, %d bytes, %v; want 206 and the bytes", resp.StatusCode, len(body), err)
	}
	if resp, _, _ := do(http.MethodGet, loc, map[string]string{"Authorization": "Bearer " + tok}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("GET the storage URL with an Authorization header = %d, want 400", resp.StatusCode)
	}
	if resp, _, _ := do(http.MethodGet, loc+"0", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET the storage URL with a wrong signature = %d, want 403", resp.StatusCode)
	}
	bs.Short(1)
	resp, body, err = do(http.MethodGet, loc, map[string]string{"Range": "bytes=0-9999"})
	if resp.StatusCode != http.StatusPartialContent || !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 5000 {
		t.Errorf("GET under Short = %d, %d bytes, %v; want 206, 5000 bytes and an unexpected EOF", resp.StatusCode, len(body), err)
	}

	ld := digest.Digest(p.Layers[0].Digest.String())
	reqs := bs.Requests()
	want := []StoreRequest{
		{Method: "GET", Digest: ld, Range: "bytes=100-199", Status: 206, Bytes: 100},
		{Method: "GET", Digest: ld, Authorization: true, Status: 400},
		{Method: "GET", Digest: ld, Status: 403},
		{Method: "GET", Digest: ld, Range: "bytes=0-9999", Status: 206, Bytes: 5000, Short: true},
	}
	if len(reqs) != len(want) {
		t.Fatalf("Requests() = %+v, want %+v", reqs, want)
	}
	for i := range want {
		if reqs[i].Status != want[i].Status || reqs[i].Range != want[i].Range || reqs[i].Authorization != want[i].Authorization ||
			reqs[i].Digest != want[i].Digest || reqs[i].Short != want[i].Short || (want[i].Bytes > 0 && reqs[i].Bytes != want[i].Bytes) {
			t.Errorf("Requests()[%d] = %+v, want %+v", i, reqs[i], want[i])
		}
	}
}
