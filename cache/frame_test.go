package cache

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/index"
)

func TestFrameSingleFlight(t *testing.T) {
	const timeout = time.Hour
	s, _ := openStore(t, Config{FetchTimeout: timeout})
	want, d := testFrame(1, 64<<10)

	var calls atomic.Int64
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // runs before the Store's Close if the test fails early
	load := func(ctx context.Context) ([]byte, error) {
		calls.Add(1)
		select {
		case started <- ctx:
		default: // a second load: counted, and the test fails on it
		}
		<-release
		return want, nil
	}

	// The caller that starts the load gives up early: it returns promptly
	// while load is still blocked, and the load goes on for the others.
	cctx, cancel := context.WithCancel(t.Context())
	cancelled := make(chan error, 1)
	go func() {
		_, err := s.Frame(cctx, d, int64(len(want)), load)
		cancelled <- err
	}()
	lctx := <-started

	const n = 50
	type result struct {
		b   []byte
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			b, err := s.Frame(t.Context(), d, int64(len(want)), load)
			results <- result{b, err}
		}()
	}
	cancel()
	select {
	case err := <-cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Frame(cancelled ctx) error = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second): // a bound on failure, not synchronisation
		t.Fatalf("Frame did not return after its ctx was cancelled")
	}
	if err := lctx.Err(); err != nil {
		t.Fatalf("load ctx ended with the caller that started it: %v", err)
	}
	dl, ok := lctx.Deadline()
	if !ok || time.Until(dl) > timeout || time.Until(dl) < timeout-time.Minute {
		t.Errorf("load ctx deadline = %v, %v, want about %v from now", dl, ok, timeout)
	}

	releaseOnce()
	for range n {
		r := <-results
		if r.err != nil || !bytes.Equal(r.b, want) {
			t.Fatalf("Frame = %d bytes, %v, want the frame", len(r.b), r.err)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("load called %d times, want 1", c)
	}
	st := s.Stats()
	if st.Loads != 1 || st.MemoryHits+st.DiskHits+st.Misses != n {
		t.Errorf("Stats = %+v, want 1 load and %d hits and misses", st, n)
	}
	if !s.Has(d) {
		t.Errorf("Has(%s) = false after Frame returned", d)
	}
}

// TestFrameLoadOutlivesAllWaiters checks that a load whose every waiter left
// still fills the cache.
func TestFrameLoadOutlivesAllWaiters(t *testing.T) {
	s, _ := openStore(t, Config{MemoryBytes: -1})
	want, d := testFrame(2, 4096)
	started := make(chan struct{})
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	done := make(chan struct{})
	load := func(ctx context.Context) ([]byte, error) {
		close(started)
		<-release
		defer close(done)
		return want, ctx.Err()
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Frame(ctx, d, int64(len(want)), load)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Frame error = %v, want context.Canceled", err)
	}
	releaseOnce()
	<-done
	l := &loader{b: want}
	got, err := s.Frame(t.Context(), d, int64(len(want)), l.load)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Frame after the load = %d bytes, %v", len(got), err)
	}
	// The abandoned load either completed the store before this call (a disk
	// hit) or this call joined it; it never loads again.
	if l.calls.Load() != 0 {
		t.Errorf("second load called %d times, want 0", l.calls.Load())
	}
}

func TestFrameCancelledBeforeCall(t *testing.T) {
	s, _ := openStore(t, Config{})
	want, d := testFrame(3, 100)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l := &loader{b: want}
	if _, err := s.Frame(ctx, d, 100, l.load); !errors.Is(err, context.Canceled) {
		t.Fatalf("Frame(cancelled) error = %v, want context.Canceled", err)
	}
	if l.calls.Load() != 0 {
		t.Errorf("load called %d times for a cancelled caller, want 0", l.calls.Load())
	}
}

func TestFrameLoadTimeout(t *testing.T) {
	s, _ := openStore(t, Config{FetchTimeout: 10 * time.Millisecond})
	_, d := testFrame(4, 100)
	load := func(ctx context.Context) ([]byte, error) {
		<-ctx.Done() // the Store's deadline ends it, not the caller's ctx
		return nil, ctx.Err()
	}
	if _, err := s.Frame(t.Context(), d, 100, load); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Frame error = %v, want context.DeadlineExceeded", err)
	}
	if st := s.Stats(); st.Loads != 1 || st.LoadErrors != 1 {
		t.Errorf("Stats = %+v, want 1 load, 1 load error", st)
	}
}

