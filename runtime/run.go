package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime/cgroup"
)

// Config wires a Runtime. Root is required; Client, Store and Resolver
// too for what reaches the registry or the cache (Create, Run, Supervise,
// Pull, Commit).
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
	// SupervisorArgs are the arguments that make this program (re-executed
	// as SupervisorArg0) call Supervise: global flags and a command; Start
	// appends the container's ID. Needed by Start and Run only.
	SupervisorArgs []string
	// LogMaxSize is the size at which a container's log is rotated; 0 =
	// DefaultLogMaxSize.
	LogMaxSize int64
	Logger     *slog.Logger // nil = silent
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
	// Pull says when Create asks the registry what ref names (docker run's
	// --pull); "" is PullMissing.
	Pull PullPolicy
	// Rootfs makes Create take ref as a directory holding the container's
	// root file system (podman run --rootfs), used as the lower layer of
	// its overlay: no image, no FUSE, no image config.
	Rootfs bool
	IO     IO
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

// Create finds the image ref names as opt.Pull says (imageToRun), makes
// sure every layer has an index (building the missing ones, which the log
// says), and records a new container from it, ready for Start. An image
// whose layers a pull unpacked needs no index nor prefetch profile: with
// kernel overlay copy-on-write its container runs on the unpacked layers.
// A failure is a *StartError with code 125.
func (r *Runtime) Create(ctx context.Context, ref string, opt RunOptions) (*Container, error) {
	c, _, _, err := r.createFor(ctx, ref, opt)
	return c, err
}

// createFor is Create, and also returns the image and its prefetch profile
// (nil when it has none, or needs none).
func (r *Runtime) createFor(ctx context.Context, ref string, opt RunOptions) (*Container, *fetch.Image, *layers.Profile, error) {
	if opt.Rootfs {
		c, err := r.createOnRootfs(ref, opt)
		return c, nil, nil, err
	}
	// The supervisor mounts the layers from their indexes: found or built
	// here, the caller sees the progress. The prefetch profile is looked
	// for beside them (both are referrers of the image), so that the
	// supervisor can start prefetching as soon as it runs. Both need only
	// the manifest: they start as soon as it is known, while the config is
	// fetched.
	var (
		wg        sync.WaitGroup
		started   bool
		layersErr error
		prof      *layers.Profile
		profAsked bool // the registry answered, with a profile or without one
		unpacked  bool // every layer is unpacked: the supervisor needs no index, no profile
	)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lookUp := func(m *fetch.Image) {
		started = true
		if opt.Spec.Cow != CowFuse && !opt.Spec.RecordPrefetch {
			if _, unpacked = r.unpackedLowers(m); unpacked {
				return
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			layersErr = r.cfg.Resolver.EnsureIndexes(lctx, m)
		}()
		if !opt.Spec.NoPrefetch && !opt.Spec.RecordPrefetch {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if opt.Pull != PullAlways {
					var recorded bool
					if prof, recorded = r.recordedProfile(ref, m); recorded {
						return
					}
				}
				var err error
				prof, err = r.findProfile(lctx, m, createProfileTimeout)
				profAsked = err == nil || errors.Is(err, layers.ErrNoProfile)
			}()
		}
	}
	img, err := r.imageToRun(ctx, ref, opt.Pull, lookUp)
	switch {
	case err != nil:
		cancel() // the config failed: no container, no need for indexes
	case !started:
		lookUp(img) // from the record: no manifest came from the registry
	}
	wg.Wait()
	if err == nil {
		err = layersErr
	}
	if err != nil {
		return nil, nil, nil, &StartError{ExitSetup, err}
	}
	if profAsked {
		// After imageToRun recorded the image.
		if err := r.recordProfile(ref, img, prof); err != nil {
			r.log.Warn("cannot record the prefetch profile", "image", ref, "err", err)
		}
	}
	switch opt.Spec.Cow {
	case "", CowOverlay, CowFuse:
	default:
		return nil, nil, nil, &StartError{ExitSetup, fmt.Errorf("copy-on-write mode %q: want %s or %s", opt.Spec.Cow, CowOverlay, CowFuse)}
	}
	c := &Container{Name: opt.Name, Image: ref, ImageDigest: img.Digest, Spec: opt.Spec,
		ProfileLooked: !opt.Spec.NoPrefetch && !opt.Spec.RecordPrefetch && !unpacked}
	if err := checkNet(&c.Spec); err != nil {
		return nil, nil, nil, &StartError{ExitSetup, err}
	}
	if err := r.create(c); err != nil {
		return nil, nil, nil, &StartError{ExitSetup, err}
	}
	if prof != nil {
		b, err := prof.Encode()
		if err == nil {
			err = os.WriteFile(c.profilePath(), b, 0o600)
		}
		if err != nil {
			r.log.Warn("cannot keep the prefetch profile: the container starts without it", "id", c.ShortID(), "err", err)
		}
	}
	return c, img, prof, nil
}

