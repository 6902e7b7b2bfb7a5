package testutil

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// RegistryBinary is Debian's docker-registry (distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// registryStartTimeout bounds the wait for /v2/ to answer.
const registryStartTimeout = 15 * time.Second

// Registry is a docker-registry process serving plain HTTP on loopback,
// started by StartRegistry and killed when the test ends.
type Registry struct {
	Addr    string // 127.0.0.1:PORT
	Dir     string // holds config.yml, data/ and the log
	LogPath string // everything the registry printed: JSON app log and access log
}

// URL returns "http://" + r.Addr.
func (r *Registry) URL() string { return "http://" + r.Addr }

// StartRegistry starts docker-registry on a free loopback port with its
// storage under t.TempDir and waits (at most 15 s) until /v2/ answers. The
// process is killed and waited for in t.Cleanup. Without the binary the test
// is skipped, or fails under LAZYFS_REQUIRE_REGISTRY=1.
//
// The registry logs at debug level in JSON so that BlobGets can tell which
// byte ranges were served; its access log (combined log format, no Range
// header) is in the same file.
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		skipOrFail(t, "StartRegistry: %s missing (apt-get install docker-registry, or scripts/install-deps.sh)", RegistryBinary)
	}
	dir := t.TempDir()
	var lastErr error
	for attempt := range 5 {
		addr, err := freeLoopbackAddr()
		if err != nil {
			t.Fatalf("StartRegistry: find a free port: %v", err)
		}
		r := &Registry{Addr: addr, Dir: dir, LogPath: filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))}
		err = r.start(t)
		if err == nil {
			return r
		}
		lastErr = err
		// Most likely the port was taken between our probe and the
		// registry's bind: try another one.
		t.Logf("StartRegistry: attempt %d on %s: %v", attempt+1, addr, err)
	}
	t.Fatalf("StartRegistry: %v", lastErr)
	return nil
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

// registryConfig is the config.yml for docker-registry 2.8; %s are the
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

func (r *Registry) start(t testing.TB) error {
	cfgPath := filepath.Join(r.Dir, "config.yml")
	cfg := fmt.Sprintf(registryConfig, filepath.Join(r.Dir, "data"), r.Addr)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(r.LogPath)
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
			return fmt.Errorf("docker-registry exited before answering (%v): %s", err, tailFile(r.LogPath, 2000))
		case <-deadline.C:
			stop()
			return fmt.Errorf("docker-registry on %s did not answer /v2/ within %v: %s", r.Addr, registryStartTimeout, tailFile(r.LogPath, 2000))
		case <-tick.C:
		}
		resp, err := client.Get(r.URL() + "/v2/")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Cleanup(stop)
			return nil
		}
	}
}

// tailFile returns up to the last n bytes of a file, for error messages.
func tailFile(path string, n int64) string {
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
}

var (
	blobURIRe   = regexp.MustCompile(`^/v2/(.+)/blobs/([a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+)$`)
	readerMsgRe = regexp.MustCompile(`^filesystem\.Reader\(".*", (\d+)\)$`)
)

// BlobGets parses the registry's log for the GET and HEAD requests of
// /v2/<repo>/blobs/<digest> completed so far, in the order they completed.
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
	offsets := map[string]int64{} // request id → first reader offset
	var out []BlobRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue // access log line or partial line
		}
		var e struct {
			Msg     string `json:"msg"`
			ID      string `json:"http.request.id"`
			Method  string `json:"http.request.method"`
			URI     string `json:"http.request.uri"`
			Status  int    `json:"http.response.status"`
			Written int64  `json:"http.response.written"`
		}
		if json.Unmarshal(line, &e) != nil {
			continue
		}
		m := blobURIRe.FindStringSubmatch(e.URI)
		if m == nil || (e.Method != http.MethodGet && e.Method != http.MethodHead) {
			continue
		}
		if sm := readerMsgRe.FindStringSubmatch(e.Msg); sm != nil {
			if _, seen := offsets[e.ID]; !seen {
				off, _ := strconv.ParseInt(sm[1], 10, 64)
				offsets[e.ID] = off
			}
			continue
		}
		if !strings.HasPrefix(e.Msg, "response completed") {
			continue
		}
		off, ok := offsets[e.ID]
		if !ok || e.Method == http.MethodHead {
			off = -1
		}
		delete(offsets, e.ID)
		out = append(out, BlobRequest{
			Method:  e.Method,
			Repo:    m[1],
			Digest:  digest.Digest(m[2]),
			Status:  e.Status,
			Written: e.Written,
			Offset:  off,
		})
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		t.Fatalf("BlobGets: read %s: %v", r.LogPath, err)
	}
	return out
}
