package layers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/index"
)

// After a start, the rest of an image's layers is fetched in the
// background, so that a long-running container stops depending on the
// registry. On-demand fetches (a reader's miss, read-ahead, fetch at open,
// a profile's prefetch) always come first: the background fetcher sends a
// request only when none has run for a while (Traffic), its requests are
// small (≤ BackgroundConfig.MaxRequest compressed bytes, so one already
// sent delays a miss by little), and few at once. Frames are claimed like
// a prefetch's (Source.claim: the frames a reader or another process is
// fetching are left out, and a reader of a claimed frame waits for it), so
// nothing is fetched twice.

// BackgroundMode says when a background fetch runs.
type BackgroundMode int

const (
	// BackgroundOff fetches nothing but what is read.
	BackgroundOff BackgroundMode = iota
	// BackgroundIdle starts once no on-demand fetch has run for
	// BackgroundConfig.Quiet (the start-up is over), and pauses for as long
	// again whenever one runs.
	BackgroundIdle
	// BackgroundFull starts at once and pauses for BackgroundConfig.Pause
	// after every on-demand fetch.
	BackgroundFull
)

// BackgroundModes are the modes' names, as flags take them.
var BackgroundModes = []string{"off", "idle", "full"}

func (m BackgroundMode) String() string {
	if m < 0 || int(m) >= len(BackgroundModes) {
		return fmt.Sprintf("BackgroundMode(%d)", int(m))
	}
	return BackgroundModes[m]
}

// ParseBackgroundMode reads "off", "idle" or "full".
func ParseBackgroundMode(s string) (BackgroundMode, error) {
	if i := slices.Index(BackgroundModes, s); i >= 0 {
		return BackgroundMode(i), nil
	}
	return BackgroundOff, fmt.Errorf("background mode %q: want off, idle or full", s)
}

// BackgroundConfig tunes Source.StartBackground. The zero value is
// usable (and off).
type BackgroundConfig struct {
	Mode BackgroundMode
	// Name names the image in logs, e.g. its reference.
	Name string
	// MaxRequest is how many compressed bytes one request asks for at
	// most (a larger frame gets one of its own); 0 = 1 MiB.
	MaxRequest int64
	// Quiet is, in idle mode, how long no on-demand fetch must have run
	// before a request is sent (counted from the start too); 0 = 2 s.
	Quiet time.Duration
	// Pause is, in full mode, how long after an on-demand fetch ended a
	// request may be sent; 0 = 200 ms.
	Pause time.Duration
	// Failures is how many requests for a layer may fail in a row before
	// the layer is given up (logged at Warn); 0 = 5.
	Failures int
	// Backoff is the wait after a failed request, doubled after each
	// further failure in a row up to 30 s; 0 = 1 s.
	Backoff time.Duration
}

const (
	defaultBackgroundRequest  = 1 << 20
	defaultBackgroundQuiet    = 2 * time.Second
	defaultBackgroundPause    = 200 * time.Millisecond
	defaultBackgroundFailures = 5
	defaultBackgroundBackoff  = time.Second
	maxBackgroundBackoff      = 30 * time.Second
	// backgroundRetry is how long a pass that could claim nothing (every
	// missing frame being fetched by someone else) waits before the next.
	backgroundRetry = 500 * time.Millisecond
)

// BackgroundState is where a background fetch stands.
type BackgroundState int

const (
	BackgroundWaiting  BackgroundState = iota // not started: waiting for the start-up to be quiet
	BackgroundFetching                        // fetching
	BackgroundYielding                        // paused while on-demand fetches run
	BackgroundDone                            // every frame is cached
	BackgroundStopped                         // stopped: closed, or the cache cannot keep the image
	BackgroundFailed                          // gave up on some layer after repeated failures
	BackgroundDisabled                        // mode off
)

// BackgroundStates are the states' names, for metrics.
var BackgroundStates = []string{"waiting", "fetching", "yielding", "done", "stopped", "failed", "off"}

func (s BackgroundState) String() string {
	if s < 0 || int(s) >= len(BackgroundStates) {
		return fmt.Sprintf("BackgroundState(%d)", int(s))
	}
	return BackgroundStates[s]
}

