package main

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// useDockerConfig points the keychain of the lazyfs processes this test
// starts (they inherit the environment) at dir's config.json only.
func useDockerConfig(t *testing.T, dir string) {
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_CONFIG_HOME", "")
}

// tokenImage pushes an image with one gzip layer holding a 16 MiB file
// (pattern seed 7) to a registry behind token auth, and its layer index
// through the auth (with push tokens). It returns the reference to mount.
func tokenImage(t *testing.T, reg *testutil.Registry, ts *testutil.TokenServer) string {
	t.Helper()
	layer := testutil.WriteLayer(t, []testutil.File{{Path: "big/pattern", Size: 16 << 20, Seed: 7}}, types.OCILayer)
	testutil.PushImage(t, reg.PushAddr, "test/token:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	ref := reg.Addr + "/test/token:v1"
	useDockerConfig(t, ts.DockerConfig(t, reg.Addr, ""))
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)
	return ref
}

// readPattern reads n bytes of the mount's big/pattern at off and checks
// them against the pattern.
func readPattern(t *testing.T, dir string, off int64, n int) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "big/pattern"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, n)
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("read big/pattern [%d,+%d): %v", off, n, err)
	}
	want := make([]byte, n)
	testutil.PatternAt(7, off, want)
	if !bytes.Equal(got, want) {
		t.Fatalf("read big/pattern [%d,+%d): wrong bytes", off, n)
	}
}

// expiredTokens counts the blob requests the registry refused because
// their token had expired.
func expiredTokens(t *testing.T, reg *testutil.Registry) int {
	n := 0
	for _, g := range reg.BlobGets(t) {
		if g.Status == http.StatusUnauthorized && g.AuthError == "invalid token" {
			n++
		}
	}
	return n
}

// TestTokenExpiresMidMount mounts an image from docker-registry behind
// token auth whose tokens live 2 s, lets the token expire, and reads
// frames never fetched: the registry's 401 is answered by a new token
// (go-containerregistry's bearer transport refreshes once per 401) and the
// bytes are right. When the refresh itself is refused (the password was
// changed meanwhile) the read fails at once with EIO, and works again once
// the credentials do.
func TestTokenExpiresMidMount(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ts := testutil.StartTokenServer(t, testutil.TokenServerConfig{Lifetime: 2 * time.Second})
	reg := testutil.StartRegistry(t, testutil.WithTokenAuth(ts))
	ref := tokenImage(t, reg, ts)
	atMount := len(ts.Issued())

	m := mount(t, t.TempDir(), ref)
	readPattern(t, m.dir, 0, 1<<20)
	// waitExpiry waits until the last token issued has expired.
	waitExpiry := func() {
		issued := ts.Issued()
		wait := time.Until(issued[len(issued)-1].Expires) + 1100*time.Millisecond // and a margin
		t.Logf("waiting %v for the last token to expire", wait.Round(time.Millisecond))
		time.Sleep(wait)
	}

	before, expired := len(ts.Issued()), expiredTokens(t, reg)
	waitExpiry()
	start := time.Now()
	readPattern(t, m.dir, 12<<20, 1<<20)
	took := time.Since(start)
	after := ts.Issued()
	t.Logf("the mount took %d tokens to start; a 1 MiB read of cold frames after the expiry took %v: %d blob requests refused (401, invalid token), %d new tokens",
		before-atMount, took.Round(time.Millisecond), expiredTokens(t, reg)-expired, len(after)-before)
	if expiredTokens(t, reg) == expired {
		t.Errorf("no blob request was refused for an expired token: the test did not test the expiry")
	}
	if len(after) <= before {
		t.Errorf("tokens issued = %d after the expiry, want more than %d (a refresh on the 401)", len(after), before)
	}
	for _, tok := range after[before:] {
		if tok.User != ts.User || len(tok.Access) == 0 {
			t.Errorf("refreshed token %+v: want one for %s with access", tok, ts.User)
		}
	}
	if strings.Contains(m.stderr.String(), "level=WARN") {
		t.Errorf("lazyfs mount warned while the token was refreshed:\n%s", m.stderr)
	}

	// The password changes: the refresh is refused, the read fails at
	// once (no retries of a 401, no wait for --read-timeout).
	ts.SetPassword("changed")
	waitExpiry()
	asked := len(ts.Requests())
	f, err := os.Open(filepath.Join(m.dir, "big/pattern"))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = f.ReadAt(make([]byte, 4096), 6<<20)
	took = time.Since(start)
	f.Close()
	refused := 0
	for _, r := range ts.Requests()[asked:] {
		if r.Status == http.StatusUnauthorized {
			refused++
		}
	}
	t.Logf("with the password changed the read failed after %v (%v); %d token requests refused", took.Round(time.Millisecond), err, refused)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read with the refresh refused = %v, want EIO", err)
	}
	if took > 3*time.Second {
		t.Errorf("read with the refresh refused took %v, want a prompt failure", took)
	}
	if refused == 0 {
		t.Errorf("no token request was refused: the test did not test a refused refresh")
	}
	if log := m.stderr.String(); !strings.Contains(log, reg.Addr) || !strings.Contains(log, "401 Unauthorized") {
		t.Errorf("the mount's log does not name the registry and the 401:\n%s", log)
	}
	ts.SetPassword(ts.Password)
	readPattern(t, m.dir, 6<<20, 4096)
	m.stop(t)
}

