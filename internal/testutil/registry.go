package testutil

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/registrylog"
)

// RegistryBinary is Debian's docker-registry (distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// registryStartTimeout bounds the wait for /v2/ to answer.
const registryStartTimeout = 15 * time.Second

// Registry is a docker-registry process serving plain HTTP on loopback,
// started by StartRegistry and killed when the test ends.
type Registry struct {
	Addr    string // 127.0.0.1:PORT
	Dir     string // holds the config (registry.yml), data/ and the log
	LogPath string // everything the registry printed: JSON app log and access log

	// PushAddr is where tests push their images (PushImage and the
	// others take it): Addr, or with WithTokenAuth a second docker-registry
	// serving the same storage without auth (its log is not LogPath).
	PushAddr string
}

// URL returns "http://" + r.Addr.
func (r *Registry) URL() string { return "http://" + r.Addr }

// RegistryOption changes how StartRegistry configures docker-registry.
type RegistryOption func(*registryOptions)

type registryOptions struct {
	token *TokenServer
}

// WithTokenAuth makes the registry require bearer tokens issued by ts
// (docker-registry's `auth: token:` with ts's realm, service, issuer and
// certificate): every request without a valid token, an expired one
// included, is answered 401 with a Bearer challenge naming ts.Realm().
func WithTokenAuth(ts *TokenServer) RegistryOption {
	return func(o *registryOptions) { o.token = ts }
}

// StartRegistry starts docker-registry on a free loopback port with its
// storage under t.TempDir and waits (at most 15 s) until /v2/ answers. The
// process is killed and waited for in t.Cleanup. Without the binary the test
// is skipped, or fails under LAZYFS_REQUIRE_REGISTRY=1. Without options it
// needs no credentials.
//
// The registry logs at debug level in JSON so that BlobGets can tell which
// byte ranges were served; its access log (combined log format, no Range
// header) is in the same file.
func StartRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		skipOrFail(t, "StartRegistry: %s missing (apt-get install docker-registry, or scripts/install-deps.sh)", RegistryBinary)
	}
	var o registryOptions
	for _, opt := range opts {
		opt(&o)
	}
	r := &Registry{Dir: t.TempDir()}
	r.Addr, r.LogPath = launchRegistry(t, r.Dir, "registry", o.token)
	r.PushAddr = r.Addr
	if o.token != nil {
		r.PushAddr, _ = launchRegistry(t, r.Dir, "registry-open", nil)
	}
	return r
}

// launchRegistry starts one docker-registry process on the storage under
// dir, with its files named after name, and returns its address and log.
func launchRegistry(t testing.TB, dir, name string, token *TokenServer) (addr, logPath string) {
	t.Helper()
	var lastErr error
	for attempt := range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatalf("StartRegistry: find a free port: %v", err)
		}
		logPath := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, attempt))
		err = startRegistryProcess(t, dir, name, addr, logPath, token)
		if err == nil {
			return addr, logPath
		}
		lastErr = err
		// Most likely the port was taken between our probe and the
		// registry's bind: try another one.
		t.Logf("StartRegistry: attempt %d on %s: %v", attempt+1, addr, err)
	}
	t.Fatalf("StartRegistry: %v", lastErr)
	return "", ""
}

// freeLoopbackAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// registryConfig is the config file of docker-registry 2.8; %s are the
// storage directory and the listen address.
const registryConfig = `version: 0.1
log:
  level: debug
  formatter: json
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: lazyfs-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
`

// registryTokenAuth is the auth section for WithTokenAuth; %q are the
// realm, service, issuer and certificate bundle.
const registryTokenAuth = `auth:
  token:
    realm: %q
    service: %q
    issuer: %q
    rootcertbundle: %q
`

func startRegistryProcess(t testing.TB, dir, name, addr, logPath string, token *TokenServer) error {
	cfgPath := filepath.Join(dir, name+".yml")
	cfg := fmt.Sprintf(registryConfig, filepath.Join(dir, "data"), addr)
	if token != nil {
		cfg += fmt.Sprintf(registryTokenAuth, token.Realm(), token.Service, token.Issuer, token.CertPath)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(RegistryBinary, "serve", cfgPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", RegistryBinary, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	client := &http.Client{Timeout: time.Second}
	deadline := time.NewTimer(registryStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("docker-registry exited before answering (%v): %s", err, TailFile(logPath, 2000))
		case <-deadline.C:
			stop()
			return fmt.Errorf("docker-registry on %s did not answer /v2/ within %v: %s", addr, registryStartTimeout, TailFile(logPath, 2000))
		case <-tick.C:
		}
		resp, err := client.Get("http://" + addr + "/v2/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		// With token auth, up means: asks for a token.
		up := resp.StatusCode == http.StatusOK ||
			(token != nil && resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer "))
		if up {
			t.Cleanup(stop)
			return nil
		}
	}
}

// TailFile returns up to the last n bytes of a file, for error messages.
func TailFile(path string, n int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

// BlobRequest is one GET or HEAD of a blob as the registry logged it.
type BlobRequest struct {
	Method string
	Repo   string
	Digest digest.Digest
	Status int
	// Written is the number of body bytes the registry sent.
	Written int64
	// Offset is where in the blob the body started, taken from the storage
	// driver's debug log (the registry does not log the Range header); -1
	// when unknown (HEAD, errors). The served range is [Offset, Offset+Written).
	Offset int64
	// AuthError is why the registry's auth refused the request (Status
	// 401), e.g. "invalid token" for an expired one; "" if it did not.
	AuthError string
}

// BlobGets parses the registry's log for the GET and HEAD requests of
// /v2/<repo>/blobs/<digest> completed (or refused by its auth) so far, in
// the order they completed.
//
// docker-registry 2.8 does not record the Range header anywhere (neither in
// the access log nor at debug level). What it does record at debug level is
// the offset its storage driver starts reading at, and on completion the
// status and the bytes written; BlobRequest reports those. FaultProxy sees
// the Range headers themselves.
func (r *Registry) BlobGets(t testing.TB) []BlobRequest {
	t.Helper()
	f, err := os.Open(r.LogPath)
	if err != nil {
		t.Fatalf("BlobGets: %v", err)
	}
	defer f.Close()
	reqs, err := registrylog.Parse(f)
	if err != nil {
		t.Fatalf("BlobGets: read %s: %v", r.LogPath, err)
	}
	var out []BlobRequest
	for _, q := range reqs {
		if q.Digest == "" || (q.Method != http.MethodGet && q.Method != http.MethodHead) {
			continue
		}
		off := q.Offset
		if q.Method == http.MethodHead {
			off = -1
		}
		out = append(out, BlobRequest{
			Method:    q.Method,
			Repo:      q.Repo,
			Digest:    q.Digest,
			Status:    q.Status,
			Written:   q.Written,
			Offset:    off,
			AuthError: q.AuthError,
		})
	}
	return out
}
