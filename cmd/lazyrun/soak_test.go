package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// TestSoak runs many containers at once for a while on a cold root, from
// an image of many files of known content, behind a proxy that keeps
// injecting registry faults (500s and 503s, resets, short and corrupted
// bodies, stalls shorter than the read timeout). Every container reads
// random files and prints their SHA-256, and writes files to its upper
// layer and reads them back. Nothing may surface: every hash is the
// manifest's, every write reads back, no read fails, the upper layers hold
// every write reported, nothing is left behind, the test process keeps its
// descriptors and goroutines, and the supervisors' memory stays bounded.
//
// The normal suite runs 8 containers for about 20 s. LAZYFS_SOAK=1 runs 32
// for LAZYFS_SOAK_DURATION (default 3m); LAZYFS_SOAK_CONTAINERS sets the
// number in either case.
func TestSoak(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	cfg := soakConfig{containers: 8, duration: 20 * time.Second}
	if os.Getenv("LAZYFS_SOAK") == "1" {
		cfg.containers, cfg.duration = 32, 3*time.Minute
		if s := os.Getenv("LAZYFS_SOAK_DURATION"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				t.Fatalf("LAZYFS_SOAK_DURATION=%q: want a duration such as 3m", s)
			}
			cfg.duration = d
		}
	}
	if s := os.Getenv("LAZYFS_SOAK_CONTAINERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 {
			t.Fatalf("LAZYFS_SOAK_CONTAINERS=%q: want a number of at least 2", s)
		}
		cfg.containers = n
	}

	reg := testutil.StartRegistry(t)
	img := soakImage(t)
	ls := []testutil.Layer{testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)}
	for _, files := range img.layers {
		ls = append(ls, testutil.WriteLayer(t, files, types.OCILayer))
	}
	var blobBytes int64
	for _, l := range ls[1:] {
		blobBytes += l.Size
	}
	ref, _ := testutil.PushImage(t, reg.Addr, "soak", ls, testutil.ImageConfig{})
	pushIndexes(t, ref)
	t.Logf("image: %d files, %d data layers, %.1f MB of content, %.1f MB of gzip blobs",
		len(img.sums), len(img.layers), float64(img.bytes)/1e6, float64(blobBytes)/1e6)

	// Measured around a subtest, so that the proxy (closed in the
	// subtest's cleanup) is gone again when the test counts what is left.
	fdsBefore, goBefore := settledCounts(t)
	t.Run("soak", func(t *testing.T) {
		proxy := testutil.NewFaultProxy(t, reg.Addr)
		e := &env{root: t.TempDir(), ref: proxy.Addr + "/soak:latest"}
		t.Cleanup(func() {
			if t.Failed() {
				e.debugSupervisors(t)
			}
			e.checkClean(t)
		})
		runSoak(t, e, proxy, img, cfg)
	})
	if fds, g := settledCounts(t); fds != fdsBefore || g != goBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("the test process had %d open files and %d goroutines before the soak, %d and %d after\n%s",
			fdsBefore, goBefore, fds, g, buf[:goruntime.Stack(buf, true)])
	} else {
		t.Logf("test process: %d open files and %d goroutines before and after", fds, g)
	}
}

// settledCounts returns the test process's open files and goroutines once
// neither has changed for a second (at most 10 s): connections that were
// just closed end their goroutines and descriptors shortly after the close.
func settledCounts(t *testing.T) (fds, goroutines int) {
	fds, goroutines = openFDs(t), goruntime.NumGoroutine()
	since := time.Now()
	for deadline := since.Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if f, g := openFDs(t), goruntime.NumGoroutine(); f != fds || g != goroutines {
			fds, goroutines, since = f, g, time.Now()
		} else if time.Since(since) >= time.Second {
			break
		}
	}
	return fds, goroutines
}

// soakCacheSize is the disk cache's budget, shared by the supervisors: a
// fraction of the image's 41 MB of blobs, so that frames keep being evicted
// (by one supervisor while others read them) and fetched again through the
// faults for the whole soak, not only while the cache is cold.
const soakCacheSize = "16MB"

type soakConfig struct {
	containers int
	duration   time.Duration
}

// soakFiles is the number of files of the soak image, spread over
// soakLayers gzip layers and 16 directories: /data/K%16/K.
const (
	soakFiles  = 2000
	soakLayers = 3
)

type soakImageFiles struct {
	layers [][]testutil.File
	sums   map[string]string // "/data/3/1235" → hex SHA-256
	bytes  int64             // content bytes of all files
}

