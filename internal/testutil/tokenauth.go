package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// registryLeeway is how long past a token's exp (and before its nbf)
// docker-registry still accepts it: distribution's registry/auth/token
// adds a fixed 60 s of clock-skew leeway to both checks.
const registryLeeway = 60 * time.Second

// TokenServer is a Docker token server ("the realm" of docker-registry's
// `auth: token:`) on loopback for tests: it answers GET /token?service=…&scope=…
// as distribution's token specification says, with a JWT signed by an
// ECDSA P-256 key whose self-signed certificate the registry trusts
// (rootcertbundle) and which the token carries in its x5c header.
//
// A request with the right basic credentials gets every action it asks
// for; one without credentials gets an anonymous token with no access (as
// Docker Hub answers for a private repository: the registry then refuses
// it); one with wrong credentials gets 401. Tokens are accepted by the
// registry for Lifetime after they were issued, and the answer's
// expires_in says so (docker's spec asks for at least 60 s; a short one is
// the point here).
//
// Safe for concurrent use. Closed in t.Cleanup.
type TokenServer struct {
	Addr     string // 127.0.0.1:PORT
	Service  string // the registry's service name: the tokens' aud
	Issuer   string // the tokens' iss
	CertPath string // PEM of the signing certificate: the registry's rootcertbundle
	User     string // the basic credentials it accepts
	Password string // at the start; SetPassword changes it

	lifetime time.Duration
	key      *ecdsa.PrivateKey
	certDER  []byte
	srv      *http.Server

	mu       sync.Mutex // guards password, issued and requests
	password string
	issued   []IssuedToken
	requests []TokenRequest
}

// TokenServerConfig configures StartTokenServer. The zero value is usable.
type TokenServerConfig struct {
	// Lifetime is how long the registry accepts a token after it was
	// issued. 0 = 5 minutes.
	Lifetime time.Duration
	// User and Password are the credentials it accepts. "" = "lazy" and
	// "s3cret-pass".
	User, Password string
}

// TokenRequest is one request to the token endpoint.
type TokenRequest struct {
	Service string
	Scopes  []string
	User    string // the basic auth user, "" without basic auth
	Status  int    // the status answered
}

// IssuedToken is a token the server issued.
type IssuedToken struct {
	At      time.Time
	User    string    // "" for an anonymous token
	Access  []string  // granted, as "repository:NAME:ACTIONS"
	Expires time.Time // the last moment the registry accepts it
}

// StartTokenServer starts a token server on a free loopback port.
func StartTokenServer(t testing.TB, cfg TokenServerConfig) *TokenServer {
	t.Helper()
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = 5 * time.Minute
	}
	if cfg.User == "" {
		cfg.User = "lazy"
	}
	if cfg.Password == "" {
		cfg.Password = "s3cret-pass"
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("StartTokenServer: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lazyfs test token signer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("StartTokenServer: certificate: %v", err)
	}
	certPath := filepath.Join(t.TempDir(), "token-signer.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatalf("StartTokenServer: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("StartTokenServer: %v", err)
	}
	ts := &TokenServer{
		Addr:     l.Addr().String(),
		Service:  "lazyfs-test-registry",
		Issuer:   "lazyfs-test-token-server",
		CertPath: certPath,
		User:     cfg.User,
		Password: cfg.Password,
		password: cfg.Password,
		lifetime: cfg.Lifetime,
		key:      key,
		certDER:  der,
	}
	ts.srv = &http.Server{Handler: http.HandlerFunc(ts.serve), ErrorLog: log.New(io.Discard, "", 0)}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = ts.srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = ts.srv.Close()
		<-served
	})
	return ts
}

// Realm is the token endpoint's URL as the registry's challenge names it.
//
// It names the host "localhost", not 127.0.0.1: go-containerregistry
// refuses a realm on a loopback or private IP literal other than the
// registry's own host:port (its guard against a registry sending the
// client's credentials to an internal service), and a DNS name is what a
// real token service has.
func (ts *TokenServer) Realm() string {
	_, port, _ := net.SplitHostPort(ts.Addr)
	return "http://localhost:" + port + "/token"
}

// Lifetime is how long the registry accepts a token after it was issued.
func (ts *TokenServer) Lifetime() time.Duration { return ts.lifetime }

// SetPassword makes the server accept password instead from now on (as
// when an account's password is changed or its access token revoked).
func (ts *TokenServer) SetPassword(password string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	ts.password = password
}