// createProfileTimeout bounds how long Create looks for a prefetch
// profile once the indexes are there: it delays the start.
const createProfileTimeout = 5 * time.Second

// findProfile returns img's prefetch profile, or nil and why not: it has
// none (layers.ErrNoProfile), or it cannot be had within timeout (logged
// at Debug: a start goes on without one).
func (r *Runtime) findProfile(ctx context.Context, img *fetch.Image, timeout time.Duration) (*layers.Profile, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p, err := r.cfg.Resolver.FindProfile(ctx, img)
	if err != nil {
		r.log.Debug("no prefetch profile", "image", img.Ref, "err", err)
		return nil, err
	}
	return p, nil
}

// createOnRootfs is Create for --rootfs: dir is the container's root.
func (r *Runtime) createOnRootfs(dir string, opt RunOptions) (*Container, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &StartError{ExitSetup, err}
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return nil, &StartError{ExitSetup, fmt.Errorf("--rootfs %s: %w", dir, err)}
	}
	switch {
	case opt.Spec.Cow == CowFuse:
		return nil, &StartError{ExitSetup, fmt.Errorf("%w: --rootfs runs on kernel overlayfs: --cow=%s needs an image", ErrConflict, CowFuse)}
	case opt.Spec.RecordPrefetch:
		return nil, &StartError{ExitSetup, fmt.Errorf("%w: --record-prefetch needs an image, not --rootfs", ErrConflict)}
	}
	c := &Container{Name: opt.Name, Rootfs: abs, Spec: opt.Spec}
	c.Spec.Cow = CowOverlay
	if err := checkNet(&c.Spec); err != nil {
		return nil, &StartError{ExitSetup, err}
	}
	if err := r.create(c); err != nil {
		return nil, &StartError{ExitSetup, err}
	}
	return c, nil
}

// checkNet gives s its network mode when it has none (NetPrivate with
// ports, else NetHost) and refuses ports without a private namespace.
func checkNet(s *Spec) error {
	switch s.Net {
	case "":
		s.Net = NetHost
		if len(s.Ports) > 0 {
			s.Net = NetPrivate
		}
	case NetHost, NetNone, NetPrivate:
	default:
		return fmt.Errorf("unknown network mode %q: want %s, %s or %s", s.Net, NetHost, NetPrivate, NetNone)
	}
	if len(s.Ports) > 0 && s.Net != NetPrivate {
		return fmt.Errorf("%w: published ports need --net=%s, not --net=%s", ErrConflict, NetPrivate, s.Net)
	}
	return nil
}

// Run creates a container from ref, runs it in the foreground and returns
// its program's exit code (128+N when signal N ended it): Create, Start
// attached to opt.IO, and Wait. The image is mounted lazily. A failure to
// set the container up is a *StartError.
func (r *Runtime) Run(ctx context.Context, ref string, opt RunOptions) (int, error) {
	c, img, prof, err := r.createFor(ctx, ref, opt)
	if err != nil {
		return ExitSetup, err
	}
	if prof != nil {
		defer r.prefetchHere(ctx, img, prof)()
	}
	st, err := r.Start(ctx, c, StartOptions{Attach: &opt.IO, Signals: opt.Signals})
	if err != nil {
		var se *StartError
		if errors.As(err, &se) {
			return se.Code, err
		}
		return ExitSetup, err
	}
	return st.Wait()
}

