package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// Source serves frames of one image's layers: from the shared cache, else
// by a Range read of the frame's compressed bytes (and, for an index kept
// as its toc alone, one of the frame's window from the index blob, at the
// same time), decoded and verified by the cache before anyone sees them.
// It implements fusefs.FrameSource.
type Source struct {
	client *fetch.Client
	repo   string
	store  *cache.Store
	log    *slog.Logger

	mu          sync.Mutex                      // guards the maps below
	whole       map[digest.Digest]*whole        // streamed layers (zstd), one fetch each
	streams     map[digest.Digest][]readStream  // per layer, its recent readers, most recent last
	inflight    map[digest.Digest]chan struct{} // frames a prefetch request is fetching
	loading     map[digest.Digest]*loadingFrame // frames readers are reading: claim leaves them out
	prefetching map[digest.Digest]int           // prefetch jobs of each layer not finished
	profiled    map[digest.Digest][]bool        // per layer a profile named, the frames it named (see Prefetch)
	origins     map[digest.Digest]windowOrigin  // where the windows of each toc-only index are, by toc digest
	winGroups   map[winGroupKey]*winGroup       // windows fetched for frames near the one asked for, not yet taken
	winOrder    []winGroupKey                   // winGroups' keys, oldest first (some may be gone)

	rec *Recorder // nil unless recording a profile

	readTimeout time.Duration // how long one read waits for a frame before EIO
	readahead   int64         // uncompressed bytes fetched ahead of a sequential reader; 0: none
	metrics     Metrics       // never nil: noMetrics when off
	meter       fetch.Meter   // metrics as the fetches' meter; nil when off

	traffic  *Traffic      // on-demand fetches, which background fetches yield to
	aheadSem chan struct{} // one token per running read-ahead
	diskSem  chan struct{} // one token per frame read ahead from disk
	openSem  chan struct{} // one token per running fetch at open (OpenedFile)
	stop     context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // read-ahead goroutines, owned by the Source
}

// readahead is how many bytes of frames past a sequential reader's are
// fetched before it asks, in requests of readaheadRequest bytes, at most
// readaheadLoads at once: a cold sequential read then waits for one round
// trip per readahead bytes, not one per frame. (That was 4 frames of 256
// KiB; frames that keep no window are smaller, 64 KiB with the bench
// images, and one request each made twice the requests: go run's cold
// start 4.4 s → 6.0 s.)
const (
	readahead        = 1 << 20
	readaheadRequest = 256 << 10 // uncompressed bytes of frames one read-ahead request asks for, at least
	readaheadLoads   = 8         // requests in flight: two readers' worth
	diskReadahead    = 32        // frames read ahead from disk at once
)

// DefaultReadTimeout bounds how long a read waits for a frame that is not
// cached: past it the read fails (EIO at the mount) while the fetch goes on
// for later readers. stargz and SOCI wait up to 300 s; a container whose
// registry is gone should learn it sooner.
const DefaultReadTimeout = 10 * time.Second

// NewSource serves layers stored in repo (registry host and repository).
// Close stops its read-ahead.
func NewSource(client *fetch.Client, repo string, store *cache.Store, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{client: client, repo: repo, store: store, log: log,
		whole: map[digest.Digest]*whole{}, streams: map[digest.Digest][]readStream{},
		inflight: map[digest.Digest]chan struct{}{}, loading: map[digest.Digest]*loadingFrame{}, prefetching: map[digest.Digest]int{}, profiled: map[digest.Digest][]bool{},
		origins: map[digest.Digest]windowOrigin{}, winGroups: map[winGroupKey]*winGroup{},
		aheadSem: make(chan struct{}, readaheadLoads), diskSem: make(chan struct{}, diskReadahead), openSem: make(chan struct{}, openAheadLoads), readTimeout: DefaultReadTimeout, readahead: readahead,
		metrics: noMetrics{}, traffic: NewTraffic(0)}
	s.stop, s.cancel = context.WithCancel(context.Background())
	return s
}

