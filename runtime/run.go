package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/term"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime/cgroup"
)

// Config wires a Runtime. Root, Client, Store and Resolver are required.
type Config struct {
	Root     string // all state: containers/, volumes/, cache/
	Client   *fetch.Client
	Store    *cache.Store
	Resolver *layers.Resolver
	// StopTimeout is how long a container has to exit after SIGTERM or
	// SIGINT before it is killed; 0 = 10 s, as docker stop's default.
	StopTimeout time.Duration
	// ReadTimeout bounds how long a read of the image waits for a frame
	// before it fails with EIO; 0 = layers.DefaultReadTimeout.
	ReadTimeout time.Duration
	Logger      *slog.Logger // nil = silent
}

// Runtime creates, runs and removes containers under one root.
type Runtime struct {
	cfg Config
	log *slog.Logger
}

// New returns a Runtime for cfg.
func New(cfg Config) *Runtime {
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = layers.DefaultReadTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runtime{cfg: cfg, log: log}
}

// IO is where a container's standard streams go. A nil Stdin (or one
// without Spec.Interactive) gives the container /dev/null.
type IO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// RunOptions are the parts of a run that are not kept with the container.
type RunOptions struct {
	Name string
	Spec Spec
	IO   IO
	// Signals carries the signals meant for the container (Ctrl-C): each is
	// forwarded to its program; after SIGINT or SIGTERM it has StopTimeout
	// to exit before it is killed, and a second one kills it at once.
	Signals <-chan os.Signal
}

