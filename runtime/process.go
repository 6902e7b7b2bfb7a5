package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

// Network modes.
const (
	NetHost = "host" // the host's network namespace (the default without -p)
	NetNone = "none" // a namespace of its own with only loopback
	// NetPrivate is a namespace of its own with only loopback, into which
	// the supervisor carries the published ports (Spec.Ports); the default
	// with -p.
	NetPrivate = "private"
)

// Spec is what a container was asked to run with: docker run's flags, kept
// in config.json so a container can be inspected and started again.
type Spec struct {
	// Process decides the program, its environment, user, working
	// directory and mounts. Its Env is already resolved against the
	// caller's environment (spec.UserEnv) and its EnvFiles read, so a
	// restart sees the same values.
	Process spec.Options `json:"process"`
	Net     string       `json:"net,omitempty"`
	// Ports are -p: host ports the supervisor forwards to the container's
	// loopback. They need Net to be NetPrivate.
	Ports       []spec.PortBinding `json:"ports,omitempty"`
	Interactive bool               `json:"interactive,omitempty"`
	Memory      int64              `json:"memory,omitempty"`    // bytes; 0 = unlimited
	NanoCPUs    int64              `json:"nanoCpus,omitempty"`  // billionths of a CPU; 0 = unlimited
	PidsLimit   int64              `json:"pidsLimit,omitempty"` // 0 = unlimited
	Remove      bool               `json:"remove,omitempty"`    // --rm
	// Restart is --restart: what the supervisor does when the program
	// exits. The zero value is "no".
	Restart RestartPolicy `json:"restart,omitzero"`
	// StopSignal is --stop-signal, as a name or number; empty means the
	// image's STOPSIGNAL, and then SIGTERM.
	StopSignal string `json:"stopSignal,omitempty"`
	// StopTimeout is --stop-timeout in seconds: how long stop waits before
	// it kills; nil means Config.StopTimeout, negative waits for ever.
	StopTimeout *int `json:"stopTimeout,omitempty"`
	// Cow is --cow: who keeps the container's changes, CowOverlay ("" too)
	// or CowFuse.
	Cow string `json:"cow,omitempty"`
	// RecordPrefetch is --record-prefetch: note what the container reads
	// of its image until its program exits, and push that as the image's
	// prefetch profile. A recording run does not prefetch.
	RecordPrefetch bool `json:"recordPrefetch,omitempty"`
	// NoPrefetch is --prefetch=false: do not look for a profile.
	NoPrefetch bool `json:"noPrefetch,omitempty"`
	// Background is --background: how the supervisor fetches the rest of
	// the image after the start (layers.ParseBackgroundMode: off, idle,
	// full; "" is off, as for containers made before the flag).
	Background string `json:"background,omitempty"`
}

// Copy-on-write modes. Both keep the upper directory in overlayfs' format.
const (
	// CowOverlay is a kernel overlay mount over the read-only lazy mount:
	// writes never pass through FUSE.
	CowOverlay = "overlay"
	// CowFuse is lazyfs' own copy-on-write in the one FUSE mount: no
	// overlayfs needed, every change passes through the supervisor.
	CowFuse = "fuse"
)

// Restart policies, as docker's --restart names them.
const (
	RestartNo            = "no"
	RestartOnFailure     = "on-failure"
	RestartAlways        = "always"
	RestartUnlessStopped = "unless-stopped" // the same as always: lazyrun has no daemon to restart
)

// RestartPolicy is docker's HostConfig.RestartPolicy.
type RestartPolicy struct {
	Name string `json:"name,omitempty"` // RestartNo ("" too), RestartOnFailure, RestartAlways or RestartUnlessStopped
	// MaximumRetryCount bounds the restarts of on-failure; 0 = no bound.
	MaximumRetryCount int `json:"maximumRetryCount,omitempty"`
}

// ParseRestartPolicy parses --restart: no, on-failure[:N], always or
// unless-stopped.
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	name, count, hasCount := strings.Cut(s, ":")
	p := RestartPolicy{Name: name}
	switch name {
	case "", RestartNo, RestartAlways, RestartUnlessStopped:
		if hasCount {
			return RestartPolicy{}, fmt.Errorf("invalid restart policy %q: maximum retry count can only be used with 'on-failure'", s)
		}
	case RestartOnFailure:
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || n < 0 {
				return RestartPolicy{}, fmt.Errorf("invalid restart policy %q: maximum retry count must be a number of at least 0", s)
			}
			p.MaximumRetryCount = n
		}
	default:
		return RestartPolicy{}, fmt.Errorf("invalid restart policy %q: want no, on-failure[:max-retries], always or unless-stopped", s)
	}
	return p, nil
}

// restarts reports whether a program that exited with code, after
// restarted restarts, is started again.
func (p RestartPolicy) restarts(code, restarted int) bool {
	switch p.Name {
	case RestartAlways, RestartUnlessStopped:
		return true
	case RestartOnFailure:
		return code != 0 && (p.MaximumRetryCount == 0 || restarted < p.MaximumRetryCount)
	}
	return false
}

// ParseSignal parses a signal as docker kill -s and --stop-signal take it:
// a number, or a name with or without SIG in any case, RTMIN+N and RTMAX-N
// included.
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > maxSignal {
			return 0, fmt.Errorf("invalid signal: %s", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.TrimPrefix(strings.ToUpper(s), "SIG")
	if sig := unix.SignalNum("SIG" + name); sig != 0 {
		return sig, nil
	}
	for _, rt := range []struct {
		prefix, sign string
		base, dir    int
	}{{"RTMIN", "+", sigRTMin, 1}, {"RTMAX", "-", maxSignal, -1}} {
		rest, ok := strings.CutPrefix(name, rt.prefix)
		if !ok {
			continue
		}
		n := 0
		if rest != "" {
			num, ok := strings.CutPrefix(rest, rt.sign)
			var err error
			if n, err = strconv.Atoi(num); !ok || err != nil || n < 0 {
				return 0, fmt.Errorf("invalid signal: %s", s)
			}
		}
		if sig := rt.base + rt.dir*n; sig >= sigRTMin && sig <= maxSignal {
			return syscall.Signal(sig), nil
		}
	}
	return 0, fmt.Errorf("invalid signal: %s", s)
}

// The real-time signals as the C library numbers them (it keeps 32 and 33
// for itself), as docker does.
const (
	sigRTMin  = 34
	maxSignal = 64
)

// lookPath finds a program as the container's shell would, in the PATH of
// the container's environment, and returns the exit code docker gives when
// it cannot: 127 when it does not exist, 126 when it cannot be executed.
func lookPath(name string, env []string) (string, int, error) {
	check := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return fmt.Errorf("is a directory: %w", syscall.EACCES)
		}
		if fi.Mode()&0o111 == 0 {
			return fmt.Errorf("permission denied: %w", syscall.EACCES)
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", ExitNotFound, fmt.Errorf("exec: %q: no such file or directory", name)
			}
			return "", ExitCannotRun, fmt.Errorf("exec: %q: %w", name, err)
		}
		return name, 0, nil
	}
	path := spec.DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := check(p)
		if err == nil {
			return p, 0, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && denied == nil {
			denied = fmt.Errorf("exec: %q: %w", p, err)
		}
	}
	if denied != nil {
		return "", ExitCannotRun, denied
	}
	return "", ExitNotFound, fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}
