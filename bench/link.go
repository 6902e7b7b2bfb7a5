package bench

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Link is the registry's side of the benchmark's network: a network
// namespace of our own, joined to the host by a veth pair with addresses in
// a private /30, and tc's token bucket filter (tbf) at Rate on both ends.
// Latency is not added here (the kernel has no sch_netem): DelayProxy does
// that on the host.
type Link struct {
	NS       string // network namespace name
	HostIf   string // host end of the veth pair
	NSIf     string // namespace end
	HostAddr string // 10.213.77.1
	NSAddr   string // 10.213.77.2: where the registry listens
	Rate     int64  // bits per second; 0 = not shaped
}

// Names and addresses of the link. They are fixed so that a run that was
// killed is cleaned up by the next one (SetupLink removes a namespace and
// interface of these names, and kills what runs in the namespace). The /30
// is checked against the host's routes first.
const (
	linkNS       = "lazybench"
	linkHostIf   = "lzb-h"
	linkNSIf     = "lzb-n"
	linkHostAddr = "10.213.77.1"
	linkNSAddr   = "10.213.77.2"
	linkPrefix   = "/30"
)

// SetupLink creates the namespace and the veth pair (not shaped yet: Shape
// does that, after the images were pushed at full speed). A namespace
// left by an earlier run is removed first.
func SetupLink(ctx context.Context) (*Link, error) {
	l := &Link{NS: linkNS, HostIf: linkHostIf, NSIf: linkNSIf, HostAddr: linkHostAddr, NSAddr: linkNSAddr}
	if err := l.removeStale(ctx); err != nil {
		return nil, err
	}
	routes, err := run(ctx, "ip", "-4", "route", "show", "to", "match", linkNSAddr)
	if err != nil {
		return nil, err
	}
	for line := range strings.Lines(routes) {
		if f := strings.Fields(line); len(f) > 0 && f[0] != "default" {
			return nil, fmt.Errorf("link: %s%s overlaps the host's route %q", linkNSAddr, linkPrefix, strings.TrimSpace(line))
		}
	}
	steps := [][]string{
		{"ip", "netns", "add", l.NS},
		{"ip", "link", "add", l.HostIf, "type", "veth", "peer", "name", l.NSIf},
		{"ip", "link", "set", l.NSIf, "netns", l.NS},
		{"ip", "addr", "add", l.HostAddr + linkPrefix, "dev", l.HostIf},
		{"ip", "link", "set", l.HostIf, "up"},
		{"ip", "netns", "exec", l.NS, "ip", "addr", "add", l.NSAddr + linkPrefix, "dev", l.NSIf},
		{"ip", "netns", "exec", l.NS, "ip", "link", "set", l.NSIf, "up"},
		{"ip", "netns", "exec", l.NS, "ip", "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			l.Close()
			return nil, fmt.Errorf("link: %w", err)
		}
	}
	return l, nil
}

// Shape puts tbf at rate (bits per second) on both ends; 0 removes it.
func (l *Link) Shape(ctx context.Context, rate int64) error {
	for _, dev := range []struct {
		prefix []string
		name   string
	}{{nil, l.HostIf}, {[]string{"ip", "netns", "exec", l.NS}, l.NSIf}} {
		del := append(append([]string{}, dev.prefix...), "tc", "qdisc", "del", "dev", dev.name, "root")
		_, _ = run(ctx, del[0], del[1:]...) // none yet is fine
		if rate <= 0 {
			continue
		}
		// The bucket holds 10 ms at the rate (at least 64 KiB, more than
		// rate/HZ); the queue holds 50 ms.
		burst := max(rate/8/100, 64<<10)
		add := append(append([]string{}, dev.prefix...), "tc", "qdisc", "add", "dev", dev.name, "root", "tbf",
			"rate", strconv.FormatInt(rate, 10)+"bit", "burst", strconv.FormatInt(burst, 10), "latency", "50ms")
		if _, err := run(ctx, add[0], add[1:]...); err != nil {
			return fmt.Errorf("link: %w", err)
		}
	}
	l.Rate = rate
	return nil
}

// Close kills what runs in the namespace and removes it (which removes the
// veth pair).
func (l *Link) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return l.removeStale(ctx)
}

// removeStale removes the namespace and host interface of this name, if
// any, after killing the processes inside the namespace: they are ours
// (the registry of a run that was killed).
func (l *Link) removeStale(ctx context.Context) error {
	if out, err := run(ctx, "ip", "netns", "pids", l.NS); err == nil {
		for f := range strings.FieldsSeq(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if _, err := run(ctx, "ip", "netns", "del", l.NS); err != nil {
			return fmt.Errorf("link: remove the namespace of an earlier run: %w", err)
		}
	}
	if _, err := run(ctx, "ip", "link", "show", l.HostIf); err == nil {
		if _, err := run(ctx, "ip", "link", "del", l.HostIf); err != nil {
			return fmt.Errorf("link: %w", err)
		}
	}
	return nil
}

// run runs a short command and returns its standard output; the error
// names the command and carries its standard error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C is ours to handle
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
