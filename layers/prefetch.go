package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// PrefetchConfig tunes Source.Prefetch. The zero value is usable.
type PrefetchConfig struct {
	Parallel   int   // Range requests in flight at once; 0 = 4
	MaxRequest int64 // compressed bytes one request asks for at most; 0 = 512 KiB
	// MaxGap is how many compressed bytes of frames the profile does not
	// name a request may fetch over to join two runs (those frames are
	// kept too); 0 = 64 KiB, negative = only adjacent frames share one.
	MaxGap int64
}

const (
	defaultPrefetchParallel = 4
	defaultPrefetchRequest  = 512 << 10 // readers wait for a whole request: 4 MiB ones made go run's profile start 8 % slower and once kept a reader past its timeout
	defaultPrefetchGap      = 64 << 10
)

// PrefetchStats is what a Prefetch did.
type PrefetchStats struct {
	Frames   int   // frames the profile names in the layers given
	Present  int   // of them, those cached before it began
	Requests int   // Range requests (and whole-layer reads) made
	Fetched  int64 // compressed bytes those asked for
	Failed   int   // requests that failed; their frames are left to readers
}

// Prefetch fetches the frames of layers that p names, missing from the
// cache, in few large Range requests: adjacent frames (and frames up to
// MaxGap apart) share one, at most Parallel run at once, the runs holding
// the frames read first go first. Readers are never queued behind it: a
// read of a frame not yet requested fetches it itself, and a read of a
// frame whose request is running waits for that request instead of making
// its own. Read-ahead is off for a layer while its prefetch runs: the
// profile says better what will be read. Afterwards, fetch at open and
// read-ahead keep to the frames p named where the start-up stays on them
// (OpenedFile, fetchAhead).
//
// A failed request is logged and counted, and its frames left to readers;
// Prefetch returns an error only when ctx ended. A zstd layer the profile
// names is fetched whole, as its first read would.
func (s *Source) Prefetch(ctx context.Context, layers []*index.Index, p *Profile, cfg PrefetchConfig) (PrefetchStats, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = defaultPrefetchParallel
	}
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = defaultPrefetchRequest
	}
	if cfg.MaxGap == 0 {
		cfg.MaxGap = defaultPrefetchGap
	}
	type job struct {
		x     *index.Index
		run   []int // frames, ascending
		whole bool
	}
	var st PrefetchStats
	var perLayer [][]job
	for _, x := range layers {
		frames := p.frames(x)
		if len(frames) == 0 {
			continue
		}
		st.Frames += len(frames)
		s.setProfiled(x, frames)
		rank := make(map[int]int, len(frames))
		var missing []int
		for r, k := range frames {
			rank[k] = r
			if s.store.Has(x.Frames[k].Digest) {
				st.Present++
			} else {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			continue
		}
		if x.Format == index.FormatZstd {
			perLayer = append(perLayer, []job{{x: x, run: missing[:1], whole: true}})
			continue
		}
		slices.Sort(missing)
		runs := coalesce(x, missing, cfg.MaxGap, cfg.MaxRequest)
		byFirstUse(runs, rank)
		jobs := make([]job, len(runs))
		for i, run := range runs {
			jobs[i] = job{x: x, run: run}
		}
		perLayer = append(perLayer, jobs)
	}
	// Layers take turns, in the order the profile first read them, so
	// that the first reads of every layer come early.
	var jobs []job
	for i := 0; len(perLayer) > 0; i++ {
		perLayer = slices.DeleteFunc(perLayer, func(js []job) bool { return len(js) <= i })
		for _, js := range perLayer {
			jobs = append(jobs, js[i])
		}
	}
	for _, j := range jobs {
		s.setPrefetching(j.x.Layer, +1)
	}

	start := time.Now()
	var mu sync.Mutex // guards st
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.Parallel)
	for _, j := range jobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			s.setPrefetching(j.x.Layer, -1)
			continue
		}
		// Claimed here, in order, not in the goroutine: a request whose
		// first frame's window is the end of a frame an earlier request
		// is fetching then sees that claim and waits for it (fetchRun).
		var claims []claim
		if !j.whole {
			claims = s.claimRun(j.x, j.run)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer s.setPrefetching(j.x.Layer, -1)
			var n int64
			var err error
			if j.whole {
				n = j.x.BlobSize
				_, _, err = s.frame(ctx, j.x, j.run[0])
			} else {
				n, err = s.fetchClaims(ctx, j.x, claims)
			}
			mu.Lock()
			defer mu.Unlock()
			if n > 0 {
				st.Requests++
				st.Fetched += n
			}
			if err != nil && ctx.Err() == nil {
				st.Failed++
				s.log.Warn("prefetch failed: its frames are left to readers", "layer", j.x.Layer, "frame", j.run[0], "frames", len(j.run), "err", err)
			}
		}()
	}
	wg.Wait()
	s.log.Debug("prefetched", "frames", st.Frames, "present", st.Present, "requests", st.Requests, "len", st.Fetched, "failed", st.Failed, "dur", time.Since(start))
	return st, ctx.Err()
}