// BackgroundProgress is what a background fetch has done. Frames and
// bytes count distinct frames (a frame two layers share counts once).
// Cached counts are as of the fetcher's last look, plus what it stored
// since: frames readers fetched meanwhile show at its next pass.
type BackgroundProgress struct {
	State        BackgroundState
	Frames       int   // frames of the layers
	Cached       int   // of them, on disk
	Bytes        int64 // uncompressed bytes of those frames
	CachedBytes  int64 // of them, on disk
	Fetched      int64 // compressed bytes the background requests asked for
	Requests     int   // background Range requests (and whole-layer reads) made
	FailedLayers int   // layers given up
}

// Traffic is what on-demand fetches are running, which background fetches
// yield to, and the slots of the background requests in flight. A Source
// has its own; Sources of one process that share a link (the
// snapshotter's, one per repository) should share one (SetTraffic).
type Traffic struct {
	slots chan struct{} // one token per background request in flight

	mu   sync.Mutex    // guards the fields below
	busy int           // on-demand fetches running
	last time.Time     // when the last one ended or began
	wake chan struct{} // closed (and replaced) when busy or last change
}

// NewTraffic returns a Traffic that lets parallel background requests run
// at once (0: 2).
func NewTraffic(parallel int) *Traffic {
	if parallel <= 0 {
		parallel = 2
	}
	return &Traffic{slots: make(chan struct{}, parallel), wake: make(chan struct{})}
}

// begin notes an on-demand fetch; end notes its end. Call end once.
func (t *Traffic) begin() (end func()) {
	t.change(+1)
	var once sync.Once
	return func() { once.Do(func() { t.change(-1) }) }
}

func (t *Traffic) change(delta int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.busy += delta
	t.last = time.Now()
	close(t.wake)
	t.wake = make(chan struct{})
}

// quiet waits until no on-demand fetch runs and none has run for gap
// since max(its last, since). It reports whether it had to wait.
func (t *Traffic) quiet(ctx context.Context, gap time.Duration, since time.Time) (waited bool, _ error) {
	for {
		t.mu.Lock()
		busy, last, wake := t.busy, t.last, t.wake
		t.mu.Unlock()
		if last.Before(since) {
			last = since
		}
		var timer <-chan time.Time
		if busy == 0 {
			left := gap - time.Since(last)
			if left <= 0 {
				return waited, nil
			}
			tm := time.NewTimer(left)
			defer tm.Stop()
			timer = tm.C
		}
		waited = true
		select {
		case <-ctx.Done():
			return waited, ctx.Err()
		case <-wake:
		case <-timer:
		}
	}
}

// quietNow reports whether no on-demand fetch runs and none has for gap.
func (t *Traffic) quietNow(gap time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.busy == 0 && time.Since(t.last) >= gap
}

// SetTraffic makes the Source note its on-demand fetches in t and run its
// background requests in t's slots. Call it before the first Frame.
func (s *Source) SetTraffic(t *Traffic) { s.traffic = t }

// foreground notes an on-demand fetch unless ctx is a background fetch's.
func (s *Source) foreground(ctx context.Context) (end func()) {
	if isBackground(ctx) {
		return func() {}
	}
	return s.traffic.begin()
}

type backgroundKey struct{}

func isBackground(ctx context.Context) bool {
	v, _ := ctx.Value(backgroundKey{}).(bool)
	return v
}

// Background is one background fetch of a set of layers, owned by the
// Source that started it.
type Background struct {
	s      *Source
	cfg    BackgroundConfig
	layers []*index.Index
	log    *slog.Logger
	start  time.Time
	cancel context.CancelFunc
	done   chan struct{}

	// fetch fetches frames run (ascending, missing) of x; tests replace it.
	fetch func(ctx context.Context, x *index.Index, run []int) (backgroundResult, error)

	mu       sync.Mutex // guards the fields below
	progress BackgroundProgress
	stored   map[digest.Digest]bool // frames this fetch put into the cache
}

// backgroundResult is what one fetch of a run did.
type backgroundResult struct {
	requests int
	fetched  int64          // compressed bytes asked for
	stored   []*index.Frame // frames it put into the cache
}

// StartBackground starts fetching, as cfg.Mode says, every frame of layers
// not yet cached, and returns at once. It stops when every frame is cached
// (logged at Info once), when the cache cannot keep them all (the image is
// larger than the cache's disk limit, the disk is full, or frames it
// stored were evicted: logged at Info), when every layer left has failed
// cfg.Failures times in a row (Warn), at Stop, or at the Source's Close.
// Readers are never affected: they fetch what they need as before, and
// wait for a frame the background request in flight holds.
func (s *Source) StartBackground(layers []*index.Index, cfg BackgroundConfig) *Background {
	return s.startBackground(layers, cfg, nil)
}

