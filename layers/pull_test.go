package layers

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// pullEnv is an image with a gzip, an uncompressed and a zstd layer behind
// a fault proxy, its layers' indexes (256 KiB spans), and an empty cache.
type pullEnv struct {
	client *fetch.Client
	store  *cache.Store
	r      *Resolver
	img    *fetch.Image
	ls     []Layer
	proxy  *testutil.FaultProxy
}

func newPullEnv(t *testing.T) *pullEnv {
	t.Helper()
	reg := testutil.StartRegistry(t)
	blobs := []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{{Path: "bin/", Mode: 0o755}, {Path: "bin/data", Size: 3 << 20, Seed: 1}}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "etc/big", Size: 2 << 20, Seed: 2}, {Path: "etc/motd", Data: []byte("hi\n")}}, types.OCIUncompressedLayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "usr/zdata", Size: 2 << 20, Seed: 3}}, types.OCILayerZStd),
	}
	testutil.PushImage(t, reg.Addr, "test/pull:v1", blobs, testutil.ImageConfig{})
	e := &pullEnv{proxy: testutil.NewFaultProxy(t, reg.Addr)}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	e.client = fetch.New(fetch.Config{Logger: log, Retries: -1})
	s, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	e.r = NewResolver(Config{Client: e.client, Store: s, Logger: log, Build: index.BuildOptions{Span: 256 << 10}})
	if e.img, err = e.client.Resolve(t.Context(), e.proxy.Addr+"/test/pull:v1"); err != nil {
		t.Fatal(err)
	}
	if e.ls, err = e.r.Layers(t.Context(), e.img); err != nil {
		t.Fatal(err)
	}
	for i, f := range []index.Format{index.FormatGzip, index.FormatTar, index.FormatZstd} {
		if got := e.ls[i].Index.Format; got != f {
			t.Fatalf("layer %d is %s, want %s", i, got, f)
		}
	}
	e.proxy.ClearStats()
	return e
}

// cached counts the frames of x on disk.
func (e *pullEnv) cached(x *index.Index) int {
	n := 0
	for _, f := range x.Frames {
		if e.store.Has(f.Digest) {
			n++
		}
	}
	return n
}