// soakImage makes the files of the soak image: nine in ten between 1 KiB
// and 64 KiB, one in ten between 64 KiB and 2 MiB (sizes log-uniform,
// from a fixed seed), contents testutil's pattern, so that the layers are
// about 140 MB of content and a random file is most often small. Files go
// to layers in turns, so a layer's frames mix small and large files.
func soakImage(t *testing.T) soakImageFiles {
	rng := rand.New(rand.NewPCG(4, 2026))
	img := soakImageFiles{layers: make([][]testutil.File, soakLayers), sums: map[string]string{}}
	for l := range soakLayers {
		img.layers[l] = append(img.layers[l], testutil.File{Path: "data/"})
		for d := range 16 {
			img.layers[l] = append(img.layers[l], testutil.File{Path: fmt.Sprintf("data/%d/", d)})
		}
	}
	for k := range soakFiles {
		lo, hi := 1<<10, 64<<10
		if rng.IntN(10) == 0 {
			lo, hi = 64<<10, 2<<20
		}
		size := int64(float64(lo) * math.Pow(float64(hi)/float64(lo), rng.Float64()))
		seed := int64(k) + 1
		h := sha256.New()
		if _, err := io.Copy(h, testutil.PatternReader(seed, size)); err != nil {
			t.Fatal(err)
		}
		p := fmt.Sprintf("data/%d/%d", k%16, k)
		img.sums["/"+p] = hex.EncodeToString(h.Sum(nil))
		img.bytes += size
		img.layers[k%soakLayers] = append(img.layers[k%soakLayers], testutil.File{Path: p, Size: size, Seed: seed})
	}
	return img
}

// soakScript is the containers' work: each round reads three random files
// (a seeded LCG, so a container's choices are fixed) and prints
// "SHA256  PATH", then writes /work/ROUND with content of the round's own,
// reads it back and prints "OK ROUND" or "BAD ROUND". Failures print a line
// starting with ERR (and the tool's own message on stderr). $C is the
// container's number.
const soakScript = `r=$((C*7919+1)); i=0
mkdir -p /work || echo "ERR mkdir"
while :; do
  i=$((i+1))
  for j in 1 2 3; do
    r=$(( (r*1103515245+12345) % 2147483648 ))
    k=$(( r % NFILES ))
    sha256sum /data/$((k%16))/$k || echo "ERR read /data/$((k%16))/$k"
  done
  n=$(( (i*37+C) % 3000 + 1 ))
  { echo "c=$C i=$i"; seq 1 $n; } > /work/$i || echo "ERR write $i"
  a=$({ echo "c=$C i=$i"; seq 1 $n; } | sha256sum)
  b=$(sha256sum < /work/$i)
  if [ "$a" = "$b" ]; then echo "OK $i"; else echo "BAD $i"; fi
done`

// soakWrite is the content the script writes to /work/I in container C.
func soakWrite(c, i int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "c=%d i=%d\n", c, i)
	for j := 1; j <= (i*37+c)%3000+1; j++ {
		fmt.Fprintf(&b, "%d\n", j)
	}
	return b.Bytes()
}

type soakContainer struct {
	name, id, cow string
	supervisor    int // PID, once sampleRSS has read it
	reads, writes int
	oks           []int // rounds reported OK
	rss           rssSamples
}

type rssSamples struct {
	all []int64 // KiB, every 3 s
}

func (r *rssSamples) add(kib int64) { r.all = append(r.all, kib) }

// first, mid (the sample half-way through), last and max, in KiB.
func (r *rssSamples) first() int64 { return r.all[0] }
func (r *rssSamples) mid() int64   { return r.all[len(r.all)/2] }
func (r *rssSamples) last() int64  { return r.all[len(r.all)-1] }
func (r *rssSamples) max() int64   { return slices.Max(r.all) }

