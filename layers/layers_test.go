package layers

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

type env struct {
	client *fetch.Client
	store  *cache.Store
	r      *Resolver
	img    *fetch.Image
	proxy  *testutil.FaultProxy
	layers []testutil.Layer
}

// newEnv pushes a two-layer image (gzip and uncompressed tar) to a real
// registry behind a fault proxy and opens a resolver on a fresh root.
func newEnv(t testing.TB) *env {
	t.Helper()
	reg := testutil.StartRegistry(t)
	ls := []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{
			{Path: "bin/", Mode: 0o755},
			{Path: "bin/data", Size: 3 << 20, Seed: 1},
		}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "etc/motd", Data: []byte("hi\n")}}, types.OCIUncompressedLayer),
	}
	testutil.PushImage(t, reg.Addr, "test/layers:v1", ls, testutil.ImageConfig{})
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	e := &env{proxy: proxy, layers: ls}
	e.client = fetch.New(fetch.Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	e.store = openStore(t, t.TempDir())
	e.r = NewResolver(Config{Client: e.client, Store: e.store, Build: index.BuildOptions{Span: 256 << 10}})
	img, err := e.client.Resolve(t.Context(), proxy.Addr+"/test/layers:v1")
	if err != nil {
		t.Fatal(err)
	}
	e.img = img
	return e
}