func TestPullFetchesEveryFrameInFewRequests(t *testing.T) {
	e := newPullEnv(t)
	var mu sync.Mutex
	last := map[int]PullProgress{}
	progress := func(p PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := last[p.Layer]; ok && (prev.Done || p.Stored < prev.Stored) {
			t.Errorf("progress of layer %d went from %+v to %+v", p.Layer, prev, p)
		}
		last[p.Layer] = p
	}
	res, err := e.r.Pull(t.Context(), e.img, e.ls, PullConfig{MaxRequest: 1 << 20, Parallel: 4, Progress: progress})
	if err != nil {
		t.Fatalf("Pull() = %v", err)
	}
	st := e.proxy.Stats()
	total := 0
	for i, l := range e.ls {
		x := l.Index
		if n := e.cached(x); n != len(x.Frames) {
			t.Errorf("layer %d (%s): %d of %d frames cached after Pull", i, x.Format, n, len(x.Frames))
		}
		r := res[i]
		bs := st.Blobs[x.Layer]
		if r.Requests != bs.Requests || r.Present != 0 || r.Stored != x.TarSize {
			t.Errorf("layer %d (%s): Pull() = %+v; the registry saw %d requests; want 0 present, %d stored", i, x.Format, r, bs.Requests, x.TarSize)
		}
		total += r.Requests
		switch x.Format {
		case index.FormatZstd:
			if r.Requests != 1 || bs.Ranges[0] != "" {
				t.Errorf("zstd layer: requests %v, want one GET of the whole blob", bs.Ranges)
			}
		default:
			// 1 MiB requests: a few per layer, far fewer than frames.
			if want := int(x.BlobSize>>20) + 2; r.Requests > want || r.Requests >= len(x.Frames) {
				t.Errorf("layer %d (%s): %d requests (%v) for %d frames of %d bytes, want at most %d", i, x.Format, r.Requests, bs.Ranges, len(x.Frames), x.BlobSize, want)
			}
			for _, rg := range bs.Ranges {
				if !strings.HasPrefix(rg, "bytes=") {
					t.Errorf("layer %d: request without a Range: %q", i, rg)
				}
			}
		}
		p := last[i]
		if !p.Done || p.Stored != x.TarSize || p.Total != x.TarSize || p.Present != 0 {
			t.Errorf("layer %d: last progress %+v, want done with %d bytes stored", i, p, x.TarSize)
		}
	}
	t.Logf("Pull: %d requests for %d layers, %d blob bytes", total, len(e.ls), st.BlobBytes)

	// Everything is local now: a source whose registry fails every blob
	// request still serves every frame.
	e.proxy.ClearStats()
	e.proxy.Fail(503, 1_000_000)
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	for _, l := range e.ls {
		for i, f := range l.Index.Frames {
			b, err := src.Frame(t.Context(), l.Index, i)
			if err != nil || digest.FromBytes(b) != f.Digest {
				t.Fatalf("Frame(%s, %d) with the registry failing = %d bytes, %v", l.Index.Layer, i, len(b), err)
			}
		}
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("reading pulled frames made %d blob requests", n)
	}

	// A second pull finds everything and asks for nothing.
	clear(last)
	res, err = e.r.Pull(t.Context(), e.img, e.ls, PullConfig{Progress: progress})
	if err != nil {
		t.Fatalf("second Pull() = %v", err)
	}
	for i, l := range e.ls {
		if r := res[i]; r.Requests != 0 || r.Present != len(l.Index.Frames) || r.Stored != 0 {
			t.Errorf("second Pull() layer %d = %+v, want everything present", i, r)
		}
		if p := last[i]; !p.Done || p.Present != l.Index.TarSize {
			t.Errorf("second Pull() layer %d progress %+v, want done and all present", i, p)
		}
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("second Pull() made %d blob requests", n)
	}
}

func TestPullFetchesOnlyMissingFrames(t *testing.T) {
	e := newPullEnv(t)
	x := e.ls[0].Index // gzip
	if len(x.Frames) < 14 {
		t.Fatalf("gzip layer has %d frames, want at least 14", len(x.Frames))
	}
	// Read frames 2 and 10 as a lazy run would.
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	for _, i := range []int{2, 10} {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatal(err)
		}
	}
	// The reads cached frames 2 and 10 and those they decode after (a
	// frame without a window of its own): the runs between them are
	// fetched, each with one request, none over a cached frame.
	var cachedFrames []int
	want, runs := x.TarSize, 0
	for k := range x.Frames {
		if e.store.Has(x.Frames[k].Digest) {
			cachedFrames = append(cachedFrames, k)
			want -= x.Frames[k].Size
		} else if k == 0 || e.store.Has(x.Frames[k-1].Digest) {
			runs++
		}
	}
	if len(cachedFrames) < 2 || runs < 2 {
		t.Fatalf("frames %v cached after reading 2 and 10, want them and runs of others between", cachedFrames)
	}
	e.proxy.ClearStats()
	res, err := e.r.Pull(t.Context(), e.img, e.ls[:1], PullConfig{MaxGap: -1})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Requests != runs || r.Present != len(cachedFrames) || r.Stored != want {
		t.Errorf("Pull() = %+v, want %d requests, %d present, %d bytes stored", r, runs, len(cachedFrames), want)
	}
	if n := e.cached(x); n != len(x.Frames) {
		t.Errorf("%d of %d frames cached", n, len(x.Frames))
	}
	for _, rg := range e.proxy.Stats().Blobs[x.Layer].Ranges {
		for _, i := range cachedFrames {
			f := x.Frames[i]
			// A request covers a cached frame if it starts at or before the
			// frame's first byte and ends after the byte shared with the next.
			var lo, hi int64
			if _, err := fmt.Sscanf(rg, "bytes=%d-%d", &lo, &hi); err != nil {
				t.Fatalf("range %q: %v", rg, err)
			}
			if lo <= f.CompressedOffset && hi >= f.CompressedOffset+f.CompressedSize-1 {
				t.Errorf("request %q fetched cached frame %d", rg, i)
			}
		}
	}

	// With the default gap, the small holes are fetched over: one request.
	e2 := newPullEnv(t)
	x2 := e2.ls[0].Index
	src2 := NewSource(e2.client, e2.img.Repo, e2.store, nil)
	if _, err := src2.Frame(t.Context(), x2, 2); err != nil {
		t.Fatal(err)
	}
	var cached2 int64
	for _, f := range x2.Frames {
		if e2.store.Has(f.Digest) {
			cached2 += f.Size
		}
	}
	e2.proxy.ClearStats()
	res, err = e2.r.Pull(t.Context(), e2.img, e2.ls[:1], PullConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Requests != 1 || r.Stored != x2.TarSize-cached2 {
		t.Errorf("Pull() with the default gap = %+v, want 1 request", r)
	}
}

