package layers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/index"
)

// indexes are the env's layer indexes.
func (e *pullEnv) indexes() []*index.Index {
	out := make([]*index.Index, len(e.ls))
	for i, l := range e.ls {
		out[i] = l.Index
	}
	return out
}

// freshStore swaps the env's cache for an empty one.
func (e *pullEnv) freshStore(t *testing.T) {
	t.Helper()
	s, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e.store = s
	e.r = NewResolver(Config{Client: e.client, Store: s})
}

// A profile recorded from reads, pushed, found again, and prefetched on an
// empty cache: exactly the frames read are fetched, adjacent ones in one
// request, and the same reads then fetch nothing.
func TestProfileRecordPushFindPrefetch(t *testing.T) {
	e := newPullEnv(t)
	gz, tar := e.ls[0].Index, e.ls[1].Index
	if len(gz.Frames) < 8 || len(tar.Frames) < 4 {
		t.Fatalf("layers have %d and %d frames; the test wants at least 8 and 4", len(gz.Frames), len(tar.Frames))
	}
	// The start-up: frames 5, 6, 7 then 1 of the gzip layer, 2 of the tar
	// layer, and 5 again.
	reads := []struct {
		x *index.Index
		i int
	}{{gz, 5}, {gz, 6}, {gz, 7}, {tar, 2}, {gz, 1}, {gz, 5}}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.readahead = 0
	rec := NewRecorder()
	src.Record(rec)
	want := map[digest.Digest][]byte{}
	for _, r := range reads {
		data, err := src.Frame(t.Context(), r.x, r.i)
		if err != nil {
			t.Fatal(err)
		}
		want[r.x.Frames[r.i].Digest] = data
	}
	src.Close()
	p := rec.Profile(e.img.Digest, []string{"sh", "-c", "start"})
	if len(p.Layers) != 2 || p.Layers[0].Digest != gz.Layer || p.Layers[1].Digest != tar.Layer {
		t.Fatalf("profile layers = %+v, want the gzip layer then the tar layer", p.Layers)
	}
	f := gz.Frames
	wantRanges := [][2]int64{{f[5].Offset, f[5].Size + f[6].Size + f[7].Size}, {f[1].Offset, f[1].Size}}
	if got := p.Layers[0].Ranges; len(got) != 2 || got[0] != wantRanges[0] || got[1] != wantRanges[1] {
		t.Errorf("gzip layer ranges = %v, want %v (a sequential run merged, in first-read order)", got, wantRanges)
	}
	if _, err := e.r.PushProfile(t.Context(), e.img, p); err != nil {
		t.Fatal(err)
	}

	e.freshStore(t)
	found, err := e.r.FindProfile(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	if found.Image != e.img.Digest || found.Bytes() != p.Bytes() || len(found.Command) != 3 {
		t.Errorf("found profile %+v, want the pushed %+v", found, p)
	}
	e.proxy.ClearStats()
	src = NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	st, err := src.Prefetch(t.Context(), e.indexes(), found, PrefetchConfig{MaxGap: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Frames 5-7 in one request, 1 in another, the tar layer's 2 in a third.
	if st.Frames != 5 || st.Present != 0 || st.Requests != 3 || st.Failed != 0 {
		t.Errorf("prefetch = %+v, want 5 frames in 3 requests", st)
	}
	// Neighbouring gzip frames may share a byte. Frames that decode only
	// after the frame before come with the frames back to a window.
	wantBytes := chainBytes(gz, 1) + f[7].CompressedOffset + f[7].CompressedSize - f[chainStart(gz, 5)].CompressedOffset + tar.Frames[2].CompressedSize
	wantCached := 5 + (1 - chainStart(gz, 1)) + (5 - chainStart(gz, 5))
	if st.Fetched != wantBytes {
		t.Errorf("prefetch fetched %d bytes, want the %d of the frames read", st.Fetched, wantBytes)
	}
	for d, data := range want {
		if !e.store.Has(d) {
			t.Errorf("frame %s not cached after the prefetch", d)
		}
		got, err := e.store.Frame(t.Context(), d, int64(len(data)), func(context.Context) ([]byte, error) {
			return nil, errors.New("not prefetched")
		})
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("frame %s after prefetch: %d bytes, %v; want the %d read", d, len(got), err, len(data))
		}
	}
	if e.cached(gz)+e.cached(tar) != wantCached {
		t.Errorf("%d frames cached, want only the 5 of the profile and the %d they decode after", e.cached(gz)+e.cached(tar), wantCached-5)
	}
	// Again: everything is present, nothing is fetched.
	e.proxy.ClearStats()
	if st, err := src.Prefetch(t.Context(), e.indexes(), found, PrefetchConfig{}); err != nil || st.Present != 5 || st.Requests != 0 {
		t.Errorf("second prefetch = %+v, %v; want all 5 present, no request", st, err)
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("%d blob requests for a prefetch of cached frames", n)
	}
}

func TestFindProfileWithoutOne(t *testing.T) {
	e := newPullEnv(t)
	if _, err := e.r.FindProfile(t.Context(), e.img); !errors.Is(err, ErrNoProfile) {
		t.Errorf("FindProfile of an image without one = %v, want ErrNoProfile", err)
	}
}

// A reader that asks for a frame being prefetched waits for that request
// instead of making its own.
func TestPrefetchReaderWaitsForInflight(t *testing.T) {
	e := newPullEnv(t)
	gz := e.ls[0].Index
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	claims := src.claim(gz, []int{3})
	around := src.claim(gz, []int{2, 3, 4})
	if len(claims) != 1 || len(around) != 2 {
		t.Fatalf("claim of frame 3, then of 2-4: want one claim, then two around the claimed 3")
	}
	for _, c := range around {
		c.done()
	}
	// A frame a reader is loading is not claimed either.
	src.setLoading(gz.Frames[5].Digest, +1)
	if cs := src.claim(gz, []int{5}); len(cs) != 0 {
		t.Errorf("claim of a frame being loaded = %d claims, want none", len(cs))
	}
	src.setLoading(gz.Frames[5].Digest, -1)
	done := claims[0].done
	got := make(chan error, 1)
	go func() {
		_, err := src.Frame(t.Context(), gz, 3)
		got <- err
	}()
	// The reader waits; the "prefetch" stores the frame and ends.
	data, _, err := NewSource(e.client, e.img.Repo, e.store, nil).frame(t.Context(), gz, 3)
	if err != nil || len(data) == 0 {
		t.Fatal(err)
	}
	e.proxy.ClearStats()
	done()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("the waiting reader made %d requests, want 0", n)
	}
}

func TestDecodeProfileRejects(t *testing.T) {
	good := Profile{Version: 1, Image: digest.FromString("i"), Layers: []ProfileLayer{{Digest: digest.FromString("l"), Ranges: [][2]int64{{0, 10}}}}}
	for name, mutate := range map[string]func(*Profile){
		"version":        func(p *Profile) { p.Version = 2 },
		"image digest":   func(p *Profile) { p.Image = "sha256:nope" },
		"layer digest":   func(p *Profile) { p.Layers[0].Digest = "" },
		"negative range": func(p *Profile) { p.Layers[0].Ranges[0] = [2]int64{-1, 10} },
		"empty range":    func(p *Profile) { p.Layers[0].Ranges[0] = [2]int64{0, 0} },
		"overflow":       func(p *Profile) { p.Layers[0].Ranges[0] = [2]int64{1 << 62, 1 << 62} },
	} {
		p := good
		p.Layers = []ProfileLayer{{Digest: good.Layers[0].Digest, Ranges: [][2]int64{good.Layers[0].Ranges[0]}}}
		mutate(&p)
		data, _ := json.Marshal(p)
		if _, err := DecodeProfile(data); err == nil {
			t.Errorf("%s: DecodeProfile accepted %s", name, data)
		}
	}
	data, _ := json.Marshal(good)
	if _, err := DecodeProfile(data); err != nil {
		t.Errorf("DecodeProfile(%s) = %v", data, err)
	}
	if _, err := DecodeProfile([]byte(`{"version":1,"extra":true}`)); err == nil {
		t.Error("DecodeProfile accepted an unknown field")
	}
}

func FuzzDecodeProfile(f *testing.F) {
	f.Add([]byte(`{"version":1,"image":"sha256:` + digest.FromString("i").Encoded() + `","layers":[{"digest":"sha256:` + digest.FromString("l").Encoded() + `","ranges":[[0,10],[4096,1]]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeProfile(data)
		if err != nil {
			return
		}
		// What decodes encodes and decodes to the same.
		again, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		q, err := DecodeProfile(again)
		if err != nil || q.Bytes() != p.Bytes() || len(q.Layers) != len(p.Layers) {
			t.Fatalf("round trip: %+v, %v; want %+v", q, err, p)
		}
		// Mapping onto an index never panics.
		x := &index.Index{Layer: digest.FromString("l"), TarSize: 1 << 20, Frames: []index.Frame{{Offset: 0, Size: 1 << 19}, {Offset: 1 << 19, Size: 1 << 19}}}
		for _, k := range p.frames(x) {
			if k < 0 || k >= len(x.Frames) {
				t.Fatalf("frame %d of %d", k, len(x.Frames))
			}
		}
	})
}

// A reader does not wait on for a prefetch request that does not end: after
// inflightPatience it reads the frame itself.
func TestReaderStopsWaitingForInflight(t *testing.T) {
	e := newPullEnv(t)
	gz := e.ls[0].Index
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	claims := src.claim(gz, []int{4}) // never done
	defer claims[0].done()
	start := time.Now()
	data, err := src.Frame(t.Context(), gz, 4)
	if err != nil || digest.FromBytes(data) != gz.Frames[4].Digest {
		t.Fatalf("Frame(4) held by a stuck request = %v", err)
	}
	if d := time.Since(start); d < inflightPatience || d > inflightPatience+5*time.Second {
		t.Errorf("Frame(4) took %v, want a little over %v", d, inflightPatience)
	}
}
