package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The file-system section (issue 7): how fast the files of an image are
// once its cache is warm (lazyrun pull first), inside a container with
// each --cow, against the same operations on the unpacked root over
// kernel overlayfs.

// The file-system section's modes, in table order.
const (
	FSNative  = "native"  // chroot on the unpacked root over kernel overlayfs, no FUSE
	FSOverlay = "overlay" // lazyrun run --cow=overlay: kernel overlayfs over the lazyfs mount
	FSFuse    = "fuse"    // lazyrun run --cow=fuse: lazyfs' own copy-on-write
)

// FSModes lists the file-system section's modes.
var FSModes = []string{FSNative, FSOverlay, FSFuse}

// fsImage is the fs image's name: minbase plus the fsdata layer.
const fsImage = "fsdata"

// fsOp is one operation of the file-system section, run by fsprobe
// (bench/cmd/fsprobe), which times it inside the container.
type fsOp struct {
	Name, Title string
	Argv        []string // in the container; /bench holds fsprobe and src.tar
	// Target is the goal as a fraction of native speed (0: none).
	Target float64
}

var fsOps = []fsOp{
	{Name: "seq-read", Title: "sequential read of /data/big (1 GiB, 1 MiB reads)",
		Argv: []string{"/bench/fsprobe", "seq", "/data/big"}, Target: 0.7},
	{Name: "rand-read", Title: fmt.Sprintf("%d random 4 KiB reads of /data/big (pread, fixed seed)", fsRandReads),
		Argv: []string{"/bench/fsprobe", "rand", "/data/big", strconv.Itoa(fsRandReads), "1"}},
	{Name: "find-root", Title: "`find / -xdev | wc -l`",
		Argv: []string{"/bench/fsprobe", "exec", "sh", "-c", "find / -xdev | wc -l"}, Target: 0.5},
	{Name: "stat-tree", Title: fmt.Sprintf("stat walk of /data/tree (%d files): `find /data/tree -type f -printf '%%s\\n' | wc -l`", fsTreeFiles),
		Argv: []string{"/bench/fsprobe", "exec", "sh", "-c", `find /data/tree -type f -printf '%s\n' | wc -l`}, Target: 0.5},
	{Name: "untar", Title: fmt.Sprintf("untar of a source tree (%d files) into the container's upper layer: `tar -xf /bench/src.tar -C /srv/untar`", fsTarFiles),
		Argv: []string{"/bench/fsprobe", "exec", "sh", "-c", "mkdir /srv/untar && tar -xf /bench/src.tar -C /srv/untar"}},
}

// FSResults is the file-system section's results.
type FSResults struct {
	Ref        string     // the image measured
	Data       fsDataInfo // what its data layer and the tarball hold
	DropCaches bool       // sync and drop_caches before every measurement
	Ops        []*FSOpResult
	Skipped    string `json:",omitempty"` // why the section did not run
}

// FSOpResult holds one operation's samples per mode.
type FSOpResult struct {
	Op, Title string
	Target    float64 `json:",omitempty"` // the goal as a fraction of native speed
	Modes     []*FSModeResult
}

// FSModeResult is one mode's samples of an operation.
type FSModeResult struct {
	Mode    string
	Samples []FSSample
}

// FSSample is one measurement of an operation.
type FSSample struct {
	Op    time.Duration // the operation alone, timed by fsprobe inside the container
	Wall  time.Duration // the whole command: container start, operation, exit
	Bytes int64         `json:",omitempty"` // bytes read (reads)
	Count int64         `json:",omitempty"` // reads, or the entries the command counted
	Load  string        // /proc/loadavg before the measurement: the machine may be shared
	Err   string        `json:",omitempty"`
}

// fsProbeResult is fsprobe's output line (bench/cmd/fsprobe).
type fsProbeResult struct {
	Op                  string
	Nanos, Bytes, Count int64
}

// parseFSProbe finds fsprobe's result line in a command's output.
func parseFSProbe(out string) (fsProbeResult, error) {
	var res fsProbeResult
	for l := range strings.Lines(out) {
		if j, ok := strings.CutPrefix(strings.TrimSpace(l), "fsprobe-result "); ok {
			err := json.Unmarshal([]byte(j), &res)
			return res, err
		}
	}
	return res, fmt.Errorf("no fsprobe-result line in the output: %.200q", out)
}