// StartError is a failure to start a container's program, with the exit
// code docker run gives for it (125, 126 or 127).
type StartError struct {
	Code int
	Err  error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Run creates a container from ref, runs it in the foreground and returns
// its program's exit code (128+N when signal N ended it). The image is
// mounted lazily; if a layer has no index yet, it is built first and the
// log says so. A failure to set the container up is a *StartError.
func (r *Runtime) Run(ctx context.Context, ref string, opt RunOptions) (int, error) {
	start := time.Now()
	img, err := r.ResolveImage(ctx, ref) // records the image; without the registry, the recorded one
	if err != nil {
		return ExitSetup, &StartError{ExitSetup, err}
	}
	ls, err := r.cfg.Resolver.Layers(ctx, img)
	if err != nil {
		return ExitSetup, &StartError{ExitSetup, err}
	}
	c := &Container{Name: opt.Name, Image: ref, ImageDigest: img.Digest, Spec: opt.Spec}
	if c.Spec.Net == "" {
		c.Spec.Net = NetHost
	}
	if err := r.create(c); err != nil {
		return ExitSetup, &StartError{ExitSetup, err}
	}
	lock, err := c.lock()
	if err != nil {
		return ExitSetup, &StartError{ExitSetup, err}
	}
	defer lock.Close()
	code, err := r.run(ctx, c, img, ls, opt, start)
	if err != nil {
		c.State.Error = err.Error()
	}
	c.State.Status, c.State.ExitCode, c.State.FinishedAt = StatusExited, code, time.Now().UTC()
	if serr := c.saveState(); serr != nil && err == nil {
		err = &StartError{ExitSetup, serr}
	}
	if c.Spec.Remove {
		if rerr := r.removeFiles(c, true); rerr != nil {
			r.log.Warn("cannot remove container", "id", c.ID, "err", rerr)
		}
	}
	return code, err
}

func (r *Runtime) run(ctx context.Context, c *Container, img *fetch.Image, ls []layers.Layer, opt RunOptions, start time.Time) (int, error) {
	setupErr := func(err error) (int, error) { return ExitSetup, &StartError{ExitSetup, err} }

	idxs := make([]*index.Index, len(ls))
	for i, l := range ls {
		idxs[i] = l.Index
	}
	src := layers.NewSource(r.cfg.Client, img.Repo, r.cfg.Store, r.log)
	src.SetReadTimeout(r.cfg.ReadTimeout)
	defer src.Close() // after the unmount below: no read can come in later
	m, err := fusefs.MountLayers(c.lowerDir(), idxs, src, fusefs.Config{FSName: "lazyfs:" + c.Image, Logger: r.log})
	if err != nil {
		return setupErr(err)
	}
	defer func() {
		if err := m.Unmount(); err != nil {
			r.log.Warn("cannot unmount image", "path", c.lowerDir(), "err", err)
		}
	}()
	r.log.Debug("image mounted", "image", c.Image, "path", c.lowerDir(), "dur", time.Since(start))

	if err := writeInitLayer(c.initDir()); err != nil {
		return setupErr(fmt.Errorf("init layer: %w", err))
	}
	binds, err := r.initFiles(c)
	if err != nil {
		return setupErr(err)
	}

	// The pids limit is set by the init (initConfig.PidsLimit).
	cg, err := cgroup.Create(c.ID, cgroup.Limits{Memory: c.Spec.Memory, NanoCPUs: c.Spec.NanoCPUs})
	if err != nil {
		return setupErr(err)
	}
	defer func() {
		if err := cg.Delete(context.WithoutCancel(ctx)); err != nil {
			r.log.Warn("cannot delete cgroup", "err", err)
		}
	}()

	cfg := initConfig{
		PidsMaxFile: cg.PidsMaxFile(),
		PidsLimit:   c.Spec.PidsLimit,
		Plan: rootfsPlan{Rootfs: c.rootfsDir(), Lower: []string{c.initDir(), c.lowerDir()},
			Upper: c.UpperDir(), Work: c.workDir(), Binds: binds, Volumes: r.volumesDir(),
			Net: c.Spec.Net, Tty: c.Spec.Process.TTY},
		Spec:  c.Spec,
		Image: img.Config.Config,
	}
	return r.start(ctx, c, cg, &cfg, opt)
}

// start runs the container's init and supervises it until it exits.
func (r *Runtime) start(ctx context.Context, c *Container, cg *cgroup.Group, cfg *initConfig, opt RunOptions) (int, error) {
	setupErr := func(err error) (int, error) { return ExitSetup, &StartError{ExitSetup, err} }
	configR, configW, err := os.Pipe()
	if err != nil {
		return setupErr(err)
	}
	defer configR.Close()
	defer configW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return setupErr(err)
	}
	defer statusR.Close()
	defer statusW.Close()

	self, err := os.Executable()
	if err != nil {
		return setupErr(err)
	}
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	if c.Spec.Net == NetNone {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path:       self,
		Args:       []string{InitArg0},
		Env:        []string{},
		ExtraFiles: []*os.File{configR, statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			// The container cannot outlive the process serving its files.
			Pdeathsig: syscall.SIGKILL,
		},
		WaitDelay: time.Second,
	}
	term, err := r.attach(cmd, c.Spec, opt.IO)
	if err != nil {
		return setupErr(err)
	}
	defer term.close()
	if err := cmd.Start(); err != nil {
		return setupErr(fmt.Errorf("start container init: %w", err))
	}
	term.started()
	configR.Close()
	statusW.Close()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	// The init waits for its config, so it joins the cgroup before the
	// program exists.
	if err := cg.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		<-waited
		return setupErr(err)
	}
	if err := json.NewEncoder(configW).Encode(cfg); err != nil {
		cmd.Process.Kill()
		<-waited
		return setupErr(fmt.Errorf("send container config: %w", err))
	}
	var st initStatus
	if err := json.NewDecoder(statusR).Decode(&st); err != nil {
		st = initStatus{Error: "container init exited before it started the program", Code: ExitSetup}
	}
	configW.Close()
	if st.Error != "" {
		<-waited
		return st.Code, &StartError{st.Code, errors.New(st.Error)}
	}
	c.Command, c.Anonymous = st.Args, st.Anonymous
	if err := writeJSON(filepath.Join(c.dir, "config.json"), c); err != nil {
		r.log.Warn("cannot record container config", "id", c.ID, "err", err)
	}
	c.State = State{Status: StatusRunning, Pid: cmd.Process.Pid, StartedAt: time.Now().UTC()}
	if err := c.saveState(); err != nil {
		r.log.Warn("cannot record container state", "id", c.ID, "err", err)
	}
	r.log.Debug("container started", "id", c.ShortID(), "pid", st.Pid)

	var kill <-chan time.Time
	stopping := false
	for {
		select {
		case <-waited:
			term.wait()
			return exitCode(cmd.ProcessState), nil
		case sig := <-opt.Signals:
			if sig == syscall.SIGINT || sig == syscall.SIGTERM {
				if stopping {
					r.kill(cmd, cg)
					continue
				}
				stopping = true
				kill = time.After(r.cfg.StopTimeout)
			}
			cmd.Process.Signal(sig) //nolint:errcheck // it may have just exited
		case <-kill:
			r.log.Info("container did not stop in time: killing it", "id", c.ShortID(), "timeout", r.cfg.StopTimeout)
			r.kill(cmd, cg)
		case <-ctx.Done():
			r.kill(cmd, cg)
		}
	}
}

// kill ends the container at once: its init first, which takes every
// process of its PID namespace with it, then anything left in its cgroup.
func (r *Runtime) kill(cmd *exec.Cmd, cg *cgroup.Group) {
	cmd.Process.Kill() //nolint:errcheck // it may have just exited
	if err := cg.Kill(context.Background()); err != nil {
		r.log.Warn("cannot kill the container's processes", "err", err)
	}
}

func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalsBase + int(ws.Signal())
	}
	return ps.ExitCode()
}