func TestFrameLoadError(t *testing.T) {
	s, _ := openStore(t, Config{})
	want, d := testFrame(5, 100)
	boom := errors.New("registry says no")
	load := func(context.Context) ([]byte, error) { return nil, boom }
	if _, err := s.Frame(t.Context(), d, 100, load); !errors.Is(err, boom) {
		t.Fatalf("Frame error = %v, want %v", err, boom)
	}
	l := &loader{b: want}
	if got, err := s.Frame(t.Context(), d, 100, l.load); err != nil || !bytes.Equal(got, want) || l.calls.Load() != 1 {
		t.Fatalf("Frame after a failed load = %d bytes, %v, %d loads; want the frame, 1 load", len(got), err, l.calls.Load())
	}
}

func TestFrameCorruptLoad(t *testing.T) {
	want, d := testFrame(6, 8192)
	flipped := bytes.Clone(want)
	flipped[100] ^= 0x10
	for _, tc := range []struct {
		name string
		got  []byte
		size int64
	}{
		{"bit flipped", flipped, int64(len(want))},
		{"short", want[:len(want)-1], int64(len(want))},
		{"long", append(bytes.Clone(want), 0), int64(len(want))},
		{"right bytes, wrong size", want, int64(len(want)) + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openStore(t, Config{})
			bad := &loader{b: tc.got}
			got, err := s.Frame(t.Context(), d, tc.size, bad.load)
			if !errors.Is(err, index.ErrCorrupt) || got != nil {
				t.Fatalf("Frame(corrupt load) = %d bytes, %v, want index.ErrCorrupt", len(got), err)
			}
			if s.Has(d) {
				t.Errorf("Has(%s) = true after a corrupt load", d)
			}
			if u, err := Usage(s.dir); err != nil || u != (DiskUsage{}) {
				t.Errorf("Usage = %+v, %v, want nothing on disk", u, err)
			}
			if st := s.Stats(); st.Corrupt != 1 || st.Loads != 1 {
				t.Errorf("Stats = %+v, want 1 corrupt, 1 load", st)
			}
			good := &loader{b: want}
			got, err = s.Frame(t.Context(), d, int64(len(want)), good.load)
			if err != nil || !bytes.Equal(got, want) || good.calls.Load() != 1 {
				t.Fatalf("Frame after a corrupt load = %d bytes, %v, %d loads; want the frame, 1 load", len(got), err, good.calls.Load())
			}
		})
	}
}

func TestFrameDiskCorruption(t *testing.T) {
	want, d := testFrame(7, 8192)
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, path string)
	}{
		{"bit flipped", func(t *testing.T, p string) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			b[4000] ^= 1
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated", func(t *testing.T, p string) {
			if err := os.Truncate(p, 4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"emptied", func(t *testing.T, p string) {
			if err := os.Truncate(p, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"extended", func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte{0})
			f.Close()
		}},
		{"replaced by another frame", func(t *testing.T, p string) {
			other, _ := testFrame(8, 8192)
			if err := os.WriteFile(p, other, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := openStore(t, Config{MemoryBytes: -1})
			l := &loader{b: want}
			if _, err := s.Frame(t.Context(), d, int64(len(want)), l.load); err != nil {
				t.Fatal(err)
			}
			p := framePath(s.dir, d.Encoded())
			tc.spoil(t, p)

			got, err := s.Frame(t.Context(), d, int64(len(want)), l.load)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Frame(spoilt file) = %d bytes, %v, want the frame", len(got), err)
			}
			if l.calls.Load() != 2 {
				t.Errorf("load called %d times, want 2 (the spoilt file refetched)", l.calls.Load())
			}
			if w := logs.expectWarns(); len(w) != 1 {
				t.Errorf("warnings = %q, want one", w)
			}
			if st := s.Stats(); st.Corrupt != 1 || st.DiskHits != 0 || st.Misses != 2 {
				t.Errorf("Stats = %+v, want 1 corrupt, 0 disk hits, 2 misses", st)
			}
			if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, want) {
				t.Errorf("frame file after refetch = %d bytes, %v, want the frame", len(b), err)
			}
		})
	}
}