func runSoak(t *testing.T, e *env, proxy *testutil.FaultProxy, img soakImageFiles, cfg soakConfig) {
	// Faults from the first request on: the containers' creation (index
	// downloads) and their cold start go through them too.
	injectCtx, stopInjecting := context.WithCancel(context.Background())
	injected := make(chan map[string]int, 1)
	go func() { injected <- injectFaults(injectCtx, proxy) }()
	defer func() {
		if stopInjecting != nil {
			stopInjecting()
			<-injected
		}
	}()

	cs := make([]*soakContainer, cfg.containers)
	errs := make([]string, cfg.containers)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range cs {
		c := &soakContainer{name: fmt.Sprintf("soak%d", i), cow: "fuse"}
		if i%2 == 1 {
			c.cow = "overlay"
		}
		cs[i] = c
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, lazyrunBin, "--root", e.root, "--log-level", "debug", "--cache-size", soakCacheSize,
				"run", "-d", "--cow", c.cow, "--name", c.name, "-e", fmt.Sprintf("C=%d", i), "-e", fmt.Sprintf("NFILES=%d", soakFiles),
				e.ref, "sh", "-c", soakScript)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil || !fullID.Match(out) {
				errs[i] = fmt.Sprintf("run -d %s: %v %q\n%s", c.name, err, out, stderr.Bytes())
			}
			c.id = strings.TrimSpace(string(out))
		})
	}
	wg.Wait()
	started := time.Since(start)
	for _, err := range errs {
		if err != "" {
			t.Fatal(err)
		}
	}
	t.Logf("%d containers started at once on a cold root in %v", len(cs), started.Round(time.Millisecond))

	// The supervisors' memory, every 3 s while the containers work.
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		sampleRSS(sampleCtx, e, cs)
	}()

	timer := time.NewTimer(cfg.duration)
	select {
	case <-timer.C:
	case <-t.Context().Done():
	}
	stopSampling()
	<-sampled
	stopInjecting()
	faults := <-injected
	stopInjecting = nil
	proxy.ClearFaults()
	stats := proxy.Stats()

	// Stop first, so that the logs are complete and the upper layers are
	// no longer written.
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.name
	}
	stopStart := time.Now()
	exited := watchExits(cs, stopStart)
	stopCtx, cancelStop := context.WithTimeout(t.Context(), 10*time.Minute)
	out, err := exec.CommandContext(stopCtx, lazyrunBin, append([]string{"--root", e.root, "stop"}, names...)...).CombinedOutput()
	cancelStop()
	if err != nil || string(out) != strings.Join(names, "\n")+"\n" {
		t.Errorf("stop: %v, printed %q", err, out)
	}
	t.Logf("stopping %d containers took %v; supervisors gone after %s", len(cs), time.Since(stopStart).Round(time.Millisecond), <-exited)

	var reads, writes, fails int
	for _, c := range cs {
		r := e.lazyrun(t, "", "logs", c.name)
		if r.code != 0 {
			t.Fatalf("logs %s: exit %d: %s", c.name, r.code, r.stderr)
		}
		for line := range strings.Lines(r.stderr) {
			fails++
			t.Errorf("%s (%s) said on stderr: %s", c.name, c.cow, strings.TrimSpace(line))
		}
		for line := range strings.Lines(r.stdout) {
			line = strings.TrimSuffix(line, "\n")
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && len(f[0]) == 64 && strings.HasPrefix(f[1], "/data/"):
				want, ok := img.sums[f[1]]
				if !ok || f[0] != want {
					fails++
					t.Errorf("%s (%s): sha256sum %s = %s, want %s", c.name, c.cow, f[1], f[0], want)
				}
				c.reads++
			case len(f) == 2 && f[0] == "OK":
				n, err := strconv.Atoi(f[1])
				if err != nil {
					t.Errorf("%s: log line %q", c.name, line)
				}
				c.oks = append(c.oks, n)
				c.writes++
			default:
				fails++
				t.Errorf("%s (%s): %q", c.name, c.cow, line)
			}
		}
		reads += c.reads
		writes += c.writes
	}

	// Enough work that the test cannot pass idle: a round (three reads,
	// one write) every 4 s at least, as the slowest container on a loaded
	// 2-core machine manages many times more.
	minWrites := int(cfg.duration / (4 * time.Second))
	for _, c := range cs {
		if c.reads < 3*minWrites || c.writes < minWrites {
			t.Errorf("%s (%s) did %d reads and %d writes in %v, want at least %d and %d", c.name, c.cow, c.reads, c.writes, cfg.duration, 3*minWrites, minWrites)
		}
	}

	// Every write reported OK is in the upper layer on disk.
	for i, c := range cs {
		upper := filepath.Join(e.root, "containers", c.id, "upper", "work")
		for _, n := range c.oks {
			got, err := os.ReadFile(filepath.Join(upper, strconv.Itoa(n)))
			if want := soakWrite(i, n); err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s (%s): /work/%d reported OK, upper has %d bytes (%v), want %d bytes", c.name, c.cow, n, len(got), err, len(want))
			}
		}
	}

	// The supervisors' logs: retries at Debug, corrupt frames refetched at
	// Warn; nothing else may be a warning.
	var retries, refetched int
	for _, c := range cs {
		b, err := os.ReadFile(filepath.Join(e.root, "containers", c.id, "supervisor.log"))
		if err != nil {
			t.Error(err)
			continue
		}
		for line := range strings.Lines(string(b)) {
			switch {
			case strings.Contains(line, "msg=retrying"):
				retries++
			case strings.Contains(line, `msg="frame corrupt, fetching it again"`) || strings.Contains(line, `msg="index blob corrupt, fetching it again"`):
				refetched++
			case strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "DATA RACE"):
				t.Errorf("%s's supervisor: %s", c.name, strings.TrimSpace(line))
			}
		}
	}

	rssBound := soakRSSBound(img.bytes)
	var firstSum, midSum, lastSum, maxSum, maxOne, maxGrowth, maxLateGrowth int64
	for _, c := range cs {
		if len(c.rss.all) < 2 {
			t.Errorf("%s: %d RSS samples of its supervisor, want at least 2", c.name, len(c.rss.all))
			continue
		}
		firstSum += c.rss.first()
		midSum += c.rss.mid()
		lastSum += c.rss.last()
		maxSum += c.rss.max()
		maxOne = max(maxOne, c.rss.max())
		growth := c.rss.max() - c.rss.first()
		maxGrowth = max(maxGrowth, growth)
		maxLateGrowth = max(maxLateGrowth, c.rss.last()-c.rss.mid())
		if growth<<10 > rssBound {
			t.Errorf("%s (%s): supervisor RSS grew from %d to %d KiB (last %d), more than %d MiB", c.name, c.cow, c.rss.first(), c.rss.max(), c.rss.last(), rssBound>>20)
		}
	}

	t.Logf("%d containers (%d fuse, %d overlay) for %v: %d reads (%.1f/s), %d writes (%.1f/s), %d failures",
		len(cs), (len(cs)+1)/2, len(cs)/2, cfg.duration, reads, float64(reads)/cfg.duration.Seconds(), writes, float64(writes)/cfg.duration.Seconds(), fails)
	for _, c := range cs {
		if len(c.rss.all) > 0 {
			t.Logf("  %s %-7s %5d reads %5d writes  RSS first/mid/last/max %d/%d/%d/%d MiB (%d samples)",
				c.name, c.cow, c.reads, c.writes, c.rss.first()>>10, c.rss.mid()>>10, c.rss.last()>>10, c.rss.max()>>10, len(c.rss.all))
		}
	}
	t.Logf("registry through the proxy: %d blob requests, %.1f MB of blob bodies (image: %.1f MB of content); %d other requests",
		stats.BlobRequests, float64(stats.BlobBytes)/1e6, float64(img.bytes)/1e6, stats.OtherRequests)
	most, where := faultsPerRange(proxy)
	t.Logf("faults taken: %v (at most %d on one range: %s); supervisors logged %d retries and %d corrupt frames fetched again", faults, most, where, retries, refetched)
	t.Logf("supervisor RSS, sum of %d: first %d MiB, mid %d MiB, last %d MiB, max %d MiB; largest one %d MiB; largest growth %d MiB (bound %d MiB), in the second half %d MiB",
		len(cs), firstSum>>10, midSum>>10, lastSum>>10, maxSum>>10, maxOne>>10, maxGrowth>>10, rssBound>>20, maxLateGrowth>>10)

	if faults["total"] == 0 {
		t.Errorf("no fault was injected: the proxy saw %d blob requests", stats.BlobRequests)
	}

	start = time.Now()
	e.mustRun(t, append([]string{"rm"}, names...)...)
	t.Logf("rm of %d containers took %v", len(cs), time.Since(start).Round(time.Millisecond))
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.id
	}
	if l := leftovers(e.root, ids); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	if left := e.containerIDs(); len(left) != 0 {
		t.Errorf("%d containers still recorded after rm", len(left))
	}
}