// SetReadTimeout sets how long a read waits for a frame (DefaultReadTimeout
// unless set; 0 or less means no limit but the fetch's own). Call it before
// the first Frame.
func (s *Source) SetReadTimeout(d time.Duration) { s.readTimeout = d }

// Record makes the Source note every frame a reader asks for (read-ahead
// and prefetch not included) in rec. Call it before the first Frame.
func (s *Source) Record(rec *Recorder) { s.rec = rec }

// Metrics receives what a Source does, for monitoring; package metrics
// implements it per image. Its methods are called concurrently, some from
// inside the HTTP stack, and must return at once.
type Metrics interface {
	// Request and BodyBytes count the registry traffic of the Source's
	// frame loads, read-ahead and whole-layer streams included.
	fetch.Meter
	// FrameFetched is told the time of each successful load of one frame
	// by a reader from the registry: the Range read with its retries, and
	// decoding. Whole-layer (zstd) loads, read-ahead and prefetch requests
	// are not timed.
	FrameFetched(d time.Duration)
	// ReadaheadStarted and ReadaheadDone bracket each frame read ahead of
	// a sequential reader; fetched says whether it was loaded from the
	// registry (false: it was cached, or the load failed).
	ReadaheadStarted()
	ReadaheadDone(fetched bool)
}

type noMetrics struct{}

func (noMetrics) Request()                     {}
func (noMetrics) BodyBytes(int64)              {}
func (noMetrics) FrameFetched(d time.Duration) {}
func (noMetrics) ReadaheadStarted()            {}
func (noMetrics) ReadaheadDone(bool)           {}

// SetMetrics makes the Source report to m (nil: to nothing). Call it
// before the first Frame.
func (s *Source) SetMetrics(m Metrics) {
	if m == nil {
		s.metrics, s.meter = noMetrics{}, nil
		return
	}
	s.metrics, s.meter = m, m
}

// Close stops fetching ahead and in the background, and waits for the
// fetches running. Frame keeps working without read-ahead. Close is
// idempotent.
func (s *Source) Close() {
	s.cancel()
	s.wg.Wait()
}

// fetchAhead starts loading the frames after i when the reader of x moves
// through it in order. Frames already loading or cached cost a map lookup.
// While the reader is on frames a prefetch profile named, it is read ahead
// only as far as the frames it named go on without a gap: the start-up
// the profile recorded read no others there (a reader off the profile's
// frames is read ahead as usual).
func (s *Source) fetchAhead(x *index.Index, i int) {
	s.mu.Lock()
	st, seen := s.stream(x.Layer, i)
	sequential := seen && s.prefetching[x.Layer] == 0
	from := max(i+1, st.ahead+1)
	to := i
	for end := x.Frames[i].Offset + x.Frames[i].Size + min(s.readahead, st.window); to+1 < len(x.Frames) && x.Frames[to+1].Offset < end; {
		to++
	}
	if named := s.profiled[x.Layer]; len(named) == len(x.Frames) && named[i] {
		// On the profile's frames: ahead only as far as they go on.
		for j := from; j <= to; j++ {
			if !named[j] {
				to = j - 1
				break
			}
		}
	}
	s.mu.Unlock()
	if !sequential || s.stop.Err() != nil || from > to {
		return
	}
	// Groups of frames of about readaheadRequest bytes, one claim and
	// request each, all at once: a reader waits for its group's request
	// only, and a group whose first frame decodes after the frame before
	// waits for that one's claim (fetchFrames), not a round trip.
	launched := from - 1
	for j := from; j <= to; {
		group := []int{j}
		for size := x.Frames[j].Size; j+1 <= to && size < readaheadRequest; size += x.Frames[j].Size {
			j++
			group = append(group, j)
		}
		j++
		select {
		case s.aheadSem <- struct{}{}:
		default:
			to = launched // enough running; the reader will ask again for the rest
			continue
		}
		launched = group[len(group)-1]
		var missing, onDisk []int
		for _, k := range group {
			switch f := &x.Frames[k]; {
			case s.store.InMemory(f.Digest, f.Size): // no stat for what memory holds
			case s.store.Has(f.Digest):
				onDisk = append(onDisk, k)
			default:
				missing = append(missing, k)
			}
		}
		s.readAheadFromDisk(x, onDisk)
		claims := s.claim(x, s.withChains(x, missing))
		if len(claims) == 0 {
			<-s.aheadSem // cached, or being fetched
			continue
		}
		s.wg.Add(1)
		s.metrics.ReadaheadStarted()
		go func() {
			defer s.wg.Done()
			defer func() { <-s.aheadSem }()
			n, err := s.fetchClaims(s.stop, x, claims)
			s.metrics.ReadaheadDone(n > 0 && err == nil)
			if err != nil && s.stop.Err() == nil {
				s.log.Debug("read-ahead failed", "layer", x.Layer, "frame", group[0], "frames", len(group), "err", err)
			}
		}()
	}
	s.mu.Lock()
	for k, ss := 0, s.streams[x.Layer]; k < len(ss); k++ {
		if ss[k].last == i {
			ss[k].ahead = max(ss[k].ahead, launched)
		}
	}
	s.mu.Unlock()
}

