package metrics

import (
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/lazyfs/lazyfs/cache"
)

func TestImageMetrics(t *testing.T) {
	r := New()
	a, b := r.Image("reg.example/a"), r.Image("reg.example/b")
	a.Request()
	a.Request()
	a.BodyBytes(1000)
	a.BodyBytes(24)
	b.Request()
	a.FrameFetched(30 * time.Millisecond)
	a.FrameFetched(2 * time.Second)
	a.ReadaheadStarted()
	a.ReadaheadStarted()
	a.ReadaheadDone(true)
	r.Image("reg.example/a").BodyBytes(1) // the same series again

	want := `
# HELP lazyfs_registry_fetched_bytes_total Blob body bytes received from the registry to serve frames of an image (Range reads and whole-layer streams, failed attempts included).
# TYPE lazyfs_registry_fetched_bytes_total counter
lazyfs_registry_fetched_bytes_total{image="reg.example/a"} 1025
lazyfs_registry_fetched_bytes_total{image="reg.example/b"} 0
# HELP lazyfs_registry_requests_total HTTP requests sent to the registry to serve frames of an image (every attempt, token requests included).
# TYPE lazyfs_registry_requests_total counter
lazyfs_registry_requests_total{image="reg.example/a"} 2
lazyfs_registry_requests_total{image="reg.example/b"} 1
# HELP lazyfs_readahead_frames_total Frames fetched from the registry ahead of a sequential reader.
# TYPE lazyfs_readahead_frames_total counter
lazyfs_readahead_frames_total{image="reg.example/a"} 1
lazyfs_readahead_frames_total{image="reg.example/b"} 0
# HELP lazyfs_readahead_in_flight Frames being read ahead now (cached ones included while they are looked up).
# TYPE lazyfs_readahead_in_flight gauge
lazyfs_readahead_in_flight{image="reg.example/a"} 1
lazyfs_readahead_in_flight{image="reg.example/b"} 0
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"lazyfs_registry_fetched_bytes_total", "lazyfs_registry_requests_total",
		"lazyfs_readahead_frames_total", "lazyfs_readahead_in_flight"); err != nil {
		t.Error(err)
	}
	h := histogram(t, r, "reg.example/a")
	if h.GetSampleCount() != 2 || math.Abs(h.GetSampleSum()-2.03) > 1e-9 {
		t.Errorf("frame fetch histogram of a = count %d, sum %g; want 2, 2.03", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		want := uint64(0)
		switch {
		case b.GetUpperBound() >= 2.5:
			want = 2
		case b.GetUpperBound() >= 0.05:
			want = 1
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("frame fetch histogram of a: bucket le=%g = %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	if h := histogram(t, r, "reg.example/b"); h.GetSampleCount() != 0 {
		t.Errorf("frame fetch histogram of b = count %d, want 0", h.GetSampleCount())
	}
}

// histogram returns the frame fetch histogram of one image as gathered.
func histogram(t *testing.T, r *Registry, image string) *dto.Histogram {
	t.Helper()
	mfs, err := r.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lazyfs_frame_fetch_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "image" && l.GetValue() == image {
					return m.GetHistogram()
				}
			}
		}
	}
	t.Fatalf("no frame fetch histogram for image %q", image)
	return nil
}

func TestCacheCollector(t *testing.T) {
	r := New()
	st := cache.Stats{MemoryHits: 5, DiskHits: 3, Misses: 2, Loads: 2, LoadErrors: 1, Corrupt: 1,
		BytesLoaded: 2 << 20, DiskFrames: 7, DiskBytes: 7 << 20, Evictions: 4}
	r.WatchCache(func() cache.Stats { return st })
	want := `
# HELP lazyfs_cache_hits_total Frame reads served by the cache, by tier: memory, or disk (re-verified).
# TYPE lazyfs_cache_hits_total counter
lazyfs_cache_hits_total{tier="disk"} 3
lazyfs_cache_hits_total{tier="memory"} 5
# HELP lazyfs_cache_misses_total Frame reads that waited for a load from the registry (shared by concurrent readers of one frame).
# TYPE lazyfs_cache_misses_total counter
lazyfs_cache_misses_total 2
# HELP lazyfs_cache_corrupt_frames_total Frames, loaded or on disk, that failed verification against their digest.
# TYPE lazyfs_cache_corrupt_frames_total counter
lazyfs_cache_corrupt_frames_total 1
# HELP lazyfs_cache_evictions_total Frames removed from disk to stay under --cache-size.
# TYPE lazyfs_cache_evictions_total counter
lazyfs_cache_evictions_total 4
# HELP lazyfs_cache_disk_bytes Bytes of frames on disk, as this process knows them.
# TYPE lazyfs_cache_disk_bytes gauge
lazyfs_cache_disk_bytes 7.340032e+06
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want),
		"lazyfs_cache_hits_total", "lazyfs_cache_misses_total", "lazyfs_cache_corrupt_frames_total",
		"lazyfs_cache_evictions_total", "lazyfs_cache_disk_bytes"); err != nil {
		t.Error(err)
	}
	// Each scrape reads the stats again.
	st.Misses = 9
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(`
# HELP lazyfs_cache_misses_total Frame reads that waited for a load from the registry (shared by concurrent readers of one frame).
# TYPE lazyfs_cache_misses_total counter
lazyfs_cache_misses_total 9
`), "lazyfs_cache_misses_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(r.Gatherer(), "lazyfs_cache_loads_total", "lazyfs_cache_load_errors_total",
		"lazyfs_cache_loaded_bytes_total", "lazyfs_cache_disk_frames"); err != nil || n != 4 {
		t.Errorf("other cache metrics = %d, %v; want 4", n, err)
	}
}

