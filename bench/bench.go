package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// Config is one benchmark run's settings.
type Config struct {
	Rate          int64         // link rate in bits per second; 0 = not shaped
	RTT           time.Duration // round-trip time added by DelayProxy; 0 = none
	Runs          int           // samples per measurement; 0 = 5
	Workloads     []string      // names from Workloads; empty = all
	Modes         []string      // modes measured per workload; empty = all (see Modes)
	Scale         []int         // container counts started at once on a cold cache; empty = none
	ScaleWorkload string        // the workload the scale test runs; "" = python3
	Sharing       bool          // measure layer sharing (image B after image A)
	SharingA      string        // workload run first; "" = python3
	SharingB      string        // workload run second; "" = nginx
	WorkDir       string        // scratch space; "" = /var/tmp/lazybench (removed and made anew)
	OutDir        string        // where results go (made if needed)
	BinDir        string        // holds the lazyrun and lazyfs binaries to measure
	Timeout       time.Duration // limit of one command; 0 = 10 minutes
	LoopSize      int64         // bytes of each fresh ext4 image; 0 = 16 GiB (sparse); -1 = no loop file systems
	// FS runs the file-system section (fs.go): file-system speed on a
	// warm cache, --cow=overlay and --cow=fuse against native. It needs
	// fsprobe in BinDir.
	FS bool
	// FSOnly runs the file-system section alone: no workloads, scale or
	// sharing (FS is implied).
	FSOnly bool
	// FSKeepPageCache skips the sync and drop_caches before each
	// file-system measurement: the runs then see the page cache as the
	// previous ones left it.
	FSKeepPageCache bool
	// Mem runs the memory section (mem.go): resident memory of lazyfs
	// mount and a lazyrun supervisor serving an image of 100 000 files.
	Mem bool
	// MemOnly runs the memory section alone (Mem is implied).
	MemOnly bool
	// Span is the checkpoint spacing of the pushed indexes (lazyfs index
	// --span); 0 = lazyfs's default.
	Span int64
	// BlockSpan is the spacing of the frames without a window inside a
	// span (lazyfs index --block-span); 0 = lazyfs's default, -1 = none.
	BlockSpan int64
	Log       io.Writer // progress; nil = os.Stderr
}

// The modes measured per workload, in table order.
const (
	ModePull   = "pull"   // lazyrun pull, then lazyrun run: the full-pull baseline
	ModePodman = "podman" // podman pull, then podman run (fresh storage)
	ModeCold   = "cold"   // lazyrun run on an empty cache, without a prefetch profile
	// ModeProfile is lazyrun run on an empty cache with the image's prefetch
	// profile, recorded (not measured) by --record-prefetch on a root of
	// its own: once per workload, again when another workload of the same
	// image recorded its own since.
	ModeProfile = "profile"
	ModeWarm    = "warm"   // lazyrun run again in the pull's root: cache full
	ModeNative  = "native" // the command in a chroot on the unpacked root (overlayfs), no FUSE
	ModeRootfs  = "rootfs" // lazyrun run --rootfs on the unpacked root: the same runtime as lazy runs, no FUSE
	// ModeMount is mount to ready: lazyfs mount of the workload's image on
	// an empty cache, until its mount point is mounted (manifest, config,
	// every layer's index, FUSE up); no command runs.
	ModeMount = "mount"
)

// Modes lists every mode.
var Modes = []string{ModePull, ModePodman, ModeCold, ModeProfile, ModeWarm, ModeRootfs, ModeNative, ModeMount}

var modeTitles = map[string]string{
	ModePull:    "full pull + run (lazyrun pull)",
	ModePodman:  "full pull + run (podman)",
	ModeCold:    "lazy, cold cache",
	ModeProfile: "lazy, cold cache, prefetch profile",
	ModeWarm:    "lazy, warm cache (after the pull)",
	ModeNative:  "native (unpacked root, no FUSE)",
	ModeRootfs:  "lazyrun --rootfs (unpacked root, no FUSE)",
	ModeMount:   "lazyfs mount, cold cache: until mounted",
}