// readAheadFromDisk brings frames of x the cache holds on disk into its
// memory tier ahead of a sequential reader, up to diskReadahead at once,
// each read and checked by a goroutine of its own; frames past that are
// left to the reader. Without it the reader reads them one after
// another, a disk read and a digest check each: with 64 KiB frames a
// 1 GiB file went through FUSE at 287 MB/s, 44 % of the disk's 658 MB/s
// (BenchmarkWarmSequentialRead; 100 % with 256 KiB frames), and at
// 410-450 MB/s with it.
func (s *Source) readAheadFromDisk(x *index.Index, frames []int) {
	for _, k := range frames {
		select {
		case s.diskSem <- struct{}{}:
		default:
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.diskSem }()
			if _, _, err := s.frame(s.stop, x, k); err != nil && s.stop.Err() == nil {
				s.log.Debug("read-ahead from disk failed", "layer", x.Layer, "frame", k, "err", err)
			}
		}()
	}
}

// readStream is one reader moving through a layer: the frame it asked
// for last, and the last it was read ahead to.
type readStream struct {
	last, ahead int
	// window is how far ahead it is read: readaheadRequest bytes at first,
	// doubled each frame it moves on in order, up to readahead. A start
	// reads many small files in order one after another, a toolchain a
	// few big ones: a fixed 1 MiB read python3's start 2.6 times over
	// (9.7 MB fetched, 1.43 s; 7.9 MB, 1.28 s following one reader).
	window int64
}

// maxStreams is how many readers of one layer are followed at once: a
// go build reads several files of a layer in turns, and one reader's
// frames interleaved with another's looked random, so neither was read
// ahead (go run cold: 5.1 s, 4.45 s following 8).
const maxStreams = 4

// stream returns the reader of layer that asked for frame i-1 or i last,
// now at i, and true; or a new one at i (the oldest forgotten) and false.
// The caller holds s.mu, and reads the stream only while it does.
func (s *Source) stream(layer digest.Digest, i int) (readStream, bool) {
	ss := s.streams[layer]
	for k := len(ss) - 1; k >= 0; k-- {
		if st := ss[k]; st.last == i-1 || st.last == i {
			if st.last == i-1 {
				st.window = min(2*st.window, readahead)
			}
			ss = append(append(ss[:k:k], ss[k+1:]...), readStream{last: i, ahead: st.ahead, window: st.window})
			s.streams[layer] = ss
			return ss[len(ss)-1], true
		}
	}
	if len(ss) == maxStreams {
		ss = append(ss[:0:0], ss[1:]...)
	}
	ss = append(ss, readStream{last: i, ahead: -1, window: readaheadRequest / 2})
	s.streams[layer] = ss
	return ss[len(ss)-1], false
}

