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
			},
		}},
		Scale:   []*ScaleResult{{Workload: "python3", Containers: 4, Samples: []Sample{{Wall: sec(4), Traffic: Traffic{Dup: 3e6, Bytes: 50e6}}}}},
		Sharing: []*SharingResult{{Mode: ModeCold, A: "python3", B: "nginx", Samples: []Sample{{Wall: sec(1.5), Shared: &zero, SharedNew: 16e5}}}},
	}
	dir := t.TempDir()
	if err := res.Write(dir); err != nil {
		t.Fatal(err)
	}
	md := res.Markdown()
	for _, want := range []string{
		"| full pull + run (lazyrun pull) | 7.50 s (7.00 s–8.00 s) | 1.00 | 71.0 MB | 3 | pull 7.00 s + run 500 ms; layers 71.0 MB, the rest 100 B |",
		`| full pull + run (podman) | not measured | | | | podman cannot run here: runc \| crun |`,
		"| lazy, cold cache | 2.45 s (2.40 s–2.50 s) | 0.33 | 20.0 MB | 3 | layers 20.0 MB, the rest 100 B; 1 of 3 runs failed: lazyrun: exit status 125 |",
		"| lazy, warm cache (after the pull) | failed | | | | no pull |",
		"| native (unpacked root, no FUSE) | 30 ms (30 ms–30 ms) | 0.004 | – | – |  |",
		"The command opened 25 of its files, 10.0 MB (6.1%).",
		"| 4 × python3 | 4.00 s (4.00 s–4.00 s) |",
		"| 3.0 MB |",
		"| 0 B, 0 B | 1.6 MB |",
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
