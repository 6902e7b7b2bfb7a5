package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/index"
)

// bgFake is the scheduling under test with an in-process fake fetch:
// frames are made up, "fetching" them puts them into a real cache.
type bgFake struct {
	t      *testing.T
	store  *cache.Store
	layers []*index.Index
	data   map[digest.Digest][]byte
	logs   *syncBuffer

	mu       sync.Mutex // guards the fields below
	calls    []bgCall
	inFlight int
	maxIn    int
	fail     map[digest.Digest]bool // layers whose requests fail
	noStore  bool                   // "fetch" without storing: as if the cache evicted at once
	took     time.Duration          // how long a fake request takes
}

type bgCall struct {
	layer      digest.Digest
	run        []int
	start, end time.Time
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newBGFake makes layers of frames (each a tar layer of frames of 64 KiB)
// and a cache with the given disk limit. The cache is opened outside any
// synctest bubble (it starts goroutines of its own).
func newBGFake(t *testing.T, frames []int, maxDisk int64) *bgFake {
	t.Helper()
	st, err := cache.Open(cache.Config{Dir: filepath.Join(t.TempDir(), "cache"), MemoryBytes: -1, MaxDiskBytes: maxDisk})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &bgFake{t: t, store: st, data: map[digest.Digest][]byte{}, fail: map[digest.Digest]bool{}, took: 100 * time.Millisecond, logs: &syncBuffer{}}
	rng := rand.New(rand.NewPCG(1, 2))
	for li, n := range frames {
		x := &index.Index{Format: index.FormatTar, Layer: digest.FromString(fmt.Sprint("layer ", li))}
		var off int64
		for range n {
			b := make([]byte, 64<<10)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			d := digest.FromBytes(b)
			f.data[d] = b
			x.Frames = append(x.Frames, index.Frame{Offset: off, Size: int64(len(b)), CompressedOffset: off, CompressedSize: int64(len(b)), Digest: d})
			off += int64(len(b))
		}
		x.TarSize, x.BlobSize = off, off
		f.layers = append(f.layers, x)
	}
	return f
}

func (f *bgFake) source() *Source {
	src := NewSource(nil, "test/repo", f.store, slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return src
}

func (f *bgFake) fetch(ctx context.Context, x *index.Index, run []int) (backgroundResult, error) {
	f.mu.Lock()
	c := bgCall{layer: x.Layer, run: run, start: time.Now()}
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	fail, noStore, took := f.fail[x.Layer], f.noStore, f.took
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		c.end = time.Now()
		f.calls = append(f.calls, c)
		f.mu.Unlock()
	}()
	select {
	case <-time.After(took):
	case <-ctx.Done():
		return backgroundResult{}, ctx.Err()
	}
	res := backgroundResult{requests: 1, fetched: int64(len(run)) * 64 << 10}
	if fail {
		return res, errors.New("503 from the fake registry")
	}
	for _, k := range run {
		fr := &x.Frames[k]
		if !noStore {
			if err := f.store.Put(ctx, fr.Digest, f.data[fr.Digest]); err != nil {
				return res, err
			}
		}
		res.stored = append(res.stored, fr)
	}
	return res, nil
}

func (f *bgFake) callList() []bgCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bgCall(nil), f.calls...)
}

func (f *bgFake) allCached() bool {
	for _, x := range f.layers {
		for _, fr := range x.Frames {
			if !f.store.Has(fr.Digest) {
				return false
			}
		}
	}
	return true
}