// claimRestOfSpan claims, for a reader's load of frame i of x, the frames
// after it up to the next that keeps its window, when none of them is
// cached or being fetched; it returns the last claimed (i when none) and
// the claim's end, to call when the load is done. A cold reader rarely
// stops inside a span (a program reads on through its files and
// libraries), and a round trip costs more than a span's bytes here: go
// run's cold start made 379 requests in 5.96 s with each 64 KiB frame
// fetched on its own, 270 in 4.42 s with 256 KiB spans. With a prefetch
// profile for the layer, only frame i: the profile says what is read.
func (s *Source) claimRestOfSpan(x *index.Index, i int) (last int, done func()) {
	last, done = i, func() {}
	if x.Format != index.FormatGzip || s.stop.Err() != nil {
		return last, done
	}
	s.mu.Lock()
	profiled := len(s.profiled[x.Layer]) > 0
	s.mu.Unlock()
	var run []int
	for k := i + 1; !profiled && x.NeedsFrameBefore(k) && !s.store.Has(x.Frames[k].Digest); k++ {
		run = append(run, k)
	}
	if len(run) == 0 {
		return last, done
	}
	claims := s.claim(x, run)
	for _, c := range claims[min(1, len(claims)):] {
		c.done() // not right after frame i: left to their readers
	}
	if len(claims) == 0 || claims[0].frames[0] != i+1 {
		if len(claims) > 0 {
			claims[0].done()
		}
		return last, done
	}
	return claims[0].frames[len(claims[0].frames)-1], claims[0].done
}

// corruptFetches bounds how often one read fetches a frame whose bytes do
// not match its digest (a flaky proxy, a bad disk on the registry) before it
// fails with EIO.
const corruptFetches = 3

// Frame returns frame i of layer x. When reads move through a layer in
// order, the next frames are fetched ahead in the background.
func (s *Source) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	if s.rec != nil {
		s.rec.note(x, i)
	}
	// Marked as a reader's before the read-ahead claims what follows: a
	// frame after it that decodes after it then waits for it rather than
	// fetch it again.
	s.setLoading(x.Frames[i].Digest, +1)
	defer s.setLoading(x.Frames[i].Digest, -1)
	if x.Format != index.FormatZstd {
		s.fetchAhead(x, i)
	}
	if s.readTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.readTimeout)
		defer cancel()
	}
	data, _, err := s.frame(ctx, x, i)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return nil, fmt.Errorf("frame %d of layer %s: not fetched within %v: %w", i, x.Layer, s.readTimeout, err)
	}
	return data, err
}