func (s *Source) startBackground(layers []*index.Index, cfg BackgroundConfig,
	fetch func(context.Context, *index.Index, []int) (backgroundResult, error)) *Background {
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = defaultBackgroundRequest
	}
	if cfg.Quiet <= 0 {
		cfg.Quiet = defaultBackgroundQuiet
	}
	if cfg.Pause <= 0 {
		cfg.Pause = defaultBackgroundPause
	}
	if cfg.Failures <= 0 {
		cfg.Failures = defaultBackgroundFailures
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = defaultBackgroundBackoff
	}
	b := &Background{s: s, cfg: cfg, layers: layers, start: time.Now(), done: make(chan struct{}),
		stored: map[digest.Digest]bool{},
		log:    s.log.With("op", "background", "image", cfg.Name)}
	b.fetch = fetch
	if b.fetch == nil {
		b.fetch = b.fetchRun
	}
	if cfg.Mode == BackgroundOff {
		b.countFrames(false)
		b.progress.State = BackgroundDisabled
		close(b.done)
		return b
	}
	ctx, cancel := context.WithCancel(s.stop)
	b.cancel = cancel
	ctx = context.WithValue(cache.WithoutMemory(ctx), backgroundKey{}, true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(b.done)
		defer cancel()
		b.run(ctx)
	}()
	return b
}

// Progress returns what the fetch has done so far.
func (b *Background) Progress() BackgroundProgress {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.progress
}

// Done is closed when the fetch has ended, for whatever reason.
func (b *Background) Done() <-chan struct{} { return b.done }

// Stop ends the fetch and waits for its requests to end. Idempotent.
func (b *Background) Stop() {
	if b.cancel != nil {
		b.cancel()
	}
	<-b.done
}

func (b *Background) setState(st BackgroundState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progress.State = st
}

