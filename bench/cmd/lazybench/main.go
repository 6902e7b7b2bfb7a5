// Command lazybench measures lazy container starts against full pulls on a
// shaped link: it builds Debian images (from Debian's packages), pushes
// them with their lazyfs indexes to a docker-registry in a network
// namespace behind tc tbf and a delaying proxy, and times lazyrun (full
// pull + run, cold, with a prefetch profile, warm), podman (pull + run), a
// native run and lazyfs mount to ready for each start-up command; then file-system speed on a warm cache (--cow=overlay
// and --cow=fuse against native). See bench/README.md. Run it as root;
// scripts/bench.sh installs what it needs first.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lazyfs/lazyfs/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lazybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		rate      = fs.String("rate", "100mbit", "link rate (e.g. 100mbit, 1gbit; 0 = not shaped)")
		rtt       = fs.Duration("rtt", 20*time.Millisecond, "round-trip time added to every connection (0 = none)")
		unshaped  = fs.Bool("unshaped", false, "no rate limit and no added delay (same as -rate 0 -rtt 0)")
		runs      = fs.Int("runs", 5, "samples per measurement (medians are reported)")
		workloads = fs.String("workloads", "", "comma-separated workloads (default all: "+workloadNames()+")")
		modes     = fs.String("modes", "", "comma-separated modes (default all: "+strings.Join(bench.Modes, ",")+")")
		scale     = fs.String("scale", "1,4,16", "container counts started at once on a cold cache (\"\" = no scale test)")
		scaleW    = fs.String("scale-workload", "python3", "workload of the scale test")
		sharing   = fs.Bool("sharing", true, "measure layer sharing (nginx after python3, same base layer)")
		out       = fs.String("out", "", "results directory (default bench/results/DATE-HOST)")
		bin       = fs.String("bin", "", "directory with lazyrun and lazyfs binaries (default: go build them from this module)")
		work      = fs.String("work", "/var/tmp/lazybench", "scratch directory (removed first)")
		timeout   = fs.Duration("timeout", 5*time.Minute, "limit of each command")
		loopSize  = fs.Int64("loop-size", 16<<30, "bytes of the fresh ext4 loop file system of each cold run (sparse)")
		noLoop    = fs.Bool("no-loop", false, "no loop file systems: cold runs use plain directories under -work")
		fsOn      = fs.Bool("fs", true, "file-system speed on a warm cache: --cow=overlay and --cow=fuse against native (-fs=false: skip it)")
		fsOnly    = fs.Bool("fs-only", false, "run the file-system section alone (no workloads, scale or sharing)")
		fsDrop    = fs.Bool("fs-drop-caches", true, "sync and drop the kernel's page cache before each file-system measurement")
		mem       = fs.Bool("mem", false, "memory of lazyfs mount and a lazyrun supervisor serving an image of 100 000 files, after the mount and after a stat walk")
		memOnly   = fs.Bool("mem-only", false, "run the memory section alone (no workloads, scale, sharing or file-system section)")
		span      = fs.Int64("span", 0, "uncompressed bytes between index checkpoints of the pushed indexes (0 = lazyfs index's default)")
		blockSpan = fs.Int64("block-span", 0, "uncompressed bytes between frames without a window inside a span (lazyfs index --block-span; 0 = its default, -1 = none)")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := bench.Config{RTT: *rtt, Runs: *runs, ScaleWorkload: *scaleW, Sharing: *sharing,
		WorkDir: *work, OutDir: *out, BinDir: *bin, Timeout: *timeout, LoopSize: *loopSize, Span: *span, BlockSpan: *blockSpan, Log: stderr,
		FS: *fsOn || *fsOnly, FSOnly: *fsOnly, FSKeepPageCache: !*fsDrop, Mem: *mem || *memOnly, MemOnly: *memOnly}
	var err error
	if cfg.Rate, err = parseRate(*rate); err != nil {
		fmt.Fprintf(stderr, "lazybench: -rate: %v\n", err)
		return 2
	}
	if *unshaped {
		cfg.Rate, cfg.RTT = 0, 0
	}
	if *noLoop {
		cfg.LoopSize = -1
	}
	cfg.Workloads = splitList(*workloads)
	cfg.Modes = splitList(*modes)
	for _, s := range splitList(*scale) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "lazybench: -scale: %q is not a count\n", s)
			return 2
		}
		cfg.Scale = append(cfg.Scale, n)
	}
	modRoot, err := moduleRoot(ctx)
	if err != nil && (cfg.OutDir == "" || cfg.BinDir == "") {
		fmt.Fprintf(stderr, "lazybench: %v (give -out and -bin, or run inside the lazyfs module)\n", err)
		return 1
	}
	if cfg.OutDir == "" {
		host, _ := os.Hostname()
		cfg.OutDir = filepath.Join(modRoot, "bench", "results", time.Now().Format("2006-01-02-1504")+"-"+host)
	}
	if cfg.BinDir == "" {
		dir, err := os.MkdirTemp("", "lazybench-bin-")
		if err != nil {
			fmt.Fprintf(stderr, "lazybench: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		fmt.Fprintf(stderr, "lazybench: go build ./cmd/lazyrun ./cmd/lazyfs ./bench/cmd/fsprobe\n")
		b := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/lazyrun", "./cmd/lazyfs")
		b.Dir, b.Stdout, b.Stderr = modRoot, stderr, stderr
		err = b.Run()
		if err == nil {
			// fsprobe runs inside the containers: static, without cgo.
			b = exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./bench/cmd/fsprobe")
			b.Dir, b.Stdout, b.Stderr = modRoot, stderr, stderr
			b.Env = append(os.Environ(), "CGO_ENABLED=0")
			err = b.Run()
		}
		if err != nil {
			fmt.Fprintf(stderr, "lazybench: go build: %v\n", err)
			return 1
		}
		cfg.BinDir = dir
	}
	res, err := bench.Run(ctx, cfg)
	if res != nil && res.Finished.After(res.Started) {
		fmt.Fprint(stdout, res.Markdown())
		fmt.Fprintf(stderr, "lazybench: results in %s\n", cfg.OutDir)
	}
	if err != nil {
		fmt.Fprintf(stderr, "lazybench: %v\n", err)
		return 1
	}
	return 0
}

func workloadNames() string {
	var n []string
	for _, w := range bench.Workloads {
		n = append(n, w.Name)
	}
	return strings.Join(n, ",")
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// parseRate reads tc-style rates: 100mbit, 1gbit, 500kbit, 12500000 (bit/s).
func parseRate(s string) (int64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "", "0", "none", "unshaped":
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q: want e.g. 100mbit", s)
	}
	return int64(f * float64(mult)), nil
}

// moduleRoot is the directory of the lazyfs module (go env GOMOD).
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(mod), nil
}