// frame returns frame i of layer x; fetched says this call's load function
// ran (the frame was not cached; another caller may have waited for it too).
func (s *Source) frame(ctx context.Context, x *index.Index, i int) (_ []byte, fetched bool, _ error) {
	f := &x.Frames[i]
	if err := s.awaitInflight(ctx, f.Digest); err != nil {
		return nil, false, err
	}
	var (
		err    error
		loaded atomic.Bool // set by load, which may outlive this call
	)
	for attempt := 1; attempt <= corruptFetches; attempt++ {
		var data []byte
		load := func(ctx context.Context) ([]byte, error) {
			loaded.Store(true)
			defer s.foreground(ctx)()
			s.setLoading(f.Digest, +1)
			defer s.setLoading(f.Digest, -1)
			if s.meter != nil {
				ctx = fetch.WithMeter(ctx, s.meter)
			}
			if x.Format == index.FormatZstd {
				return s.streamed(ctx, x, i)
			}
			start := time.Now()
			var (
				data []byte
				err  error
			)
			if last, done := s.claimRestOfSpan(x, i); x.NeedsFrameBefore(i) || last > i {
				// Decoded after the frame before: fetched with it, when
				// that is not at hand (fetchFrames); and with the frames
				// after it up to the next checkpoint (claimRestOfSpan).
				_, data, err = s.fetchFrames(ctx, x, i, last, i, false)
				done()
			} else {
				var comp, win []byte
				if comp, win, err = s.readFrame(ctx, x, i); err != nil {
					return nil, err
				}
				data, err = x.DecodeFrameWith(i, comp, win)
			}
			if err == nil {
				s.metrics.FrameFetched(time.Since(start))
			}
			return data, err
		}
		data, err = s.store.Frame(ctx, f.Digest, f.Size, load)
		if errors.Is(err, errStoredWhole) {
			data, err = s.store.Frame(ctx, f.Digest, f.Size, load)
			if errors.Is(err, errStoredWhole) {
				err = fmt.Errorf("frame %d of layer %s: decoded, but the cache did not keep it (is --cache-size smaller than the layer?)", i, x.Layer)
			}
		}
		if !errors.Is(err, index.ErrCorrupt) {
			return data, loaded.Load(), err
		}
		s.log.Warn("frame corrupt, fetching it again", "layer", x.Layer, "frame", i, "attempt", attempt, "err", err)
	}
	return nil, loaded.Load(), fmt.Errorf("frame %d of layer %s: %d fetches gave wrong bytes: %w", i, x.Layer, corruptFetches, err)
}