// In full mode the fetch starts at once, sends no request while an
// on-demand fetch runs or for Pause after one, runs at most 2 requests at
// once, and ends with every frame cached and one Info line.
func TestBackgroundFullYields(t *testing.T) {
	f := newBGFake(t, []int{12, 6}, 0)
	synctest.Test(t, func(t *testing.T) {
		src := f.source()
		defer src.Close()
		t0 := time.Now()
		b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundFull, Name: "img", MaxRequest: 128 << 10}, f.fetch)
		synctest.Wait()
		if n := len(f.callList()); n != 0 {
			t.Fatalf("%d requests done before any time passed", n)
		}
		// Two requests are in flight; an on-demand fetch begins 50 ms in
		// and lasts 1 s.
		time.Sleep(50 * time.Millisecond)
		busyFrom := time.Now()
		end := src.traffic.begin()
		time.Sleep(time.Second)
		busyTo := time.Now()
		end()
		<-b.Done()
		p := b.Progress()
		if p.State != BackgroundDone || p.Cached != p.Frames || p.Frames != 18 || p.Requests != 9 {
			t.Errorf("progress = %+v, want done, 18 frames cached in 9 requests", p)
		}
		if !f.allCached() {
			t.Error("frames missing after the background fetch is done")
		}
		calls := f.callList()
		first := calls[0].start
		for _, c := range calls {
			if c.start.Before(first) {
				first = c.start
			}
			if !c.start.Before(busyFrom) && c.start.Before(busyTo.Add(defaultBackgroundPause)) {
				t.Errorf("request for %v sent at %v, while on-demand fetches ran (%v to %v) or within %v after", c.run, c.start.Sub(t0), busyFrom.Sub(t0), busyTo.Sub(t0), defaultBackgroundPause)
			}
		}
		if !first.Equal(t0) {
			t.Errorf("first request at %v, want at once", first.Sub(t0))
		}
		if f.maxIn != 2 {
			t.Errorf("%d requests in flight at most, want 2", f.maxIn)
		}
		if n := strings.Count(f.logs.String(), "image fully fetched"); n != 1 {
			t.Errorf("%d 'image fully fetched' lines, want 1; log:\n%s", n, f.logs)
		}
	})
}

// In idle mode nothing is fetched until no on-demand fetch has run for
// Quiet, counted from the start; an on-demand fetch later pauses it for
// Quiet again.
func TestBackgroundIdleWaitsForQuiet(t *testing.T) {
	f := newBGFake(t, []int{40}, 0)
	synctest.Test(t, func(t *testing.T) {
		src := f.source()
		defer src.Close()
		t0 := time.Now()
		b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundIdle, MaxRequest: 64 << 10, Quiet: time.Second}, f.fetch)
		// The start-up: on-demand fetches of 100 ms every 500 ms for 3 s.
		for range 6 {
			end := src.traffic.begin()
			time.Sleep(100 * time.Millisecond)
			end()
			time.Sleep(400 * time.Millisecond)
			if p := b.Progress(); p.State != BackgroundWaiting || len(f.callList()) > 0 {
				t.Fatalf("at %v: state %v and %d requests during the start-up, want waiting and none", time.Since(t0), p.State, len(f.callList()))
			}
		}
		startupEnd := t0.Add(2*time.Second + 600*time.Millisecond) // the last on-demand fetch ended
		// A miss while it runs: nothing is sent for Quiet after it.
		time.Sleep(time.Second + 250*time.Millisecond)
		missFrom := time.Now()
		end := src.traffic.begin()
		time.Sleep(50 * time.Millisecond)
		end()
		missTo := time.Now()
		<-b.Done()
		calls := f.callList()
		if len(calls) != 40 {
			t.Fatalf("%d requests, want 40", len(calls))
		}
		first := calls[0].start
		for _, c := range calls {
			if c.start.Before(first) {
				first = c.start
			}
			if !c.start.Before(missFrom) && c.start.Before(missTo.Add(time.Second)) {
				t.Errorf("request sent %v after an on-demand fetch ended, want none within the quiet second", c.start.Sub(missTo))
			}
		}
		if want := startupEnd.Add(time.Second); !first.Equal(want) {
			t.Errorf("first request at %v, want at %v (a quiet second after the start-up)", first.Sub(t0), want.Sub(t0))
		}
		if p := b.Progress(); p.State != BackgroundDone {
			t.Errorf("state %v, want done", p.State)
		}
	})
}

