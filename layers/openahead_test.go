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
	// The first frame is left to the first read, unless the next decodes
	// only after it: then it is fetched too, from the frame with a window
	// before it, in a request of its own.
	from := first + 1
	if gz.NeedsFrameBefore(first + 1) {
		for from = first; gz.NeedsFrameBefore(from); from-- {
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.cached(gz) < end-from && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for k := first; k < end; k++ {
		if got, want := e.store.Has(gz.Frames[k].Digest), k >= from; got != want {
			t.Errorf("frame %d of bin/data cached = %v after the open, want %v (from frame %d)", k, got, want, from)
		}
	}
	st := e.proxy.Stats()
	var comp int64
	for k := from; k < end; k++ {
		comp += gz.Frames[k].CompressedSize
	}
	if maxReqs := int(comp/openAheadRequest) + 3; st.Blobs[gz.Layer].Requests > maxReqs {
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

// profileOf is a profile of the image e naming frames of layer x.
func (e *pullEnv) profileOf(x *index.Index, frames ...int) *Profile {
	p := &Profile{Version: profileVersion, Image: e.img.Digest}
	l := ProfileLayer{Digest: x.Layer}
	for _, k := range frames {
		l.Ranges = append(l.Ranges, [2]int64{x.Frames[k].Offset, x.Frames[k].Size})
	}
	p.Layers = append(p.Layers, l)
	return p
}

// After a prefetch profile named some frames of a file, opening it
// fetches none of its other frames (the start-up the profile recorded
// read none); a file it named no frame of, and a layer it did not name,
// are fetched at open as without a profile.
func TestOpenedFileKeepsToTheProfile(t *testing.T) {
	e := newPullEnv(t)
	gz, tar := e.ls[0].Index, e.ls[1].Index
	f := entryAt(t, gz, "bin/data")
	first, end := gz.FramesFor(f.Offset, f.Size)
	if end-first < 8 {
		t.Fatalf("bin/data is in frames [%d, %d); the test wants at least 8", first, end)
	}
	var m testMetrics
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.SetMetrics(&m)
	defer src.Close()
	if _, err := src.Prefetch(t.Context(), e.indexes(), e.profileOf(gz, first, first+1, first+2), PrefetchConfig{}); err != nil {
		t.Fatal(err)
	}
	e.proxy.ClearStats()
	src.OpenedFile(gz, f.Offset, f.Size)
	time.Sleep(100 * time.Millisecond) // (fetches at open start in the background)
	m.mu.Lock()
	started := m.aheadStarted
	m.mu.Unlock()
	if started != 0 {
		t.Errorf("opening bin/data after a profile named 3 of its %d frames started %d fetches, want 0", end-first, started)
	}

	// A range of the layer the profile named nothing of.
	src.OpenedFile(gz, gz.Frames[first+4].Offset, gz.Frames[first+4].Size+gz.Frames[first+5].Size+gz.Frames[first+6].Size)
	big := entryAt(t, tar, "etc/big")
	src.OpenedFile(tar, big.Offset, big.Size)
	for wait := time.Now().Add(5 * time.Second); time.Now().Before(wait); time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		started = m.aheadStarted
		m.mu.Unlock()
		if started >= 2 {
			break
		}
	}
	if started < 2 {
		t.Errorf("opening files the profile named nothing of started %d fetches, want at least 2", started)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !e.store.Has(gz.Frames[first+6].Digest) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !e.store.Has(gz.Frames[first+5].Digest) || !e.store.Has(gz.Frames[first+6].Digest) {
		t.Errorf("frames %d and %d not fetched at open", first+5, first+6)
	}
}

// A sequential reader on the frames a profile named is not read ahead
// past them; off them, it is, as without a profile.
func TestReadaheadKeepsToTheProfile(t *testing.T) {
	e := newPullEnv(t)
	gz := e.ls[0].Index
	if len(gz.Frames) < 10 {
		t.Fatalf("layer has %d frames; the test wants 10", len(gz.Frames))
	}
	var m testMetrics
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.SetMetrics(&m)
	defer src.Close()
	if _, err := src.Prefetch(t.Context(), e.indexes(), e.profileOf(gz, 1, 2), PrefetchConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if _, err := src.Frame(t.Context(), gz, i); err != nil {
			t.Fatal(err)
		}
	}
	m.mu.Lock()
	started := m.aheadStarted
	m.mu.Unlock()
	if started != 0 {
		t.Errorf("reading the profile's frames 1 and 2 read %d frames ahead, want 0", started)
	}
	for _, i := range []int{6, 7} {
		if _, err := src.Frame(t.Context(), gz, i); err != nil {
			t.Fatal(err)
		}
	}
	src.wg.Wait()
	m.mu.Lock()
	started = m.aheadStarted
	m.mu.Unlock()
	if started == 0 {
		t.Errorf("reading frames 6 and 7, which the profile did not name, read nothing ahead")
	}
}