// runner holds a run's parts.
type runner struct {
	cfg    Config
	logw   io.Writer
	logMu  sync.Mutex // guards writes to logw
	link   *Link
	reg    *Registry
	proxy  *DelayProxy
	images map[string]*builtImage
	res    *Results
	seq    int // numbers log files

	podmanErr    error // why podman cannot run here, if it cannot
	podmanRan    bool  // a podman measurement succeeded
	podmanEnv    []string
	podmanPolicy string

	// recorded names per image the workload whose prefetch profile is the
	// newest pushed: a start takes the newest, and two workloads of one
	// image (gcc-version, gcc-hello) would otherwise start with each
	// other's.
	recorded map[string]string

	labels map[string]string // names of the pushed images' digests, for request timelines

	blocks map[digest.Digest][]index.Block // deflate blocks of the layers scanned for Need

	fsData *fsData // the file-system section's data, when it runs
}

func (r *runner) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.logw, "%s lazybench: %s\n", time.Now().Format("15:04:05"), strings.TrimRight(fmt.Sprintf(format, args...), "\n"))
}

// Run runs the benchmark and writes results.md, results.json, chart.png
// and machine.txt into cfg.OutDir. Everything it set up (namespace,
// registry, mounts, loop devices) is removed before it returns, also when
// ctx is cancelled (Ctrl-C). One run at a time on a machine: it first
// waits for RunLock.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Runs <= 0 {
		cfg.Runs = 5
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.LoopSize == 0 {
		cfg.LoopSize = 16 << 30
	}
	if cfg.LoopSize < 0 {
		cfg.LoopSize = 0
	}
	if cfg.WorkDir == "" {
		cfg.WorkDir = "/var/tmp/lazybench"
	}
	if cfg.ScaleWorkload == "" {
		cfg.ScaleWorkload = "python3"
	}
	if cfg.SharingA == "" {
		cfg.SharingA = "python3"
	}
	if cfg.SharingB == "" {
		cfg.SharingB = "nginx"
	}
	if len(cfg.Modes) == 0 {
		cfg.Modes = Modes
	}
	if cfg.FSOnly {
		cfg.FS, cfg.Workloads, cfg.Scale, cfg.Sharing = true, nil, nil, false
	}
	if cfg.MemOnly {
		cfg.Mem, cfg.FS, cfg.Workloads, cfg.Scale, cfg.Sharing = true, false, nil, nil, false
	}
	for _, m := range cfg.Modes {
		if !slices.Contains(Modes, m) {
			return nil, fmt.Errorf("mode %q: not one of %s", m, strings.Join(Modes, ", "))
		}
	}
	// Table order, whatever order they were asked in.
	cfg.Modes = slices.DeleteFunc(slices.Clone(Modes), func(m string) bool { return !slices.Contains(cfg.Modes, m) })
	r := &runner{cfg: cfg, logw: cfg.Log, images: map[string]*builtImage{}}
	if r.logw == nil {
		r.logw = os.Stderr
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the benchmark needs root (namespaces, mounts, tc)")
	}
	ws, err := selectWorkloads(cfg.Workloads)
	if err != nil {
		return nil, err
	}
	if cfg.FSOnly || cfg.MemOnly {
		ws = nil
	}
	bins := []string{"lazyrun", "lazyfs"}
	if cfg.FS {
		bins = append(bins, "fsprobe")
	}
	for _, p := range bins {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, p)); err != nil {
			return nil, fmt.Errorf("binaries: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.OutDir, "logs"), 0o755); err != nil {
		return nil, err
	}
	r.res = &Results{Started: time.Now(), Settings: Settings{Rate: cfg.Rate, RTT: cfg.RTT, Runs: cfg.Runs, Span: cfg.Span, BlockSpan: cfg.BlockSpan,
		Modes: cfg.Modes, Scale: cfg.Scale, LoopFS: cfg.LoopSize > 0, FS: cfg.FS}}
	if cfg.FSOnly || cfg.MemOnly {
		r.res.Settings.Modes = nil // no workloads: no start-up modes measured
	}
	r.res.Machine = machineInfo(ctx, cfg.BinDir)

	unlock, err := lockRun(ctx, RunLock, r.logf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Leftovers of a killed run: mounts under the work directory.
	if err := unmountUnder(cfg.WorkDir, false); err != nil {
		return nil, fmt.Errorf("clean %s: %w", cfg.WorkDir, err)
	}
	if err := os.RemoveAll(cfg.WorkDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err := unmountUnder(cfg.WorkDir, false); err != nil {
			r.logf("clean up: %v", err)
		}
		os.RemoveAll(cfg.WorkDir)
	}()

	if err := r.setup(ctx, ws); err != nil {
		r.closeNet()
		return r.res, err
	}
	defer r.closeNet()

	r.measureAll(ctx, ws)
	if cfg.FS && ctx.Err() == nil {
		r.measureFS(ctx)
	}
	if cfg.Mem && ctx.Err() == nil {
		r.measureMem(ctx)
	}
	r.res.Finished = time.Now()
	r.res.Machine.LoadEnd = loadavg()
	if err := ctx.Err(); err != nil {
		r.res.Notes = append(r.res.Notes, "interrupted: the results are partial")
	}
	if err := r.res.Write(cfg.OutDir); err != nil {
		return r.res, err
	}
	return r.res, ctx.Err()
}

func (r *runner) closeNet() {
	if r.proxy != nil {
		r.proxy.Close()
	}
	if r.reg != nil {
		r.reg.Close()
	}
	if r.link != nil {
		if err := r.link.Close(); err != nil {
			r.logf("clean up: %v", err)
		}
	}
}

// setup builds and pushes the images, pushes their indexes, shapes the
// link and checks it.
func (r *runner) setup(ctx context.Context, ws []Workload) error {
	var names []string
	for _, w := range ws {
		names = append(names, w.Image)
	}
	if len(r.cfg.Scale) > 0 {
		names = append(names, r.scaleWorkload().Image)
	}
	if r.cfg.Sharing {
		for _, n := range []string{r.cfg.SharingA, r.cfg.SharingB} {
			w, err := selectWorkloads([]string{n})
			if err != nil {
				return err
			}
			names = append(names, w[0].Image)
		}
	}
	if r.cfg.FS {
		r.logf("image %s: minbase and the file-system data layer", fsImage)
		if err := r.setupFS(ctx); err != nil {
			return err
		}
	}
	if r.cfg.Mem {
		r.logf("image %s: minbase and %d generated files", memImage, memFiles)
		if err := r.setupMem(ctx); err != nil {
			return err
		}
	}
	for _, n := range names {
		if r.images[n] != nil {
			continue
		}
		im, ok := imageByName(n)
		if !ok {
			return fmt.Errorf("image %q: not defined", n)
		}
		r.logf("image %s: building or finding it in the cache", n)
		b, err := buildImage(ctx, r.logf, im, r.cfg.WorkDir)
		if err != nil {
			return err
		}
		r.images[n] = b
	}

	var err error
	r.logf("network namespace %s, veth pair, registry", linkNS)
	if r.link, err = SetupLink(ctx); err != nil {
		return err
	}
	if r.reg, err = StartRegistry(ctx, r.link, filepath.Join(r.cfg.WorkDir, "registry")); err != nil {
		return err
	}
	for _, n := range slices.Sorted(maps.Keys(r.images)) {
		b := r.images[n]
		r.logf("push %s (%d layers, %s)", b.Ref, len(b.Layers), mb(b.Compressed()))
		if err := b.push(ctx, r.logf, r.reg.Addr); err != nil {
			return fmt.Errorf("push %s: %w", b.Ref, err)
		}
		idxRoot := filepath.Join(r.cfg.WorkDir, "index-"+n)
		log := r.logPath("index-" + n)
		args := []string{filepath.Join(r.cfg.BinDir, "lazyfs"), "--root", idxRoot, "--insecure", "index", "--push"}
		if r.cfg.Span > 0 {
			args = append(args, "--span", strconv.FormatInt(r.cfg.Span, 10))
		}
		if r.cfg.BlockSpan != 0 {
			args = append(args, "--block-span", strconv.FormatInt(r.cfg.BlockSpan, 10))
		}
		if _, _, err := r.command(ctx, log, nil, append(args, r.reg.Addr+"/"+b.Ref)...); err != nil {
			return fmt.Errorf("index %s: %w", b.Ref, err)
		}
		if b.Indexes, err = keptIndexes(idxRoot, b); err != nil {
			r.logf("%s: compressed bytes needed will not be measured: %v", n, err)
		}
		os.RemoveAll(idxRoot)
		r.res.Images = append(r.res.Images, ImageInfo{Name: n, Ref: b.Ref, Digest: b.Digest, Packages: b.Packages,
			Env: b.Env, AddedFiles: slices.Sorted(maps.Keys(b.Image.Files)), Layers: layerInfos(b), Files: b.Files, Content: b.Content})
	}
	r.labels = digestLabels(r.images)
	for _, n := range slices.Sorted(maps.Keys(r.images)) {
		if err := addArtifactLabels(ctx, r.reg.Addr, r.images[n], r.labels); err != nil {
			r.logf("request timelines will not name %s's index blobs: %v", n, err)
		}
	}
	probeBlob := make([]byte, 50<<20)
	testutil.PatternAt(7, 0, probeBlob)
	var probeDigest string
	if err := withTB(ctx, r.logf, func(t testing.TB) {
		probeDigest = testutil.PushBlob(t, r.reg.Addr, "bench/probe", probeBlob).String()
	}); err != nil {
		return fmt.Errorf("push the probe blob: %w", err)
	}

	if err := r.link.Shape(ctx, r.cfg.Rate); err != nil {
		return err
	}
	if r.proxy, err = StartDelayProxy(r.reg.Addr, r.cfg.RTT); err != nil {
		return err
	}
	r.res.Settings.Registry = r.proxy.Addr
	if err := r.probe(ctx, probeDigest, int64(len(probeBlob))); err != nil {
		return err
	}
	r.logf("link: rate %s, RTT %v; measured: GET /v2/ on a new connection %v (≈ 2×RTT), %s GET at %.1f Mbit/s",
		rateString(r.cfg.Rate), r.cfg.RTT, r.res.Settings.MeasuredGet.Round(100*time.Microsecond),
		mb(int64(len(probeBlob))), r.res.Settings.MeasuredMbps)
	if len(ws) > 0 {
		r.setupPodman(ctx)
	}
	return nil
}

// probe measures the link as a client sees it: a tiny GET on a new
// connection (≈ 2×RTT) and the throughput of one large blob GET.
func (r *runner) probe(ctx context.Context, blob string, size int64) error {
	get := func(url string) (time.Duration, int64, error) {
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, 0, err
		}
		start := time.Now()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Minute}).Do(req)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return time.Since(start), n, err
	}
	var ds []time.Duration
	for range 5 {
		d, _, err := get("http://" + r.proxy.Addr + "/v2/")
		if err != nil {
			return fmt.Errorf("link check: %w", err)
		}
		ds = append(ds, d)
	}
	r.res.Settings.MeasuredGet = median(ds)
	d, n, err := get("http://" + r.proxy.Addr + "/v2/bench/probe/blobs/" + blob)
	if err != nil {
		return fmt.Errorf("link check: %w", err)
	}
	if n != size {
		return fmt.Errorf("link check: GET of the probe blob gave %d bytes, want %d", n, size)
	}
	r.res.Settings.MeasuredMbps = float64(n) * 8 / d.Seconds() / 1e6
	return nil
}