// countFrames sets the progress's frame counts, and with onDisk those of
// the frames on disk (a stat each).
func (b *Background) countFrames(onDisk bool) {
	var p BackgroundProgress
	seen := map[digest.Digest]bool{}
	for _, x := range b.layers {
		for k := range x.Frames {
			f := &x.Frames[k]
			if seen[f.Digest] {
				continue
			}
			seen[f.Digest] = true
			p.Frames++
			p.Bytes += f.Size
			if onDisk && b.s.store.Has(f.Digest) {
				p.Cached++
				p.CachedBytes += f.Size
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.progress.Frames, b.progress.Bytes = p.Frames, p.Bytes
	b.progress.Cached, b.progress.CachedBytes = p.Cached, p.CachedBytes
}

// backgroundJob is one request's worth of missing frames of a layer.
type backgroundJob struct {
	layer int
	run   []int // ascending; for a zstd layer, the frames missing, read with the whole blob
}

// run is the fetch: passes over the missing frames until none is left.
func (b *Background) run(ctx context.Context) {
	b.countFrames(true)
	if limit := b.s.store.MaxDiskBytes(); limit > 0 {
		if p := b.Progress(); p.Bytes > limit {
			b.log.Info("background fetch off: the image is larger than the cache's disk limit (--cache-size)", "len", p.Bytes, "limit", limit)
			b.setState(BackgroundStopped)
			return
		}
	}
	if b.cfg.Mode == BackgroundIdle {
		b.setState(BackgroundWaiting)
		if _, err := b.s.traffic.quiet(ctx, b.cfg.Quiet, b.start); err != nil {
			b.setState(BackgroundStopped)
			return
		}
	}
	b.setState(BackgroundFetching)
	failures := make([]int, len(b.layers)) // requests failed in a row, per layer
	for {
		jobs, lost := b.plan(failures)
		if lost > 0 {
			b.log.Info("background fetch stopped: the cache does not keep the image (evicted frames this fetch stored; see --cache-size)", "frames", lost)
			b.setState(BackgroundStopped)
			return
		}
		if len(jobs) == 0 {
			b.finish(failures)
			return
		}
		progressed := b.runJobs(ctx, jobs, failures)
		if ctx.Err() != nil {
			b.setState(BackgroundStopped)
			return
		}
		if b.Progress().State == BackgroundStopped { // the cache is full
			return
		}
		if !progressed {
			select {
			case <-ctx.Done():
				b.setState(BackgroundStopped)
				return
			case <-time.After(backgroundRetry):
			}
		}
	}
}

// finish ends a fetch with no job left: done, or failed.
func (b *Background) finish(failures []int) {
	b.countFrames(true)
	gaveUp := 0
	for _, n := range failures {
		if n >= b.cfg.Failures {
			gaveUp++
		}
	}
	b.mu.Lock()
	p := b.progress
	if p.Cached == p.Frames {
		gaveUp = 0 // readers fetched what the layers given up lacked
	}
	b.progress.FailedLayers = gaveUp
	b.mu.Unlock()
	if gaveUp > 0 {
		b.setState(BackgroundFailed)
		return
	}
	b.setState(BackgroundDone)
	b.log.Info("image fully fetched", "layers", len(b.layers), "frames", p.Frames, "len", p.Bytes, "fetched", p.Fetched, "requests", p.Requests, "dur", time.Since(b.start).Round(time.Millisecond))
}

// plan lists the requests for the frames missing now, layer by layer in
// order, skipping layers given up. lost counts missing frames this fetch
// had stored: the cache evicted them.
func (b *Background) plan(failures []int) (jobs []backgroundJob, lost int) {
	b.countFrames(true)
	b.mu.Lock()
	stored := b.stored
	b.mu.Unlock()
	seen := map[digest.Digest]bool{}
	for li, x := range b.layers {
		var missing []int
		for k := range x.Frames {
			d := x.Frames[k].Digest
			if seen[d] {
				continue
			}
			seen[d] = true
			if b.s.store.Has(d) {
				continue
			}
			if stored[d] {
				lost++
			}
			missing = append(missing, k)
		}
		if len(missing) == 0 || failures[li] >= b.cfg.Failures {
			continue
		}
		if x.Format == index.FormatZstd {
			jobs = append(jobs, backgroundJob{layer: li, run: missing})
			continue
		}
		for _, run := range coalesce(x, missing, -1, b.cfg.MaxRequest) {
			jobs = append(jobs, backgroundJob{layer: li, run: run})
		}
	}
	return jobs, lost
}

// runJobs runs jobs in order, as many at once as the Traffic's slots
// allow, each when on-demand fetches leave room. A layer whose request
// failed waits out its backoff (the other layers go on meanwhile) and then
// has one request at a time until one succeeds. It reports whether any job
// stored a frame.
func (b *Background) runJobs(ctx context.Context, jobs []backgroundJob, failures []int) (progressed bool) {
	q := &jobQueue{jobs: jobs, failures: failures, max: b.cfg.Failures,
		retryAt: make([]time.Time, len(failures)), inflight: make([]int, len(failures)), wake: make(chan struct{})}
	var wg sync.WaitGroup
	for range cap(b.s.traffic.slots) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				j, ok, wait, wake := q.take()
				if !ok {
					if wake == nil {
						return // nothing left that may go
					}
					var timer <-chan time.Time
					var tm *time.Timer
					if wait > 0 {
						tm = time.NewTimer(wait)
						timer = tm.C
					}
					select {
					case <-ctx.Done():
					case <-wake:
					case <-timer:
					}
					if tm != nil {
						tm.Stop()
					}
					continue
				}
				res, err := b.one(ctx, j)
				if ctx.Err() != nil {
					err = nil // not the layer's failure
				}
				n := q.finish(j, err, len(res.stored) > 0, b.cfg.Backoff)
				if err == nil {
					continue
				}
				x := b.layers[j.layer]
				switch {
				case errors.Is(err, syscall.ENOSPC):
					b.log.Info("background fetch stopped: the cache's disk is full", "layer", x.Layer, "err", err)
					b.setState(BackgroundStopped)
					q.stop()
				case n == b.cfg.Failures:
					b.log.Warn("background fetch gave up on a layer: it is left to readers", "layer", x.Layer, "failures", n, "err", err)
				default:
					b.log.Debug("background request failed: the layer waits before its next", "layer", x.Layer, "frame", j.run[0], "failures", n, "err", err)
				}
			}
		}()
	}
	wg.Wait()
	return q.progressed
}

// jobQueue hands out the jobs of one pass.
type jobQueue struct {
	max int // failures in a row that give a layer up

	mu         sync.Mutex // guards the fields below
	jobs       []backgroundJob
	failures   []int       // per layer, requests failed in a row
	retryAt    []time.Time // per layer, when its backoff ends
	inflight   []int       // per layer, requests running
	wake       chan struct{}
	progressed bool
}