// TestTokenAuthRefused: with a wrong password, or none, `lazyfs mount`
// fails at once with an error naming the registry, after a bounded number
// of token requests, and mounts nothing.
func TestTokenAuthRefused(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ts := testutil.StartTokenServer(t, testutil.TokenServerConfig{})
	reg := testutil.StartRegistry(t, testutil.WithTokenAuth(ts))
	layer := testutil.WriteLayer(t, []testutil.File{{Path: "f", Data: []byte("x")}}, types.OCILayer)
	testutil.PushImage(t, reg.PushAddr, "test/token:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	ref := reg.Addr + "/test/token:v1"
	for _, tc := range []struct {
		name       string
		registry   string // the config's credentials are for this host
		password   string
		want       string
		maxTokens  int
		wantStatus int // of the token requests
	}{
		// The token server refuses the credentials.
		{"wrong password", reg.Addr, "not-the-pass-x9", "wrong user name or password", 1, http.StatusUnauthorized},
		// An anonymous token without access; the registry's 401 gets one
		// refresh, then the error.
		{"no credentials", "other.example:5000", "", "authentication required", 2, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			useDockerConfig(t, ts.DockerConfig(t, tc.registry, tc.password))
			asked := len(ts.Requests())
			dir := t.TempDir()
			start := time.Now()
			_, stderr, err := lazyfs(t, "mount", "--root", t.TempDir(), ref, dir)
			took := time.Since(start)
			reqs := ts.Requests()[asked:]
			t.Logf("lazyfs mount failed after %v with %d token requests: %v\n%s", took.Round(time.Millisecond), len(reqs), err, stderr)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Errorf("lazyfs mount exit = %v, want code 1", err)
			}
			if !strings.Contains(stderr, reg.Addr) || !strings.Contains(stderr, "401 Unauthorized") || !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr = %q, want it to name %s, the 401 and %q", stderr, reg.Addr, tc.want)
			}
			if strings.Contains(stderr, ts.Password) || (tc.password != "" && strings.Contains(stderr, tc.password)) {
				t.Errorf("stderr shows the password: %q", stderr)
			}
			if took > 10*time.Second {
				t.Errorf("lazyfs mount took %v to fail, want a prompt failure", took)
			}
			if len(reqs) == 0 || len(reqs) > tc.maxTokens {
				t.Errorf("token requests = %d, want 1 to %d", len(reqs), tc.maxTokens)
			}
			for _, r := range reqs {
				if r.Status != tc.wantStatus {
					t.Errorf("token request %+v: status %d, want %d", r, r.Status, tc.wantStatus)
				}
			}
			if isMountPoint(dir) {
				t.Errorf("%s is mounted", dir)
			}
		})
	}
}