func (r *runner) scaleWorkload() Workload {
	w, err := selectWorkloads([]string{r.cfg.ScaleWorkload})
	if err != nil {
		return Workloads[1]
	}
	return w[0]
}

// measureAll takes every measurement: rounds of all workloads and modes
// (modes interleaved, so that drift hits all alike), then scale and
// sharing. A failed measurement is recorded with its error.
func (r *runner) measureAll(ctx context.Context, ws []Workload) {
	for _, w := range ws {
		wr := &WorkloadResult{Workload: w, Image: w.Image}
		for _, m := range r.cfg.Modes {
			wr.Modes = append(wr.Modes, &ModeResult{Mode: m, Title: modeTitles[m]})
		}
		r.res.Workloads = append(r.res.Workloads, wr)
		if ctx.Err() == nil {
			wr.Opened = r.openedFiles(ctx, w)
			if wr.Opened.Err != "" {
				r.logf("%s: bytes read not measured: %s", w.Name, wr.Opened.Err)
			} else {
				r.logf("%s: the command opened %d files of the image, %s", w.Name, wr.Opened.Files, mb(wr.Opened.Bytes))
			}
			wr.Need = r.neededBytes(ctx, w)
			if wr.Need.Err != "" {
				r.logf("%s: compressed bytes needed not measured: %s", w.Name, wr.Need.Err)
			} else {
				r.logf("%s: the command read %s of %d files, held by %s compressed (deflate blocks), %s at frames (pro rata %s); read-ahead off: %s, %s compressed, %s at frames",
					w.Name, mb(wr.Need.Read), wr.Need.Files, mb(wr.Need.Blocks), mb(wr.Need.Frames), mb(wr.Need.Estimate),
					mb(wr.Need.Touched), mb(wr.Need.TouchedBlocks), mb(wr.Need.TouchedFrames))
			}
		}
	}
	for i := range r.cfg.Runs {
		for _, wr := range r.res.Workloads {
			if ctx.Err() != nil {
				return
			}
			r.round(ctx, wr, i)
		}
	}
	for _, n := range r.cfg.Scale {
		sr := &ScaleResult{Workload: r.cfg.ScaleWorkload, Containers: n}
		r.res.Scale = append(r.res.Scale, sr)
	}
	for i := range r.cfg.Runs {
		for _, sr := range r.res.Scale {
			if ctx.Err() != nil {
				return
			}
			s := r.measureScale(ctx, sr.Containers)
			if ctx.Err() != nil {
				return
			}
			sr.Samples = append(sr.Samples, s)
			r.logSample(fmt.Sprintf("scale %d×%s", sr.Containers, sr.Workload), i, s)
		}
	}
	if r.cfg.Sharing {
		r.res.Sharing = []*SharingResult{
			{Mode: ModeCold, A: r.cfg.SharingA, B: r.cfg.SharingB},
			{Mode: ModePull, A: r.cfg.SharingA, B: r.cfg.SharingB},
		}
		for i := range r.cfg.Runs {
			for _, sh := range r.res.Sharing {
				if ctx.Err() != nil {
					return
				}
				s := r.measureSharing(ctx, sh)
				if ctx.Err() != nil {
					return
				}
				sh.Samples = append(sh.Samples, s)
				r.logSample(fmt.Sprintf("sharing %s: %s after %s", sh.Mode, sh.B, sh.A), i, s)
			}
		}
	}
}

