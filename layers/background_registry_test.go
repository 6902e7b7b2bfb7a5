package layers

import (
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// waitBlobGets polls until the proxy has seen at least n blob GETs, at
// most 30 s.
func waitBlobGets(t *testing.T, p *testutil.FaultProxy, n int) []testutil.ProxyRequest {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var gets []testutil.ProxyRequest
		for _, r := range p.Requests() {
			if r.Digest != "" && r.Method == http.MethodGet {
				gets = append(gets, r)
			}
		}
		if len(gets) >= n {
			return gets
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d blob GETs after 30 s, want %d", len(gets), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func blobGets(p *testutil.FaultProxy) []testutil.ProxyRequest {
	var gets []testutil.ProxyRequest
	for _, r := range p.Requests() {
		if r.Digest != "" && r.Method == http.MethodGet {
			gets = append(gets, r)
		}
	}
	return gets
}

// A full background fetch against the real registry caches every frame of
// every layer (gzip, tar, zstd) in requests of at most MaxRequest, after
// which the image reads without the registry.
func TestBackgroundFetchesImageFromRegistry(t *testing.T) {
	e := newPullEnv(t)
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	b := src.StartBackground(e.indexes(), BackgroundConfig{Mode: BackgroundFull, Name: "test/pull:v1"})
	select {
	case <-b.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("background fetch not done after 60 s: %+v", b.Progress())
	}
	p := b.Progress()
	if p.State != BackgroundDone || p.Cached != p.Frames || p.CachedBytes != p.Bytes {
		t.Fatalf("progress = %+v, want done with every frame cached", p)
	}
	var frames int
	for _, x := range e.indexes() {
		frames += len(x.Frames)
		if n := e.cached(x); n != len(x.Frames) {
			t.Errorf("layer %s: %d of %d frames cached", x.Layer, n, len(x.Frames))
		}
	}
	for _, r := range blobGets(e.proxy) {
		if r.Range == "" && r.Digest != e.ls[2].Index.Layer {
			t.Errorf("whole-blob GET of %s, want Range requests but for the zstd layer", r.Digest)
		}
		if r.Bytes > defaultBackgroundRequest {
			t.Errorf("request %s %s sent %d bytes, want at most %d", r.Digest, r.Range, r.Bytes, defaultBackgroundRequest)
		}
	}
	if n := len(blobGets(e.proxy)); n != p.Requests || n >= frames {
		t.Errorf("%d blob GETs (progress says %d) for %d frames, want as many as progress says, and fewer than frames", n, p.Requests, frames)
	}

	// The registry is gone: every frame still reads, from the cache.
	e.proxy.ClearStats()
	e.proxy.Fail(http.StatusServiceUnavailable, 1000)
	offline := NewSource(e.client, e.img.Repo, e.store, nil)
	defer offline.Close()
	for _, x := range e.indexes() {
		for k := range x.Frames {
			data, err := offline.Frame(t.Context(), x, k)
			if err != nil || digest.FromBytes(data) != x.Frames[k].Digest {
				t.Fatalf("Frame(%s, %d) with the registry gone = %v", x.Layer, k, err)
			}
		}
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("%d blob requests reading a fully fetched image", n)
	}
}

// A reader's miss is not queued behind background requests: with both
// background requests stalled in the registry, a reader of another frame
// gets its frame with a request of its own while they are still
// unanswered.
func TestBackgroundMissNotQueued(t *testing.T) {
	e := newPullEnv(t)
	e.proxy.Stall(2, time.Minute)
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	b := src.StartBackground(e.indexes(), BackgroundConfig{Mode: BackgroundFull, MaxRequest: 256 << 10})
	waitBlobGets(t, e.proxy, 2) // the two background requests, stalled
	tar := e.ls[1].Index        // fetched after the gzip layer: not claimed yet
	k := len(tar.Frames) - 1
	data, err := src.Frame(t.Context(), tar, k)
	if err != nil || digest.FromBytes(data) != tar.Frames[k].Digest {
		t.Fatalf("Frame(tar, %d) while background requests stall = %v", k, err)
	}
	gets := blobGets(e.proxy)
	if len(gets) != 3 {
		t.Fatalf("%d blob GETs, want the 2 stalled background ones and the reader's: %+v", len(gets), gets)
	}
	for i, r := range gets[:2] {
		if r.Fault != "stall" || r.Status != 0 || r.Digest != e.ls[0].Index.Layer {
			t.Errorf("background request %d = %+v, want the gzip layer's, stalled and unanswered when the reader was served", i, r)
		}
	}
	if r := gets[2]; r.Digest != tar.Layer || r.Status != http.StatusPartialContent {
		t.Errorf("reader's request = %+v, want a 206 for the tar layer", r)
	}
	b.Stop()
}

// While a reader waits on the registry, and for Pause (full) or Quiet
// (idle) after, the background fetch sends nothing; then it fetches the
// rest.
func TestBackgroundWaitsForReader(t *testing.T) {
	for _, mode := range []BackgroundMode{BackgroundFull, BackgroundIdle} {
		t.Run(mode.String(), func(t *testing.T) {
			e := newPullEnv(t)
			e.proxy.Stall(1, 2*time.Second) // the reader's request
			src := NewSource(e.client, e.img.Repo, e.store, nil)
			defer src.Close()
			gz := e.ls[0].Index
			got := make(chan error, 1)
			go func() {
				data, err := src.Frame(t.Context(), gz, 3)
				if err == nil && digest.FromBytes(data) != gz.Frames[3].Digest {
					err = errBadFrame
				}
				got <- err
			}()
			waitBlobGets(t, e.proxy, 1)
			// Pause and Quiet are long enough that no request can be due
			// between the reader's end and the look below.
			b := src.StartBackground(e.indexes(), BackgroundConfig{Mode: mode, Pause: 3 * time.Second, Quiet: 3 * time.Second})
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			if gets := blobGets(e.proxy); len(gets) != 1 {
				t.Fatalf("%d blob GETs by the reader's end, want only its own: %+v", len(gets), gets)
			}
			select {
			case <-b.Done():
			case <-time.After(60 * time.Second):
				t.Fatalf("background fetch not done after 60 s: %+v", b.Progress())
			}
			if p := b.Progress(); p.State != BackgroundDone {
				t.Errorf("progress = %+v, want done", p)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errBadFrame = errString("frame does not match its digest")

// Off fetches only what is read.
func TestBackgroundOffFetchesOnlyReads(t *testing.T) {
	e := newPullEnv(t)
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	b := src.StartBackground(e.indexes(), BackgroundConfig{Mode: BackgroundOff})
	gz := e.ls[0].Index
	if _, err := src.Frame(t.Context(), gz, 2); err != nil {
		t.Fatal(err)
	}
	<-b.Done()
	src.Close()                                    // read-ahead, if any, has ended
	want := spanEnd(gz, 2) - chainStart(gz, 2) + 1 // the frame's span, which a cold read fetches
	if n := e.cached(gz) + e.cached(e.ls[1].Index) + e.cached(e.ls[2].Index); n != want {
		t.Errorf("%d frames cached after reading one with background off, want %d", n, want)
	}
	if p := b.Progress(); p.State != BackgroundDisabled || p.Requests != 0 {
		t.Errorf("progress = %+v, want off, no request", p)
	}
}
