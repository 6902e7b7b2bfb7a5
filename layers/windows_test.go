package layers

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// pushedIndexes builds e's layer indexes and pushes them, and returns them
// with a fresh root's store and a resolver on it: a root that finds the
// indexes in the registry.
func pushedIndexes(t *testing.T, e *env) ([]Layer, *cache.Store, *Resolver) {
	t.Helper()
	built, err := e.r.Build(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Push(t.Context(), e.img, built); err != nil {
		t.Fatal(err)
	}
	store := openStore(t, t.TempDir())
	return built, store, NewResolver(Config{Client: e.client, Store: store})
}

// TestLazyWindows pushes the indexes, then on fresh roots: finds them
// fetching only each gzip index's toc, reads frames fetching each window
// beside its frame (a corrupted window refetched, never served), keeps the
// toc and where its windows are locally, pulls, and pushes the indexes
// again from tocs (as commit does for a base image's layers).
func TestLazyWindows(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	built, store, fresh := pushedIndexes(t, e)
	lks, err := fresh.Inspect(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	blob := *lks[0].Remote
	toc, err := strconv.ParseInt(blob.Annotations[TOCSizeAnnotation], 10, 64)
	if err != nil || toc <= 0 || toc >= blob.Size || blob.MediaType != IndexMediaType {
		t.Fatalf("index blob %s (%d bytes) annotated toc-size %q, want a toc shorter than the blob",
			blob.MediaType, blob.Size, blob.Annotations[TOCSizeAnnotation])
	}

	e.proxy.ClearStats()
	ls, err := fresh.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if st := e.proxy.Stats().Blobs[blob.Digest]; st.Requests != 1 || st.Bytes != toc {
		t.Errorf("finding the index fetched %d bytes in %d requests (%v), want the %d-byte toc in one", st.Bytes, st.Requests, st.Ranges, toc)
	}
	x := ls[0].Index
	if x.WindowsLoaded() || !ls[1].Index.WindowsLoaded() {
		t.Fatalf("WindowsLoaded() = %v, %v; want the gzip layer's toc alone, the tar layer's whole", x.WindowsLoaded(), ls[1].Index.WindowsLoaded())
	}

	src := NewSource(e.client, e.img.Repo, store, nil)
	src.readahead = 0
	defer src.Close()
	want := built[0].Index
	k := -1
	for i := range x.Frames {
		if x.NeedsWindow(i) {
			k = i
			break
		}
	}
	if k < 0 {
		t.Fatal("no frame of the gzip layer has a window")
	}
	e.proxy.ClearStats()
	e.proxy.Corrupt(1) // the first of the two requests, whichever it is
	data, err := src.Frame(ctx, x, k)
	if err != nil {
		t.Fatalf("Frame(%d): %v", k, err)
	}
	if digest.FromBytes(data) != want.Frames[k].Digest {
		t.Fatalf("Frame(%d) does not match its digest", k)
	}
	st := e.proxy.Stats()
	if n := st.Blobs[blob.Digest].Requests; n < 1 || n > 2 {
		t.Errorf("window requests = %d, want 1 or 2 (one of them corrupted)", n)
	}
	if n := st.Blobs[blob.Digest].Bytes; n > 2*windowGroupFrames*(32<<10) {
		t.Errorf("window requests fetched %d bytes", n)
	}

	// Reading on through the layer fetches no window: each is the end of
	// the frame before, which is cached.
	e.proxy.ClearStats()
	for i := k + 1; i < len(x.Frames); i++ {
		if _, err := src.Frame(ctx, x, i); err != nil {
			t.Fatalf("Frame(%d): %v", i, err)
		}
	}
	if n := e.proxy.Stats().Blobs[blob.Digest].Requests; n != 0 {
		t.Errorf("reading frames %d to %d after %d made %d window requests, want 0 (cut from the frame before)", k+1, len(x.Frames)-1, k, n)
	}

	// The next process on that root finds the toc locally and reads
	// windows again from where it came from.
	again, err := NewResolver(Config{Client: e.client, Store: store}).Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	if again[0].Origin != OriginLocal || again[0].Index.WindowsLoaded() {
		t.Errorf("second Layers() = %s, windows loaded %v; want the local toc", again[0].Origin, again[0].Index.WindowsLoaded())
	}
	if _, err := fresh.Pull(ctx, e.img, again, PullConfig{}); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	for i, f := range want.Frames {
		if !store.Has(f.Digest) {
			t.Fatalf("frame %d not cached after Pull", i)
		}
	}

	// Push from tocs: the windows are fetched and the artifact is whole.
	if _, err := fresh.Push(ctx, e.img, again); err != nil {
		t.Fatalf("Push of downloaded tocs: %v", err)
	}
	third := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())})
	lks, err = third.Inspect(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := e.client.ReadBlob(ctx, e.img.Repo, lks[0].Remote.Digest, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := want.MarshalBinary()
	if !bytes.Equal(enc, orig) {
		t.Errorf("re-pushed index (%d bytes) differs from the original (%d)", len(enc), len(orig))
	}

	// Without the record of where its windows are, a stored toc is a miss.
	if err := store.PutIndex(x.TOCDigest(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	y, err := fresh.LocalIndex(x.Layer)
	if err != nil || y != nil {
		t.Errorf("LocalIndex() without a window record = %v, %v; want a miss", y, err)
	}
}

// TestPrefetchFetchesWindowsOfARun checks that a profile's run of frames
// costs one request for the window of its first frame, and none when that
// frame needs none: later windows are cut from the frames decoded before,
// also when the run is fetched in several requests at once.
func TestPrefetchFetchesWindowsOfARun(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	_, store, fresh := pushedIndexes(t, e)
	ls, err := fresh.Layers(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	x := ls[0].Index
	k := 1
	for k < len(x.Frames) && !x.NeedsWindow(k) {
		k++
	}
	if k >= len(x.Frames)-2 {
		t.Fatalf("the gzip layer's first frame with a window is %d of %d; the test wants a few after it", k, len(x.Frames))
	}
	lks, _ := fresh.Inspect(ctx, e.img)
	origin, err := getWindowOrigin(store, x)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, windows int
		maxRequest    int64
	}{
		{k, 1, 1 << 30},
		{0, 0, 1 << 30},
		// A request per frame, 4 at once: a run whose frame before is
		// being fetched by another waits for it rather than fetch a window.
		{k, 1, 1},
	} {
		f := x.Frames[tc.from]
		p := &Profile{Layers: []ProfileLayer{{Digest: x.Layer, Ranges: [][2]int64{{f.Offset, x.TarSize - f.Offset}}}}}
		src := NewSource(e.client, e.img.Repo, store, nil)
		e.proxy.ClearStats()
		st, err := src.Prefetch(ctx, []*index.Index{x}, p, PrefetchConfig{MaxRequest: tc.maxRequest})
		src.Close()
		if err != nil || st.Failed != 0 {
			t.Fatalf("Prefetch = %+v, %v", st, err)
		}
		ws := e.proxy.Stats().Blobs[lks[0].Remote.Digest]
		if ws.Requests != tc.windows || ws.Bytes > 33<<10 {
			t.Errorf("prefetch of frames %d to %d, requests of %d bytes at most: %d window requests, %d bytes; want %d, one window at most", tc.from, len(x.Frames)-1, tc.maxRequest, ws.Requests, ws.Bytes, tc.windows)
		}
		for i := tc.from; i < len(x.Frames); i++ {
			if !store.Has(x.Frames[i].Digest) {
				t.Fatalf("frame %d not cached after Prefetch", i)
			}
		}
		store = openStore(t, t.TempDir())
		if err := putWindowOrigin(store, x, origin); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTOCSizeAnnotationLies pushes index blobs whose toc-size annotation
// is wrong: Download then fetches the whole blob, and the index is right.
func TestTOCSizeAnnotationLies(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	built, err := e.r.Build(ctx, e.img)
	if err != nil {
		t.Fatal(err)
	}
	for _, lie := range []string{"10", "-1", "x", "1000000000"} {
		t.Run(lie, func(t *testing.T) {
			var blobs []fetch.ArtifactBlob
			for _, l := range built {
				data, err := l.Index.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				blobs = append(blobs, fetch.ArtifactBlob{MediaType: IndexMediaType, Data: data,
					Annotations: map[string]string{LayerAnnotation: l.Desc.Digest.String(), TOCSizeAnnotation: lie}})
			}
			if _, err := e.client.PushArtifact(ctx, e.img, ArtifactType, blobs, map[string]string{
				ocispec.AnnotationCreated: time.Now().UTC().Add(time.Duration(len(lie)) * time.Hour).Format(time.RFC3339),
			}); err != nil {
				t.Fatal(err)
			}
			ls, err := NewResolver(Config{Client: e.client, Store: openStore(t, t.TempDir())}).Layers(ctx, e.img)
			if err != nil {
				t.Fatalf("Layers with toc-size %q: %v", lie, err)
			}
			if ls[0].Origin != OriginRegistry || !ls[0].Index.WindowsLoaded() || len(ls[0].Index.Frames) != len(built[0].Index.Frames) {
				t.Errorf("toc-size %q: origin %s, windows loaded %v; want the whole index from the registry", lie, ls[0].Origin, ls[0].Index.WindowsLoaded())
			}
		})
	}
}