// round takes one sample of every mode of one workload.
func (r *runner) round(ctx context.Context, wr *WorkloadResult, i int) {
	mode := func(m string) *ModeResult {
		for _, mr := range wr.Modes {
			if mr.Mode == m {
				return mr
			}
		}
		return nil
	}
	add := func(m string, s Sample) {
		if ctx.Err() != nil {
			return // interrupted: not a measurement
		}
		if mr := mode(m); mr != nil {
			if s.Err == "" && (m == ModeCold || m == ModeProfile) {
				s.Split = split(s.Traffic, wr.Need, r.images[wr.Image].layerDigests(), r.labels)
			}
			mr.Samples = append(mr.Samples, s)
			r.logSample(wr.Workload.Name+" "+m, i, s)
		}
	}
	if mode(ModePull) != nil || mode(ModeWarm) != nil {
		pull, warm := r.measurePull(ctx, wr.Workload)
		add(ModePull, pull)
		add(ModeWarm, warm)
	}
	if mode(ModeCold) != nil {
		add(ModeCold, r.measureCold(ctx, wr.Workload, false))
	}
	if mode(ModeProfile) != nil {
		add(ModeProfile, r.measureCold(ctx, wr.Workload, true))
	}
	if mode(ModeMount) != nil {
		add(ModeMount, r.measureMount(ctx, wr.Workload))
	}
	if mr := mode(ModePodman); mr != nil {
		if r.podmanErr != nil {
			mr.Skipped = r.podmanErr.Error()
		} else {
			add(ModePodman, r.measurePodman(ctx, wr.Workload))
		}
	}
	if mode(ModeRootfs) != nil {
		add(ModeRootfs, r.measureRootfs(ctx, wr.Workload))
	}
	if mode(ModeNative) != nil {
		add(ModeNative, r.measureNative(ctx, wr.Workload))
	}
}