func TestFrameDiskHitAcrossOpen(t *testing.T) {
	dir := t.TempDir()
	want, d := testFrame(9, 8192)
	s1, _ := openStore(t, Config{Dir: dir})
	l := &loader{b: want}
	if _, err := s1.Frame(t.Context(), d, 8192, l.load); err != nil {
		t.Fatal(err)
	}
	s1.Close()

	s2, _ := openStore(t, Config{Dir: dir})
	if st := s2.Stats(); st.DiskFrames != 1 || st.DiskBytes != 8192 {
		t.Errorf("Stats after Open = %+v, want 1 frame of 8192 bytes", st)
	}
	got, err := s2.Frame(t.Context(), d, 8192, l.load)
	if err != nil || !bytes.Equal(got, want) || l.calls.Load() != 1 {
		t.Fatalf("Frame = %d bytes, %v, %d loads; want the frame from disk", len(got), err, l.calls.Load())
	}
	if st := s2.Stats(); st.DiskHits != 1 {
		t.Errorf("Stats = %+v, want 1 disk hit", st)
	}
}

func TestFrameMemoryHit(t *testing.T) {
	s, _ := openStore(t, Config{})
	want, d := testFrame(10, 8192)
	l := &loader{b: want}
	if _, err := s.Frame(t.Context(), d, 8192, l.load); err != nil {
		t.Fatal(err)
	}
	s.mem.Wait() // a Set is invisible until then
	// The memory tier answers even when the file is gone.
	if err := os.Remove(framePath(s.dir, d.Encoded())); err != nil {
		t.Fatal(err)
	}
	got, err := s.Frame(t.Context(), d, 8192, l.load)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Frame = %d bytes, %v", len(got), err)
	}
	if st := s.Stats(); st.MemoryHits != 1 || l.calls.Load() != 1 {
		t.Errorf("Stats = %+v, loads %d; want 1 memory hit, 1 load", st, l.calls.Load())
	}
}

// TestTempLeftovers checks a temp file left by a process killed mid-write:
// never served, removed by Open once stale, left alone while it may still be
// written.
func TestTempLeftovers(t *testing.T) {
	dir := t.TempDir()
	want, d := testFrame(11, 8192)
	h := d.Encoded()
	sub := filepath.Join(dir, framesDir, h[:2])
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(sub, tempPrefix+"123")
	fresh := filepath.Join(sub, tempPrefix+"456")
	staleIdx := filepath.Join(dir, indexDir, indexAlgo, tempPrefix+"789")
	if err := os.MkdirAll(filepath.Dir(staleIdx), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{stale, fresh, staleIdx} {
		if err := os.WriteFile(p, want[:4096], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	for _, p := range []string{stale, staleIdx} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}

	s, _ := openStore(t, Config{Dir: dir})
	<-s.scanned // in the background
	for _, p := range []string{stale, staleIdx} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stale temp %s after Open: %v, want removed", p, err)
		}
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp %s after Open: %v, want kept", fresh, err)
	}
	if st := s.Stats(); st.DiskFrames != 0 {
		t.Errorf("Stats = %+v, want no frames (temps are not frames)", st)
	}
	if s.Has(d) {
		t.Errorf("Has(%s) = true with only a temp file", d)
	}
	l := &loader{b: want}
	got, err := s.Frame(t.Context(), d, 8192, l.load)
	if err != nil || !bytes.Equal(got, want) || l.calls.Load() != 1 {
		t.Fatalf("Frame = %d bytes, %v, %d loads; want the frame loaded", len(got), err, l.calls.Load())
	}
	u, err := Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (DiskUsage{Frames: 1, FrameBytes: 8192, TempFiles: 1, TempBytes: 4096}); u != want {
		t.Errorf("Usage = %+v, want %+v", u, want)
	}
}

