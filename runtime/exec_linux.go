package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	goruntime "runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/lazyfs/lazyfs/runtime/cgroup"
	"github.com/lazyfs/lazyfs/runtime/spec"
)

// How exec enters a running container
//
// setns(2) into a mount namespace refuses a process whose threads share
// their file-system context (root and working directory): EINVAL. Every Go
// program has several threads before main runs, sharing it. runc solves
// this with C code (nsenter) that runs before the Go runtime starts. We
// stay in Go: the helper locks its main goroutine to its thread and
// unshares CLONE_FS there, so that thread alone has its root and working
// directory; setns then succeeds and changes them for that thread only.
// setns into a PID namespace moves the children of the thread, never the
// thread itself, so the helper forks the program from that thread (Go's
// ForkExec runs on the calling thread), and the program is a process of the
// container in every namespace. All five (mount, PID, UTS, IPC, network)
// are entered in one setns through a pidfd of the container's init, which
// fails rather than enter another process's if the init exits meanwhile
// (Linux 5.8 or later).
//
// Exec (the `lazyrun exec` command) resolves the process with runtime/spec
// against /proc/PID/root, opens the pidfd and checks that it is the init
// its supervisor started, moves itself into the container's cgroup, and
// replaces itself (execve) with the lazyrun binary as ExecArg0: the helper
// keeps the caller's PID, standard streams and terminal, so signals and
// Ctrl-C reach it as they would the program, and it passes them on. It
// waits for the program and exits with its code (128+N for signal N). The
// helper's own threads count against --pids-limit, as a run's init does.

// ExecArg0 is argv[0] of the helper that runs a process inside a running
// container (see ExecInContainer); its argv[1] is the number of the file
// descriptor that holds its execConfig.
const ExecArg0 = "lazyrun-exec"

// ExecOptions are docker exec's flags.
type ExecOptions struct {
	Args []string // the program and its arguments
	// Env are -e values, already resolved against the caller's environment
	// (spec.UserEnv); they come after the container's own.
	Env         []string
	WorkingDir  string // -w; empty: the container's
	User        string // -u; empty: the container's
	Interactive bool   // -i: the caller's stdin, else /dev/null
	TTY         bool   // -t: a terminal of the container's own devpts
}

// execConfig is what Exec hands its helper.
type execConfig struct {
	Pidfd       int      `json:"pidfd"` // the container's init, inherited
	Args        []string `json:"args"`
	Env         []string `json:"env"`
	Cwd         string   `json:"cwd"`
	UID         uint32   `json:"uid"`
	GID         uint32   `json:"gid"`
	Groups      []uint32 `json:"groups,omitempty"`
	Interactive bool     `json:"interactive,omitempty"`
	TTY         bool     `json:"tty,omitempty"`
}

