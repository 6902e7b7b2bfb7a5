package main

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// scrape GETs a /metrics page and returns its samples by series, as
// `name{label="value",...}` exactly as the text format writes them.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("GET %s = %s: %s", url, resp.Status, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("GET %s: bad sample line %q", url, line)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return out
}

// sample returns one series of a scrape, failing the test if it is absent.
func sample(t *testing.T, s map[string]float64, series string) float64 {
	t.Helper()
	v, ok := s[series]
	if !ok {
		t.Fatalf("scrape lacks %s", series)
	}
	return v
}

var metricsURLRe = regexp.MustCompile(`msg="serving metrics" path=(\S+)`)

// metricsURL finds the address `--metrics-address 127.0.0.1:0` got in the
// mount's log.
func (m *mounted) metricsURL(t *testing.T) string {
	t.Helper()
	if sub := metricsURLRe.FindStringSubmatch(m.stderr.String()); sub != nil {
		return sub[1]
	}
	t.Fatalf("lazyfs mount did not log where it serves metrics:\n%s", m.stderr)
	return ""
}

// TestMountMetrics reads through a mount and checks its /metrics against
// what the registry (a counting proxy) saw.
func TestMountMetrics(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	reg := testutil.StartRegistry(t)
	small := []byte("a small file\n")
	layer := testutil.WriteLayer(t, []testutil.File{
		{Path: "big/random", Size: 16 << 20, Seed: 11},
		{Path: "small", Data: small},
	}, types.OCILayer)
	testutil.PushImage(t, reg.Addr, "test/metrics:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	ref := proxy.Addr + "/test/metrics:v1"
	image := `{image="` + proxy.Addr + `/test/metrics"}`
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)

	proxy.ClearStats()
	m := mount(t, t.TempDir(), ref, "--metrics-address", "127.0.0.1:0")
	url := m.metricsURL(t)
	// The kernel shows the mount a moment before MountLayers returns and
	// the gauge goes up.
	for deadline := time.Now().Add(10 * time.Second); sample(t, scrape(t, url), "lazyfs_mounts_active") != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("lazyfs_mounts_active is not 1 10 s after the mount appeared")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if got, err := os.ReadFile(filepath.Join(m.dir, "small")); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("ReadFile(small) = %q, %v; want %q", got, err, small)
	}
	// 3 MiB in order from the middle: the next frames are read ahead.
	f, err := os.Open(filepath.Join(m.dir, "big/random"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3<<20)
	n, err := f.ReadAt(buf, 6<<20)
	f.Close()
	want := make([]byte, len(buf))
	testutil.PatternAt(11, 6<<20, want)
	if err != nil || !bytes.Equal(buf[:n], want) {
		t.Fatalf("ReadAt(big/random, 6 MiB) = %d bytes, %v; want the pattern's %d", n, err, len(want))
	}

	// Let the read-ahead finish, so that the registry has seen all of it.
	var s map[string]float64
	for deadline := time.Now().Add(30 * time.Second); ; {
		s = scrape(t, url)
		if sample(t, s, "lazyfs_readahead_in_flight"+image) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read-ahead still in flight after 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Counted per image are the Source's Range reads: frames of the layer
	// and windows of its index. The index's toc, read from byte 0 of the
	// index blob before the mount serves anything, is not; the config is
	// read whole.
	var rangeBytes int64
	var rangeRequests int
	for _, r := range proxy.Requests() {
		toc := r.Digest != digest.Digest(layer.Digest.String()) && strings.HasPrefix(r.Range, "bytes=0-")
		if r.Range != "" && !toc {
			rangeBytes += r.Bytes
			rangeRequests++
		}
	}
	gotBytes := sample(t, s, "lazyfs_registry_fetched_bytes_total"+image)
	gotRequests := sample(t, s, "lazyfs_registry_requests_total"+image)
	t.Logf("metrics: %g bytes in %g requests; the registry sent %d bytes in %d Range requests", gotBytes, gotRequests, rangeBytes, rangeRequests)
	if gotBytes <= 0 || math.Abs(gotBytes-float64(rangeBytes)) > 0.01*float64(rangeBytes) {
		t.Errorf("lazyfs_registry_fetched_bytes_total%s = %g, want the %d bytes the registry sent (±1%%)", image, gotBytes, rangeBytes)
	}
	if gotRequests != float64(rangeRequests) {
		t.Errorf("lazyfs_registry_requests_total%s = %g, want the registry's %d Range requests", image, gotRequests, rangeRequests)
	}
	for _, c := range []struct {
		series string
		min    float64
	}{
		{"lazyfs_cache_misses_total", 1},
		{"lazyfs_frame_fetch_duration_seconds_count" + image, 1},
		{"lazyfs_readahead_frames_total" + image, 1},
	} {
		if got := sample(t, s, c.series); got < c.min {
			t.Errorf("%s = %g, want ≥ %g", c.series, got, c.min)
		}
	}
	if got := sample(t, s, "lazyfs_frame_fetch_duration_seconds_count"+image); got > sample(t, s, "lazyfs_cache_loads_total") {
		t.Errorf("frame fetches timed (%g) exceed the cache's loads (%g)", got, sample(t, s, "lazyfs_cache_loads_total"))
	}
	for series, want := range map[string]float64{
		"lazyfs_mounts_active":      1,
		"lazyfs_mount_errors_total": 0,
		"lazyfs_read_errors_total":  0,
	} {
		if got := sample(t, s, series); got != want {
			t.Errorf("%s = %g, want %g", series, got, want)
		}
	}

	m.stop(t)
	if _, err := http.Get(url); err == nil {
		t.Errorf("GET %s after lazyfs mount exited succeeded", url)
	}
}