func TestMountsAndErrors(t *testing.T) {
	r := New()
	r.MountStarted()
	r.MountStarted()
	r.MountEnded()
	r.MountFailed()
	r.ReadError()
	r.ReadError()
	for _, tc := range []struct {
		name string
		got  float64
		want float64
	}{
		{"lazyfs_mounts_active", testutil.ToFloat64(r.mounts), 1},
		{"lazyfs_mount_errors_total", testutil.ToFloat64(r.mountErrors), 1},
		{"lazyfs_read_errors_total", testutil.ToFloat64(r.readErrors), 2},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %g, want %g", tc.name, tc.got, tc.want)
		}
	}
}

func TestNilDoesNothing(t *testing.T) {
	var r *Registry
	r.MountStarted()
	r.MountEnded()
	r.MountFailed()
	r.ReadError()
	r.WatchCache(func() cache.Stats { return cache.Stats{} })
	m := r.Image("x")
	if m != nil {
		t.Fatalf("(*Registry)(nil).Image() = %v, want nil", m)
	}
	m.Request()
	m.BodyBytes(1)
	m.FrameFetched(time.Second)
	m.ReadaheadStarted()
	m.ReadaheadDone(true)
}

func TestServer(t *testing.T) {
	r := New()
	r.Image("reg.example/a").BodyBytes(42)
	r.MountStarted()
	s, err := r.Listen("127.0.0.1:0", nil)
	if err != nil {
		t.Fatalf("Listen = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if strings.HasSuffix(s.Addr(), ":0") {
		t.Errorf("Addr() = %s, want the port chosen", s.Addr())
	}
	body := get(t, "http://"+s.Addr()+"/metrics", http.StatusOK)
	for _, want := range []string{
		`lazyfs_registry_fetched_bytes_total{image="reg.example/a"} 42`,
		"lazyfs_mounts_active 1",
		"# TYPE lazyfs_frame_fetch_duration_seconds histogram",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("GET /metrics lacks %q:\n%s", want, body)
		}
	}
	get(t, "http://"+s.Addr()+"/other", http.StatusNotFound)
	if err := s.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/metrics"); err == nil {
		t.Errorf("GET /metrics after Close succeeded, want a refused connection")
	}
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != status {
		t.Fatalf("GET %s = %s, want %d", url, resp.Status, status)
	}
	return string(b)
}

// Background fetches of one image add up; one that ends keeps its bytes
// and requests counted.
func TestBackgroundMetrics(t *testing.T) {
	r := New()
	a := Background{State: "fetching", Frames: 10, Cached: 4, Bytes: 1000, CachedBytes: 400, Fetched: 300, Requests: 2}
	b := Background{State: "done", Frames: 5, Cached: 5, Bytes: 500, CachedBytes: 500, Fetched: 200, Requests: 1}
	r.WatchBackground("reg.example/a", func() Background { return a })
	unwatch := r.WatchBackground("reg.example/a", func() Background { return b })
	want := `
# HELP lazyfs_background_cached_bytes Of those bytes, the ones on disk.
# TYPE lazyfs_background_cached_bytes gauge
lazyfs_background_cached_bytes{image="reg.example/a"} 900
# HELP lazyfs_background_fetched_bytes_total Compressed bytes the background fetch of an image asked the registry for.
# TYPE lazyfs_background_fetched_bytes_total counter
lazyfs_background_fetched_bytes_total{image="reg.example/a"} 500
# HELP lazyfs_background_fetches Background fetches of an image, by state: waiting, fetching, yielding, done, stopped, failed, off.
# TYPE lazyfs_background_fetches gauge
lazyfs_background_fetches{image="reg.example/a",state="done"} 1
lazyfs_background_fetches{image="reg.example/a",state="fetching"} 1
# HELP lazyfs_background_frames Frames of the layers being fetched in the background (a frame two layers share counts once).
# TYPE lazyfs_background_frames gauge
lazyfs_background_frames{image="reg.example/a"} 15
# HELP lazyfs_background_frames_cached Of those frames, the ones on disk (as of the fetcher's last look).
# TYPE lazyfs_background_frames_cached gauge
lazyfs_background_frames_cached{image="reg.example/a"} 9
`
	names := []string{"lazyfs_background_cached_bytes", "lazyfs_background_fetched_bytes_total", "lazyfs_background_fetches", "lazyfs_background_frames", "lazyfs_background_frames_cached"}
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	unwatch()
	unwatch()
	want = `
# HELP lazyfs_background_requests_total Range requests (and whole-layer reads) the background fetch of an image made.
# TYPE lazyfs_background_requests_total counter
lazyfs_background_requests_total{image="reg.example/a"} 3
# HELP lazyfs_background_fetches Background fetches of an image, by state: waiting, fetching, yielding, done, stopped, failed, off.
# TYPE lazyfs_background_fetches gauge
lazyfs_background_fetches{image="reg.example/a",state="fetching"} 1
`
	if err := testutil.GatherAndCompare(r.Gatherer(), strings.NewReader(want), "lazyfs_background_requests_total", "lazyfs_background_fetches"); err != nil {
		t.Error(err)
	}
	var nilReg *Registry
	nilReg.WatchBackground("x", func() Background { return a })()
}