// Exec runs a process in the running container c, as docker exec does, by
// replacing the calling process with the lazyrun binary as ExecArg0 (see
// above). Like syscall.Exec it does not return when it succeeds: the
// process exits with the program's exit code, or 126/127 when it cannot be
// run. An error before that is a *StartError with docker exec's code (126
// for a user or working directory that cannot be resolved), or wraps
// ErrConflict when the container is not running.
func (r *Runtime) Exec(ctx context.Context, c *Container, opt ExecOptions) error {
	if c.State.Status != StatusRunning || c.State.Pid <= 0 {
		return fmt.Errorf("%w: container %s is not running", ErrConflict, c.Name)
	}
	if len(opt.Args) == 0 {
		return &StartError{ExitCannotRun, spec.ErrNoCommand}
	}
	img, err := r.containerImage(ctx, c)
	if err != nil {
		return &StartError{ExitCannotRun, err}
	}
	ic := img.Config.Config
	ic.Volumes = nil // exec mounts nothing
	o := spec.Options{
		EntrypointSet: true,
		Args:          opt.Args,
		Env:           append(slices.Clone(c.Spec.Process.Env), opt.Env...),
		WorkingDir:    orElse(opt.WorkingDir, c.Spec.Process.WorkingDir),
		User:          orElse(opt.User, c.Spec.Process.User),
		Hostname:      c.Spec.Process.Hostname,
		TTY:           opt.TTY,
	}
	if opt.User == "" {
		o.GroupAdd = c.Spec.Process.GroupAdd
	}
	rootfs := fmt.Sprintf("/proc/%d/root", c.State.Pid)
	proc, err := spec.Resolve(ctx, rootfs, ic, o, os.Environ())
	if err != nil {
		return &StartError{ExitCannotRun, err}
	}
	pidfd, err := c.initPidfd()
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	cfg := execConfig{Pidfd: pidfd, Args: proc.Args, Env: proc.Env, Cwd: proc.Cwd, UID: proc.UID, GID: proc.GID,
		Groups: proc.AdditionalGIDs, Interactive: opt.Interactive, TTY: opt.TTY}
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	// No close-on-exec: the helper reads it.
	fd, err := unix.MemfdCreate("lazyrun-exec-config", 0)
	if err != nil {
		return fmt.Errorf("exec config: %w", err)
	}
	f := os.NewFile(uintptr(fd), "exec-config")
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("exec config: %w", err)
	}
	m, err := cgroup.New(cgroup.Config{Logger: r.log})
	if err != nil {
		return err
	}
	g, err := m.Open(c.ID)
	if err != nil {
		return fmt.Errorf("cgroup of container %s: %w", c.Name, err)
	}
	if err := g.Add(os.Getpid()); err != nil {
		return err
	}
	// The helper inherits it as it does the config.
	if _, err := unix.FcntlInt(uintptr(pidfd), unix.F_SETFD, 0); err != nil {
		return err
	}
	// Few threads: they count against the container's pids limit.
	env := append(os.Environ(), "GOMAXPROCS=1")
	err = syscall.Exec(self, []string{ExecArg0, strconv.Itoa(fd)}, env)
	return fmt.Errorf("exec %s: %w", self, err)
}

// initPidfd opens a pidfd of c's init and makes sure it is that: a
// lazyrun-init whose parent is c's supervisor, alive after the check (so
// the PID was not reused in between).
func (c *Container) initPidfd() (int, error) {
	notRunning := fmt.Errorf("%w: container %s is not running", ErrConflict, c.Name)
	pid := c.State.Pid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, notRunning
	}
	ok := func() bool {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmdline, []byte(InitArg0+"\x00")) {
			return false
		}
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil || !bytes.Contains(status, fmt.Appendf(nil, "\nPPid:\t%d\n", c.State.SupervisorPid)) {
			return false
		}
		return unix.PidfdSendSignal(pidfd, 0, nil, 0) == nil
	}()
	if !ok {
		unix.Close(pidfd)
		return -1, notRunning
	}
	return pidfd, nil
}

