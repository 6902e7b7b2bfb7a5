package layers

import (
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/index"
)

// entryAt returns the entry of x at path p.
func entryAt(t *testing.T, x *index.Index, p string) *index.Entry {
	t.Helper()
	for i := range x.Entries {
		if x.Entries[i].Path == p {
			return &x.Entries[i]
		}
	}
	t.Fatalf("layer %s has no %s", x.Layer, p)
	return nil
}

// Opening a file fetches its frames but the first in the background, in
// few requests, and the reads then find them cached; files too large,
// zstd layers and a closed Source fetch nothing.
func TestOpenedFileFetchesAhead(t *testing.T) {
	e := newPullEnv(t)
	gz, tar, zst := e.ls[0].Index, e.ls[1].Index, e.ls[2].Index
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()

	f := entryAt(t, gz, "bin/data")
	first, end := gz.FramesFor(f.Offset, f.Size)
	if end-first < 6 {
		t.Fatalf("bin/data is in frames [%d, %d); the test wants at least 6", first, end)
	}
	src.OpenedFile(gz, f.Offset, f.Size)
	deadline := time.Now().Add(20 * time.Second)
	for e.cached(gz) < end-first-1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for k := first; k < end; k++ {
		if got, want := e.store.Has(gz.Frames[k].Digest), k != first; got != want {
			t.Errorf("frame %d of bin/data cached = %v after the open, want %v (all but the first)", k, got, want)
		}
	}
	st := e.proxy.Stats()
	var comp int64
	for k := first + 1; k < end; k++ {
		comp += gz.Frames[k].CompressedSize
	}
	if maxReqs := int(comp/openAheadRequest) + 2; st.Blobs[gz.Layer].Requests > maxReqs {
		t.Errorf("the open made %d requests of the layer for %d frames (%d bytes), want at most %d", st.Blobs[gz.Layer].Requests, end-first-1, comp, maxReqs)
	}
	// A second open fetches nothing more; nor do reads of the frames.
	e.proxy.ClearStats()
	src.OpenedFile(gz, f.Offset, f.Size)
	for k := first + 1; k < end; k++ {
		if _, err := src.Frame(t.Context(), gz, k); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.proxy.Stats().Blobs[gz.Layer].Requests; n != 0 {
		t.Errorf("reads after the open made %d requests of the layer, want 0", n)
	}

	// The uncompressed layer's big file is fetched too; the zstd layer's
	// and files past the limit are not.
	big := entryAt(t, tar, "etc/big")
	src.OpenedFile(zst, 0, zst.TarSize)
	src.OpenedFile(tar, big.Offset, openAheadMaxFile+1)
	time.Sleep(200 * time.Millisecond)
	if n := e.cached(zst) + e.cached(tar); n != 0 {
		t.Errorf("opening a zstd layer's file or a file over %d bytes cached %d frames, want 0", openAheadMaxFile, n)
	}
	src.Close()
	src.OpenedFile(tar, big.Offset, big.Size)
	time.Sleep(200 * time.Millisecond)
	if n := e.cached(tar); n != 0 {
		t.Errorf("an open after Close cached %d frames, want 0", n)
	}
}