// TestRenameFails makes the final name unusable (a non-empty directory sits
// there): the bytes are still returned, a Warn is logged, and no temp file
// stays behind.
func TestRenameFails(t *testing.T) {
	s, logs := openStore(t, Config{MemoryBytes: -1})
	want, d := testFrame(12, 8192)
	p := framePath(s.dir, d.Encoded())
	if err := os.MkdirAll(filepath.Join(p, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	l := &loader{b: want}
	got, err := s.Frame(t.Context(), d, 8192, l.load)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Frame = %d bytes, %v, want the frame", len(got), err)
	}
	if w := logs.expectWarns(); len(w) != 2 { // the directory found on read, and the failed store
		t.Errorf("warnings = %q, want 2", w)
	}
	ents, err := os.ReadDir(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || !ents[0].IsDir() {
		t.Errorf("frame directory holds %v, want only the blocking directory", ents)
	}
	if st := s.Stats(); st.DiskFrames != 0 {
		t.Errorf("Stats = %+v, want no frames on disk", st)
	}
}

func TestCloseCancelsLoads(t *testing.T) {
	s, _ := openStore(t, Config{})
	_, d := testFrame(16, 100)
	started := make(chan struct{})
	load := func(ctx context.Context) ([]byte, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Frame(t.Context(), d, 100, load)
		errc <- err
	}()
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Frame during Close error = %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	l := &loader{}
	if _, err := s.Frame(t.Context(), d, 100, l.load); !errors.Is(err, ErrClosed) {
		t.Errorf("Frame after Close error = %v, want ErrClosed", err)
	}
	if _, err := s.Prune(t.Context(), PruneOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Prune after Close error = %v, want ErrClosed", err)
	}
}

func TestConcurrentClose(t *testing.T) {
	s, _ := openStore(t, Config{})
	var wg sync.WaitGroup
	for i := range 8 {
		b, d := testFrame(uint64(100+i), 1000)
		wg.Go(func() {
			l := &loader{b: b}
			for range 20 {
				if _, err := s.Frame(context.Background(), d, 1000, l.load); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Frame = %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() { s.Close() })
	wg.Wait()
}

func TestPut(t *testing.T) {
	s, _ := openStore(t, Config{})
	want, d := testFrame(17, 5000)
	if err := s.Put(t.Context(), d, want[:4999]); !errors.Is(err, index.ErrCorrupt) {
		t.Fatalf("Put(wrong bytes) error = %v, want index.ErrCorrupt", err)
	}
	if s.Has(d) {
		t.Fatalf("Has after a corrupt Put = true")
	}
	for range 2 { // the second finds it on disk
		if err := s.Put(t.Context(), d, want); err != nil || !s.Has(d) {
			t.Fatalf("Put = %v, Has = %v", err, s.Has(d))
		}
	}
	l := &loader{}
	got, err := s.Frame(t.Context(), d, 5000, l.load)
	if err != nil || !bytes.Equal(got, want) || l.calls.Load() != 0 {
		t.Fatalf("Frame after Put = %d bytes, %v, %d loads", len(got), err, l.calls.Load())
	}
	if st := s.Stats(); st.DiskFrames != 1 || st.DiskBytes != 5000 {
		t.Errorf("Stats = %+v, want 1 frame of 5000 bytes", st)
	}
}

// TestSharedDir runs two Stores on one root, as two processes would.
func TestSharedDir(t *testing.T) {
	dir := t.TempDir()
	a, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	b, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	want, d := testFrame(18, 4096)
	la, lb := &loader{b: want}, &loader{b: want}
	if _, err := a.Frame(t.Context(), d, 4096, la.load); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Frame(t.Context(), d, 4096, lb.load); err != nil || lb.calls.Load() != 0 {
		t.Fatalf("b.Frame = %v with %d loads, want a disk hit", err, lb.calls.Load())
	}
	if res, err := b.Prune(t.Context(), PruneOptions{}); err != nil || res.Frames != 1 {
		t.Fatalf("b.Prune = %+v, %v, want 1 frame removed", res, err)
	}
	// a still believes the frame is on disk; it is a plain miss.
	got, err := a.Frame(t.Context(), d, 4096, la.load)
	if err != nil || !bytes.Equal(got, want) || la.calls.Load() != 2 {
		t.Fatalf("a.Frame after b pruned = %d bytes, %v, %d loads; want reloaded", len(got), err, la.calls.Load())
	}
}

// TestTouch checks that use sets a frame file's mtime, at most once per
// touchEvery, so that another process's scan sees recency.
func TestTouch(t *testing.T) {
	dir := t.TempDir()
	want, d := testFrame(19, 4096)
	p := framePath(dir, d.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, want, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	s, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	l := &loader{}
	mtime := func() time.Time {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	before := time.Now().Add(-time.Second)
	if _, err := s.Frame(t.Context(), d, 4096, l.load); err != nil {
		t.Fatal(err)
	}
	if m := mtime(); m.Before(before) {
		t.Errorf("mtime after a hit on an hour-old frame = %v, want now", m)
	}
	// Within touchEvery a hit writes nothing.
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Frame(t.Context(), d, 4096, l.load); err != nil {
		t.Fatal(err)
	}
	if m := mtime(); !m.Equal(old) {
		t.Errorf("mtime after a second hit = %v, want %v (untouched)", m, old)
	}
}

// TestSymlinkNotFollowed plants a symlink under a frame's name pointing at
// a file with the right bytes: it is not followed, and the frame is loaded
// and stored in its place.
func TestSymlinkNotFollowed(t *testing.T) {
	s, logs := openStore(t, Config{MemoryBytes: -1})
	want, d := testFrame(20, 4096)
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, want, 0o600); err != nil {
		t.Fatal(err)
	}
	p := framePath(s.dir, d.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, p); err != nil {
		t.Fatal(err)
	}
	l := &loader{b: want}
	got, err := s.Frame(t.Context(), d, 4096, l.load)
	if err != nil || !bytes.Equal(got, want) || l.calls.Load() != 1 {
		t.Fatalf("Frame = %d bytes, %v, %d loads; want the frame loaded", len(got), err, l.calls.Load())
	}
	logs.expectWarns()
	if fi, err := os.Lstat(p); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("Lstat(frame) = %v, %v; want a regular file", fi, err)
	}
}

// Cached returns a stored frame, verified, from memory or disk, and never
// loads one: a missing or damaged frame is a miss.
func TestCached(t *testing.T) {
	s, rec := openStore(t, Config{MemoryBytes: -1}) // disk only: every Cached reads the file
	want, d := testFrame(7, 4096)
	if _, ok := s.Cached(d, 4096); ok {
		t.Fatal("Cached() of a frame never stored = true")
	}
	if err := s.Put(t.Context(), d, bytes.Clone(want)); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Cached(d, 4096); !ok || !bytes.Equal(got, want) {
		t.Fatalf("Cached() of a stored frame = %d bytes, %v", len(got), ok)
	}
	if err := os.WriteFile(framePath(s.dir, d.Encoded()), bytes.Repeat([]byte{1}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Cached(d, 4096); ok {
		t.Error("Cached() of a damaged frame file = true")
	}
	if w := rec.expectWarns(); len(w) != 1 || !strings.Contains(w[0], "corrupt frame deleted") {
		t.Errorf("warnings %q, want the damaged frame's deletion", w)
	}
	if st := s.Stats(); st.Loads != 0 {
		t.Errorf("Cached() made %d loads, want 0", st.Loads)
	}
}

// InMemory tells a frame the memory tier holds from one only on disk, and
// one of another size from it.
func TestInMemory(t *testing.T) {
	s, _ := openStore(t, Config{})
	want, d := testFrame(8, 4096)
	if s.InMemory(d, 4096) {
		t.Fatal("InMemory() of a frame never stored = true")
	}
	if err := s.Put(WithoutMemory(t.Context()), d, bytes.Clone(want)); err != nil {
		t.Fatal(err)
	}
	if s.InMemory(d, 4096) {
		t.Error("InMemory() of a frame stored on disk only = true")
	}
	if _, ok := s.Cached(d, 4096); !ok {
		t.Fatal("Cached() of a stored frame = false")
	}
	if !s.InMemory(d, 4096) {
		t.Error("InMemory() of a frame just read = false")
	}
	if s.InMemory(d, 4095) {
		t.Error("InMemory() with the wrong size = true")
	}
	if s.InMemory("sha256:nothex", 4096) {
		t.Error("InMemory() of a bad digest = true")
	}
}
