package fetch

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// authServer puts basic or bearer-token auth in front of a registry
// handler. The token endpoint, /token on the same host (ggcr refuses a
// realm on another loopback host), checks basic credentials.
type authServer struct {
	inner      http.Handler
	bearer     bool
	user, pass string

	mu      sync.Mutex // guards the fields below
	valid   map[string]bool
	issued  int
	queries []url.Values // of token requests
}

func (s *authServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, hasBasic := r.BasicAuth()
	credsOK := hasBasic && user == s.user && pass == s.pass
	if r.URL.Path == "/token" {
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.Query())
		s.mu.Unlock()
		if !credsOK {
			registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "bad credentials")
			return
		}
		s.mu.Lock()
		s.issued++
		tok := fmt.Sprintf("tok-%d", s.issued)
		s.valid[tok] = true
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300})
		return
	}
	if !s.bearer {
		if !credsOK {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		s.inner.ServeHTTP(w, r)
		return
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	ok := s.valid[tok]
	s.mu.Unlock()
	if !ok {
		challenge := fmt.Sprintf(`Bearer realm="http://%s/token",service="fake-registry"`, r.Host)
		if r.URL.Path != "/v2/" {
			challenge += `,scope="repository:lazy/img:pull"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	s.inner.ServeHTTP(w, r)
}

// revoke makes every issued token invalid, as an expiry would.
func (s *authServer) revoke() {
	s.mu.Lock()
	clear(s.valid)
	s.mu.Unlock()
}

func (s *authServer) tokenRequests() []url.Values {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]url.Values(nil), s.queries...)
}

// dockerConfig writes a Docker config.json with user:pass for host into a
// temp dir and points DOCKER_CONFIG (and HOME, so that ~/.docker is not
// read) at it.
func dockerConfig(t *testing.T, host, user, pass string) {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "")
}

func newAuthFixture(t *testing.T, bearer bool) (*imageFixture, *authServer) {
	var as *authServer
	fx := newImageFixtureBehind(t, func(h http.Handler) http.Handler {
		as = &authServer{inner: h, bearer: bearer, user: "lazy", pass: "s3cret-pass", valid: map[string]bool{}}
		return as
	})
	return fx, as
}

// defaultKeychainClient is a Client that reads credentials as Docker does.
func defaultKeychainClient(t *testing.T) *Client {
	return New(Config{Backoff: 1, Platform: platform("linux", "amd64", ""), Logger: testLogger(t)})
}

func TestBearerAuth(t *testing.T) {
	fx, as := newAuthFixture(t, true)
	dockerConfig(t, fx.host, "lazy", "s3cret-pass")
	c := defaultKeychainClient(t)
	ctx := t.Context()

	img, err := c.Resolve(ctx, fx.repo+":multi")
	if err != nil {
		t.Fatalf("Resolve behind bearer auth = %v", err)
	}
	if img.Digest != fx.amd64 {
		t.Errorf("Resolve = %s, want %s", img.Digest, fx.amd64)
	}
	if _, err := c.ReadRange(ctx, fx.repo, fx.layer, 10, 100); err != nil {
		t.Fatalf("ReadRange behind bearer auth = %v", err)
	}
	q := as.tokenRequests()
	if len(q) != 1 {
		t.Fatalf("token requests = %d, want 1 (the token is kept)", len(q))
	}
	if q[0].Get("service") != "fake-registry" || q[0].Get("scope") != "repository:lazy/img:pull" {
		t.Errorf("token request = %v, want service fake-registry and scope repository:lazy/img:pull", q[0])
	}

	// An expired token is refreshed on the 401 and the read goes through.
	as.revoke()
	if _, err := c.ReadRange(ctx, fx.repo, fx.layer, 10, 100); err != nil {
		t.Fatalf("ReadRange after the token expired = %v", err)
	}
	if n := len(as.tokenRequests()); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
}

func TestBearerAuthBadCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config bool
	}{{"wrong password", true}, {"no credentials", false}} {
		t.Run(tc.name, func(t *testing.T) {
			fx, _ := newAuthFixture(t, true)
			if tc.config {
				dockerConfig(t, fx.host, "lazy", "wrong-pass")
			} else {
				dockerConfig(t, "other.example:5000", "lazy", "s3cret-pass")
			}
			_, err := defaultKeychainClient(t).Resolve(t.Context(), fx.repo+":multi")
			var herr *HTTPError
			if !errors.As(err, &herr) || herr.Status != http.StatusUnauthorized {
				t.Fatalf("Resolve with %s = %v, want *HTTPError 401", tc.name, err)
			}
			if strings.Contains(err.Error(), "pass") {
				t.Errorf("error %q shows credentials", err)
			}
		})
	}
}

func TestBasicAuth(t *testing.T) {
	fx, _ := newAuthFixture(t, false)
	dockerConfig(t, fx.host, "lazy", "s3cret-pass")
	c := defaultKeychainClient(t)
	img, err := c.Resolve(t.Context(), fx.repo+":multi")
	if err != nil {
		t.Fatalf("Resolve behind basic auth = %v", err)
	}
	got, err := c.ReadRange(t.Context(), img.Repo, img.Manifest.Layers[0].Digest, 0, 3000)
	if err != nil {
		t.Fatalf("ReadRange behind basic auth = %v", err)
	}
	if !bytes.Equal(got, testData(3000, 3)) {
		t.Errorf("ReadRange behind basic auth returned other bytes")
	}

	dockerConfig(t, fx.host, "lazy", "wrong")
	_, err = defaultKeychainClient(t).ReadRange(t.Context(), fx.repo, fx.layer, 0, 10)
	var herr *HTTPError
	if !errors.As(err, &herr) || herr.Status != http.StatusUnauthorized {
		t.Errorf("ReadRange with a wrong password = %v, want *HTTPError 401", err)
	}
}