// claimRun claims the frames of run (ascending) of x that are neither
// cached nor being fetched already (Source.claim), for fetchClaims, with
// the frames before them that they decode after (chainFrom): claimed,
// a reader of those waits for this request rather than make its own.
func (s *Source) claimRun(x *index.Index, run []int) []claim {
	run = slices.DeleteFunc(slices.Clone(run), func(k int) bool { return s.store.Has(x.Frames[k].Digest) })
	return s.claim(x, s.withChains(x, run))
}

// withChains returns run (ascending, none cached) with, before each
// frame whose frame before is not in run, the frames it decodes after
// that are neither cached nor being fetched (chainFrom).
func (s *Source) withChains(x *index.Index, run []int) []int {
	var out []int
	for i, k := range run {
		if i == 0 || run[i-1] != k-1 {
			for j := s.chainFrom(x, k, true); j < k; j++ {
				if len(out) == 0 || out[len(out)-1] < j {
					out = append(out, j)
				}
			}
		}
		if len(out) == 0 || out[len(out)-1] < k {
			out = append(out, k)
		}
	}
	return out
}

// fetchClaims fetches claimed runs of frames of x (claimRun) in order,
// each with one Range request, ending each claim; it returns the bytes
// asked for.
func (s *Source) fetchClaims(ctx context.Context, x *index.Index, claims []claim) (int64, error) {
	defer s.foreground(ctx)()
	var total int64
	for i, c := range claims {
		n, err := s.fetchRun(ctx, x, c.frames)
		c.done()
		total += n
		if err != nil {
			for _, rest := range claims[i+1:] {
				rest.done()
			}
			return total, err
		}
	}
	return total, nil
}

// fetchRun fetches frames first..last of x (run, adjacent) with one Range
// request, and their windows with another when needed, and stores them.
func (s *Source) fetchRun(ctx context.Context, x *index.Index, run []int) (int64, error) {
	n, _, err := s.fetchFrames(ctx, x, run[0], run[len(run)-1], -1, true)
	return n, err
}

// fetchFrames fetches frames first..last of x with one Range request and
// decodes them in order, storing each but keep (a reader's frame, which
// the cache stores as its load's result; -1: none), and returns the bytes
// asked for and frame keep's bytes.
//
// Only the first frame's window may be needed from elsewhere: every later
// one is the end of the frame decoded before it (index.WindowFrom). The
// first's is that too when the frame before it is cached, or, for a claim
// (claimed), when another fetch is getting it (a long run split at
// MaxRequest, runs of a profile that meet, the frames before a file's
// first at open, a reader's frame): then this one's bytes are fetched at
// once and decoded once that one has stored the frame before. Only claims
// wait, and only for fetches of frames before theirs; a reader waits only
// for a claim of its own frame; so waits never go round in a circle. Otherwise a first frame that keeps no window
// (index.Frame.PrevWindow) is fetched from the frame it decodes after
// (chainFrom), and the window of the frame the request then starts with,
// when it is not loaded, comes with a second Range read of the index blob
// at the same time.
func (s *Source) fetchFrames(ctx context.Context, x *index.Index, first, last, keep int, claimed bool) (int64, []byte, error) {
	has := func(k int) bool { return s.store.Has(x.Frames[k].Digest) }
	from := first
	if x.NeedsFrameBefore(first) {
		from = s.chainFrom(x, first, claimed)
	}
	off := x.Frames[from].CompressedOffset
	n := x.Frames[last].CompressedOffset + x.Frames[last].CompressedSize - off
	if s.meter != nil {
		ctx = fetch.WithMeter(ctx, s.meter)
	}
	var o windowOrigin
	winLast := from - 1
	var prev []byte
	var before <-chan struct{} // closed when the claim that stores frame from-1 ends
	if x.NeedsWindow(from) || x.NeedsFrameBefore(from) {
		if prev = s.cachedFrame(x, from-1); prev == nil && claimed {
			s.mu.Lock()
			before = s.busy(x.Frames[from-1].Digest)
			s.mu.Unlock()
		}
		if prev == nil && before == nil && x.NeedsWindow(from) {
			var err error
			if o, err = s.windowOrigin(x); err != nil {
				return 0, nil, err
			}
			winLast = from
			_, wn := x.WindowRange(from, from)
			n += wn // (the window's own bytes, in a request of their own at the same time)
		}
	}
	buf, wins, err := readRun(ctx, s.client, s.repo, o, x, from, last, winLast)
	if err != nil {
		return n, nil, err
	}
	if before != nil {
		if prev, err = s.windowAfter(ctx, before, x, from); err != nil {
			return n, nil, err
		}
	}
	if prev == nil && wins[0] == nil && (x.NeedsWindow(from) || x.NeedsFrameBefore(from)) {
		// The frame before did not come (its fetch failed, or is slow), or
		// the cache lost it: read it as a reader would, then decode.
		if prev, _, err = s.frame(ctx, x, from-1); err != nil {
			return n, nil, fmt.Errorf("frame %d, which frame %d decodes after: %w", from-1, from, err)
		}
	}
	var kept []byte
	var putErr error // the first frame the cache could not keep
	for k := from; k <= last; k++ {
		f := &x.Frames[k]
		win := wins[k-from]
		if win == nil {
			win = x.WindowFrom(k, prev)
		}
		data, err := x.DecodeFrameWith(k, buf[f.CompressedOffset-off:f.CompressedOffset-off+f.CompressedSize], win)
		if err != nil {
			return n, nil, fmt.Errorf("frame %d: %w", k, err)
		}
		if x.Format == index.FormatTar {
			data = bytes.Clone(data) // not a piece of buf, which the cache would keep alive
		}
		prev = data
		if k == keep {
			kept = data
			continue
		}
		if has(k) {
			continue
		}
		if err := s.store.Put(ctx, f.Digest, data); err != nil {
			if errors.Is(err, index.ErrCorrupt) || ctx.Err() != nil {
				return n, nil, fmt.Errorf("frame %d: %w", k, err)
			}
			// A full disk: the frames after still decode, and a reader
			// still gets its own (the cache keeps it in memory).
			if putErr == nil {
				putErr = fmt.Errorf("frame %d: %w", k, err)
			}
		}
	}
	if putErr != nil && keep < 0 {
		return n, nil, putErr
	}
	return n, kept, nil
}