// watchExits notes when each container's supervisor exits, and returns
// a summary (first, median, last) once all have, or after ten minutes.
// A supervisor still there after 20 s is described once (its threads'
// and its container's processes' wait channels) in the summary.
func watchExits(cs []*soakContainer, start time.Time) <-chan string {
	done := make(chan string, 1)
	go func() {
		gone := make([]time.Duration, len(cs))
		left := len(cs)
		var slow string
		for left > 0 && time.Since(start) < 10*time.Minute {
			for i, c := range cs {
				if gone[i] == 0 && (c.supervisor <= 0 || syscall.Kill(c.supervisor, 0) != nil) {
					gone[i] = time.Since(start)
					left--
				}
			}
			if slow == "" && time.Since(start) > 20*time.Second {
				for i, c := range cs {
					if gone[i] == 0 {
						slow = describeWaits(c)
						break
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		slices.Sort(gone)
		done <- fmt.Sprintf("first %v, median %v, last %v (%d still there)%s", gone[0].Round(time.Millisecond),
			gone[len(gone)/2].Round(time.Millisecond), gone[len(gone)-1].Round(time.Millisecond), left, slow)
	}()
	return done
}

// describeWaits shows where c's supervisor threads and the processes of
// its cgroup wait.
func describeWaits(c *soakContainer) string {
	script := fmt.Sprintf(`echo; echo "%[3]s (%[4]s) supervisor %[1]d:"; for t in /proc/%[1]d/task/*; do echo "$t $(cat $t/wchan) $(cut -d' ' -f3 $t/stat)"; done
for p in $(cat /sys/fs/cgroup/pids/lazyrun/%[2]s/cgroup.procs 2>/dev/null); do echo "container process $p: $(cat /proc/$p/wchan) $(cut -d' ' -f3 /proc/$p/stat) $(tr '\0' ' ' < /proc/$p/cmdline)"; cat /proc/$p/stack; done`, c.supervisor, c.id, c.name, c.cow)
	out, _ := exec.Command("sh", "-c", script).CombinedOutput()
	return string(out)
}

// soakRSSBound is how much a supervisor's RSS may grow from its first
// sample: its cache's memory tier may come to hold every frame it read
// (at most the whole image's content, and never over the tier's 256 MiB
// plus the 16 MiB of recent frames), Go's collector lets the heap reach
// twice what is live (GOGC=100), and 64 MiB more covers go-fuse's buffers,
// the goroutines of the reads in flight and the runtime's own.
func soakRSSBound(content int64) int64 {
	return 2*min(content, 272<<20) + 64<<20
}

// sampleRSS reads the VmRSS of each container's supervisor every 3 s
// until ctx ends.
func sampleRSS(ctx context.Context, e *env, cs []*soakContainer) {
	pids := make([]int, len(cs))
	tick := time.NewTicker(3 * time.Second)
	defer tick.Stop()
	for {
		for i, c := range cs {
			if pids[i] == 0 {
				b, err := os.ReadFile(filepath.Join(e.root, "containers", c.id, "state.json"))
				if err != nil {
					continue
				}
				if j := bytes.Index(b, []byte(`"supervisorPid":`)); j >= 0 {
					rest := b[j+len(`"supervisorPid":`):]
					end := bytes.IndexAny(rest, ",}")
					if end > 0 {
						pids[i], _ = strconv.Atoi(strings.TrimSpace(string(rest[:end])))
					}
				}
			}
			c.supervisor = pids[i]
			if kib := vmRSS(pids[i]); kib > 0 {
				c.rss.add(kib)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// vmRSS is the VmRSS of pid in KiB, or 0.
func vmRSS(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// injectFaults keeps one blob fault queued at the proxy, of each kind in
// turn, until ctx ends, and returns how many of each the proxy handed out.
//
// A fault is queued only once the previous one was taken and at least
// three more blob requests have come: faults never come in a row, so a
// fetch retried by the client (4 retries) or a frame fetched again after
// corrupt bytes (3 times) meets a clean request before it gives up, unless
// other requests keep taking the clean turns in between, which the figures
// logged by the test would show. Stalls last 2 s, well under the 10 s
// read timeout. Corrupted bodies come from the start: configs and index
// blobs are read again too.
func injectFaults(ctx context.Context, p *testutil.FaultProxy) map[string]int {
	inject := []func(){
		func() { p.Fail(500, 1) },
		func() { p.Reset(1) },
		func() { p.Short(1) },
		func() { p.Stall(1, 2*time.Second) },
		func() { p.Corrupt(1) },
		func() { p.Fail(503, 1) },
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	next, base := 0, -1
	for {
		select {
		case <-ctx.Done():
			p.ClearFaults()
			taken := map[string]int{}
			for _, r := range p.Requests() {
				if r.Fault != "" {
					taken[r.Fault]++
					taken["total"]++
				}
			}
			return taken
		case <-tick.C:
		}
		if p.PendingFaults() > 0 {
			continue
		}
		n := p.Stats().BlobRequests
		if base < 0 {
			base = n
		}
		if n < base+3 {
			continue
		}
		inject[next%len(inject)]()
		next++
		base = -1
	}
}

// faultsPerRange counts, for each blob range, how many of its requests
// were faulted: what a read that failed after all retries would show.
func faultsPerRange(p *testutil.FaultProxy) (maxFaults int, where string) {
	n := map[string]int{}
	for _, r := range p.Requests() {
		if r.Fault != "" {
			k := string(r.Digest) + " " + r.Range
			n[k]++
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range n {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		if n[k] > maxFaults {
			maxFaults, where = n[k], k
		}
	}
	return maxFaults, where
}
