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

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

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

// patternFileSize is the size of each file of pushPatternImage.
const patternFileSize = 2 << 20

// pushPatternImage pushes an image to reg.PushAddr whose files /NAME (2
// MiB of the pattern for seed i+1, for the i-th name) sit in gzip layers
// of their own, so that reading a file, or opening it (which fetches its
// frames), never fetches another's. It returns each file's layer.
func pushPatternImage(t *testing.T, reg *testutil.Registry, repo string, names ...string) map[string]v1.Descriptor {
	t.Helper()
	var ls []testutil.Layer
	for i, name := range names {
		ls = append(ls, testutil.WriteLayer(t, []testutil.File{{Path: name, Size: patternFileSize, Seed: int64(i + 1)}}, types.OCILayer))
	}
	p := testutil.PushImageInfo(t, reg.PushAddr, repo, ls, testutil.ImageConfig{})
	out := map[string]v1.Descriptor{}
	for i, name := range names {
		out[name] = p.Layers[i]
	}
	return out
}

// readPattern reads n bytes of the mount's file name (the i-th of
// pushPatternImage's names: seed i+1) at off and checks them.
func readPattern(t *testing.T, dir, name string, seed, off int64, n int) {
	t.Helper()
	got, err := readAt(dir, name, off, n)
	if err != nil {
		t.Fatalf("read %s [%d,+%d): %v", name, off, n, err)
	}
	want := make([]byte, n)
	testutil.PatternAt(seed, off, want)
	if !bytes.Equal(got, want) {
		t.Fatalf("read %s [%d,+%d): wrong bytes", name, off, n)
	}
}

// readAt opens dir/name, reads n bytes at off and closes it.
func readAt(dir, name string, off int64, n int) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	got, err := f.ReadAt(b, off)
	return b[:got], err
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
// token auth whose tokens live 2 s, lets the token expire, and reads a
// file never fetched: the registry's 401 is answered by a new token
// (go-containerregistry's bearer transport refreshes once per 401) and the
// bytes are right. When the refresh itself is refused (the password was
// changed meanwhile) the read fails at once with EIO, and works again once
// the credentials do.
func TestTokenExpiresMidMount(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ts := testutil.StartTokenServer(t, testutil.TokenServerConfig{Lifetime: 2 * time.Second})
	reg := testutil.StartRegistry(t, testutil.WithTokenAuth(ts))
	pushPatternImage(t, reg, "test/token:v1", "a", "b", "c")
	ref := reg.Addr + "/test/token:v1"
	useDockerConfig(t, ts.DockerConfig(t, reg.Addr, ""))
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref) // through the auth too, with push tokens
	atMount := len(ts.Issued())

	m := mount(t, t.TempDir(), ref)
	readPattern(t, m.dir, "a", 1, 0, patternFileSize)
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
	readPattern(t, m.dir, "b", 2, 0, patternFileSize)
	took := time.Since(start)
	after := ts.Issued()
	t.Logf("the mount took %d tokens to read /a; reading /b (%d bytes) after the expiry took %v: %d blob requests refused (401, invalid token), %d new tokens",
		before-atMount, patternFileSize, took.Round(time.Millisecond), expiredTokens(t, reg)-expired, len(after)-before)
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
	start = time.Now()
	_, err := readAt(m.dir, "c", 0, 4096)
	took = time.Since(start)
	refused := 0
	for _, r := range ts.Requests()[asked:] {
		if r.Status == http.StatusUnauthorized {
			refused++
		}
	}
	t.Logf("with the password changed the read of /c failed after %v (%v); %d token requests refused", took.Round(time.Millisecond), err, refused)
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
	readPattern(t, m.dir, "c", 3, 0, patternFileSize)
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
// reach the storage (it never serves a whole layer, and nothing of a layer
// whose file is not read), the bearer token does not (the storage would
// refuse it), and a storage answer cut short is fetched again, never read
// as it is.
func TestBlobRedirect(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ts := testutil.StartTokenServer(t, testutil.TokenServerConfig{})
	reg := testutil.StartRegistry(t, testutil.WithTokenAuth(ts))
	names := []string{"a", "b", "c", "d", "unread"}
	layers := pushPatternImage(t, reg, "test/redirect:v1", names...)
	bs := testutil.StartBlobStore(t, reg)
	ref := bs.Addr + "/test/redirect:v1"
	useDockerConfig(t, ts.DockerConfig(t, bs.Addr, ""))
	// Building the index streams every layer once (through the storage
	// too); the mount's requests are counted from here.
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)
	indexed, redirected := len(bs.Requests()), bs.Redirects()

	m := mount(t, t.TempDir(), ref, "--retries", "2")
	readPattern(t, m.dir, "a", 1, 0, patternFileSize)
	readPattern(t, m.dir, "b", 2, 0, patternFileSize)
	// checkStorage checks the storage's GETs of layers since the index
	// was built: each a Range answered 206 with less than the layer.
	checkStorage := func() (gets map[string]int, bytes int64, largest int64) {
		gets = map[string]int{}
		for _, r := range bs.Requests()[indexed:] {
			for name, l := range layers {
				if r.Digest.String() != l.Digest.String() || r.Method != http.MethodGet {
					continue
				}
				gets[name]++
				bytes += r.Bytes
				largest = max(largest, r.Bytes)
				if r.Range == "" || r.Status != http.StatusPartialContent || r.Bytes >= l.Size {
					t.Errorf("storage GET of /%s's layer %+v: want a Range answered 206 with less than the layer's %d bytes", name, r, l.Size)
				}
			}
		}
		return gets, bytes, largest
	}
	gets, got, largest := checkStorage()
	t.Logf("lazyfs index --push: %d redirects; the mount and reading /a and /b (%d bytes each): %d redirects, storage GETs of their layers %v (%d bytes, the largest %d; layers of %d and %d bytes)",
		redirected, patternFileSize, bs.Redirects()-redirected, gets, got, largest, layers["a"].Size, layers["b"].Size)
	if gets["a"] == 0 || gets["b"] == 0 {
		t.Fatalf("storage GETs %v: the reads did not go through the storage", gets)
	}

	// Two answers cut short: fetched again, the bytes are right.
	seen := len(bs.Requests())
	bs.Short(2)
	readPattern(t, m.dir, "c", 3, 0, patternFileSize)
	var short, after int
	for _, r := range bs.Requests()[seen:] {
		after++
		if r.Short {
			short++
		}
	}
	t.Logf("reading /c with 2 answers cut short: %d storage requests, %d of them short", after, short)
	if short != 2 {
		t.Errorf("%d storage answers were cut short, want 2", short)
	}

	// Every answer cut short: EIO, never the half bytes; then the same
	// read works.
	bs.Short(1 << 30)
	start := time.Now()
	b, err := readAt(m.dir, "d", 0, 64<<10)
	t.Logf("with every answer cut short the read of /d failed after %v: %d bytes, %v", time.Since(start).Round(time.Millisecond), len(b), err)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read with every storage answer cut short = %d bytes, %v; want EIO", len(b), err)
	}
	bs.Short(0)
	readPattern(t, m.dir, "d", 4, 0, patternFileSize)

	gets, _, _ = checkStorage()
	if gets["unread"] != 0 {
		t.Errorf("the layer of /unread was fetched %d times, want never", gets["unread"])
	}
	for _, r := range bs.Requests() {
		if r.Authorization || r.Status == http.StatusBadRequest {
			t.Errorf("the storage got an Authorization header: %+v", r)
		}
	}
	m.stop(t)
}
