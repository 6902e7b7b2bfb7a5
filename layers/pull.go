package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

// PullConfig tunes Resolver.Pull. The zero value is usable.
type PullConfig struct {
	Parallel   int   // requests in flight at once, over all layers; 0 = 6
	MaxRequest int64 // compressed bytes one Range request asks for at most (a larger frame gets its own); 0 = 16 MiB
	// MaxGap is how many compressed bytes of frames already cached a
	// request may fetch over to join two runs of missing frames into one
	// request; 0 = 256 KiB, negative = only adjacent missing frames share
	// a request.
	MaxGap int64
	// Progress, if set, is told each time a frame of a layer reaches the
	// cache, and once with Done when a layer is complete (layers that were
	// complete already are told first). Calls are serialized; a slow
	// Progress slows the pull.
	Progress func(PullProgress)
}

const (
	defaultPullParallel = 6
	defaultMaxRequest   = 16 << 20
	defaultMaxGap       = 256 << 10
)

// PullProgress is where the pull of one layer stands.
type PullProgress struct {
	Layer   int // position in the layers given to Pull
	Digest  digest.Digest
	Stored  int64 // uncompressed bytes of the layer in the cache now
	Present int64 // of them, those that were there before Pull began
	Total   int64 // uncompressed bytes of the layer (its index's TarSize)
	Done    bool  // every frame of the layer is in the cache
}

// LayerPull is what Pull did for one layer.
type LayerPull struct {
	Frames   int   // frames of the layer
	Present  int   // of them, those that were in the cache already
	Requests int   // Range requests and whole-blob reads made (a retry after corrupt data counts again; transport-level retries do not)
	Fetched  int64 // compressed bytes those requests asked for
	Stored   int64 // uncompressed bytes handed to the cache
}

// Pull puts every frame of ls — the layers of img as Layers returns them —
// into the cache, so that img can then be read without the registry.
//
// Frames on disk already are neither fetched nor re-verified. The missing
// frames of a layer are fetched in runs: consecutive frames share one Range
// request of at most MaxRequest compressed bytes (fetching over up to
// MaxGap bytes of cached frames rather than splitting a run), and each is
// decoded and handed to the cache's Put, which verifies it before storing
// it. A zstd layer, which cannot be entered in the middle, is read once as
// a whole blob and decoded in one pass. At most Parallel requests run at
// once. A request whose data fails to decode or verify is made again for
// the frames it has not stored yet, up to 3 times in all.
//
// Pull returns per layer what it did. It fails if a request fails for
// good, if ctx ends, or if at the end some frame is not on disk (the cache's
// disk limit is smaller than the image, so the pull evicted its own frames).
func (r *Resolver) Pull(ctx context.Context, img *fetch.Image, ls []Layer, cfg PullConfig) ([]LayerPull, error) {
	if cfg.Parallel <= 0 {
		cfg.Parallel = defaultPullParallel
	}
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = defaultMaxRequest
	}
	if cfg.MaxGap == 0 {
		cfg.MaxGap = defaultMaxGap
	}
	p := &puller{r: r, repo: img.Repo, cfg: cfg, res: make([]LayerPull, len(ls)), state: make([]layerState, len(ls))}
	start := time.Now()

	var jobs []*pullJob
	for li, l := range ls {
		x := l.Index
		if x == nil {
			return nil, fmt.Errorf("pull layer %s: no index", l.Desc.Digest)
		}
		var missing []int
		st := &p.state[li]
		for k := range x.Frames {
			if r.cfg.Store.Has(x.Frames[k].Digest) {
				st.present += x.Frames[k].Size
			} else {
				missing = append(missing, k)
			}
		}
		st.stored = st.present
		p.res[li] = LayerPull{Frames: len(x.Frames), Present: len(x.Frames) - len(missing)}
		lj := p.plan(li, x, missing)
		st.pending = len(lj)
		jobs = append(jobs, lj...)
	}
	for li := range ls {
		if p.state[li].pending == 0 {
			p.report(li, ls[li].Index, true)
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Parallel)
	for _, j := range jobs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error { return p.run(gctx, ls[j.layer].Index, j) })
	}
	if err := g.Wait(); err != nil {
		return p.res, err
	}
	if err := ctx.Err(); err != nil {
		return p.res, err
	}

	var lost int
	for _, l := range ls {
		for k := range l.Index.Frames {
			if !r.cfg.Store.Has(l.Index.Frames[k].Digest) {
				lost++
			}
		}
	}
	if lost > 0 {
		return p.res, fmt.Errorf("pull %s: %d frames are not in the cache after the pull: its disk limit is smaller than the image", img.Ref, lost)
	}
	var reqs int
	var fetched int64
	for _, lp := range p.res {
		reqs += lp.Requests
		fetched += lp.Fetched
	}
	r.log.Debug("image pulled", "op", "pull", "image", img.Ref, "requests", reqs, "len", fetched, "dur", time.Since(start))
	return p.res, nil
}

