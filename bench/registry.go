package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/lazyfs/lazyfs/internal/registrylog"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// RegistryBinary is Debian's docker-registry (distribution 2.8).
const RegistryBinary = "/usr/bin/docker-registry"

// Registry is docker-registry serving plain HTTP inside the link's
// namespace, with its storage and log on the host's file system.
type Registry struct {
	Addr    string // NSAddr:5000, reached directly (unshaped until Link.Shape)
	Dir     string
	LogPath string

	cmd    *exec.Cmd
	exited chan error
}

// registryConfig is docker-registry 2.8's config.yml; %s are the storage
// directory and the listen address. Debug level, because only there does
// it log the offset a ranged blob read starts at.
const registryConfig = `version: 0.1
log:
  level: debug
  formatter: json
  accesslog:
    disabled: true
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
  secret: lazybench-secret
`

// StartRegistry starts docker-registry in l's namespace with its files
// under dir and waits (at most 15 s) until /v2/ answers.
func StartRegistry(ctx context.Context, l *Link, dir string) (*Registry, error) {
	if _, err := os.Stat(RegistryBinary); err != nil {
		return nil, fmt.Errorf("registry: %w (apt-get install docker-registry)", err)
	}
	r := &Registry{Addr: l.NSAddr + ":5000", Dir: dir, LogPath: filepath.Join(dir, "registry.log"), exited: make(chan error, 1)}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg, fmt.Appendf(nil, registryConfig, filepath.Join(dir, "data"), r.Addr), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(r.LogPath)
	if err != nil {
		return nil, err
	}
	r.cmd = exec.Command("ip", "netns", "exec", l.NS, RegistryBinary, "serve", cfg)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	go func() { r.exited <- r.cmd.Wait(); logf.Close() }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get("http://" + r.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case err := <-r.exited:
			r.exited <- err
			return nil, fmt.Errorf("registry exited before answering (%v): %s", err, testutil.TailFile(r.LogPath, 1000))
		case <-ctx.Done():
			r.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Close()
			return nil, fmt.Errorf("registry on %s did not answer within 15 s: %s", r.Addr, testutil.TailFile(r.LogPath, 1000))
		}
	}
}

// Close kills the registry and waits for it.
func (r *Registry) Close() error {
	_ = r.cmd.Process.Kill()
	err := <-r.exited
	r.exited <- err
	return nil
}

// Mark is a position in the registry's log.
type Mark int64

// Mark returns the log's current end.
func (r *Registry) Mark() Mark {
	fi, err := os.Stat(r.LogPath)
	if err != nil {
		return 0
	}
	return Mark(fi.Size())
}

// Traffic is what the registry served between two marks.
type Traffic struct {
	Requests int   // every HTTP request answered
	Bytes    int64 // body bytes written, all requests
	// Blobs holds body bytes written per blob digest (GETs of
	// /v2/REPO/blobs/DIGEST: layers, configs, index artifacts).
	Blobs map[string]int64
	// Dup is the number of blob bytes served more than once (ranges that
	// overlap an earlier range of the same blob by more than one byte).
	Dup int64
	// Ranges holds the byte ranges served per blob digest, in order, each
	// without its last byte (see parseRegistryLog).
	Ranges map[string][][2]int64 `json:"-"`
	// Log holds the requests as the registry logged them, in the order
	// they completed (the request timelines are made of them).
	Log []registrylog.Request `json:"-"`
}

// Refetched returns how many bytes of blob d that t served had been served
// in before already.
func (t Traffic) Refetched(before Traffic, d string) int64 {
	var n int64
	for _, rg := range t.Ranges[d] {
		n += overlap(before.Ranges[d], rg)
	}
	return n
}

// Add adds o to t.
func (t *Traffic) Add(o Traffic) {
	t.Requests += o.Requests
	t.Bytes += o.Bytes
	t.Dup += o.Dup
	if t.Blobs == nil {
		t.Blobs = map[string]int64{}
	}
	for k, v := range o.Blobs {
		t.Blobs[k] += v
	}
	if t.Ranges == nil {
		t.Ranges = map[string][][2]int64{}
	}
	for k, v := range o.Ranges {
		t.Ranges[k] = append(t.Ranges[k], v...)
	}
	t.Log = append(t.Log, o.Log...)
}

// Since returns the traffic logged after m. The registry writes a request's
// line when the response is complete, so it waits until the log has been
// quiet for a moment.
func (r *Registry) Since(m Mark) (Traffic, error) {
	settle(r.LogPath, 100*time.Millisecond, 2*time.Second)
	f, err := os.Open(r.LogPath)
	if err != nil {
		return Traffic{}, err
	}
	defer f.Close()
	if _, err := f.Seek(int64(m), io.SeekStart); err != nil {
		return Traffic{}, err
	}
	return parseRegistryLog(f)
}

// settle waits until the file's size did not change for quiet, at most max.
func settle(path string, quiet, max time.Duration) {
	end := time.Now().Add(max)
	var last int64 = -1
	for time.Now().Before(end) {
		fi, err := os.Stat(path)
		if err != nil {
			return
		}
		if fi.Size() == last {
			return
		}
		last = fi.Size()
		time.Sleep(quiet)
	}
}

// parseRegistryLog reads docker-registry's JSON log (registrylog.Parse)
// into the traffic it served: every completed request counts; a blob GET's
// range starts at the storage driver's offset for that request.
func parseRegistryLog(rd io.Reader) (Traffic, error) {
	t := Traffic{Blobs: map[string]int64{}, Ranges: map[string][][2]int64{}}
	reqs, err := registrylog.Parse(rd)
	t.Log = reqs
	for _, q := range reqs {
		t.Requests++
		t.Bytes += q.Written
		if q.Digest == "" || q.Method != http.MethodGet || q.Written == 0 {
			continue
		}
		d := q.Digest.String()
		t.Blobs[d] += q.Written
		off := q.Offset
		if off < 0 {
			off = 0 // a whole-blob GET reads from 0 without a Reader line at debug level
		}
		// Adjacent gzip frames share the byte that holds the boundary:
		// ranges are compared without their last byte, so that meeting
		// at one byte is not counted as fetched twice.
		rg := [2]int64{off, off + q.Written - 1}
		t.Dup += overlap(t.Ranges[d], rg)
		t.Ranges[d] = append(t.Ranges[d], rg)
	}
	return t, err
}

// overlap returns how many bytes of rg the ranges in have cover (counted
// once, however many cover them).
func overlap(have [][2]int64, rg [2]int64) int64 {
	var cut [][2]int64
	for _, h := range have {
		lo, hi := max(h[0], rg[0]), min(h[1], rg[1])
		if lo < hi {
			cut = append(cut, [2]int64{lo, hi})
		}
	}
	slices.SortFunc(cut, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	var n, end int64 = 0, rg[0]
	for _, c := range cut {
		lo := max(c[0], end)
		if c[1] > lo {
			n += c[1] - lo
			end = c[1]
		}
	}
	return n
}