// A layer whose requests keep failing is retried with a doubling backoff,
// then given up with one Warn; the other layers are fetched.
func TestBackgroundGivesUpOnFailingLayer(t *testing.T) {
	f := newBGFake(t, []int{4, 4}, 0)
	f.fail[f.layers[0].Layer] = true
	synctest.Test(t, func(t *testing.T) {
		src := f.source()
		defer src.Close()
		b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundFull, MaxRequest: 64 << 10, Failures: 3}, f.fetch)
		<-b.Done()
		p := b.Progress()
		if p.State != BackgroundFailed || p.FailedLayers != 1 || p.Cached != 4 {
			t.Errorf("progress = %+v, want failed, 1 layer given up, the other's 4 frames cached", p)
		}
		var failed []bgCall
		for _, c := range f.callList() {
			if c.layer == f.layers[0].Layer {
				failed = append(failed, c)
			}
		}
		if len(failed) != 3 {
			t.Fatalf("%d requests for the failing layer, want 3", len(failed))
		}
		// The first two go at once (two slots); after they failed the
		// layer waits 2 s (the backoff after a second failure in a row)
		// and then sends one request, which fails the third time.
		if !failed[0].start.Equal(failed[1].start) {
			t.Errorf("first two requests at %v and %v, want both at once", failed[0].start, failed[1].start)
		}
		if gap := failed[2].start.Sub(laterOf(failed[0].end, failed[1].end)); gap != 2*time.Second {
			t.Errorf("third request sent %v after the second failure, want 2s", gap)
		}
		if n := strings.Count(f.logs.String(), "level=WARN"); n != 1 || !strings.Contains(f.logs.String(), "gave up on a layer") {
			t.Errorf("%d Warn lines, want one saying it gave up; log:\n%s", n, f.logs)
		}
	})
}

// Off fetches nothing and starts nothing.
func TestBackgroundOff(t *testing.T) {
	f := newBGFake(t, []int{4}, 0)
	synctest.Test(t, func(t *testing.T) {
		src := f.source()
		defer src.Close()
		b := src.startBackground(f.layers, BackgroundConfig{}, f.fetch)
		select {
		case <-b.Done():
		default:
			t.Fatal("an off background fetch is not done at once")
		}
		time.Sleep(time.Minute)
		if n := len(f.callList()); n != 0 || b.Progress().State != BackgroundDisabled {
			t.Errorf("off: %d requests, state %v; want none, off", n, b.Progress().State)
		}
	})
}

// An image larger than the cache's disk limit is not fetched; one whose
// frames the cache does not keep stops after one pass. Both say so once
// at Info.
func TestBackgroundHonoursCacheLimit(t *testing.T) {
	t.Run("image larger than the cache", func(t *testing.T) {
		f := newBGFake(t, []int{8}, 256<<10)
		synctest.Test(t, func(t *testing.T) {
			src := f.source()
			defer src.Close()
			b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundFull}, f.fetch)
			<-b.Done()
			if n := len(f.callList()); n != 0 || b.Progress().State != BackgroundStopped {
				t.Errorf("%d requests, state %v; want none, stopped", n, b.Progress().State)
			}
			if n := strings.Count(f.logs.String(), "larger than the cache"); n != 1 {
				t.Errorf("%d lines about the limit, want 1; log:\n%s", n, f.logs)
			}
		})
	})
	t.Run("frames evicted", func(t *testing.T) {
		f := newBGFake(t, []int{8}, 0)
		f.noStore = true
		synctest.Test(t, func(t *testing.T) {
			src := f.source()
			defer src.Close()
			b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundFull, MaxRequest: 128 << 10}, f.fetch)
			<-b.Done()
			if n := len(f.callList()); n != 4 || b.Progress().State != BackgroundStopped {
				t.Errorf("%d requests, state %v; want one pass of 4, stopped", n, b.Progress().State)
			}
			if n := strings.Count(f.logs.String(), "does not keep the image"); n != 1 {
				t.Errorf("%d lines about eviction, want 1; log:\n%s", n, f.logs)
			}
		})
	})
}

// Close of the Source stops a fetch under way and waits for it; Stop is
// idempotent. (synctest fails the test if a goroutine is left.)
func TestBackgroundStopsOnClose(t *testing.T) {
	f := newBGFake(t, []int{50}, 0)
	synctest.Test(t, func(t *testing.T) {
		src := f.source()
		b := src.startBackground(f.layers, BackgroundConfig{Mode: BackgroundFull, MaxRequest: 64 << 10}, f.fetch)
		time.Sleep(250 * time.Millisecond)
		src.Close()
		select {
		case <-b.Done():
		default:
			t.Fatal("background fetch still running after Close")
		}
		b.Stop()
		b.Stop()
		if p := b.Progress(); p.State != BackgroundStopped || p.Cached == p.Frames {
			t.Errorf("progress after Close = %+v, want stopped part way", p)
		}
	})
}

func TestParseBackgroundMode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want BackgroundMode
		ok   bool
	}{{"off", BackgroundOff, true}, {"idle", BackgroundIdle, true}, {"full", BackgroundFull, true}, {"", 0, false}, {"on", 0, false}, {"Full", 0, false}} {
		got, err := ParseBackgroundMode(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseBackgroundMode(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