// TestBlobRedirect mounts an image from docker-registry behind token auth
// whose blob GETs are redirected (307) to blob storage on another port,
// as S3-backed registries do: the bytes are right, the Range headers
// reach the storage (it never serves a whole layer), the bearer token
// does not (the storage would refuse it), and a storage answer cut short
// is fetched again, never read as it is.
func TestBlobRedirect(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ts := testutil.StartTokenServer(t, testutil.TokenServerConfig{})
	reg := testutil.StartRegistry(t, testutil.WithTokenAuth(ts))
	layer := testutil.WriteLayer(t, []testutil.File{{Path: "big/pattern", Size: 16 << 20, Seed: 7}}, types.OCILayer)
	p := testutil.PushImageInfo(t, reg.PushAddr, "test/redirect:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	layerDigest, layerSize := digest.Digest(p.Layers[0].Digest.String()), p.Layers[0].Size
	bs := testutil.StartBlobStore(t, reg)
	ref := bs.Addr + "/test/redirect:v1"
	useDockerConfig(t, ts.DockerConfig(t, bs.Addr, ""))
	// Building the index streams the whole layer once (through the
	// storage too); the mount's reads are counted from here.
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)
	indexed, redirected := len(bs.Requests()), bs.Redirects()

	m := mount(t, t.TempDir(), ref, "--retries", "2")
	readPattern(t, m.dir, 0, 1<<20)
	readPattern(t, m.dir, 10<<20, 1<<20)
	reqs := bs.Requests()[indexed:]
	var layerGets int
	var layerBytes, largest int64
	for _, r := range reqs {
		if r.Digest != layerDigest || r.Method != http.MethodGet {
			continue
		}
		layerGets++
		layerBytes += r.Bytes
		largest = max(largest, r.Bytes)
		if r.Range == "" || r.Status != http.StatusPartialContent || r.Bytes >= layerSize {
			t.Errorf("storage GET of the layer %+v: want a Range answered 206 with less than the layer's %d bytes", r, layerSize)
		}
	}
	t.Logf("lazyfs index --push: %d redirects; the mount and 2 MiB read: %d redirects, %d storage requests, %d GETs of the %d-byte layer (%d bytes, the largest %d), none with an Authorization header",
		redirected, bs.Redirects()-redirected, len(reqs), layerGets, layerSize, layerBytes, largest)
	if bs.Redirects() == redirected || layerGets == 0 {
		t.Fatalf("%d redirects, %d storage GETs of the layer: the reads did not go through the storage", bs.Redirects()-redirected, layerGets)
	}

	for _, r := range bs.Requests() {
		if r.Authorization || r.Status == http.StatusBadRequest {
			t.Errorf("the storage got an Authorization header: %+v", r)
		}
	}

	// Two answers cut short: fetched again, the bytes are right.
	seen := len(bs.Requests())
	bs.Short(2)
	readPattern(t, m.dir, 4<<20, 64<<10)
	var short, after int
	for _, r := range bs.Requests()[seen:] {
		after++
		if r.Short {
			short++
		}
	}
	t.Logf("with 2 answers cut short: %d storage requests, %d of them short", after, short)
	if short != 2 {
		t.Errorf("%d storage answers were cut short, want 2", short)
	}

	// Every answer cut short: EIO, never the half bytes; then the same
	// read works.
	bs.Short(1 << 30)
	f, err := os.Open(filepath.Join(m.dir, "big/pattern"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := f.ReadAt(make([]byte, 64<<10), 14<<20)
	f.Close()
	t.Logf("with every answer cut short the read failed after %v: %d bytes, %v", time.Since(start).Round(time.Millisecond), n, err)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read with every storage answer cut short = %d bytes, %v; want EIO", n, err)
	}
	bs.Short(0)
	readPattern(t, m.dir, 14<<20, 64<<10)
	m.stop(t)
}
