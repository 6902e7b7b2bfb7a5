package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	goruntime "runtime"
	"strconv"
	"syscall"

	"github.com/lazyfs/lazyfs/runtime/spec"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// InitArg0 is the argv[0] under which the lazyrun binary, re-executed into
// the container's new namespaces, acts as the container's init.
const InitArg0 = "lazyrun-init"

// initConfig is what the supervisor sends its container's init on fd 3.
type initConfig struct {
	// PidsMaxFile and PidsLimit: the init sets the limit itself, adding its
	// own threads, so the program gets what --pids-limit says, as under
	// docker, where no init of ours runs.
	PidsMaxFile string              `json:"pidsMaxFile,omitempty"`
	PidsLimit   int64               `json:"pidsLimit,omitempty"`
	Plan        rootfsPlan          `json:"plan"`
	Spec        Spec                `json:"spec"`
	Image       ocispec.ImageConfig `json:"image"`
}

// initStatus is what the init reports on fd 4: the program's PID once it
// runs, or why it could not start and the exit code docker gives for that.
type initStatus struct {
	Pid       int      `json:"pid,omitempty"`
	Args      []string `json:"args,omitempty"`      // the program and its arguments
	Anonymous []string `json:"anonymous,omitempty"` // anonymous volumes created for it
	Error     string   `json:"error,omitempty"`
	Code      int      `json:"code,omitempty"`
}

// Exit codes for a container that never ran its program, as docker run's.
const (
	ExitSetup       = 125 // the runtime failed
	ExitCannotRun   = 126 // the program exists but cannot be executed
	ExitNotFound    = 127 // the program does not exist
	exitSignalsBase = 128
)

// forwarded are the signals init passes on to the container's program (and
// the supervisor and exec's helper to theirs): the ones a program may want
// to catch, real-time signals included (systemd stops on SIGRTMIN+3).
var forwarded = func() []os.Signal {
	s := []os.Signal{
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGUSR1,
		syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGALRM, syscall.SIGTSTP,
		syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPWR, syscall.SIGVTALRM, syscall.SIGXCPU,
		syscall.SIGXFSZ, syscall.SIGSYS, syscall.SIGTRAP, syscall.SIGABRT,
	}
	for n := sigRTMin; n <= maxSignal; n++ {
		s = append(s, syscall.Signal(n))
	}
	return s
}()

// Init is the container's PID 1: the lazyrun binary re-executed as
// InitArg0 inside new namespaces. It assembles the root file system, pivots
// into it, starts the image's program, forwards signals to it, reaps every
// orphan, and returns the program's exit code (128+N if signal N ended it).
// Only main calls it, and exits with what it returns.
func Init() int {
	// Mounts, pivot_root and hostname are per process here, but keep every
	// setup call on one thread anyway, as the kernel's view of cwd is.
	goruntime.LockOSThread()
	// Few threads: they count against the container's pids limit.
	goruntime.GOMAXPROCS(1)
	status := os.NewFile(4, "status")
	defer status.Close()
	report := func(s initStatus) {
		json.NewEncoder(status).Encode(s) //nolint:errcheck // the supervisor sees EOF instead
	}
	fail := func(code int, err error) int {
		report(initStatus{Error: err.Error(), Code: code})
		return code
	}

	var cfg initConfig
	if err := json.NewDecoder(io.LimitReader(os.NewFile(3, "config"), 16<<20)).Decode(&cfg); err != nil {
		return fail(ExitSetup, fmt.Errorf("read container config: %w", err))
	}
	if cfg.Spec.Process.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Spec.Process.Hostname)); err != nil {
			return fail(ExitSetup, fmt.Errorf("set hostname: %w", err))
		}
	}
	if cfg.Plan.Net == NetNone || cfg.Plan.Net == NetPrivate {
		if err := loopbackUp(); err != nil {
			return fail(ExitSetup, err)
		}
	}
	var pidsMax *os.File
	if cfg.PidsLimit > 0 && cfg.PidsMaxFile != "" {
		// Opened now: after pivot_root the host's cgroup files are gone.
		f, err := os.OpenFile(cfg.PidsMaxFile, os.O_WRONLY, 0)
		if err != nil {
			return fail(ExitSetup, fmt.Errorf("pids limit: %w", err))
		}
		defer f.Close()
		pidsMax = f
	}
	if err := mountRoot(&cfg.Plan); err != nil {
		return fail(ExitSetup, err)
	}
	// The user, groups and mounts are read from the container's own root,
	// upper layer included.
	proc, err := spec.Resolve(context.Background(), cfg.Plan.Rootfs, cfg.Image, cfg.Spec.Process, nil)
	if err != nil {
		return fail(ExitSetup, err)
	}
	binds, anonymous, err := containerMounts(&cfg.Plan, proc)
	if err != nil {
		return fail(ExitSetup, err)
	}
	if err := finishRoot(&cfg.Plan, append(cfg.Plan.Binds, binds...)); err != nil {
		return fail(ExitSetup, err)
	}
	path, code, err := lookPath(proc.Args[0], proc.Env)
	if err != nil {
		return fail(code, err)
	}
	if err := os.MkdirAll(proc.Cwd, 0o755); err != nil {
		return fail(ExitSetup, fmt.Errorf("working directory %s: %w", proc.Cwd, err))
	}

	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, append([]os.Signal{syscall.SIGCHLD}, forwarded...)...)
	if pidsMax != nil {
		if err := setPidsLimit(pidsMax, cfg.PidsLimit); err != nil {
			return fail(ExitSetup, err)
		}
	}
	attr := &syscall.ProcAttr{
		Dir:   proc.Cwd,
		Env:   proc.Env,
		Files: []uintptr{0, 1, 2},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: proc.UID, Gid: proc.GID, Groups: proc.AdditionalGIDs},
			Setsid:     cfg.Plan.Tty,
			Setctty:    cfg.Plan.Tty,
		},
	}
	pid, err := syscall.ForkExec(path, proc.Args, attr)
	if err != nil {
		code := ExitCannotRun
		if errors.Is(err, syscall.ENOENT) {
			code = ExitNotFound
		}
		return fail(code, fmt.Errorf("exec %s: %w", proc.Args[0], err))
	}
	report(initStatus{Pid: pid, Args: proc.Args, Anonymous: anonymous})
	status.Close()

	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			syscall.Kill(pid, sig.(syscall.Signal)) //nolint:errcheck // it may have just exited
			continue
		}
		if code, done := reap(pid); done {
			return code
		}
	}
	return ExitSetup // not reached: the channel is never closed
}

// setPidsLimit writes limit plus this process's own threads to the cgroup
// file f.
func setPidsLimit(f *os.File, limit int64) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("pids limit: count our threads: %w", err)
	}
	if _, err := f.WriteString(strconv.FormatInt(limit+int64(len(tasks)), 10)); err != nil {
		return fmt.Errorf("pids limit: %w", err)
	}
	return f.Close()
}

// reap collects every exited child; done reports that pid was among them,
// with its exit code.
func reap(pid int) (code int, done bool) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || got <= 0 {
			return code, done
		}
		if got != pid {
			continue
		}
		switch {
		case ws.Exited():
			code, done = ws.ExitStatus(), true
		case ws.Signaled():
			code, done = exitSignalsBase+int(ws.Signal()), true
		}
	}
}

// loopbackUp brings up lo in a fresh network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
}