func (r *runner) logSample(what string, i int, s Sample) {
	if s.Err != "" {
		r.logf("run %d/%d %s: FAILED after %v: %s", i+1, r.cfg.Runs, what, s.Wall.Round(time.Millisecond), s.Err)
		return
	}
	r.logf("run %d/%d %s: %v, fetched %s in %d requests", i+1, r.cfg.Runs, what, s.Wall.Round(time.Millisecond),
		mb(s.Traffic.Bytes), s.Traffic.Requests)
}

// ref is the image reference clients use: through the delaying proxy.
func (r *runner) ref(image string) string {
	return r.proxy.Addr + "/" + r.images[image].Ref
}

func (r *runner) lazyrun(root string, args ...string) []string {
	return append([]string{filepath.Join(r.cfg.BinDir, "lazyrun"), "--root", root}, args...)
}

// runArgs are `lazyrun run`'s arguments for w: without a prefetch
// profile unless flags say otherwise.
func (r *runner) runArgs(w Workload, flags ...string) []string {
	if len(flags) == 0 {
		flags = []string{"--prefetch=false"}
	}
	args := append([]string{"run", "--rm", "--net", "none"}, flags...)
	return append(append(args, r.ref(w.Image)), w.Cmd...)
}

// measured runs fn between two readings of the registry's log and the
// proxy's counters and fills s.Traffic and s.Proxy. Unless timeline is "",
// it writes the measurement's request timeline there (writeTimeline), with
// the moments fn marked by calling mark (safe for concurrent use) and its
// end.
func (r *runner) measured(s *Sample, timeline string, fn func(mark func(what string)) error) {
	logMark, p0 := r.reg.Mark(), r.proxy.Stats()
	var (
		mu    sync.Mutex // guards marks
		marks []timelineMark
	)
	start := time.Now()
	err := fn(func(what string) {
		at := time.Since(start)
		mu.Lock()
		marks = append(marks, timelineMark{What: what, At: at})
		mu.Unlock()
	})
	end := time.Since(start)
	tr, terr := r.reg.Since(logMark)
	s.Traffic, s.Proxy = tr, r.proxy.Stats().Sub(p0)
	if err == nil {
		err = terr
	}
	if err != nil {
		s.Err = err.Error()
	}
	if timeline != "" {
		mu.Lock()
		defer mu.Unlock()
		if err := writeTimeline(timeline, start, end, tr.Log, marks, r.labels, r.cfg.RTT); err != nil {
			r.logf("%v", err)
		}
	}
}