// console connects a container's standard streams to ours.
type console struct {
	ptmx    *os.File // the terminal's controlling side, with -t
	tty     *os.File
	restore func()
	copied  chan struct{}
}

// attach sets cmd's standard streams: the caller's own with -i and without
// -t, a new pseudo-terminal with -t whose output is copied to Stdout.
func (r *Runtime) attach(cmd *exec.Cmd, s Spec, io_ IO) (*console, error) {
	con := &console{restore: func() {}}
	if !s.Process.TTY {
		if s.Interactive && io_.Stdin != nil {
			cmd.Stdin = io_.Stdin
		}
		cmd.Stdout, cmd.Stderr = io_.Stdout, io_.Stderr
		return con, nil
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("allocate a terminal: %w", err)
	}
	con.ptmx, con.tty = ptmx, tty
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	if in, ok := io_.Stdin.(*os.File); ok && term.IsTerminal(int(in.Fd())) {
		pty.InheritSize(in, ptmx) //nolint:errcheck // a default size is fine
		if s.Interactive {
			if old, err := term.MakeRaw(int(in.Fd())); err == nil {
				con.restore = func() { term.Restore(int(in.Fd()), old) } //nolint:errcheck // best effort
			}
		}
	}
	con.copied = make(chan struct{})
	go func() {
		defer close(con.copied)
		io.Copy(io_.Stdout, ptmx) //nolint:errcheck // ends with EIO when the container's side closes
	}()
	if s.Interactive && io_.Stdin != nil {
		// Ends with the process: a read from the caller's stdin cannot be
		// interrupted.
		go io.Copy(ptmx, io_.Stdin) //nolint:errcheck
	}
	return con, nil
}

// started closes our copy of the container's side of the terminal, so the
// output copy ends when the container's last process does.
func (c *console) started() {
	if c.tty != nil {
		c.tty.Close()
	}
}

// wait lets the output copy drain after the container exited.
func (c *console) wait() {
	if c.copied == nil {
		return
	}
	select {
	case <-c.copied:
	case <-time.After(2 * time.Second):
	}
}

func (c *console) close() {
	c.restore()
	if c.ptmx != nil {
		c.ptmx.Close()
	}
	if c.tty != nil {
		c.tty.Close()
	}
}

// initFiles writes the container's /etc/hosts, /etc/hostname and
// /etc/resolv.conf, which are bind-mounted over the init layer's empty files
// as docker does, so they never land in the upper directory or a commit.
func (r *Runtime) initFiles(c *Container) ([]bindMount, error) {
	hostname := c.Spec.Process.Hostname
	if hostname == "" {
		if c.Spec.Net == NetHost {
			// docker run --net=host keeps the host's name.
			h, err := os.Hostname()
			if err != nil {
				return nil, err
			}
			hostname = h
		} else {
			hostname = c.ShortID()
		}
		c.Spec.Process.Hostname = hostname
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
	if c.Spec.Net == NetHost {
		if b, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(b)
		}
	}
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
	}{
		{"hosts", []byte(hosts)},
		{"hostname", []byte(hostname + "\n")},
		{"resolv.conf", resolv},
	}
	var binds []bindMount
	for _, f := range files {
		path := filepath.Join(c.dir, f.name)
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.name, err)
		}
		binds = append(binds, bindMount{Source: path, Target: "/etc/" + f.name, File: true})
	}
	return binds, nil
}

// Remove deletes a container that is not running, with its upper layer,
// and with volumes its anonymous volumes. With force a running one is
// killed first.
func (r *Runtime) Remove(c *Container, force, volumes bool) error {
	if c.State.Status == StatusRunning {
		if !force {
			return fmt.Errorf("%w: you cannot remove a running container %s; stop the container before attempting removal or force remove", ErrConflict, c.ShortID())
		}
		if c.State.Pid > 0 {
			syscall.Kill(c.State.Pid, syscall.SIGKILL) //nolint:errcheck // it may be gone
		}
		// Its supervisor notices the exit and unmounts; wait for its lock.
		deadline := time.Now().Add(r.cfg.StopTimeout)
		for c.locked() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return r.removeFiles(c, volumes)
}

func (r *Runtime) removeFiles(c *Container, volumes bool) error {
	// A dead supervisor may have left the image mounted.
	for _, dir := range []string{c.rootfsDir(), c.lowerDir()} {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := cgroup.Remove(context.Background(), c.ID); err != nil {
		return err
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("remove container %s: %w", c.ShortID(), err)
	}
	if volumes {
		for _, name := range c.Anonymous {
			if err := os.RemoveAll(filepath.Join(r.volumesDir(), name)); err != nil {
				return fmt.Errorf("remove volume %s: %w", name, err)
			}
		}
	}
	return nil
}

func (r *Runtime) volumesDir() string { return filepath.Join(r.cfg.Root, "volumes") }