func TestPullRetriesCorruptData(t *testing.T) {
	e := newPullEnv(t)
	e.proxy.Corrupt(1)
	res, err := e.r.Pull(t.Context(), e.img, e.ls, PullConfig{Parallel: 1})
	if err != nil {
		t.Fatalf("Pull() after one corrupted answer = %v", err)
	}
	requests := 0
	for i, l := range e.ls {
		requests += res[i].Requests
		if n := e.cached(l.Index); n != len(l.Index.Frames) {
			t.Errorf("layer %d: %d of %d frames cached", i, n, len(l.Index.Frames))
		}
	}
	if want := e.proxy.Stats().BlobRequests; requests != want {
		t.Errorf("Pull() counted %d requests, the registry saw %d", requests, want)
	}

	// A registry that keeps failing fails the pull.
	e2 := newPullEnv(t)
	e2.proxy.Fail(404, 1_000_000)
	if _, err := e2.r.Pull(t.Context(), e2.img, e2.ls, PullConfig{}); err == nil {
		t.Errorf("Pull() with every blob request failing succeeded")
	}
}

func TestPullNoticesTooSmallCache(t *testing.T) {
	e := newPullEnv(t)
	small, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache"), MaxDiskBytes: 1 << 20, MemoryBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	r := NewResolver(Config{Client: e.client, Store: small})
	_, err = r.Pull(t.Context(), e.img, e.ls, PullConfig{})
	if err == nil || !strings.Contains(err.Error(), "disk limit") {
		t.Errorf("Pull() into a 1 MiB cache = %v, want an error about the disk limit", err)
	}
}

// A zstd layer read lazily, frame by frame from the back, is fetched and
// decoded once: every frame lands in the cache on the first read.
func TestSourceDecodesZstdLayerOnce(t *testing.T) {
	e := newPullEnv(t)
	x := e.ls[2].Index
	if len(x.Frames) < 4 {
		t.Fatalf("zstd layer has %d frames; want several", len(x.Frames))
	}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	for i := len(x.Frames) - 1; i >= 0; i-- {
		data, err := src.Frame(t.Context(), x, i)
		if err != nil {
			t.Fatalf("Frame(%d): %v", i, err)
		}
		if digest.FromBytes(data) != x.Frames[i].Digest {
			t.Fatalf("Frame(%d) does not match its digest", i)
		}
	}
	if bs := e.proxy.Stats().Blobs[x.Layer]; bs.Requests != 1 {
		t.Errorf("zstd layer fetched %d times (%v), want once", bs.Requests, bs.Ranges)
	}
	if n := e.cached(x); n != len(x.Frames) {
		t.Errorf("%d of %d frames cached after the first read", n, len(x.Frames))
	}
}