func openStore(t testing.TB, root string) *cache.Store {
	t.Helper()
	s, err := cache.Open(cache.Config{Dir: filepath.Join(root, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// entryOf returns the entry of x at path p.
func entryOf(t testing.TB, x *index.Index, p string) *index.Entry {
	t.Helper()
	for i := range x.Entries {
		if x.Entries[i].Path == p {
			return &x.Entries[i]
		}
	}
	t.Fatalf("%s not in the index", p)
	return nil
}

func origins(ls []Layer) []Origin {
	var out []Origin
	for _, l := range ls {
		out = append(out, l.Origin)
	}
	return out
}

func TestLayersFindsIndexesInOrder(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

	built, err := e.r.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if got := origins(built); got[0] != OriginBuilt || got[1] != OriginBuilt {
		t.Errorf("first Layers() origins = %v, want built (no index anywhere)", got)
	}
	e.proxy.ClearStats()
	if err := e.r.EnsureIndexes(ctx, e.img); err != nil || len(e.proxy.Requests()) != 0 {
		t.Errorf("EnsureIndexes with every index local = %v after %d requests, want none", err, len(e.proxy.Requests()))
	}
	again, err := e.r.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if got := origins(again); got[0] != OriginLocal || got[1] != OriginLocal {
		t.Errorf("second Layers() origins = %v, want local", got)
	}

	if _, err := e.r.Push(ctx, e.img, built); err != nil {
		t.Fatalf("Push: %v", err)
	}
	// A machine with an empty root finds the pushed index without reading
	// any layer blob.
	other := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	third := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	if err := third.EnsureIndexes(ctx, e.img); err != nil {
		t.Fatal(err)
	}
	for _, l := range e.layers {
		if _, err := third.cfg.Store.GetIndex(l.Digest); err != nil {
			t.Errorf("EnsureIndexes on a fresh root did not keep the index of layer %s: %v", l.Digest, err)
		}
	}
	e.proxy.ClearStats()
	remote, err := other.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if got := origins(remote); got[0] != OriginRegistry || got[1] != OriginRegistry {
		t.Errorf("Layers() on a fresh root = %v, want registry", got)
	}
	for _, l := range e.layers {
		if n := e.proxy.Stats().Blobs[l.Digest].Bytes; n != 0 {
			t.Errorf("finding the pushed index read %d bytes of layer %s", n, l.Digest)
		}
	}
	for i := range remote {
		if remote[i].Index.Layer != built[i].Index.Layer || len(remote[i].Index.Frames) != len(built[i].Index.Frames) {
			t.Errorf("layer %d: registry index differs from the built one", i)
		}
	}

	lookups, err := other.Inspect(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lookups {
		if !l.Local || l.Remote == nil || !l.Lazy || l.Artifact == nil {
			t.Errorf("Inspect layer %d = %+v, want local, remote and lazy", i, l)
		}
	}
}

// An index blob damaged on the way from the registry is fetched again,
// as a frame is: a corrupted answer is not a failed start; three in a row
// are, with ErrDigestMismatch.
func TestDownloadedIndexCorruptIsFetchedAgain(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	built, err := e.r.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Push(ctx, e.img, built); err != nil {
		t.Fatalf("Push: %v", err)
	}

	e.proxy.ClearStats()
	e.proxy.Corrupt(1)
	other := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	got, err := other.Layers(ctx, e.img)
	if err != nil {
		t.Fatalf("Layers with one corrupted index answer: %v", err)
	}
	if o := origins(got); o[0] != OriginRegistry || o[1] != OriginRegistry {
		t.Errorf("Layers with one corrupted index answer = %v, want registry", o)
	}
	if n := e.proxy.PendingFaults(); n != 0 {
		t.Errorf("%d faults left unused", n)
	}

	// Both layers' index blobs answer corrupt every time: the toc read
	// (version 2) falls back to the whole blob, which gives up after its
	// third fetch.
	const most = 2 * (1 + corruptFetches)
	e.proxy.ClearStats()
	e.proxy.Corrupt(most)
	other = NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	if _, err := other.Layers(ctx, e.img); !errors.Is(err, fetch.ErrDigestMismatch) {
		t.Errorf("Layers with every index answer corrupted = %v, want ErrDigestMismatch", err)
	}
	gets := 0
	for _, r := range e.proxy.Requests() {
		if r.Method == "GET" && r.Digest != "" {
			gets++
		}
	}
	if gets > most {
		t.Errorf("%d blob GETs with every index answer corrupted, want at most %d", gets, most)
	}
}

// TestDamagedLocalIndexIsFoundAgain damages the stored index of a layer in
// the ways a power cut, a bad disk or a mix-up can (garbage, cut at several
// lengths, single bits flipped, another layer's index under its name): each
// time the damage is noticed, the index rebuilt and stored again, and the
// rebuilt one is the original; never a panic, never a wrong index.
func TestDamagedLocalIndexIsFoundAgain(t *testing.T) {
	e := newEnv(t)
	built, err := e.r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	d := e.img.Manifest.Layers[0].Digest
	good, err := e.store.GetIndex(d)
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.store.GetIndex(e.img.Manifest.Layers[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x04
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"garbage after the magic", []byte("LZFSIDX\x00garbage")},
		{"empty", nil},
		{"magic only", good[:8]},
		{"cut after the header", good[:12]},
		{"cut in half", good[:len(good)/2]},
		{"last byte missing", good[:len(good)-1]},
		{"a byte too many", append(bytes.Clone(good), 0)},
		{"bit flipped in the version", flip(8)},
		{"bit flipped in the body", flip(len(good) / 2)},
		{"bit flipped in the checksum", flip(len(good) - 1)},
		{"another layer's index", other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.store.PutIndex(d, tc.data); err != nil {
				t.Fatal(err)
			}
			ls, err := e.r.Layers(t.Context(), e.img)
			if err != nil {
				t.Fatalf("Layers with a damaged local index: %v", err)
			}
			if ls[0].Origin != OriginBuilt || ls[1].Origin != OriginLocal {
				t.Errorf("origins = %v, want the damaged one rebuilt, the other local", origins(ls))
			}
			enc, err := ls[0].Index.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			want, _ := built[0].Index.MarshalBinary()
			if !bytes.Equal(enc, want) {
				t.Errorf("rebuilt index differs from the original")
			}
			if stored, err := e.store.GetIndex(d); err != nil || !bytes.Equal(stored, good) {
				t.Errorf("stored index after the rebuild: %d bytes, %v; want the original", len(stored), err)
			}
		})
	}
}

func TestSourceServesVerifiedFrames(t *testing.T) {
	e := newEnv(t)
	ls, err := e.r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.readahead = 0 // the test counts requests
	x := ls[0].Index
	want := make([]byte, 3<<20)
	testutil.PatternAt(1, 0, want)
	file := entryOf(t, x, "bin/data")
	e.proxy.ClearStats()
	e.proxy.Corrupt(1)
	first, end := x.FramesFor(file.Offset+1<<20, 1)
	for i := first; i < end; i++ {
		data, err := src.Frame(t.Context(), x, i)
		if err != nil {
			t.Fatalf("Frame(%d) after one corrupted answer: %v", i, err)
		}
		f := x.Frames[i]
		if digest.FromBytes(data) != f.Digest {
			t.Fatalf("Frame(%d) returned bytes that do not match its digest", i)
		}
		lo := max(f.Offset, file.Offset) - file.Offset
		hi := min(f.Offset+f.Size, file.Offset+file.Size) - file.Offset
		if !bytes.Equal(data[lo+file.Offset-f.Offset:hi+file.Offset-f.Offset], want[lo:hi]) {
			t.Fatalf("Frame(%d) content differs from the file", i)
		}
	}
	st := e.proxy.Stats().Blobs[x.Layer]
	if st.Requests != 2 {
		t.Errorf("layer blob requests = %d (%v), want 2 (one corrupted, one good)", st.Requests, st.Ranges)
	}
	if need := spanBytes(x, first); st.Bytes > 2*need {
		t.Errorf("fetched %d bytes for one frame of %d compressed bytes (from the frame it decodes after)", st.Bytes, need)
	}
	// A second read is served from the cache.
	e.proxy.ClearStats()
	if _, err := src.Frame(t.Context(), x, first); err != nil {
		t.Fatal(err)
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("a cached frame caused %d blob requests", n)
	}
}

func TestDownloadedIndexMustMatchLayer(t *testing.T) {
	e := newEnv(t)
	built, err := e.r.Build(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	// Publish layer 1's index under layer 0's name: a reader must refuse it.
	swapped := []Layer{{Desc: built[0].Desc, Index: built[1].Index}, {Desc: built[1].Desc, Index: built[0].Index}}
	if _, err := e.r.Push(t.Context(), e.img, swapped); err != nil {
		t.Fatal(err)
	}
	other := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	if _, err := other.Layers(t.Context(), e.img); err == nil {
		t.Errorf("Layers accepted an index that describes another layer")
	}
}

// BenchmarkFrameRead reads one 1 MiB gzip frame of a real registry's
// layer: cold (Range GET over loopback, inflate from a checkpoint, verify,
// store) and warm (memory tier).
func BenchmarkFrameRead(b *testing.B) {
	e := newEnv(b)
	ls, err := e.r.Layers(b.Context(), e.img)
	if err != nil {
		b.Fatal(err)
	}
	x := ls[0].Index
	i := len(x.Frames) / 2
	size := x.Frames[i].Size
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			b.StopTimer()
			store := openStore(b, b.TempDir())
			src := NewSource(e.client, e.img.Repo, store, nil)
			b.StartTimer()
			if _, err := src.Frame(b.Context(), x, i); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(x.Frames[i].CompressedSize), "remote-B/op")
	})
	b.Run("warm", func(b *testing.B) {
		src := NewSource(e.client, e.img.Repo, openStore(b, b.TempDir()), nil)
		if _, err := src.Frame(b.Context(), x, i); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := src.Frame(b.Context(), x, i); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestSourceReadsAhead(t *testing.T) {
	e := newEnv(t)
	ls, err := e.r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	x := ls[0].Index
	if len(x.Frames) < 3 {
		t.Fatalf("layer has %d frames; the test needs 3", len(x.Frames))
	}
	cached := func() (n int) {
		for _, f := range x.Frames {
			if e.store.Has(f.Digest) {
				n++
			}
		}
		return n
	}
	// A jump is not sequential: nothing is fetched ahead.
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	for _, i := range []int{len(x.Frames) - 1, 0} {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatal(err)
		}
	}
	src.wg.Wait()
	src.Close()
	last := len(x.Frames) - 1
	if got, want := cached(), last-chainStart(x, last)+1+spanEnd(x, 0)+1; got != want {
		t.Errorf("after reading two frames out of order, %d frames are cached; want %d (and those of their spans before and after them)", got, want)
	}
	// In order, the next frames follow without being asked for.
	src = NewSource(e.client, e.img.Repo, e.store, nil)
	for _, i := range []int{0, 1} {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatal(err)
		}
	}
	src.wg.Wait() // the read-ahead, not cancelled as Close would
	src.Close()
	ahead, _ := framesAhead(x, 1, readaheadRequest) // a new reader's first window
	if got, want := cached(), 2+ahead; got < want {
		t.Errorf("after reading frames 0 and 1 in order, %d of %d frames are cached; want %d", got, len(x.Frames), want)
	}
}

// chainBytes is what a load of frame i of x fetches when no frame of x is
// cached: its compressed bytes and those of the frames it decodes after
// (index.Frame.PrevWindow).
func chainBytes(x *index.Index, i int) int64 {
	return x.Frames[i].CompressedOffset + x.Frames[i].CompressedSize - x.Frames[chainStart(x, i)].CompressedOffset
}

// Two readers moving through one layer in turns are each read ahead
// (one stream of frames per reader, not one per layer).
func TestSourceReadsAheadTwoStreams(t *testing.T) {
	e := newPullEnv(t)
	x := e.ls[0].Index
	if len(x.Frames) < 20 {
		t.Fatalf("layer has %d frames; the test needs 20", len(x.Frames))
	}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.setProfiled(x, []int{len(x.Frames) - 1}) // reads fetch their frame alone
	a, b := 1, len(x.Frames)/2+1
	for _, i := range []int{a, b, a + 1, b + 1} {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatal(err)
		}
	}
	src.wg.Wait()
	src.Close()
	for _, i := range []int{a + 2, b + 2} {
		if !e.store.Has(x.Frames[i].Digest) {
			t.Errorf("frame %d, after a reader of frames %d and %d, not read ahead", i, i-2, i-1)
		}
	}
}

// spanEnd is the last frame a cold load of frame i of x fetches: the last
// before the next that keeps its window.
func spanEnd(x *index.Index, i int) int {
	for x.NeedsFrameBefore(i + 1) {
		i++
	}
	return i
}

// spanBytes is what a cold load of frame i of x fetches: from the frame
// it decodes after to the end of its span.
func spanBytes(x *index.Index, i int) int64 {
	return x.Frames[spanEnd(x, i)].CompressedOffset + x.Frames[spanEnd(x, i)].CompressedSize - x.Frames[chainStart(x, i)].CompressedOffset
}

// chainStart is the frame a load of frame i of x starts from when no
// frame of x is cached: the last up to i that keeps its window.
func chainStart(x *index.Index, i int) int {
	for x.NeedsFrameBefore(i) {
		i--
	}
	return i
}

// framesAhead is how many frames a sequential reader of frame i of x has
// read ahead, and in how many requests, with its read-ahead window at
// window bytes: the frames starting within them after it, in groups of
// readaheadRequest bytes.
func framesAhead(x *index.Index, i int, window int64) (frames, requests int) {
	var group int64
	for k := i + 1; k < len(x.Frames) && x.Frames[k].Offset < x.Frames[i].Offset+x.Frames[i].Size+window; k++ {
		if group == 0 {
			requests++
		}
		if group += x.Frames[k].Size; group >= readaheadRequest {
			group = 0
		}
		frames++
	}
	return frames, min(requests, readaheadLoads)
}

// A frame that keeps no window (index.Frame.PrevWindow) is fetched with
// the frames it decodes after, back to one whose window is at hand, in
// one request, and a cold read with the rest of its span; after a cached
// frame, with a profile, alone. A read of several frames (FetchRun)
// fetches them with one request.
func TestFramesWithoutWindows(t *testing.T) {
	e := newPullEnv(t)
	x := e.ls[0].Index
	var chained []int
	for k := range x.Frames {
		if x.NeedsFrameBefore(k) && x.NeedsFrameBefore(k-1) {
			chained = append(chained, k)
		}
	}
	if len(chained) < 2 || chainStart(x, chained[0]) == chainStart(x, chained[len(chained)-1]) {
		t.Fatalf("frames %v after a frame without a window; the test wants some in two spans", chained)
	}
	ranges := func() []string {
		st := e.proxy.Stats()
		e.proxy.ClearStats()
		return st.Blobs[x.Layer].Ranges
	}
	rangeOf := func(first, last int) string {
		return fmt.Sprintf("bytes=%d-%d", x.Frames[first].CompressedOffset, x.Frames[last].CompressedOffset+x.Frames[last].CompressedSize-1)
	}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	src.readahead = 0
	k := chained[0]
	e.proxy.ClearStats()
	if _, err := src.Frame(t.Context(), x, k); err != nil {
		t.Fatal(err)
	}
	if got, want := ranges(), []string{rangeOf(chainStart(x, k), spanEnd(x, k))}; !slices.Equal(got, want) {
		t.Errorf("reading frame %d with nothing cached fetched %v, want %v (frames %d to %d)", k, got, want, chainStart(x, k), spanEnd(x, k))
	}
	for j := chainStart(x, k); j <= spanEnd(x, k); j++ {
		if !e.store.Has(x.Frames[j].Digest) {
			t.Errorf("frame %d, in the span of frame %d, not cached", j, k)
		}
	}

	// With a profile for the layer, a read fetches its own frame only.
	m := chained[len(chained)-1]
	src.setProfiled(x, []int{0})
	if _, err := src.Frame(t.Context(), x, m-1); err != nil {
		t.Fatal(err)
	}
	if got, want := ranges(), []string{rangeOf(chainStart(x, m-1), m-1)}; !slices.Equal(got, want) {
		t.Errorf("reading frame %d with a profile fetched %v, want %v", m-1, got, want)
	}
	if _, err := src.Frame(t.Context(), x, m); err != nil {
		t.Fatal(err)
	}
	if got, want := ranges(), []string{rangeOf(m, m)}; !slices.Equal(got, want) {
		t.Errorf("reading frame %d after a cached one fetched %v, want %v", m, got, want)
	}

	// Two frames of one read: one request, and both decode.
	e.freshStore(t)
	src2 := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src2.Close()
	src2.FetchRun(x, m, m+1)
	if n := len(ranges()); n != 0 {
		t.Errorf("FetchRun of one frame made %d requests", n)
	}
	src2.FetchRun(x, m-1, m+1)
	for _, j := range []int{m - 1, m} {
		data, err := src2.Frame(t.Context(), x, j)
		if err != nil || digest.FromBytes(data) != x.Frames[j].Digest {
			t.Fatalf("Frame(%d) after FetchRun: %v", j, err)
		}
	}
	if got, want := ranges(), []string{rangeOf(chainStart(x, m-1), m)}; !slices.Equal(got, want) {
		t.Errorf("a read of frames %d and %d fetched %v, want %v", m-1, m, got, want)
	}
}

// On a warm cache a sequential reader finds the frames after its own in
// memory: read ahead from disk, not fetched again, and not when it jumps.
func TestSourceReadsAheadFromDisk(t *testing.T) {
	e := newEnv(t)
	root := t.TempDir()
	r := NewResolver(Config{Client: e.client, Store: openStore(t, root), Build: index.BuildOptions{Span: 256 << 10}})
	ls, err := r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Pull(t.Context(), e.img, ls, PullConfig{}); err != nil {
		t.Fatal(err)
	}
	x := ls[0].Index
	inMemory := func(store *cache.Store) (n int) {
		for _, f := range x.Frames {
			if store.InMemory(f.Digest, f.Size) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct {
		name  string
		reads []int
		want  int // frames in memory after the reads, at least (jump: exactly)
	}{
		{"jump", []int{len(x.Frames) - 1, 0}, 2},
		{"in order", []int{0, 1}, 2 + func() int { n, _ := framesAhead(x, 1, readaheadRequest); return n }()},
	} {
		t.Run(c.name, func(t *testing.T) {
			// A new Store on the same directory: every frame on disk, none in memory.
			store := openStore(t, root)
			src := NewSource(e.client, e.img.Repo, store, nil)
			before := len(e.proxy.Requests())
			for _, i := range c.reads {
				if _, err := src.Frame(t.Context(), x, i); err != nil {
					t.Fatal(err)
				}
			}
			src.wg.Wait()
			src.Close()
			got := inMemory(store)
			if got < c.want || c.name == "jump" && got != c.want {
				t.Errorf("after reading frames %v, %d of %d frames are in memory; want %d", c.reads, got, len(x.Frames), c.want)
			}
			if n := len(e.proxy.Requests()) - before; n != 0 {
				t.Errorf("reads of cached frames made %d requests", n)
			}
		})
	}
}

// Processes that share a store and look for the same image's indexes at
// once download each index once: the others wait for it and take it from
// the store.
func TestIndexDownloadedOnceAcrossProcesses(t *testing.T) {
	e := newEnv(t)
	built, err := e.r.Build(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Push(t.Context(), e.img, built); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e.proxy.ClearStats()
	// The first process's index downloads take 300 ms: the second starts
	// while they run.
	e.proxy.Stall(len(built), 300*time.Millisecond)
	var g errgroup.Group
	for i := range 2 {
		g.Go(func() error {
			time.Sleep(time.Duration(i) * 50 * time.Millisecond)
			r := NewResolver(Config{Client: e.client, Store: openStore(t, root)})
			ls, err := r.Layers(t.Context(), e.img)
			if err == nil && len(ls) != len(built) {
				err = fmt.Errorf("%d layers, want %d", len(ls), len(built))
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	skip := map[digest.Digest]bool{e.img.Manifest.Config.Digest: true}
	for _, d := range e.img.Manifest.Layers {
		skip[d.Digest] = true
	}
	got := map[digest.Digest]int{}
	for _, req := range e.proxy.Requests() {
		if req.Digest != "" && !skip[req.Digest] && req.Method == http.MethodGet {
			got[req.Digest]++
		}
	}
	if len(got) != len(built) {
		t.Fatalf("index blobs fetched: %v; want %d", got, len(built))
	}
	for d, n := range got {
		if n != 1 {
			t.Errorf("index blob %s fetched %d times, want once", d, n)
		}
	}
}