// claim is a run of adjacent frames a caller of Source.claim is to fetch;
// done ends that, waking the readers waiting for them.
type claim struct {
	frames []int
	done   func()
}

// claim marks the frames of run (ascending) of x that no other fetch has
// in flight (a prefetch's claim, a reader's load, or another process: the
// cache's frame lock) as the caller's, and returns them as runs of adjacent frames.
// The caller must call done of each.
func (s *Source) claim(x *index.Index, run []int) []claim {
	var out []claim
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		cur     []int
		unlocks []func() // of cur's frames' cross-process locks
	)
	flush := func() {
		if len(cur) == 0 {
			return
		}
		ch := make(chan struct{})
		frames, locks := cur, unlocks
		for _, k := range frames {
			s.inflight[x.Frames[k].Digest] = ch
		}
		out = append(out, claim{frames: frames, done: func() {
			s.mu.Lock()
			for _, k := range frames {
				if s.inflight[x.Frames[k].Digest] == ch {
					delete(s.inflight, x.Frames[k].Digest)
				}
			}
			s.mu.Unlock()
			for _, unlock := range locks {
				unlock()
			}
			close(ch)
		}})
		cur, unlocks = nil, nil
	}
	for _, k := range run {
		d := x.Frames[k].Digest
		if s.busy(d) != nil {
			flush()
			continue
		}
		unlock, ok := s.store.TryLockFrame(d)
		if !ok { // another process fetches it
			flush()
			continue
		}
		if len(cur) > 0 && cur[len(cur)-1] != k-1 {
			flush()
		}
		cur, unlocks = append(cur, k), append(unlocks, unlock)
	}
	flush()
	return out
}

// awaitInflight waits while a prefetch request that will store frame d
// runs. Whatever it ends with, the caller then reads d as usual.
func (s *Source) awaitInflight(ctx context.Context, d digest.Digest) error {
	s.mu.Lock()
	ch := s.inflight[d]
	s.mu.Unlock()
	if ch == nil {
		return nil
	}
	defer s.foreground(ctx)() // a reader waiting on the network, as much as one fetching
	t := time.NewTimer(inflightPatience)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		// The request is slow (a long run on a busy link): the reader
		// fetches the frame itself rather than wait on into its timeout.
		s.log.Debug("frame in flight too long: reading it directly", "frame", d, "waited", inflightPatience)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// inflightPatience is how long a reader waits for a prefetch request
// that holds its frame before it fetches the frame itself.
const inflightPatience = 2 * time.Second

// setPrefetching counts the prefetch jobs of a layer not finished.
func (s *Source) setPrefetching(layer digest.Digest, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prefetching[layer] += delta; s.prefetching[layer] <= 0 {
		delete(s.prefetching, layer)
	}
}

// setProfiled notes the frames of x a prefetch profile named: fetch at
// open and read-ahead keep to them (OpenedFile, fetchAhead).
func (s *Source) setProfiled(x *index.Index, frames []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	named := s.profiled[x.Layer]
	if named == nil {
		named = make([]bool, len(x.Frames))
		s.profiled[x.Layer] = named
	}
	for _, k := range frames {
		named[k] = true
	}
}

// windowAfter waits (at most inflightPatience) for the request that
// closes before, which is fetching frame first-1 of x, and returns that
// frame from the cache: frame first's window is its end. It returns nil
// if the frame is not cached by then (the request failed or is slow).
func (s *Source) windowAfter(ctx context.Context, before <-chan struct{}, x *index.Index, first int) ([]byte, error) {
	t := time.NewTimer(inflightPatience)
	defer t.Stop()
	select {
	case <-before:
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.cachedFrame(x, first-1), nil
}