// setupFS builds the fs image: minbase and the fsdata layer (generated
// once and cached, see fsdata.go).
func (r *runner) setupFS(ctx context.Context) error {
	d, err := loadFSData(ctx, r.logf)
	if err != nil {
		return err
	}
	r.fsData = d
	b := &builtImage{Image: Image{Name: fsImage}, Ref: "bench/" + fsImage + ":latest"}
	err = withTB(ctx, r.logf, func(t testing.TB) {
		b.Root = testutil.DebianRoot(t)
		b.Layers = append(testutil.DebianLayers(t), d.Layer)
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", fsImage, err)
	}
	if b.Files, b.Content, err = treeSize(b.Root); err != nil {
		return err
	}
	b.Files += d.Info.TreeFiles + 1
	b.Content += d.Info.BigBytes + d.Info.TreeBytes
	b.Config.Env, b.Config.Cmd = []string{imagePath}, []string{"bash"}
	r.images[fsImage] = b
	return nil
}

// nativeFSScript is nativeScript with two lower directories ($1 is
// "upper-lower:base") and $5 bind-mounted read-only at /bench.
const nativeFSScript = `set -e
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount --rbind /dev "$4/dev"
mkdir -p "$4/bench"
mount --bind "$5" "$4/bench"
mount -o remount,bind,ro "$4/bench"
m=$4
shift 5
cd /
exec chroot "$m" /usr/bin/env -i ` + imagePath + ` HOME=/root "$@"`

// measureFS runs the file-system section: one root, pulled once (not
// timed), then -runs rounds of every operation in every mode.
func (r *runner) measureFS(ctx context.Context) {
	fr := &FSResults{Ref: r.images[fsImage].Ref, Data: r.fsData.Info, DropCaches: !r.cfg.FSKeepPageCache}
	r.res.FS = fr
	for _, op := range fsOps {
		or := &FSOpResult{Op: op.Name, Title: op.Title, Target: op.Target}
		for _, m := range FSModes {
			or.Modes = append(or.Modes, &FSModeResult{Mode: m})
		}
		fr.Ops = append(fr.Ops, or)
	}
	// Plain directories on the host's file system, for the lazyfs root
	// (its frames) and the native upper alike; the native lower is the
	// test cache, on the host's file system too.
	sc, err := newScratch(ctx, r.cfg.WorkDir, "fs", 0)
	if err != nil {
		fr.Skipped = err.Error()
		return
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	benchDir := filepath.Join(sc.Dir, "bench")
	if err := r.fsBenchDir(benchDir); err != nil {
		fr.Skipped = err.Error()
		return
	}
	r.logf("fs: lazyrun pull %s (warm cache; not timed)", r.ref(fsImage))
	// Not unpacked: the overlay and fuse modes measure the FUSE mount over
	// a warm cache, which an unpacked image would not use.
	d, _, err := r.command(ctx, r.logPath("fs-pull"), nil, r.lazyrun(root, "pull", "--unpack=false", r.ref(fsImage))...)
	if err != nil {
		fr.Skipped = "lazyrun pull: " + err.Error()
		return
	}
	r.logf("fs: pulled in %v", d.Round(time.Millisecond))
	n := 0
	for i := range r.cfg.Runs {
		for k, op := range fsOps {
			for _, mr := range fr.Ops[k].Modes {
				if ctx.Err() != nil {
					return
				}
				n++
				s := r.fsSample(ctx, op, mr.Mode, root, benchDir, filepath.Join(sc.Dir, fmt.Sprintf("native-%d", n)))
				if ctx.Err() != nil {
					return
				}
				mr.Samples = append(mr.Samples, s)
				if s.Err != "" {
					r.logf("run %d/%d fs %s %s: FAILED: %s", i+1, r.cfg.Runs, op.Name, mr.Mode, s.Err)
				} else {
					r.logf("run %d/%d fs %s %s: %v (command %v)", i+1, r.cfg.Runs, op.Name, mr.Mode,
						s.Op.Round(time.Millisecond), s.Wall.Round(time.Millisecond))
				}
			}
		}
	}
}

// fsBenchDir makes the directory bind-mounted at /bench: fsprobe and the
// tarball (a hard link into the cache, a copy if that fails).
func (r *runner) fsBenchDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := copyFile(filepath.Join(r.cfg.BinDir, "fsprobe"), filepath.Join(dir, "fsprobe"), 0o755); err != nil {
		return fmt.Errorf("fsprobe: %w", err)
	}
	dst := filepath.Join(dir, "src.tar")
	if err := os.Link(r.fsData.Tar, dst); err != nil {
		return copyFile(r.fsData.Tar, dst, 0o644)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// fsSample runs op once in mode: after sync and drop_caches (unless the
// page cache is kept), natively in nativeDir or in a container on the
// warm root.
func (r *runner) fsSample(ctx context.Context, op fsOp, mode, root, benchDir, nativeDir string) (s FSSample) {
	if !r.cfg.FSKeepPageCache {
		if err := dropCaches(ctx); err != nil {
			return FSSample{Err: err.Error(), Load: loadavg()}
		}
	}
	s.Load = loadavg()
	var argv []string
	switch mode {
	case FSNative:
		defer os.RemoveAll(nativeDir)
		var ps []string
		for _, d := range []string{"upper", "work", "mnt"} {
			p := filepath.Join(nativeDir, d)
			if err := os.MkdirAll(p, 0o755); err != nil {
				return FSSample{Err: err.Error()}
			}
			ps = append(ps, p)
		}
		lower := r.fsData.Root + ":" + r.images[fsImage].Root
		argv = append([]string{"unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private",
			"sh", "-c", nativeFSScript, "sh", lower, ps[0], ps[1], ps[2], benchDir}, op.Argv...)
	default:
		argv = r.lazyrun(root, append([]string{"run", "--rm", "--net", "none", "--prefetch=false", "--cow=" + mode,
			"-v", benchDir + ":/bench:ro", r.ref(fsImage)}, op.Argv...)...)
	}
	wall, out, err := r.command(ctx, r.logPath("fs-"+op.Name+"-"+mode), nil, argv...)
	s.Wall = wall
	if err != nil {
		s.Err = err.Error()
		return s
	}
	res, err := parseFSProbe(out)
	if err != nil {
		s.Err = err.Error()
		return s
	}
	s.Op, s.Bytes, s.Count = time.Duration(res.Nanos), res.Bytes, res.Count
	return s
}

// dropCaches writes dirty pages back and drops the kernel's clean page,
// dentry and inode caches, so that each measurement reads from the disk:
// native from the unpacked root, lazyfs from its cache's frame files.
func dropCaches(ctx context.Context) error {
	if _, err := run(ctx, "sync"); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// fsStats is the median of an operation's successful samples in a mode.
type fsStats struct {
	n, failed    int
	op, min, max time.Duration
	bytes, count int64
	firstErr     string
}

func summarizeFS(ss []FSSample) fsStats {
	var st fsStats
	var ops []time.Duration
	var bytes, counts []int64
	for _, s := range ss {
		if s.Err != "" {
			st.failed++
			if st.firstErr == "" {
				st.firstErr = s.Err
			}
			continue
		}
		ops = append(ops, s.Op)
		bytes = append(bytes, s.Bytes)
		counts = append(counts, s.Count)
	}
	if st.n = len(ops); st.n > 0 {
		st.op, st.min, st.max = median(ops), slices.Min(ops), slices.Max(ops)
		st.bytes, st.count = median(bytes), median(counts)
	}
	return st
}

// fsCell renders a mode's median for an operation.
func (fr *FSResults) fsCell(op string, st fsStats) string {
	if st.n == 0 {
		return "failed: " + mdEscape(st.firstErr)
	}
	sec := st.op.Seconds()
	var s string
	switch op {
	case "seq-read":
		s = fmt.Sprintf("%.0f MB/s (%s)", float64(st.bytes)/1e6/sec, secs(st.op))
	case "rand-read":
		s = fmt.Sprintf("%.0f reads/s (%.0f µs a read)", float64(st.count)/sec, sec*1e6/float64(max(st.count, 1)))
	case "untar":
		s = fmt.Sprintf("%s (%.0f MB/s)", secs(st.op), float64(fr.Data.TarBytes)/1e6/sec)
	default:
		s = fmt.Sprintf("%s (%d entries)", secs(st.op), st.count)
	}
	if st.failed > 0 {
		s += fmt.Sprintf("; %d of %d runs failed: %s", st.failed, st.failed+st.n, mdEscape(st.firstErr))
	}
	return s
}

// markdown renders the file-system section.
func (fr *FSResults) markdown(b *strings.Builder, runs int) {
	b.WriteString("## File-system speed on a warm cache\n\n")
	if fr.Skipped != "" {
		fmt.Fprintf(b, "Not measured: %s\n\n", mdEscape(fr.Skipped))
		return
	}
	d := fr.Data
	fmt.Fprintf(b, "Image %s: minbase and a layer (%s gzip) with /data/big (%s) and /data/tree (%d files, %s); "+
		"the untar's tarball: %d files, %s. ", fr.Ref, mb(d.LayerSize), mb(d.BigBytes), d.TreeFiles, mb(d.TreeBytes), d.TarFiles, mb(d.TarBytes))
	b.WriteString("The image is pulled once (`lazyrun pull`, not timed); then each operation runs in a fresh container " +
		"(`lazyrun run --rm --net none --prefetch=false --cow=overlay|fuse -v BENCH:/bench:ro`) and natively " +
		"(chroot on the unpacked root over kernel overlayfs, no FUSE). fsprobe (bench/cmd/fsprobe), bind-mounted at /bench, " +
		"times the operation alone inside; container start and exit are not in these numbers (results.json has them). ")
	fmt.Fprintf(b, "Medians of %d runs; modes interleaved. ", runs)
	if fr.DropCaches {
		b.WriteString("Before every measurement: `sync` and `echo 3 > /proc/sys/vm/drop_caches`, so each reads from the disk: " +
			"native the unpacked files, lazyfs its cache's frame files (and checks each frame's SHA-256).\n\n")
	} else {
		b.WriteString("The page cache was not dropped: each run sees it as the previous ones left it " +
			"(native files stay in it; a new lazyfs mount starts with an empty page cache of its own, its frame files cached).\n\n")
	}
	if lo, hi, ok := fr.loadRange(); ok {
		fmt.Fprintf(b, "1-minute load average before the measurements: %.1f–%.1f (a shared machine slows the CPU-bound FUSE path more than native's disk reads). ", lo, hi)
	}
	b.WriteString("\"vs native\" is native's median time over the mode's: speed as a share of native (100 % = as fast).\n\n")
	b.WriteString("| operation | native | overlay | fuse | overlay vs native | fuse vs native | issue's target |\n|---|---|---|---|---|---|---|\n")
	for _, or := range fr.Ops {
		sts := map[string]fsStats{}
		for _, mr := range or.Modes {
			sts[mr.Mode] = summarizeFS(mr.Samples)
		}
		nat := sts[FSNative]
		cells := []string{strings.ReplaceAll(or.Title, "|", `\|`)}
		for _, m := range FSModes {
			cells = append(cells, fr.fsCell(or.Op, sts[m]))
		}
		var met []string
		for _, m := range []string{FSOverlay, FSFuse} {
			st := sts[m]
			if nat.n == 0 || st.n == 0 || st.op <= 0 {
				cells = append(cells, "–")
				continue
			}
			share := nat.op.Seconds() / st.op.Seconds()
			cells = append(cells, fmt.Sprintf("%.0f %%", 100*share))
			if or.Target > 0 {
				verdict := "met"
				if share < or.Target {
					verdict = "missed"
				}
				met = append(met, m+" "+verdict)
			}
		}
		target := "–"
		if or.Target > 0 {
			target = fmt.Sprintf("≥ %.0f %%", 100*or.Target)
			if or.Target == 0.5 {
				target += " (within 2×)"
			}
			if len(met) > 0 {
				target += ": " + strings.Join(met, ", ")
			}
		}
		cells = append(cells, target)
		fmt.Fprintf(b, "| %s |\n", strings.Join(cells, " | "))
	}
	b.WriteString("\n")
}

// loadRange is the lowest and highest 1-minute load average the samples
// recorded.
func (fr *FSResults) loadRange() (lo, hi float64, ok bool) {
	for _, or := range fr.Ops {
		for _, mr := range or.Modes {
			for _, s := range mr.Samples {
				f := strings.Fields(s.Load)
				if len(f) == 0 {
					continue
				}
				v, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					continue
				}
				if !ok || v < lo {
					lo = v
				}
				if !ok || v > hi {
					hi = v
				}
				ok = true
			}
		}
	}
	return lo, hi, ok
}