// puller is one Pull in progress.
type puller struct {
	r    *Resolver
	repo string
	cfg  PullConfig

	mu    sync.Mutex   // guards res, state and calls to cfg.Progress
	res   []LayerPull  // per layer
	state []layerState // per layer
}

type layerState struct {
	present, stored int64 // uncompressed bytes in the cache before Pull, and now
	pending         int   // jobs not finished
}

// pullJob is one request: a run of a layer's frames, or its whole blob.
type pullJob struct {
	layer int
	want  []int // frames to store, ascending; a Range request spans want[0] to want[len-1]
	whole bool  // read the whole blob (zstd)
}

// plan cuts a layer's missing frames into requests.
func (p *puller) plan(li int, x *index.Index, missing []int) []*pullJob {
	if len(missing) == 0 {
		return nil
	}
	if x.Format == index.FormatZstd {
		return []*pullJob{{layer: li, want: missing, whole: true}}
	}
	var out []*pullJob
	for _, run := range coalesce(x, missing, p.cfg.MaxGap, p.cfg.MaxRequest) {
		out = append(out, &pullJob{layer: li, want: run})
	}
	return out
}

// coalesce cuts frames of x (ascending) into runs that one Range request
// each can fetch: consecutive frames, or frames with at most maxGap
// compressed bytes of other frames between them, spanning at most
// maxRequest bytes (a larger frame is a run of its own).
func coalesce(x *index.Index, frames []int, maxGap, maxRequest int64) [][]int {
	var out [][]int
	for _, k := range frames {
		if n := len(out); n > 0 {
			cur := out[n-1]
			first, last := &x.Frames[cur[0]], &x.Frames[cur[len(cur)-1]]
			f := &x.Frames[k]
			gap := f.CompressedOffset - (last.CompressedOffset + last.CompressedSize)
			span := f.CompressedOffset + f.CompressedSize - first.CompressedOffset
			adjacent := k == cur[len(cur)-1]+1
			if (adjacent || gap <= maxGap) && span <= maxRequest {
				out[n-1] = append(cur, k)
				continue
			}
		}
		out = append(out, []int{k})
	}
	return out
}

// run does one job, fetching again what failed verification.
func (p *puller) run(ctx context.Context, x *index.Index, j *pullJob) error {
	var err error
	for attempt := 1; attempt <= corruptFetches; attempt++ {
		if j.whole {
			err = p.fetchWhole(ctx, x, j)
		} else {
			err = p.fetchRange(ctx, x, j)
		}
		if !errors.Is(err, index.ErrCorrupt) || ctx.Err() != nil {
			break
		}
		p.r.log.Warn("pulled frames corrupt, fetching them again", "layer", x.Layer, "frame", j.want[0], "attempt", attempt, "err", err)
	}
	if err != nil {
		return fmt.Errorf("pull layer %s: %w", x.Layer, err)
	}
	p.mu.Lock()
	p.state[j.layer].pending--
	done := p.state[j.layer].pending == 0
	p.mu.Unlock()
	if done {
		p.report(j.layer, x, true)
	}
	return nil
}