// prefetchHere fetches the frames of img that profile p names into the
// cache from this process, in the background, while the supervisor
// starts: Create has the profile and the indexes, and connections to the
// registry, some 140 ms before a new supervisor would have asked for the
// first frame (go run's start, 100 Mbit/s and 20 ms RTT). The supervisor
// runs its own prefetch of the same profile as ever: the two claim frames
// across processes (cache.Store.TryLockFrame), so each frame is fetched
// by one of them, and the supervisor's readers wait for a frame this
// process is fetching. It returns a function that stops the prefetch and
// waits for it.
func (r *Runtime) prefetchHere(ctx context.Context, img *fetch.Image, p *layers.Profile) (stop func()) {
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		ls, err := r.cfg.Resolver.Layers(pctx, img) // the local indexes Create made sure of
		if err != nil {
			r.log.Debug("no prefetch before the supervisor", "image", img.Ref, "err", err)
			return
		}
		idxs := make([]*index.Index, len(ls))
		for i, l := range ls {
			idxs[i] = l.Index
		}
		src := layers.NewSource(r.cfg.Client, img.Repo, r.cfg.Store, r.log)
		defer src.Close()
		st, err := src.Prefetch(pctx, idxs, p, layers.PrefetchConfig{})
		r.log.Debug("prefetched before the supervisor", "image", img.Ref, "frames", st.Frames, "present", st.Present,
			"requests", st.Requests, "len", st.Fetched, "err", err)
	}()
	return func() {
		cancel()
		<-done
	}
}

// StartOptions say how Start connects to the container.
type StartOptions struct {
	// Attach, when not nil, connects the container's standard streams to
	// these (stdin only with Spec.Interactive) until it ends, as a
	// foreground docker run does; nil starts it detached, as run -d.
	Attach *IO
	// Signals carries the signals meant for an attached container (see
	// RunOptions.Signals); Wait passes them to the supervisor.
	Signals <-chan os.Signal
}

// Started is a container's supervisor as Start left it running.
type Started struct {
	c       *Container
	cmd     *exec.Cmd
	alive   *os.File // the supervisor sees its end as "nobody attached any more"
	signals <-chan os.Signal
	copies  sync.WaitGroup // the attached streams that are not files
	restore func()         // the caller's terminal mode
}

// supervisorLogMax is the size beyond which Start moves a supervisor's log
// to supervisor.log.1 before it starts a new supervisor.
const supervisorLogMax = 1 << 20

