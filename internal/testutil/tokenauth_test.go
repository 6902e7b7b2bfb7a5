package testutil

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// token asks ts for a token for scope, with user:pass unless user is "".
func token(t *testing.T, ts *TokenServer, scope, user, pass string) (status int, tok string, expiresIn int) {
	t.Helper()
	u := fmt.Sprintf("http://%s/token?service=%s&scope=%s", ts.Addr, url.QueryEscape(ts.Service), url.QueryEscape(scope))
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("token answer: %v", err)
		}
		if body.Token == "" || body.AccessToken != body.Token || body.IssuedAt == "" {
			t.Fatalf("token answer = %+v, want token, access_token and issued_at", body)
		}
	}
	return resp.StatusCode, body.Token, body.ExpiresIn
}

// TestTokenAuthRegistry checks the token server against the real
// docker-registry: its tokens are accepted for what they grant, until the
// lifetime is over, and the challenges name its realm.
func TestTokenAuthRegistry(t *testing.T) {
	ts := StartTokenServer(t, TokenServerConfig{Lifetime: 2 * time.Second})
	reg := StartRegistry(t, WithTokenAuth(ts))
	if reg.PushAddr == reg.Addr {
		t.Fatalf("PushAddr = Addr = %s, want a registry without auth", reg.Addr)
	}
	p := PushImageInfo(t, reg.PushAddr, "test/auth:v1", []Layer{{Blob: Tar(t, []File{{Path: "f", Data: []byte("x")}})}}, ImageConfig{})
	manifestURL := "http://" + reg.Addr + "/v2/test/auth/manifests/v1"

	status, hdr, _ := get(t, manifestURL, map[string]string{"Accept": acceptAll})
	wantChallenge := fmt.Sprintf(`Bearer realm=%q,service=%q,scope="repository:test/auth:pull"`, ts.Realm(), ts.Service)
	if status != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != wantChallenge {
		t.Fatalf("GET manifest without a token = %d, WWW-Authenticate %q; want 401, %q", status, hdr.Get("WWW-Authenticate"), wantChallenge)
	}

	status, tok, expiresIn := token(t, ts, "repository:test/auth:pull", ts.User, ts.Password)
	if status != http.StatusOK || expiresIn != 2 {
		t.Fatalf("token with the right password = %d, expires_in %d; want 200, 2", status, expiresIn)
	}
	issued := ts.Issued()
	if len(issued) != 1 || issued[0].User != ts.User || len(issued[0].Access) != 1 {
		t.Fatalf("Issued() = %+v, want one token for %s with pull access", issued, ts.User)
	}
	bearer := map[string]string{"Accept": acceptAll, "Authorization": "Bearer " + tok}
	if status, _, _ := get(t, manifestURL, bearer); status != http.StatusOK {
		t.Fatalf("GET manifest with a fresh token = %d, want 200", status)
	}
	pullManifest(t, reg.PushAddr, "test/auth", "v1", p.Digest)

	// The token grants pull of test/auth only.
	status, hdr, _ = get(t, "http://"+reg.Addr+"/v2/test/other/manifests/v1", bearer)
	if status != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("GET another repository's manifest = %d, %q; want 401 insufficient_scope", status, hdr.Get("WWW-Authenticate"))
	}
	// No credentials: an anonymous token without access.
	status, anon, _ := token(t, ts, "repository:test/auth:pull", "", "")
	if status != http.StatusOK {
		t.Fatalf("anonymous token = %d, want 200", status)
	}
	if status, _, _ := get(t, manifestURL, map[string]string{"Authorization": "Bearer " + anon}); status != http.StatusUnauthorized {
		t.Errorf("GET manifest with an anonymous token = %d, want 401", status)
	}
	// Wrong password: no token.
	if status, _, _ := token(t, ts, "repository:test/auth:pull", ts.User, "wrong"); status != http.StatusUnauthorized {
		t.Errorf("token with a wrong password = %d, want 401", status)
	}

	// Once the lifetime is over the registry refuses the token.
	time.Sleep(time.Until(issued[0].Expires) + 1100*time.Millisecond) // and a margin
	status, hdr, _ = get(t, manifestURL, bearer)
	if status != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("GET manifest %v after the token was issued = %d, %q; want 401 invalid_token",
			time.Since(issued[0].At).Round(time.Millisecond), status, hdr.Get("WWW-Authenticate"))
	}
	// So is a blob read, and the registry's log says why.
	blob := p.Layers[0].Digest.String()
	if status, _, _ := get(t, "http://"+reg.Addr+"/v2/test/auth/blobs/"+blob, bearer); status != http.StatusUnauthorized {
		t.Errorf("GET blob with the expired token = %d, want 401", status)
	}
	gets := reg.BlobGets(t)
	if len(gets) != 1 || gets[0].Status != http.StatusUnauthorized || gets[0].AuthError != "invalid token" || gets[0].Digest.String() != blob {
		t.Errorf("BlobGets() = %+v, want the GET of %s refused: invalid token", gets, blob)
	}
	reqs := ts.Requests()
	if len(reqs) != 3 || reqs[0].Scopes[0] != "repository:test/auth:pull" || reqs[2].Status != http.StatusUnauthorized {
		t.Errorf("Requests() = %+v, want 3 with the scope asked for, the last refused", reqs)
	}
}