// take returns the first job that may go now. Else, if some job may go
// later, it returns a channel closed when a request ends, and how long
// until a backoff ends (0: no backoff to wait for); if none may, a nil
// channel.
func (q *jobQueue) take() (j backgroundJob, ok bool, wait time.Duration, wake <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	for i := 0; i < len(q.jobs); i++ {
		l := q.jobs[i].layer
		switch {
		case q.failures[l] >= q.max: // given up
			q.jobs = slices.Delete(q.jobs, i, i+1)
			i--
		case q.failures[l] > 0 && q.inflight[l] > 0: // one request at a time after a failure
			wake = q.wake
		case now.Before(q.retryAt[l]):
			if d := q.retryAt[l].Sub(now); wait == 0 || d < wait {
				wait = d
			}
			wake = q.wake
		default:
			j = q.jobs[i]
			q.jobs = slices.Delete(q.jobs, i, i+1)
			q.inflight[l]++
			return j, true, 0, nil
		}
	}
	if wake == nil && len(q.jobs) > 0 {
		wake = q.wake
	}
	return j, false, wait, wake
}

// finish records the end of job j and returns the layer's failures in a
// row.
func (q *jobQueue) finish(j backgroundJob, err error, stored bool, backoff time.Duration) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := j.layer
	q.inflight[l]--
	if stored {
		q.progressed = true
	}
	if err != nil {
		q.failures[l]++
		q.retryAt[l] = time.Now().Add(min(backoff<<(q.failures[l]-1), maxBackgroundBackoff))
	} else {
		q.failures[l] = 0
	}
	close(q.wake)
	q.wake = make(chan struct{})
	return q.failures[l]
}

// stop drops the jobs not taken.
func (q *jobQueue) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = nil
	close(q.wake)
	q.wake = make(chan struct{})
}

// one waits for room, then fetches job j in one of the Traffic's slots.
func (b *Background) one(ctx context.Context, j backgroundJob) (backgroundResult, error) {
	t := b.s.traffic
	gap := b.cfg.Pause
	if b.cfg.Mode == BackgroundIdle {
		gap = b.cfg.Quiet
	}
	for {
		waited, err := t.quiet(ctx, gap, time.Time{})
		if err != nil {
			return backgroundResult{}, err
		}
		if waited {
			b.setState(BackgroundYielding)
		}
		select {
		case t.slots <- struct{}{}:
		case <-ctx.Done():
			return backgroundResult{}, ctx.Err()
		}
		// An on-demand fetch may have run while this waited for a slot.
		if t.quietNow(gap) {
			break
		}
		<-t.slots
	}
	defer func() { <-t.slots }()
	b.setState(BackgroundFetching)
	res, err := b.fetch(ctx, b.layers[j.layer], j.run)
	b.mu.Lock()
	b.progress.Requests += res.requests
	b.progress.Fetched += res.fetched
	for _, f := range res.stored {
		if !b.stored[f.Digest] {
			b.stored[f.Digest] = true
			b.progress.Cached++
			b.progress.CachedBytes += f.Size
		}
	}
	b.mu.Unlock()
	return res, err
}

// fetchRun fetches the frames of run of x that are still missing and that
// no one else is fetching, with one Range request per claimed run of
// adjacent frames (a zstd layer: its whole blob, once).
func (b *Background) fetchRun(ctx context.Context, x *index.Index, run []int) (backgroundResult, error) {
	var res backgroundResult
	s := b.s
	run = slices.DeleteFunc(slices.Clone(run), func(k int) bool { return s.store.Has(x.Frames[k].Digest) })
	if len(run) == 0 {
		return res, nil
	}
	if x.Format == index.FormatZstd {
		res.requests, res.fetched = 1, x.BlobSize
		_, _, err := s.frame(ctx, x, run[0])
		res.stored = b.present(x, run)
		return res, err
	}
	claims := s.claim(x, run)
	for i, c := range claims {
		n, err := s.fetchRun(ctx, x, c.frames)
		c.done()
		if n > 0 {
			res.requests++
			res.fetched += n
		}
		res.stored = append(res.stored, b.present(x, c.frames)...)
		if err != nil {
			for _, rest := range claims[i+1:] {
				rest.done()
			}
			return res, fmt.Errorf("background fetch of frames %d-%d of layer %s: %w", c.frames[0], c.frames[len(c.frames)-1], x.Layer, err)
		}
	}
	return res, nil
}

// present returns the frames of run of x that are on disk.
func (b *Background) present(x *index.Index, run []int) []*index.Frame {
	var out []*index.Frame
	for _, k := range run {
		if b.s.store.Has(x.Frames[k].Digest) {
			out = append(out, &x.Frames[k])
		}
	}
	return out
}