// Start starts c's supervisor (see Supervise): the lazyrun binary again,
// in a session of its own, its standard error on c's supervisor.log. It
// returns once the program runs, or with the *StartError that kept it from
// running (after the supervisor cleaned up). The supervisor serves the
// image and outlives the caller; with opt.Attach, Wait for it.
func (r *Runtime) Start(ctx context.Context, c *Container, opt StartOptions) (*Started, error) {
	setupErr := func(err error) (*Started, error) { return nil, &StartError{ExitSetup, err} }
	if len(r.cfg.SupervisorArgs) == 0 {
		return setupErr(errors.New("runtime: Config.SupervisorArgs is not set: cannot start a supervisor"))
	}
	if c.State.Alive() {
		return setupErr(fmt.Errorf("%w: container %s is already running", ErrConflict, c.Name))
	}
	if c.locked() {
		// Its last supervisor is still tearing it down (or a commit runs).
		if err := r.waitStopped(ctx, c, stopGrace); err != nil {
			return setupErr(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return setupErr(err)
	}
	logPath := c.SupervisorLogPath()
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > supervisorLogMax {
		os.Rename(logPath, logPath+".1") //nolint:errcheck // then it grows on
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return setupErr(err)
	}
	var childEnds, ours []*os.File // ours are closed on failure
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	childEnds = append(childEnds, logf)
	fail := func(err error) (*Started, error) {
		for _, f := range ours {
			f.Close()
		}
		return setupErr(err)
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	childEnds, ours = append(childEnds, cfgR), append(ours, cfgW)
	repR, repW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	childEnds, ours = append(childEnds, repW), append(ours, repR)

	st := &Started{c: c, alive: cfgW, signals: opt.Signals, restore: func() {}}
	var scfg supervisorConfig
	files := []*os.File{cfgR, repW}
	if a := opt.Attach; a != nil {
		scfg.Attached = true
		var in *os.File
		if c.Spec.Interactive && a.Stdin != nil {
			scfg.Stdin = true
			if in, err = st.readerFile(a.Stdin, &childEnds); err != nil {
				return fail(err)
			}
			if c.Spec.Process.TTY && term.IsTerminal(int(in.Fd())) {
				if old, err := term.MakeRaw(int(in.Fd())); err == nil {
					st.restore = func() { term.Restore(int(in.Fd()), old) } //nolint:errcheck // best effort
				}
			}
		}
		out, err := st.writerFile(a.Stdout, &childEnds)
		if err != nil {
			return fail(err)
		}
		errf, err := st.writerFile(a.Stderr, &childEnds)
		if err != nil {
			return fail(err)
		}
		files = append(files, in, out, errf)
	}
	cmd := &exec.Cmd{
		Path:        self,
		Args:        append(append([]string{SupervisorArg0}, r.cfg.SupervisorArgs...), c.ID),
		Stderr:      logf,
		ExtraFiles:  files,
		Dir:         "/",
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	st.cmd = cmd
	if err := cmd.Start(); err != nil {
		st.restore()
		return fail(fmt.Errorf("start supervisor: %w", err))
	}
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil
	b, _ := json.Marshal(scfg)
	if _, err := cfgW.Write(append(b, '\n')); err != nil {
		r.log.Debug("supervisor config not sent", "err", err)
	}
	var rep initStatus
	err = json.NewDecoder(repR).Decode(&rep)
	repR.Close()
	if err != nil || rep.Error != "" {
		// It has cleaned up, or is about to: let it finish.
		cfgW.Close()
		werr := cmd.Wait()
		st.restore()
		if err != nil {
			return setupErr(fmt.Errorf("supervisor of container %s exited before it started the program (%v): %s", c.Name, werr, logTail(logPath)))
		}
		return nil, &StartError{rep.Code, errors.New(rep.Error)}
	}
	if nc, err := r.load(c.ID); err == nil {
		c.Command, c.State = nc.Command, nc.State
	}
	if opt.Attach == nil {
		cfgW.Close()
	}
	return st, nil
}

// readerFile gives a file the supervisor can read r from: r itself, or a
// pipe fed from r. That copy ends at r's end; a read of a terminal cannot
// be interrupted, so it is not waited for.
func (st *Started) readerFile(r io.Reader, childEnds *[]*os.File) (*os.File, error) {
	if f, ok := r.(*os.File); ok {
		return f, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	*childEnds = append(*childEnds, pr)
	go func() {
		io.Copy(pw, r) //nolint:errcheck // ends with the container or r
		pw.Close()
	}()
	return pr, nil
}

// writerFile gives a file the supervisor can write w with: w itself, or a
// pipe copied into w, which Wait waits for.
func (st *Started) writerFile(w io.Writer, childEnds *[]*os.File) (*os.File, error) {
	if w == nil {
		w = io.Discard
	}
	if f, ok := w.(*os.File); ok {
		return f, nil
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	*childEnds = append(*childEnds, pw)
	st.copies.Add(1)
	go func() {
		defer st.copies.Done()
		defer pr.Close()
		io.Copy(w, pr) //nolint:errcheck // ends when the supervisor and the container are gone
	}()
	return pr, nil
}

// Container is the container that was started.
func (st *Started) Container() *Container { return st.c }

// Wait waits for the supervisor to exit, passing it the signals of
// StartOptions.Signals, and returns the program's last exit code.
func (st *Started) Wait() (int, error) {
	defer st.restore()
	defer st.alive.Close()
	waited := make(chan error, 1)
	go func() { waited <- st.cmd.Wait() }()
	for {
		select {
		case sig := <-st.signals:
			st.cmd.Process.Signal(sig) //nolint:errcheck // it may have just exited
		case err := <-waited:
			st.copies.Wait()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return ExitSetup, fmt.Errorf("the supervisor of container %s was killed by %v: see %s", st.c.Name, ws.Signal(), st.c.SupervisorLogPath())
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return ExitSetup, err
			}
			return 0, nil
		}
	}
}

// logTail is the end of a log file, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return strings.TrimSpace(string(b))
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
// killed first: through its supervisor, which then tears it down; if that
// does not exit in time (it may hang in its teardown too), the supervisor
// is killed and Remove cleans up itself (mounts, cgroup, processes).
func (r *Runtime) Remove(ctx context.Context, c *Container, force, volumes bool) error {
	if c.State.Alive() && !force {
		return fmt.Errorf("%w: you cannot remove a running container %s; stop the container before attempting removal or force remove", ErrConflict, c.ShortID())
	}
	if c.State.Alive() {
		err := c.control(ctx, controlRequest{Op: opKill, Signal: int(syscall.SIGKILL)})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// It does not even answer.
			if err := r.killSupervisor(ctx, c); err != nil {
				return err
			}
		} else if err != nil {
			r.log.Debug("kill through the supervisor", "id", c.ShortID(), "err", err)
		}
	}
	if c.locked() {
		// Running, or its supervisor still tearing it down.
		limit := stopGrace
		if force {
			limit = r.cfg.StopTimeout
		}
		if err := r.waitStopped(ctx, c, limit); err != nil {
			if !force {
				return err
			}
			if err := r.killSupervisor(ctx, c); err != nil {
				return err
			}
		}
	}
	lock, err := c.lock()
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed by its supervisor (--rm)
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	return r.removeFiles(c, volumes)
}

// killSupervisor kills c's supervisor, which does not answer, and waits
// for it to die; the caller cleans up after it.
func (r *Runtime) killSupervisor(ctx context.Context, c *Container) error {
	pidfd, err := r.supervisorPidfd(c)
	if err != nil {
		return r.waitStopped(ctx, c, 5*time.Second) // gone meanwhile, or not a supervisor's lock
	}
	defer unix.Close(pidfd)
	r.log.Warn("supervisor did not exit: killing it", "id", c.ShortID(), "pid", c.State.SupervisorPid)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill the supervisor of %s: %w", c.Name, err)
	}
	return r.waitStopped(ctx, c, 5*time.Second)
}

// cleanUp undoes what a supervisor that died may have left: the image's
// mount, the container's cgroup and the processes in it, the socket.
func (r *Runtime) cleanUp(c *Container) error {
	for _, dir := range []string{c.rootfsDir(), c.lowerDir(), c.dir} {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
	}
	if err := cgroup.Remove(context.Background(), c.ID); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(c.dir, socketName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// makePrivate bind-mounts dir on itself with private propagation, so that
// what is mounted below it (the image's FUSE mount) does not propagate into
// other mount namespaces: on a host whose / is shared (systemd's default),
// every slave namespace (a service's with PrivateTmp, `ip netns exec`'s)
// would get a copy, and a copy that is busy there when we unmount keeps
// the kernel from dropping the file system. Docker makes its storage
// directory private for the same reason. cleanUp unmounts it. A namespace
// made while the image is mounted still copies it; fusefs' Unmount aborts
// the connection then.
func makePrivate(dir string) error {
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH) //nolint:errcheck // the error above says more
		return fmt.Errorf("make %s private: %w", dir, err)
	}
	return nil
}

func (r *Runtime) removeFiles(c *Container, volumes bool) error {
	if err := r.cleanUp(c); err != nil {
		return err
	}
	// Gone at once, lock file included, then deleted: nobody sees half a
	// container. A crash leaves a .removing- directory that List skips.
	gone := filepath.Join(r.containersDir(), ".removing-"+c.ID)
	if err := os.Rename(c.dir, gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove container %s: %w", c.ShortID(), err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove container %s: %w", c.ShortID(), err)
	}
	r.releaseName(c)
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