// measurePull is the baseline: lazyrun pull, then run, on a fresh root;
// then run again in that root (the warm start, cache full).
func (r *runner) measurePull(ctx context.Context, w Workload) (pull, warm Sample) {
	s, err := newScratch(ctx, r.cfg.WorkDir, "pull", r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}, Sample{Err: "no pull: " + err.Error()}
	}
	defer r.closeScratch(s)
	root := filepath.Join(s.Dir, "lazyfs")
	pullLog := r.logPath(w.Name + "-pull")
	r.measured(&pull, requestsLog(pullLog), func(mark func(string)) error {
		dp, _, err := r.command(ctx, pullLog, nil, r.lazyrun(root, "pull", r.ref(w.Image))...)
		mark("lazyrun pull exited")
		pull.Wall = dp
		if err != nil {
			return fmt.Errorf("lazyrun pull: %w", err)
		}
		dr, out, err := r.command(ctx, r.logPath(w.Name+"-pull-run"), nil, r.lazyrun(root, r.runArgs(w)...)...)
		mark("lazyrun run exited")
		pull.Wall += dr
		pull.Phases = map[string]time.Duration{"pull": dp, "run": dr}
		return checkRun(w, out, err)
	})
	if pull.Err != "" {
		warm.Err = "no pull: " + pull.Err
		return pull, warm
	}
	warmLog := r.logPath(w.Name + "-warm")
	r.measured(&warm, requestsLog(warmLog), func(mark func(string)) error {
		d, out, err := r.command(ctx, warmLog, nil, r.lazyrun(root, r.runArgs(w)...)...)
		mark("lazyrun run exited")
		warm.Wall = d
		return checkRun(w, out, err)
	})
	return pull, warm
}

