package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		want int64
	}{{nil, 0}, {[]int64{3}, 3}, {[]int64{5, 1, 3}, 3}, {[]int64{4, 1, 3, 2}, 2}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestResultsWrite(t *testing.T) {
	const layer = "sha256:aa"
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	tr := func(n int64) Traffic { return Traffic{Requests: 3, Bytes: n, Blobs: map[string]int64{layer: n - 100}} }
	zero := int64(0)
	res := &Results{
		Started:  time.Date(2026, 11, 23, 18, 0, 0, 0, time.UTC),
		Finished: time.Date(2026, 11, 23, 18, 20, 0, 0, time.UTC),
		Settings: Settings{Rate: 100e6, RTT: 20 * time.Millisecond, Runs: 3, Modes: Modes},
		Images:   []ImageInfo{{Name: "python3", Layers: []LayerInfo{{Digest: layer, Size: 71e6}}, Files: 10, Content: 165e6}},
		Workloads: []*WorkloadResult{{
			Workload: Workloads[1], Image: "python3", Opened: Opened{Files: 25, Bytes: 10e6},
			Need: Need{Read: 5e6, Files: 20, Blocks: 2e6, Frames: 4e6, Estimate: 21e5, Touched: 3e6, TouchedBlocks: 15e5, TouchedFrames: 35e5},
			Modes: []*ModeResult{
				{Mode: ModePull, Title: modeTitles[ModePull], Samples: []Sample{
					{Wall: sec(7), Traffic: tr(71e6), Phases: map[string]time.Duration{"pull": sec(6.5), "run": sec(0.5)}},
					{Wall: sec(8), Traffic: tr(71e6), Phases: map[string]time.Duration{"pull": sec(7.5), "run": sec(0.5)}},
					{Wall: sec(7.5), Traffic: tr(71e6), Phases: map[string]time.Duration{"pull": sec(7), "run": sec(0.5)}},
				}},
				{Mode: ModePodman, Title: modeTitles[ModePodman], Skipped: "podman cannot run here: runc | crun"},
				{Mode: ModeCold, Title: modeTitles[ModeCold], Samples: []Sample{
					{Wall: sec(2.5), Traffic: tr(20e6)}, {Err: "lazyrun: exit status 125"}, {Wall: sec(2.4), Traffic: tr(20e6)},
				}},
				{Mode: ModeWarm, Title: modeTitles[ModeWarm], Samples: []Sample{{Err: "no pull"}}},
				{Mode: ModeNative, Title: modeTitles[ModeNative], Samples: []Sample{{Wall: 30 * time.Millisecond}}},
				{Mode: ModeMount, Title: modeTitles[ModeMount], Samples: []Sample{
					{Wall: sec(0.38), Traffic: Traffic{Requests: 7, Bytes: 118e3}}, {Wall: sec(0.42), Traffic: Traffic{Requests: 7, Bytes: 118e3}},
				}},
			},
		}},
		Scale:   []*ScaleResult{{Workload: "python3", Containers: 4, Samples: []Sample{{Wall: sec(4), Traffic: Traffic{Dup: 3e6, Bytes: 50e6}}}}},
		Sharing: []*SharingResult{{Mode: ModeCold, A: "python3", B: "nginx", Samples: []Sample{{Wall: sec(1.5), Shared: &zero, SharedNew: 16e5}}}},
		FS: &FSResults{Ref: "bench/fsdata:latest", DropCaches: true,
			Data: fsDataInfo{BigBytes: 1 << 30, TreeFiles: 50000, TreeBytes: 51e6, TarFiles: 20000, TarBytes: 200e6, LayerSize: 329e6},
			Ops: []*FSOpResult{
				{Op: "seq-read", Title: "seq", Target: 0.7, Modes: []*FSModeResult{
					{Mode: FSNative, Samples: []FSSample{{Op: sec(1), Bytes: 1e9}, {Op: sec(2), Bytes: 1e9}, {Op: sec(1.5), Bytes: 1e9}}},
					{Mode: FSOverlay, Samples: []FSSample{{Op: sec(2), Bytes: 1e9}}},
					{Mode: FSFuse, Samples: []FSSample{{Op: sec(1.5), Bytes: 1e9}, {Err: "lazyrun: exit status 1"}}},
				}},
				{Op: "rand-read", Title: "rand", Modes: []*FSModeResult{
					{Mode: FSNative, Samples: []FSSample{{Op: sec(2), Count: 20000}}},
					{Mode: FSOverlay, Samples: []FSSample{{Op: sec(4), Count: 20000}}},
					{Mode: FSFuse, Samples: []FSSample{{Err: "no fsprobe-result line"}}},
				}},
				{Op: "stat-tree", Title: "`find | wc`", Target: 0.5, Modes: []*FSModeResult{
					{Mode: FSNative, Samples: []FSSample{{Op: sec(1), Count: 50000, Load: "3.50 2.00 1.00 2/100 42"}}},
					{Mode: FSOverlay, Samples: []FSSample{{Op: sec(2), Count: 50000, Load: "0.25 2.00 1.00 2/100 42"}}},
					{Mode: FSFuse, Samples: []FSSample{{Op: sec(2.5), Count: 50000}}},
				}},
				{Op: "untar", Title: "untar", Modes: []*FSModeResult{
					{Mode: FSNative, Samples: []FSSample{{Op: sec(2)}}},
					{Mode: FSOverlay, Samples: []FSSample{{Op: sec(2.5)}}},
					{Mode: FSFuse, Samples: []FSSample{{Op: sec(8)}}},
				}},
			}},
	}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
	md := res.Markdown()
	for _, want := range []string{
		"| full pull + run (lazyrun pull) | 7.50 s (7.00 s–8.00 s) | 1.00 | 71.0 MB | 35.50 (2.00 × 17.75) | 3 | pull 7.00 s + run 500 ms; layers 71.0 MB, the rest 100 B |",
		`| full pull + run (podman) | not measured | | | | | podman cannot run here: runc \| crun |`,
		"| lazy, cold cache | 2.45 s (2.40 s–2.50 s) | 0.33 | 20.0 MB | 10.00 (2.00 × 5.00) | 3 | layers 20.0 MB, the rest 100 B; 1 of 3 runs failed: lazyrun: exit status 125 |",
		"| lazy, warm cache (after the pull) | failed | | | | | no pull |",
		"| native (unpacked root, no FUSE) | 30 ms (30 ms–30 ms) | 0.004 | – |  | – |  |",
		"| lazyfs mount, cold cache: until mounted | 400 ms (380 ms–420 ms) |  | 118 kB |  | 7 | 1 layer: manifest, config, indexes, FUSE up (bar: < 0.5 s for two layers at 20 ms RTT); layers 0 B, the rest 118 kB |",
		"The command opened 25 of its files, 10.0 MB (6.1%).",
		"Needed: it read 5.0 MB of 20 files (pages cached after a native run), held by **2.0 MB compressed** (deflate blocks), 4.0 MB at lazyfs's frames (pro rata estimate 2.1 MB). With read-ahead off it touched 3.0 MB, held by 1.5 MB compressed (3.5 MB at frames).",
		"| 4 × python3 | 4.00 s (4.00 s–4.00 s) |",
		"| 3.0 MB |",
		"| 0 B, 0 B | 1.6 MB |",
		"## File-system speed on a warm cache",
		"| seq | 667 MB/s (1.50 s) | 500 MB/s (2.00 s) | 667 MB/s (1.50 s); 1 of 2 runs failed: lazyrun: exit status 1 | 75 % | 100 % | ≥ 70 %: overlay met, fuse met |",
		"| rand | 10000 reads/s (100 µs a read) | 5000 reads/s (200 µs a read) | failed: no fsprobe-result line | 50 % | – | – |",
		"| `find \\| wc` | 1.00 s (50000 entries) | 2.00 s (50000 entries) | 2.50 s (50000 entries) | 50 % | 40 % | ≥ 50 % (within 2×): overlay met, fuse missed |",
		"| untar | 2.00 s (100 MB/s) | 2.50 s (80 MB/s) | 8.00 s (25 MB/s) | 80 % | 25 % | – |",
		"`echo 3 > /proc/sys/vm/drop_caches`",
		"1-minute load average before the measurements: 0.2–3.5",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{"results.md", "results.json", "chart.png", "machine.txt"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, or empty", f, err)
		}
	}
}

func TestParseFSProbe(t *testing.T) {
	out := "61234\nfsprobe-result {\"Op\":\"exec\",\"Nanos\":1500000000,\"Bytes\":0,\"Count\":61234}\n"
	got, err := parseFSProbe(out)
	want := fsProbeResult{Op: "exec", Nanos: 1.5e9, Count: 61234}
	if err != nil || got != want {
		t.Errorf("parseFSProbe(%q) = %+v, %v, want %+v", out, got, err, want)
	}
	if _, err := parseFSProbe("fsprobe: open /data/big: no such file\n"); err == nil {
		t.Errorf("parseFSProbe without a result line: no error")
	}
}

func TestFSSize(t *testing.T) {
	var total int64
	for i := range 1000 {
		n := fsSize("src", i, fsTarMax)
		if n < 0 || n > fsTarMax {
			t.Fatalf("fsSize(src, %d, %d) = %d, out of range", i, fsTarMax, n)
		}
		total += n
	}
	if mean := total / 1000; mean < fsTarMax/2-1000 || mean > fsTarMax/2+1000 {
		t.Errorf("fsSize: mean of 1000 sizes = %d, want about %d", mean, fsTarMax/2)
	}
	if a, b := fsSize("tree", 7, fsTreeMax), fsSize("tree", 7, fsTreeMax); a != b {
		t.Errorf("fsSize(tree, 7) = %d, then %d: not deterministic", a, b)
	}
}