// fetchRange fetches the frames j still wants with one Range request and
// stores them, removing each stored one from j.want. The frames between
// them are decoded too (each one's window is the end of the one before),
// and a first frame that keeps no window is fetched from the frame it
// decodes after, back to one whose window is at hand.
func (p *puller) fetchRange(ctx context.Context, x *index.Index, j *pullJob) error {
	cached := func(k int) []byte {
		if k < 0 {
			return nil
		}
		b, _ := p.r.cfg.Store.Cached(x.Frames[k].Digest, x.Frames[k].Size)
		return b
	}
	from, last := j.want[0], j.want[len(j.want)-1]
	var prev []byte // frame from-1, when from needs it
	for x.NeedsFrameBefore(from) {
		if prev = cached(from - 1); prev != nil {
			break
		}
		from--
	}
	if prev == nil && x.NeedsWindow(from) {
		prev = cached(from - 1)
	}
	winLast := from - 1
	var o windowOrigin
	if prev == nil && x.NeedsWindow(from) {
		var err error
		if o, err = getWindowOrigin(p.r.cfg.Store, x); err != nil {
			return err
		}
		winLast = from
	}
	off := x.Frames[from].CompressedOffset
	n := x.Frames[last].CompressedOffset + x.Frames[last].CompressedSize - off
	p.count(j.layer, n)
	if _, wn := x.WindowRange(from, winLast); wn > 0 {
		p.count(j.layer, wn) // the window's own request
	}
	start := time.Now()
	buf, wins, err := readRun(ctx, p.r.cfg.Client, p.repo, o, x, from, last, winLast)
	if err != nil {
		return err
	}
	p.r.log.Debug("frames fetched", "op", "pull", "layer", x.Layer, "frame", from, "frames", last-from+1, "off", off, "len", n, "dur", time.Since(start))
	for k := from; k <= last && len(j.want) > 0; k++ {
		f := &x.Frames[k]
		win := wins[k-from]
		if win == nil {
			win = x.WindowFrom(k, prev)
		}
		data, err := x.DecodeFrameWith(k, buf[f.CompressedOffset-off:f.CompressedOffset-off+f.CompressedSize], win)
		if err != nil {
			return err
		}
		if x.Format == index.FormatTar {
			// DecodeFrame returned a piece of buf: the cache's memory tier
			// must not keep all of buf alive for it.
			data = bytes.Clone(data)
		}
		prev = data
		if j.want[0] != k {
			continue
		}
		if err := p.store(ctx, j, x, k, data); err != nil {
			return err
		}
	}
	return nil
}

// fetchWhole reads the layer's blob once and stores the frames j wants.
func (p *puller) fetchWhole(ctx context.Context, x *index.Index, j *pullJob) error {
	p.count(j.layer, x.BlobSize)
	p.r.log.Info("fetching whole layer: its compression is not seekable", "layer", x.Layer, "len", x.BlobSize)
	rc, err := p.r.cfg.Client.OpenBlob(ctx, p.repo, x.Layer)
	if err != nil {
		return err
	}
	defer rc.Close()
	return x.DecodeAll(ctx, rc, func(k int, b []byte) error {
		if len(j.want) == 0 || j.want[0] != k {
			return nil // stored already, or by an earlier attempt
		}
		return p.store(ctx, j, x, k, b)
	})
}

// store puts frame k, which must be j.want[0], into the cache.
func (p *puller) store(ctx context.Context, j *pullJob, x *index.Index, k int, data []byte) error {
	f := &x.Frames[k]
	if err := p.r.cfg.Store.Put(ctx, f.Digest, data); err != nil {
		return fmt.Errorf("frame %d: %w", k, err)
	}
	j.want = j.want[1:]
	p.mu.Lock()
	p.res[j.layer].Stored += f.Size
	p.state[j.layer].stored += f.Size
	p.mu.Unlock()
	p.report(j.layer, x, false)
	return nil
}

// count records one request of n bytes for layer li.
func (p *puller) count(li int, n int64) {
	p.mu.Lock()
	p.res[li].Requests++
	p.res[li].Fetched += n
	p.mu.Unlock()
}

// report tells cfg.Progress where layer li stands.
func (p *puller) report(li int, x *index.Index, done bool) {
	if p.cfg.Progress == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.state[li]
	p.cfg.Progress(PullProgress{Layer: li, Digest: x.Layer, Stored: st.stored, Present: st.present, Total: x.TarSize, Done: done})
}