// foreground reports whether fd is a terminal whose foreground process
// group is ours.
func foreground(fd int) bool {
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

func orElse(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// ExecInContainer is the body of the helper Exec becomes (argv[0] ExecArg0):
// it enters the container's namespaces, runs the program there, passes
// signals on, and returns the program's exit code for main to exit with.
func ExecInContainer() int {
	// Every call below that depends on the root or the namespaces runs on
	// this thread; it is never handed back.
	goruntime.LockOSThread()
	fail := func(code int, err error) int {
		fmt.Fprintf(os.Stderr, "lazyrun exec: %v\n", err)
		return code
	}
	if len(os.Args) != 2 {
		return fail(ExitSetup, errors.New("usage: "+ExecArg0+" CONFIG-FD"))
	}
	fd, err := strconv.Atoi(os.Args[1])
	if err != nil {
		return fail(ExitSetup, err)
	}
	cf := os.NewFile(uintptr(fd), "exec-config")
	unix.CloseOnExec(fd)
	var cfg execConfig
	err = json.NewDecoder(io.NewSectionReader(cf, 0, 16<<20)).Decode(&cfg)
	cf.Close()
	if err != nil {
		return fail(ExitSetup, fmt.Errorf("read exec config: %w", err))
	}

	pidfd := cfg.Pidfd
	unix.CloseOnExec(pidfd)
	defer unix.Close(pidfd)
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fail(ExitSetup, fmt.Errorf("unshare the file-system context: %w", err))
	}
	if err := unix.Setns(pidfd, unix.CLONE_NEWNS|unix.CLONE_NEWPID|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|unix.CLONE_NEWNET); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fail(ExitSetup, errors.New("the container stopped"))
		}
		return fail(ExitSetup, fmt.Errorf("enter the container's namespaces: %w", err))
	}
	// From here on this thread sees the container's root.
	path, code, err := lookPath(cfg.Args[0], cfg.Env)
	if err != nil {
		return fail(code, err)
	}
	if fi, err := os.Stat(cfg.Cwd); err != nil || !fi.IsDir() {
		if err == nil {
			err = syscall.ENOTDIR
		}
		return fail(ExitCannotRun, fmt.Errorf("chdir to cwd (%q): %w", cfg.Cwd, err))
	}

	files := []uintptr{0, 1, 2}
	var ptmx, tty *os.File
	var copied chan struct{}
	restore := func() {}
	defer func() {
		restore()
		if tty != nil {
			tty.Close()
		}
	}()
	if cfg.TTY {
		// Opened in the container's devpts, so that tty(1) names it.
		ptmx, tty, err = pty.Open()
		if err != nil {
			return fail(ExitSetup, fmt.Errorf("allocate a terminal: %w", err))
		}
		defer ptmx.Close()
		if term.IsTerminal(0) {
			pty.InheritSize(os.Stdin, ptmx) //nolint:errcheck // a default size is fine
			if cfg.Interactive {
				if old, err := term.MakeRaw(0); err == nil {
					restore = func() { term.Restore(0, old) } //nolint:errcheck // best effort
				}
			}
		}
		files = []uintptr{tty.Fd(), tty.Fd(), tty.Fd()}
	} else if !cfg.Interactive {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fail(ExitSetup, err)
		}
		defer null.Close()
		files[0] = null.Fd()
	}

	// Without -t the program shares our process group: on the terminal
	// whose foreground we are, it gets Ctrl-C and Ctrl-\ as we do, and
	// passing them on would deliver them twice; Ctrl-Z stops us both, so
	// the shell's job control works.
	fromTerminal := !cfg.TTY && foreground(0)
	sigs := make(chan os.Signal, 32)
	notify := []os.Signal{syscall.SIGCHLD}
	for _, sig := range forwarded {
		if fromTerminal && (sig == syscall.SIGTSTP || sig == syscall.SIGTTIN || sig == syscall.SIGTTOU) {
			continue
		}
		notify = append(notify, sig)
	}
	signal.Notify(sigs, notify...)
	pid, err := syscall.ForkExec(path, cfg.Args, &syscall.ProcAttr{
		Dir:   cfg.Cwd,
		Env:   cfg.Env,
		Files: files,
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: cfg.UID, Gid: cfg.GID, Groups: cfg.Groups},
			Setsid:     cfg.TTY,
			Setctty:    cfg.TTY,
		},
	})
	if err != nil {
		code := ExitCannotRun
		if errors.Is(err, syscall.ENOENT) {
			code = ExitNotFound
		}
		return fail(code, fmt.Errorf("exec %s: %w", cfg.Args[0], err))
	}
	if ptmx != nil {
		tty.Close() // the program's side: its end ends our copy
		tty = nil
		copied = make(chan struct{})
		go func() {
			defer close(copied)
			io.Copy(os.Stdout, ptmx) //nolint:errcheck // ends with EIO when the program's side closes
		}()
		if cfg.Interactive {
			// Ends with the process: a read of our stdin cannot be interrupted.
			go io.Copy(ptmx, os.Stdin) //nolint:errcheck
		}
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
			if code, done := reap(pid); done {
				if copied != nil {
					select {
					case <-copied:
					case <-time.After(2 * time.Second):
					}
				}
				return code
			}
		case syscall.SIGWINCH:
			if ptmx != nil {
				pty.InheritSize(os.Stdin, ptmx) //nolint:errcheck // a default size is fine
				continue
			}
			if !fromTerminal {
				syscall.Kill(pid, syscall.SIGWINCH) //nolint:errcheck // it may have just exited
			}
		case syscall.SIGINT, syscall.SIGQUIT:
			if !fromTerminal {
				syscall.Kill(pid, sig.(syscall.Signal)) //nolint:errcheck // it may have just exited
			}
		default:
			syscall.Kill(pid, sig.(syscall.Signal)) //nolint:errcheck // it may have just exited
		}
	}
	return ExitSetup // not reached: the channel is never closed
}
