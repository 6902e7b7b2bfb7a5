package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Machine describes where the benchmark ran.
type Machine struct {
	Host, Kernel, CPU string
	CPUs              int
	MemoryKB          int64
	Go                string
	Commit            string // git commit of the work tree, "+dirty" when it has changes
	Registry          string // docker-registry's version
	Podman            string
	Cgroups           string
	// Load is /proc/loadavg at the start and at the end: the machine may
	// be shared, and other work skews the timings.
	LoadStart, LoadEnd string
}

func machineInfo(ctx context.Context, binDir string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	m.Host, _ = os.Hostname()
	m.Kernel = firstLine(output(ctx, "uname", "-srvm"))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		fmt.Sscanf(string(b), "MemTotal: %d kB", &m.MemoryKB)
	}
	m.Commit = firstLine(output(ctx, "git", "-C", filepath.Dir(binDir), "rev-parse", "HEAD"))
	if wd, err := os.Getwd(); err == nil {
		if c := firstLine(output(ctx, "git", "-C", wd, "rev-parse", "HEAD")); c != "" {
			m.Commit = c
			if strings.TrimSpace(output(ctx, "git", "-C", wd, "status", "--porcelain", "--untracked-files=no")) != "" {
				m.Commit += "+dirty"
			}
		}
	}
	m.Registry = firstLine(output(ctx, RegistryBinary, "--version"))
	m.LoadStart = loadavg()
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		m.Cgroups = "v2"
	} else {
		m.Cgroups = "v1 (or hybrid)"
	}
	return m
}

func output(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// machineText is machine.txt: the machine, the settings and the images.
func (res *Results) machineText() string {
	var b strings.Builder
	m, s := res.Machine, res.Settings
	fmt.Fprintf(&b, "started      %s\nfinished     %s\n", res.Started.Format(time.RFC3339), res.Finished.Format(time.RFC3339))
	fmt.Fprintf(&b, "host         %s\nkernel       %s\ncpu          %s × %d\nmemory       %.1f GiB\ncgroups      %s\n",
		m.Host, m.Kernel, m.CPU, m.CPUs, float64(m.MemoryKB)/(1<<20), m.Cgroups)
	fmt.Fprintf(&b, "go           %s\ncommit       %s\nregistry     %s\npodman       %s\n", m.Go, m.Commit, m.Registry, orNone(m.Podman))
	fmt.Fprintf(&b, "loadavg      %s (start), %s (end)\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "\nlink         %s on a veth pair into a network namespace (tc tbf on both ends), RTT %v added by a delaying TCP proxy on 127.0.0.1\n",
		rateString(s.Rate), s.RTT)
	fmt.Fprintf(&b, "measured     GET /v2/ on a new connection: %v (≈ 2×RTT); 50 MB blob GET: %.1f Mbit/s\n", s.MeasuredGet, s.MeasuredMbps)
	if s.Span > 0 {
		fmt.Fprintf(&b, "span         %d bytes between index checkpoints (lazyfs index --span)\n", s.Span)
	} else {
		fmt.Fprintf(&b, "span         lazyfs's default between index checkpoints\n")
	}
	switch {
	case s.BlockSpan > 0:
		fmt.Fprintf(&b, "block span   %d bytes between frames without a window (lazyfs index --block-span)\n", s.BlockSpan)
	case s.BlockSpan < 0:
		fmt.Fprintf(&b, "block span   none: every frame keeps its window\n")
	}
	fmt.Fprintf(&b, "registry at  %s (the proxy)\nruns         %d per measurement (medians reported)\nmodes        %s\n", s.Registry, s.Runs, strings.Join(s.Modes, ", "))
	fmt.Fprintf(&b, "scale        %v\nstorage      %s\n", s.Scale, map[bool]string{true: "a fresh ext4 on a loop device per cold run", false: "the work directory's file system"}[s.LoopFS])
	if s.FS {
		b.WriteString("file system  section run: lazyfs root, native upper and test cache on the work directory's file system (no loop devices)\n")
	}
	b.WriteString("\nimages (Debian bookworm minbase + packages [+ added files]; layer 0 is the same blob in all):\n")
	for _, im := range res.Images {
		fmt.Fprintf(&b, "  %-8s %s %s packages=%v files=%d content=%s\n", im.Name, im.Ref, im.Digest, im.Packages, im.Files, mb(im.Content))
		if len(im.Env) > 0 || len(im.AddedFiles) > 0 {
			fmt.Fprintf(&b, "           env %v; added in a layer of their own: %v\n", im.Env, im.AddedFiles)
		}
		for _, l := range im.Layers {
			fmt.Fprintf(&b, "           layer %s %s\n", l.Digest, mb(l.Size))
		}
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