// readFrame fetches the compressed bytes of frame i of x and, when its
// window is not loaded, the window, with two Range reads at once (one
// round trip). A window that fails its checksum wraps index.ErrCorrupt, so
// the caller fetches again, as for corrupt frame bytes; a wrong window
// that passes it decodes to bytes the frame's digest refuses.
func (s *Source) readFrame(ctx context.Context, x *index.Index, i int) (comp, win []byte, err error) {
	f := &x.Frames[i]
	if x.NeedsWindow(i) {
		// The window is the end of the frame before, when that is cached.
		win = x.WindowFrom(i, s.cachedFrame(x, i-1))
	}
	if !x.NeedsWindow(i) || win != nil {
		comp, err = s.client.ReadRange(ctx, s.repo, x.Layer, f.CompressedOffset, f.CompressedSize)
		return comp, win, err
	}
	o, err := s.windowOrigin(x)
	if err != nil {
		return nil, nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		win, err = s.window(gctx, o, x, i)
		return err
	})
	g.Go(func() (err error) {
		comp, err = s.client.ReadRange(gctx, s.repo, x.Layer, f.CompressedOffset, f.CompressedSize)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return comp, win, nil
}

// loadingFrame is a frame readers are reading: how many, and a channel
// closed when the last is done.
type loadingFrame struct {
	n    int
	done chan struct{}
}

// setLoading counts the readers of frame d.
func (s *Source) setLoading(d digest.Digest, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.loading[d]
	if l == nil {
		l = &loadingFrame{done: make(chan struct{})}
		s.loading[d] = l
	}
	if l.n += delta; l.n <= 0 {
		delete(s.loading, d)
		close(l.done)
	}
}

// busy returns a channel closed when the fetch that will store frame d
// ends, nil when none runs: a claim (prefetch, fetch at open, read-ahead,
// a read's run) or a reader. The caller holds s.mu.
func (s *Source) busy(d digest.Digest) <-chan struct{} {
	if ch := s.inflight[d]; ch != nil {
		return ch
	}
	if l := s.loading[d]; l != nil {
		return l.done
	}
	return nil
}

// chainFrom returns the first frame to fetch with frame k of x so that k
// decodes: k itself when it keeps a window of its own (or none), or when
// the frame before is cached (or, with claimed, being fetched: a claim
// may wait for another fetch); else the same for the frame before, and so
// on back to a checkpoint (index.Frame.PrevWindow). A reader's load never
// waits for another fetch: it may be what that fetch waits for, and it
// holds one of the cache's load slots.
func (s *Source) chainFrom(x *index.Index, k int, claimed bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for x.NeedsFrameBefore(k) {
		d := x.Frames[k-1].Digest
		if (claimed && s.busy(d) != nil) || s.store.Has(d) {
			break
		}
		k--
	}
	return k
}

// cachedFrame returns frame i of x if the cache holds it (verified), else
// nil; it never fetches.
func (s *Source) cachedFrame(x *index.Index, i int) []byte {
	if i < 0 || i >= len(x.Frames) {
		return nil
	}
	data, _ := s.store.Cached(x.Frames[i].Digest, x.Frames[i].Size)
	return data
}

// windowOrigin returns where the windows of x (a toc alone) are, read from
// the store once per toc.
func (s *Source) windowOrigin(x *index.Index) (windowOrigin, error) {
	toc := x.TOCDigest()
	s.mu.Lock()
	o, ok := s.origins[toc]
	s.mu.Unlock()
	if ok {
		return o, nil
	}
	o, err := getWindowOrigin(s.store, x)
	if err != nil {
		return o, err
	}
	s.mu.Lock()
	s.origins[toc] = o
	s.mu.Unlock()
	return o, nil
}

// whole is the one decoding of an entire layer blob into the cache, shared
// by the frames of a layer that cannot be entered in the middle (zstd).
type whole struct {
	once sync.Once
	err  error
	kept bool // every frame went into the cache (false when its disk is full)
}

// errStoredWhole is what the load of a zstd frame returns once the whole
// layer has gone into the cache: the frame is then read from there.
var errStoredWhole = errors.New("layer decoded whole into the cache")

// streamed fills the cache with every frame of a layer that cannot be
// entered in the middle: the first such read fetches and decodes the blob
// once (decoding it per frame would decode it once per frame), and every
// frame waiting for it is then read from the cache. The read that decodes
// gets its own frame i directly. If the cache could not keep every frame
// (a full disk), the decoding is forgotten, so that a later read of a frame
// the cache lost decodes the layer again rather than failing.
func (s *Source) streamed(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	s.mu.Lock()
	w := s.whole[x.Layer]
	if w == nil {
		w = &whole{}
		s.whole[x.Layer] = w
	}
	s.mu.Unlock()
	var mine []byte
	w.once.Do(func() {
		s.log.Info("fetching whole layer: its compression is not seekable", "layer", x.Layer, "len", x.BlobSize)
		w.kept, w.err = s.storeWhole(ctx, x, i, &mine)
	})
	if w.err != nil || !w.kept {
		// Let a later read try again rather than remembering the failure.
		s.mu.Lock()
		if s.whole[x.Layer] == w {
			delete(s.whole, x.Layer)
		}
		s.mu.Unlock()
	}
	if w.err != nil {
		return nil, fmt.Errorf("fetch whole layer %s: %w", x.Layer, w.err)
	}
	if mine != nil {
		return mine, nil
	}
	return nil, errStoredWhole
}

// storeWhole decodes layer x into the cache and sets *mine to frame i. A
// frame the cache cannot write (its disk is full) is logged once and
// skipped, and kept is then false; a frame that does not match its digest
// ends the decoding.
func (s *Source) storeWhole(ctx context.Context, x *index.Index, i int, mine *[]byte) (kept bool, err error) {
	rc, err := s.client.OpenBlob(ctx, s.repo, x.Layer)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	kept = true
	err = x.DecodeAll(ctx, io.LimitReader(rc, x.BlobSize), func(k int, b []byte) error {
		err := s.store.Put(ctx, x.Frames[k].Digest, b)
		switch {
		case err == nil:
		case errors.Is(err, index.ErrCorrupt), errors.Is(err, cache.ErrClosed), ctx.Err() != nil:
			return err
		default:
			if kept {
				s.log.Warn("frames of a whole layer not kept in the cache", "layer", x.Layer, "frame", k, "err", err)
			}
			kept = false
		}
		if k == i {
			*mine = b
		}
		return nil
	})
	return kept, err
}