// measureCold is a lazy start on an empty cache: fresh root, nothing local,
// the index fetched from the registry; with profile, the image's prefetch
// profile too (recorded first if it was not yet).
func (r *runner) measureCold(ctx context.Context, w Workload, profile bool) (s Sample) {
	name, flags := "cold", []string{"--prefetch=false"}
	if profile {
		if err := r.recordProfile(ctx, w); err != nil {
			return Sample{Err: err.Error()}
		}
		name, flags = "profile", []string{"--prefetch=true"}
	}
	sc, err := newScratch(ctx, r.cfg.WorkDir, name, r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	log := r.logPath(w.Name + "-" + name)
	r.measured(&s, requestsLog(log), func(mark func(string)) error {
		d, out, err := r.command(ctx, log, nil, r.lazyrun(root, r.runArgs(w, flags...)...)...)
		mark("lazyrun run exited")
		s.Wall = d
		return checkRun(w, out, err)
	})
	return s
}

// recordProfile records and pushes w's prefetch profile on a fresh root
// (a cold start: what it reads is what a cold start needs), unless the
// newest profile of its image is w's already.
func (r *runner) recordProfile(ctx context.Context, w Workload) error {
	if r.recorded[w.Image] == w.Name {
		return nil
	}
	sc, err := newScratch(ctx, r.cfg.WorkDir, "record", r.cfg.LoopSize)
	if err != nil {
		return err
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	_, out, err := r.command(ctx, r.logPath(w.Name+"-record"), nil, r.lazyrun(root, r.runArgs(w, "--record-prefetch")...)...)
	if err := checkRun(w, out, err); err != nil {
		return fmt.Errorf("record the prefetch profile: %w", err)
	}
	if r.recorded == nil {
		r.recorded = map[string]string{}
	}
	r.recorded[w.Image] = w.Name
	if err := addArtifactLabels(ctx, r.reg.Addr, r.images[w.Image], r.labels); err != nil {
		r.logf("request timelines will not name %s's profile: %v", w.Image, err)
	}
	return nil
}

// measureScale starts n containers of the scale workload at once on one
// fresh root; the wall time is until the last one exits.
func (r *runner) measureScale(ctx context.Context, n int) (s Sample) {
	w := r.scaleWorkload()
	sc, err := newScratch(ctx, r.cfg.WorkDir, "scale", r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	r.measured(&s, r.logPath(fmt.Sprintf("scale%d-%s-requests", n, w.Name)), func(mark func(string)) error {
		walls := make([]time.Duration, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for k := range n {
			log := r.logPath(fmt.Sprintf("scale%d-%s-%d", n, w.Name, k))
			wg.Go(func() {
				d, out, err := r.command(ctx, log, nil, r.lazyrun(root, r.runArgs(w)...)...)
				mark(fmt.Sprintf("container %d exited", k))
				walls[k], errs[k] = d, checkRun(w, out, err)
			})
		}
		wg.Wait()
		s.Wall = time.Since(start)
		s.Phases = map[string]time.Duration{"container median": median(walls), "container max": slices.Max(walls)}
		return errors.Join(errs...)
	})
	return s
}

// measureSharing runs image A, then measures image B in the same root
// (lazily, or pulled, as sh.Mode says). Sample.Shared is what B fetched of
// the layer it shares with A.
func (r *runner) measureSharing(ctx context.Context, sh *SharingResult) (s Sample) {
	wa, _ := selectWorkloads([]string{sh.A})
	wb, _ := selectWorkloads([]string{sh.B})
	a, b := wa[0], wb[0]
	sc, err := newScratch(ctx, r.cfg.WorkDir, "sharing", r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	logs := map[string]string{}
	for _, w := range []Workload{a, b} {
		logs[w.Name] = r.logPath("sharing-" + sh.Mode + "-" + w.Name)
	}
	start := func(w Workload) (time.Duration, error) {
		if sh.Mode == ModePull {
			d, _, err := r.command(ctx, logs[w.Name], nil, r.lazyrun(root, "pull", r.ref(w.Image))...)
			return d, err
		}
		d, out, err := r.command(ctx, logs[w.Name], nil, r.lazyrun(root, r.runArgs(w)...)...)
		return d, checkRun(w, out, err)
	}
	var first Sample
	r.measured(&first, requestsLog(logs[a.Name]), func(func(string)) error {
		_, err := start(a)
		return err
	})
	if first.Err != "" {
		return Sample{Err: fmt.Sprintf("%s first: %s", a.Name, first.Err)}
	}
	r.measured(&s, requestsLog(logs[b.Name]), func(func(string)) error {
		d, err := start(b)
		s.Wall = d
		return err
	})
	base := r.images[b.Image].BaseLayer()
	if r.images[a.Image].BaseLayer() != base {
		s.Err = "the two images do not share their base layer"
	}
	again := s.Traffic.Refetched(first.Traffic, base)
	s.Shared = &again
	s.SharedNew = s.Traffic.Blobs[base] - again
	return s
}

func (r *runner) closeScratch(s *scratch) {
	if err := s.Close(); err != nil {
		r.logf("clean up %s: %v", s.Dir, err)
	}
}

// checkRun turns a run's result into an error: the command failed, or its
// output lacks what it should print.
func checkRun(w Workload, stdout string, err error) error {
	if err != nil {
		return err
	}
	if !strings.Contains(stdout, w.Expect) {
		return fmt.Errorf("output lacks %q: %.200q", w.Expect, stdout)
	}
	return nil
}

// logPath names a fresh log file for one command.
func (r *runner) logPath(what string) string {
	r.logMu.Lock()
	r.seq++
	n := r.seq
	r.logMu.Unlock()
	return filepath.Join(r.cfg.OutDir, "logs", fmt.Sprintf("%04d-%s.log", n, what))
}

// command runs argv with a time limit, its output in the log file, and
// returns the wall time from start to exit and standard output (its first
// MiB). The process and its children run in a process group of their own,
// killed when the limit passes or ctx ends.
func (r *runner) command(ctx context.Context, logPath string, env []string, argv ...string) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, "", err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "$ %s\n", strings.Join(argv, " "))
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out := &limitBuffer{max: 1 << 20}
	errTail := &limitBuffer{max: 4096, keepTail: true}
	var mu sync.Mutex // one writer at a time into the log file
	cmd.Stdout = io.MultiWriter(out, &lockedWriter{mu: &mu, w: logf})
	cmd.Stderr = io.MultiWriter(errTail, &lockedWriter{mu: &mu, w: logf})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	fmt.Fprintf(logf, "# exit: %v after %v\n", err, wall)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return wall, out.String(), fmt.Errorf("%s: %w: %s", filepath.Base(argv[0]), err, lastLines(errTail.String(), 3))
	}
	return wall, out.String(), nil
}

// lastLines returns the last n non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	var ls []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, l)
		}
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// limitBuffer keeps the first (or, with keepTail, the last) max bytes
// written to it.
type limitBuffer struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	max      int
	keepTail bool
}

func (b *limitBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keepTail {
		b.buf.Write(p)
		if b.buf.Len() > b.max {
			keep := b.buf.Bytes()[b.buf.Len()-b.max:]
			b.buf = *bytes.NewBuffer(append([]byte{}, keep...))
		}
		return len(p), nil
	}
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