// Issued returns the tokens issued so far, oldest first.
func (ts *TokenServer) Issued() []IssuedToken {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]IssuedToken(nil), ts.issued...)
}

// Requests returns the token requests so far, oldest first.
func (ts *TokenServer) Requests() []TokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]TokenRequest(nil), ts.requests...)
}

// DockerConfig writes a Docker config.json holding ts's credentials for
// registry (host:port) into a new temporary directory and returns the
// directory, for DOCKER_CONFIG. password "" writes ts.Password.
func (ts *TokenServer) DockerConfig(t testing.TB, registry, password string) string {
	t.Helper()
	if password == "" {
		password = ts.Password
	}
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(ts.User + ":" + password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, registry, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatalf("DockerConfig: %v", err)
	}
	return dir
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := TokenRequest{Service: q.Get("service")}
	// Scopes come as repeated parameters, each possibly space separated.
	for _, s := range q["scope"] {
		req.Scopes = append(req.Scopes, strings.Fields(s)...)
	}
	user, pass, hasBasic := r.BasicAuth()
	if hasBasic {
		req.User = user
	}
	ts.mu.Lock()
	credsOK := hasBasic && user == ts.User && pass == ts.password
	ts.mu.Unlock()
	req.Status = ts.answer(w, r, req, credsOK)
	ts.mu.Lock()
	ts.requests = append(ts.requests, req)
	ts.mu.Unlock()
}

// answer writes the reply to one token request and returns its status.
func (ts *TokenServer) answer(w http.ResponseWriter, r *http.Request, req TokenRequest, credsOK bool) int {
	fail := func(status int, code, msg string) int {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
		return status
	}
	switch {
	case r.URL.Path != "/token":
		return fail(http.StatusNotFound, "NOT_FOUND", "no such endpoint")
	case r.Method != http.MethodGet:
		return fail(http.StatusMethodNotAllowed, "UNSUPPORTED", "only GET")
	case req.Service != ts.Service:
		return fail(http.StatusBadRequest, "INVALID_REQUEST", "unknown service")
	case req.User != "" && !credsOK:
		return fail(http.StatusUnauthorized, "UNAUTHORIZED", "wrong user name or password")
	}
	var access []tokenAccess
	var granted []string
	if credsOK {
		for _, s := range req.Scopes {
			typ, rest, ok := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if !ok || i < 0 || typ != "repository" {
				continue
			}
			name, actions := rest[:i], rest[i+1:]
			access = append(access, tokenAccess{Type: typ, Name: name, Actions: strings.Split(actions, ",")})
			granted = append(granted, s)
		}
	}
	now := time.Now()
	tok, expires, err := ts.sign(req.User, access, now)
	if err != nil {
		return fail(http.StatusInternalServerError, "UNKNOWN", err.Error())
	}
	ts.mu.Lock()
	ts.issued = append(ts.issued, IssuedToken{At: now, User: req.User, Access: granted, Expires: expires})
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(ts.lifetime.Round(time.Second) / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
	return http.StatusOK
}

type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// sign makes the JWS compact serialization of a token for sub with access,
// issued at now: ES256, the certificate in x5c (distribution verifies the
// chain against its rootcertbundle and takes the key from the leaf).
// It returns the token and the last moment the registry accepts it.
func (ts *TokenServer) sign(sub string, access []tokenAccess, now time.Time) (string, time.Time, error) {
	header, err := json.Marshal(map[string]any{
		"typ": "JWT",
		"alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	})
	if err != nil {
		return "", time.Time{}, err
	}
	if access == nil {
		access = []tokenAccess{}
	}
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, err
	}
	// The registry adds its leeway to exp (whole seconds): take it off so
	// that the registry accepts the token for at most the lifetime.
	exp := now.Add(ts.lifetime - registryLeeway).Unix()
	claims, err := json.Marshal(map[string]any{
		"iss":    ts.Issuer,
		"sub":    sub,
		"aud":    ts.Service,
		"exp":    exp,
		"nbf":    now.Unix(),
		"iat":    now.Unix(),
		"jti":    base64.RawURLEncoding.EncodeToString(b),
		"access": access,
	})
	if err != nil {
		return "", time.Time{}, err
	}
	enc := base64.RawURLEncoding
	signed := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signed))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", time.Time{}, err
	}
	// JWS ES256: R and S as 32-byte big-endian integers, back to back.
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signed + "." + enc.EncodeToString(sig), time.Unix(exp, 0).Add(registryLeeway), nil
}
