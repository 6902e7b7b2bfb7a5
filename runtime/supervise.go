package runtime

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime/cgroup"
)

// SupervisorArg0 is argv[0] of a container's supervisor: the lazyrun binary
// re-executed by Start (with Config.SupervisorArgs and the container's ID),
// which calls Supervise.
const SupervisorArg0 = "lazyrun-supervisor"

// The descriptors a supervisor gets from Start.
const (
	// supConfigFd carries a supervisorConfig line, and then stays open
	// while the starting process waits: its end means that nobody is
	// attached any more.
	supConfigFd = 3
	supReportFd = 4 // the supervisor writes one initStatus once the program runs or cannot
	supStdinFd  = 5 // the attached streams, as supervisorConfig says
	supStdoutFd = 6
	supStderrFd = 7
)

// supervisorConfig is what Start tells a new supervisor.
type supervisorConfig struct {
	Attached bool `json:"attached,omitempty"` // stdout and stderr on supStdoutFd and supStderrFd
	Stdin    bool `json:"stdin,omitempty"`    // and stdin on supStdinFd
}

// Restart back-off, as docker's: 100 ms doubling up to a minute, back to
// 100 ms after a run of at least 10 s.
const (
	restartBackoffMin = 100 * time.Millisecond
	restartBackoffMax = time.Minute
	restartResetAfter = 10 * time.Second
)

// Supervise is the body of a container's supervisor process (see
// SupervisorArg0): for the container id it holds the lock, mounts the
// image and serves it, makes the cgroup, runs the container's init and
// keeps its output in the log, answers stop and kill on the control
// socket, restarts the program as --restart says, and at the end
// unmounts, deletes the cgroup, records the exit (and with --rm removes
// the container). It reports on its descriptor 4 once the program runs
// or could not start, and returns the program's last exit code (125 when
// the container could not be set up), for main to exit with. Signals sent
// to the supervisor go to the program; SIGINT and SIGTERM also stop it, by
// force after the stop timeout or at the second one.
func (r *Runtime) Supervise(id string) int {
	report := os.NewFile(supReportFd, "report")
	reported := false
	sendReport := func(st initStatus) {
		if !reported {
			reported = true
			json.NewEncoder(report).Encode(st) //nolint:errcheck // the starter sees EOF instead
			report.Close()
		}
	}
	defer sendReport(initStatus{Error: "the supervisor exited before it started the program", Code: ExitSetup})
	fail := func(err error) int {
		lvl := slog.LevelError
		if se := (*StartError)(nil); errors.As(err, &se) {
			lvl = slog.LevelInfo // the caller's doing (a port in use): the starter reports it
		}
		r.log.Log(context.Background(), lvl, "cannot start the container", "id", id, "err", err)
		sendReport(initStatus{Error: err.Error(), Code: ExitSetup})
		return ExitSetup
	}

	cfgFile := os.NewFile(supConfigFd, "config")
	br := bufio.NewReader(cfgFile)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fail(fmt.Errorf("read supervisor config: %w", err))
	}
	var cfg supervisorConfig
	if err := json.Unmarshal(line, &cfg); err != nil {
		return fail(fmt.Errorf("read supervisor config: %w", err))
	}
	gone := make(chan struct{})
	go func() { // ends when the starter closes its end, at the latest when it exits
		defer close(gone)
		io.Copy(io.Discard, br) //nolint:errcheck // any end will do
		cfgFile.Close()
	}()

	c, err := r.load(id)
	if err != nil {
		return fail(err)
	}
	lock, err := c.lock()
	if err != nil {
		return fail(err)
	}
	defer lock.Close()
	// Ours from now on: stop, rm -f and start wait for this process. A
	// record a dead supervisor left running is not.
	c.State.SupervisorPid, c.State.Pid = os.Getpid(), 0
	if c.State.Alive() {
		c.State.Status = StatusExited
	}
	if err := c.saveState(); err != nil {
		return fail(err)
	}

	s := &supervisor{r: r, c: c, log: r.log, sigs: make(chan os.Signal, 32)}
	if cfg.Attached {
		out := os.NewFile(supStdoutFd, "stdout")
		s.att = &attachment{
			stdout: gatedWriter{out, gone},
			stderr: gatedWriter{os.NewFile(supStderrFd, "stderr"), gone},
			out:    out,
		}
		if cfg.Stdin {
			s.att.stdin = os.NewFile(supStdinFd, "stdin")
		}
		// Our own messages go to the attached terminal too.
		s.log = slog.New(slog.NewMultiHandler(r.log.Handler(), slog.NewTextHandler(s.att.stderr, &slog.HandlerOptions{Level: minLevel(r.log)})))
	}
	signal.Notify(s.sigs, forwarded...)
	defer signal.Stop(s.sigs)

	code, err := s.run(sendReport)
	if err != nil {
		if !c.Spec.Remove {
			c.State = State{Status: StatusExited, ExitCode: ExitSetup, Error: err.Error(), FinishedAt: time.Now().UTC()}
			s.save()
		}
		return fail(err)
	}
	return code
}

// slowStep is how long a step of stopping or tearing down may take
// before the supervisor says which one it waits for.
const slowStep = 10 * time.Second

// watch logs a warning naming step if done is not called within
// slowStep: a hang then says where it is.
func (s *supervisor) watch(step string) (done func()) {
	t := time.AfterFunc(slowStep, func() {
		s.log.Warn("supervisor step is slow", "id", s.c.ShortID(), "op", step, "dur", slowStep)
	})
	return func() { t.Stop() }
}

// minLevel is the lowest level l logs.
func minLevel(l *slog.Logger) slog.Level {
	for _, lv := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if l.Enabled(context.Background(), lv) {
			return lv
		}
	}
	return slog.LevelError
}

// attachment is the starting process's streams, when it attached.
type attachment struct {
	stdin          *os.File // nil without -i
	stdout, stderr io.Writer
	out            *os.File // stdout itself, for its terminal size
}

// gatedWriter writes to w until gone is closed: once the attached client
// went away, its terminal is no longer the container's.
type gatedWriter struct {
	w    io.Writer
	gone <-chan struct{}
}

func (g gatedWriter) Write(p []byte) (int, error) {
	select {
	case <-g.gone:
		return 0, io.ErrClosedPipe
	default:
		return g.w.Write(p)
	}
}

// supervisor is one container's supervision; its fields are the loop's.
type supervisor struct {
	r    *Runtime
	c    *Container
	log  *slog.Logger
	att  *attachment // nil when detached
	sigs chan os.Signal

	cg          *cgroup.Group
	init        initConfig
	logs        *logWriter
	ctl         *controlServer
	ports       *portProxy       // nil without published ports
	rec         *layers.Recorder // with --record-prefetch
	input       *terminalInput   // with -it and an attached stdin
	stopSignal  syscall.Signal
	stopTimeout time.Duration // negative: never kill

	noRestart bool // stop, or a signal that ends it for good, came
}

// run sets the container up, runs it until it ends for good and tears it
// down. An error is a failure before the first start was reported.
func (s *supervisor) run(report func(initStatus)) (code int, err error) {
	r, c := s.r, s.c
	ctx := context.Background()
	start := time.Now()
	c.State.SupervisorPid = os.Getpid()
	if c.Spec.Remove {
		defer func() {
			if err := r.removeFiles(c, true); err != nil {
				s.log.Warn("cannot remove container", "id", c.ID, "err", err)
			}
		}()
	}
	// A pulled image whose layers are unpacked runs on them: no FUSE, no
	// index, no frame source, no registry.
	unpackedImg, unpackedDirs := r.unpackedImage(c)
	if n, err := ParseImageName(c.Image); err == nil && c.Rootfs == "" && unpackedImg == nil && r.cfg.Client != nil {
		// The handshake with the registry, first thing, while the rest is
		// set up: the first read then costs one round trip.
		hctx, cancel := context.WithTimeout(ctx, profileTimeout)
		defer cancel()
		go func() {
			if err := r.cfg.Client.Prepare(hctx, n.Repository); err != nil {
				s.log.Debug("registry handshake failed", "repo", n.Repository, "err", err)
			}
		}()
	}
	// What a supervisor that died may have left.
	if err := r.cleanUp(c); err != nil {
		return 0, err
	}
	if len(c.Spec.Ports) > 0 {
		// Bound first: a port in use fails the start before anything else
		// is done, and ports stay bound across restarts.
		if s.ports, err = listenPorts(c.Spec.Ports, s.log); err != nil {
			return 0, &StartError{ExitSetup, err}
		}
		defer func() {
			defer s.watch("close published ports")()
			s.ports.Close()
		}()
		s.log.Debug("ports published", "id", c.ShortID(), "ports", s.ports.Ports())
	}

	if err := makePrivate(c.dir); err != nil {
		return 0, err
	}
	defer func() { // after the unmount below
		if err := unix.Unmount(c.dir, unix.MNT_DETACH); err != nil {
			s.log.Warn("cannot unmount the container's directory", "path", c.dir, "err", err)
		}
	}()
	img := &fetch.Image{} // --rootfs: no image, no image config
	lower := []string{c.initDir(), c.Rootfs}
	c.Lower = ""
	switch {
	case unpackedImg != nil:
		if err := writeInitLayer(c.initDir()); err != nil {
			return 0, fmt.Errorf("init layer: %w", err)
		}
		img, lower, c.Lower = unpackedImg, append([]string{c.initDir()}, unpackedDirs...), LowerUnpacked
		// In supervisor.log only: an attached terminal is the program's.
		r.log.Info("image on its unpacked layers: kernel overlay, no FUSE", "id", c.ShortID(), "image", c.Image,
			"layers", len(unpackedDirs), "path", filepath.Dir(unpackedDirs[0]))
	case c.Rootfs == "":
		c.Lower = LowerLazy
		var done func()
		if img, lower, done, err = s.mountImage(ctx, start); err != nil {
			return 0, err
		}
		defer done()
	default:
		if err := writeInitLayer(c.initDir()); err != nil {
			return 0, fmt.Errorf("init layer: %w", err)
		}
	}

	binds, err := r.initFiles(c)
	if err != nil {
		return 0, err
	}
	// The pids limit is set by the init (initConfig.PidsLimit).
	if s.cg, err = cgroup.Create(c.ID, cgroup.Limits{Memory: c.Spec.Memory, NanoCPUs: c.Spec.NanoCPUs}); err != nil {
		return 0, err
	}
	defer func() {
		defer s.watch("delete cgroup")()
		// An exec'd process may be left in it.
		if err := s.cg.Kill(ctx); err != nil {
			s.log.Warn("cannot kill the container's processes", "err", err)
		}
		if err := s.cg.Delete(ctx); err != nil {
			s.log.Warn("cannot delete cgroup", "err", err)
		}
	}()
	if s.logs, err = openLog(c.LogPath(), r.cfg.LogMaxSize); err != nil {
		return 0, fmt.Errorf("container log: %w", err)
	}
	defer s.logs.Close()
	if s.stopSignal, err = r.stopSignal(c, img); err != nil {
		return 0, err
	}
	s.stopTimeout = r.stopTimeout(c)
	s.init = initConfig{
		PidsMaxFile: s.cg.PidsMaxFile(),
		PidsLimit:   c.Spec.PidsLimit,
		Plan: rootfsPlan{Rootfs: c.rootfsDir(), Lower: lower, Cow: c.Spec.Cow,
			Upper: c.UpperDir(), Work: c.workDir(), Binds: binds, Volumes: r.volumesDir(),
			Net: c.Spec.Net, Tty: c.Spec.Process.TTY},
		Spec:  c.Spec,
		Image: img.Config.Config,
	}
	if c.Spec.Process.TTY && c.Spec.Interactive && s.att != nil && s.att.stdin != nil {
		s.input = newTerminalInput(s.att.stdin)
	}
	if s.ctl, err = listenControl(c.dir); err != nil {
		return 0, err
	}
	defer s.ctl.Close() // first: nobody asks for anything while it is torn down
	code = s.loop(report)
	if s.rec != nil {
		s.pushProfile(ctx, img, s.rec)
	}
	return code, nil
}

// mountImage mounts the image of s's container lazily under its lower
// directory, with its frame source and prefetch (or recorder, s.rec), and
// returns the image, the overlay's lower directories and what undoes it
// all, in order. On error what was done is undone.
func (s *supervisor) mountImage(ctx context.Context, start time.Time) (img *fetch.Image, lower []string, done func(), err error) {
	r, c := s.r, s.c
	var undo []func()
	done = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			done()
		}
	}()
	img, err = r.containerImage(ctx, c)
	if err != nil {
		return nil, nil, nil, err
	}
	ls, err := r.cfg.Resolver.Layers(ctx, img)
	if err != nil {
		return nil, nil, nil, err
	}
	idxs := make([]*index.Index, len(ls))
	for i, l := range ls {
		idxs[i] = l.Index
	}
	imageIdxs := idxs[:len(ls):len(ls)] // without the init layer appended below
	mcfg := fusefs.Config{FSName: "lazyfs:" + c.Image, Logger: s.log}
	lower = []string{c.initDir(), c.lowerDir()}
	if c.Spec.Cow == CowFuse {
		// One writable mount is the container's root: the init layer is
		// its top lower layer, made in memory.
		initLayer, err := initLayerIndex()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("init layer: %w", err)
		}
		idxs = append(idxs, initLayer)
		mcfg.UpperDir, mcfg.WorkDir, mcfg.Setuid = c.UpperDir(), c.workDir(), true
		lower = []string{c.lowerDir()}
	} else if err := writeInitLayer(c.initDir()); err != nil {
		return nil, nil, nil, fmt.Errorf("init layer: %w", err)
	}
	src := layers.NewSource(r.cfg.Client, img.Repo, r.cfg.Store, s.log)
	src.SetReadTimeout(r.cfg.ReadTimeout)
	undo = append(undo, func() { // after the unmount below: no read can come in later
		defer s.watch("close the frame source")()
		src.Close()
	})
	switch {
	case c.Spec.RecordPrefetch:
		s.rec = layers.NewRecorder()
		src.Record(s.rec)
	case !c.Spec.NoPrefetch:
		// Beside the mount and the start: readers never wait for it.
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.prefetch(pctx, src, img, idxs)
		}()
		undo = append(undo, func() {
			defer s.watch("stop the prefetch")()
			cancel()
			<-done
		})
	}
	m, err := fusefs.MountLayers(c.lowerDir(), idxs, src, mcfg)
	if err != nil {
		return nil, nil, nil, err
	}
	undo = append(undo, func() {
		// Returns once nothing uses the image any more: the overlay in
		// the container's mount namespace included.
		defer s.watch("unmount")()
		if err := m.Unmount(); err != nil {
			s.log.Warn("cannot unmount image", "path", c.lowerDir(), "err", err)
		}
	})
	s.log.Debug("image mounted", "image", c.Image, "path", c.lowerDir(), "dur", time.Since(start))
	if c.Spec.Background != "" {
		mode, err := layers.ParseBackgroundMode(c.Spec.Background)
		if err != nil {
			s.log.Warn("background fetch off", "err", err)
		}
		bg := src.StartBackground(imageIdxs, layers.BackgroundConfig{Mode: mode, Name: c.Image})
		undo = append(undo, func() {
			defer s.watch("stop the background fetch")()
			bg.Stop()
		})
	}

	return img, lower, done, nil
}

// profileTimeout bounds finding a prefetch profile and pushing one.
const profileTimeout = 30 * time.Second

// prefetch fetches what the image's prefetch profile names, if it has one.
func (s *supervisor) prefetch(ctx context.Context, src *layers.Source, img *fetch.Image, idxs []*index.Index) {
	start := time.Now()
	var p *layers.Profile
	if s.c.ProfileLooked {
		b, err := os.ReadFile(s.c.profilePath())
		if errors.Is(err, fs.ErrNotExist) {
			return // the image has none
		}
		if err == nil {
			p, err = layers.DecodeProfile(b)
		}
		if err == nil && p.Image != img.Digest {
			err = fmt.Errorf("recorded on %s", p.Image)
		}
		if err != nil {
			s.log.Warn("prefetch profile unusable: starting without it", "path", s.c.profilePath(), "err", err)
			return
		}
	} else if p, _ = s.r.findProfile(ctx, img, profileTimeout); p == nil {
		return
	}
	found := time.Since(start)
	st, err := src.Prefetch(ctx, idxs, p, layers.PrefetchConfig{})
	s.log.Debug("prefetched", "image", img.Ref, "frames", st.Frames, "present", st.Present, "requests", st.Requests,
		"len", st.Fetched, "failed", st.Failed, "found", found, "dur", time.Since(start), "err", err)
}

// pushProfile pushes what the container read as the image's prefetch
// profile.
func (s *supervisor) pushProfile(ctx context.Context, img *fetch.Image, rec *layers.Recorder) {
	p := rec.Profile(img.Digest, s.c.Command)
	ctx, cancel := context.WithTimeout(ctx, profileTimeout)
	defer cancel()
	desc, err := s.r.cfg.Resolver.PushProfile(ctx, img, p)
	if err != nil {
		s.log.Warn("cannot push the prefetch profile", "image", img.Ref, "err", err)
		return
	}
	s.log.Info("prefetch profile pushed", "image", img.Ref, "layers", len(p.Layers), "len", p.Bytes(), "digest", desc.Digest)
	if err := s.r.recordProfile(s.c.Image, img, p); err != nil {
		s.log.Warn("cannot record the prefetch profile", "image", img.Ref, "err", err)
	}
}

// loop starts the program, waits for it, and starts it again as the
// restart policy says. It returns the last exit code.
func (s *supervisor) loop(report func(initStatus)) int {
	c := s.c
	backoff := restartBackoffMin
	for first := true; ; first = false {
		inst, err := s.start()
		var code int
		if err != nil {
			code = ExitSetup
			var se *StartError
			if errors.As(err, &se) {
				code = se.Code
			}
			c.State = State{Status: StatusExited, ExitCode: code, FinishedAt: time.Now().UTC(), Error: err.Error(),
				SupervisorPid: os.Getpid(), RestartCount: c.State.RestartCount, StartedAt: c.State.StartedAt, Ports: c.State.Ports}
			if first {
				s.save()
				report(initStatus{Error: err.Error(), Code: code})
				return code
			}
			s.log.Warn("cannot start the container again", "id", c.ShortID(), "err", err)
		} else {
			if first {
				report(initStatus{Pid: inst.cmd.Process.Pid, Args: c.Command})
			}
			started := time.Now()
			code = s.wait(inst)
			if time.Since(started) >= restartResetAfter {
				backoff = restartBackoffMin
			}
			c.State.Status, c.State.ExitCode, c.State.FinishedAt = StatusExited, code, time.Now().UTC()
		}
		if s.noRestart || !c.Spec.Restart.restarts(code, c.State.RestartCount) {
			c.State.Ports = nil
			s.save()
			return code
		}
		c.State.Status = StatusRestarting // the ports stay bound
		s.save()
		s.log.Debug("restarting the container", "id", c.ShortID(), "code", code, "dur", backoff)
		if !s.pause(backoff) {
			c.State.Status, c.State.Ports = StatusExited, nil
			s.save()
			return code
		}
		backoff = min(2*backoff, restartBackoffMax)
		c.State.RestartCount++
	}
}

func (s *supervisor) save() {
	if err := s.c.saveState(); err != nil {
		s.log.Warn("cannot record container state", "id", s.c.ID, "err", err)
	}
}

// pause waits d before a restart; it reports false when the container was
// stopped meanwhile.
func (s *supervisor) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case call := <-s.ctl.calls:
			sig := syscall.Signal(call.req.Signal)
			switch {
			case call.req.Op == opStop, sig == 0, sig == syscall.SIGKILL, sig == s.stopSignal:
				s.noRestart = true
				call.reply <- nil
				return false
			default:
				call.reply <- fmt.Errorf("%w: container %s is restarting", ErrConflict, s.c.Name)
			}
		case sig := <-s.sigs:
			if sig == syscall.SIGINT || sig == syscall.SIGTERM {
				s.noRestart = true
				return false
			}
		}
	}
}

// instance is one run of the container's init.
type instance struct {
	cmd    *exec.Cmd
	waited chan error
	copies sync.WaitGroup // the output copies
	ptmx   *os.File       // the terminal's controlling side, with -t
	hold   []*os.File     // closed when it ended: a detached -i's stdin
}

// start starts the container's init and, through it, the program. A
// failure is a *StartError.
func (s *supervisor) start() (*instance, error) {
	c := s.c
	setupErr := func(err error) (*instance, error) { return nil, &StartError{ExitSetup, err} }
	self, err := os.Executable()
	if err != nil {
		return setupErr(err)
	}
	// childEnds are the init's, closed once it has them; ours are closed
	// when start returns (the output pipes' read ends are the copies').
	var childEnds, ours []*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}
	defer func() { closeAll(childEnds); closeAll(ours) }()
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			childEnds = append(childEnds, r, w) // sorted out below
		}
		return r, w, err
	}
	configR, configW, err := pipe()
	if err != nil {
		return setupErr(err)
	}
	statusR, statusW, err := pipe()
	if err != nil {
		return setupErr(err)
	}
	ours, childEnds = []*os.File{configW, statusR}, []*os.File{configR, statusW}
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	if c.Spec.Net == NetNone || c.Spec.Net == NetPrivate {
		flags |= syscall.CLONE_NEWNET
	}
	inst := &instance{cmd: &exec.Cmd{
		Path:       self,
		Args:       []string{InitArg0},
		Env:        []string{},
		ExtraFiles: []*os.File{configR, statusW},
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			// The container cannot outlive the process serving its files.
			Pdeathsig: syscall.SIGKILL,
		},
	}}
	cmd := inst.cmd
	type output struct {
		r      *os.File
		stream string
		to     io.Writer // the attached stream, or nil
	}
	var outputs []output
	var attOut, attErr io.Writer
	if s.att != nil {
		attOut, attErr = s.att.stdout, s.att.stderr
	}
	if c.Spec.Process.TTY {
		ptmx, tty, err := pty.Open()
		if err != nil {
			return setupErr(fmt.Errorf("allocate a terminal: %w", err))
		}
		childEnds = append(childEnds, tty)
		inst.ptmx = ptmx
		s.resize(ptmx, true)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		outputs = append(outputs, output{ptmx, StreamStdout, attOut})
	} else {
		outR, outW, err := os.Pipe()
		if err != nil {
			return setupErr(err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			outR.Close()
			outW.Close()
			return setupErr(err)
		}
		childEnds = append(childEnds, outW, errW)
		cmd.Stdout, cmd.Stderr = outW, errW
		outputs = append(outputs, output{outR, StreamStdout, attOut}, output{errR, StreamStderr, attErr})
		if c.Spec.Interactive {
			if s.att != nil && s.att.stdin != nil {
				cmd.Stdin = s.att.stdin
			} else {
				// Detached: a stdin that stays open, as docker run -di's.
				inR, inW, err := os.Pipe()
				if err != nil {
					inst.close()
					return setupErr(err)
				}
				childEnds = append(childEnds, inR)
				inst.hold = append(inst.hold, inW)
				cmd.Stdin = inR
			}
		}
	}
	err = cmd.Start()
	closeAll(childEnds)
	childEnds = nil
	if err != nil {
		for _, o := range outputs {
			o.r.Close()
		}
		inst.close()
		return setupErr(fmt.Errorf("start container init: %w", err))
	}
	inst.waited = make(chan error, 1)
	go func() { inst.waited <- cmd.Wait() }()
	for _, o := range outputs {
		inst.copies.Add(1)
		go func() {
			defer inst.copies.Done()
			if o.r != inst.ptmx {
				defer o.r.Close()
			}
			copyOutput(o.r, o.stream, s.logs, o.to, func(err error) {
				s.log.Warn("cannot keep the container's output", "id", c.ShortID(), "err", err)
			})
		}()
	}
	fail := func(code int, err error) (*instance, error) {
		cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-inst.waited
		inst.finish()
		return nil, &StartError{code, err}
	}

	// The init waits for its config, so it joins the cgroup before the
	// program exists.
	if err := s.cg.Add(cmd.Process.Pid); err != nil {
		return fail(ExitSetup, err)
	}
	cfg := s.init
	cfg.Plan.Anonymous = c.Anonymous
	if err := json.NewEncoder(configW).Encode(cfg); err != nil {
		return fail(ExitSetup, fmt.Errorf("send container config: %w", err))
	}
	var st initStatus
	if err := json.NewDecoder(statusR).Decode(&st); err != nil {
		st = initStatus{Error: "container init exited before it started the program", Code: ExitSetup}
	}
	if st.Error != "" {
		return fail(st.Code, errors.New(st.Error))
	}
	if s.ports != nil {
		if err := s.ports.attach(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err != nil {
			return fail(ExitSetup, err)
		}
	}
	c.Command, c.Anonymous = st.Args, st.Anonymous
	if err := writeJSON(filepath.Join(c.dir, "config.json"), c); err != nil {
		s.log.Warn("cannot record container config", "id", c.ID, "err", err)
	}
	c.State = State{Status: StatusRunning, Pid: cmd.Process.Pid, StartedAt: time.Now().UTC(),
		SupervisorPid: os.Getpid(), RestartCount: c.State.RestartCount}
	if s.ports != nil {
		c.State.Ports = s.ports.Ports()
	}
	s.save()
	if s.input != nil {
		s.input.set(inst.ptmx)
	}
	s.log.Debug("container started", "id", c.ShortID(), "pid", st.Pid)
	return inst, nil
}

// wait supervises a running instance until its init exits, and returns
// the exit code (128+N for signal N).
func (s *supervisor) wait(inst *instance) int {
	var kill <-chan time.Time
	stopping := false
	var killed func() // the watch of a kill, until the init is reaped
	defer func() {
		if killed != nil {
			killed()
		}
	}()
	hardKill := func() {
		if killed == nil {
			killed = s.watch("wait for the killed init")
		}
		s.kill(inst)
	}
	stop := func(sig syscall.Signal, timeout time.Duration) {
		s.noRestart = true
		stopping = true
		if timeout == 0 || sig == syscall.SIGKILL {
			hardKill()
			return
		}
		inst.signal(sig)
		if timeout > 0 {
			kill = time.After(timeout)
		}
	}
	for {
		select {
		case <-inst.waited:
			if s.ports != nil {
				// Its connections go with it: nothing of this run lingers.
				s.ports.detach()
			}
			inst.finish()
			if s.input != nil {
				s.input.set(nil)
			}
			return exitCode(inst.cmd.ProcessState)
		case sig := <-s.sigs:
			switch sig {
			case syscall.SIGINT, syscall.SIGTERM:
				// From the attached client (Ctrl-C) or the system: pass it
				// on, and stop for good.
				if stopping {
					hardKill()
					continue
				}
				stop(sig.(syscall.Signal), s.stopTimeout)
			case syscall.SIGWINCH:
				if inst.ptmx != nil && s.att != nil {
					s.resize(inst.ptmx, false)
					continue
				}
				inst.signal(sig.(syscall.Signal))
			default:
				inst.signal(sig.(syscall.Signal))
			}
		case call := <-s.ctl.calls:
			sig := syscall.Signal(call.req.Signal)
			switch call.req.Op {
			case opStop:
				if sig == 0 {
					sig = s.stopSignal
				}
				timeout := s.stopTimeout
				if call.req.Timeout != nil {
					timeout = *call.req.Timeout
				}
				stop(sig, timeout)
				call.reply <- nil
			case opKill:
				if sig == 0 {
					sig = syscall.SIGKILL
				}
				switch sig {
				case syscall.SIGKILL:
					s.noRestart = true
					hardKill()
				case s.stopSignal:
					s.noRestart = true
					inst.signal(sig)
				default:
					inst.signal(sig)
				}
				call.reply <- nil
			default:
				call.reply <- fmt.Errorf("unknown request %q", call.req.Op)
			}
		case <-kill:
			s.log.Info("container did not stop in time: killing it", "id", s.c.ShortID(), "timeout", s.stopTimeout)
			hardKill()
		}
	}
}

// kill ends the container at once: its init first, which takes every
// process of its PID namespace with it, then anything left in its cgroup.
func (s *supervisor) kill(inst *instance) {
	inst.cmd.Process.Kill() //nolint:errcheck // it may have just exited
	if err := s.cg.Kill(context.Background()); err != nil {
		s.log.Warn("cannot kill the container's processes", "err", err)
	}
}

// resize gives the container's terminal the attached one's size, or 24x80
// to a detached one when first made.
func (s *supervisor) resize(ptmx *os.File, first bool) {
	if s.att != nil {
		if s.att.stdin != nil && pty.InheritSize(s.att.stdin, ptmx) == nil {
			return
		}
		if pty.InheritSize(s.att.out, ptmx) == nil {
			return
		}
	}
	if first {
		pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 80}) //nolint:errcheck // a terminal takes a size
	}
}

// signal sends sig to the init, which passes it on to the program.
func (inst *instance) signal(sig syscall.Signal) {
	inst.cmd.Process.Signal(sig) //nolint:errcheck // it may have just exited
}

// finish lets the output copies drain after the init exited: every process
// of the container is gone with it, so they end, but give up after 2 s.
func (inst *instance) finish() {
	done := make(chan struct{})
	go func() {
		inst.copies.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	inst.close()
}

func (inst *instance) close() {
	if inst.ptmx != nil {
		inst.ptmx.Close()
	}
	for _, f := range inst.hold {
		f.Close()
	}
}

// terminalInput copies an attached stdin to the container's current
// terminal, across restarts. Its goroutine begins with the first terminal,
// so that what is typed before stays in the caller's terminal until the
// program can read it, and ends at the stdin's end; a read of a terminal
// cannot be interrupted, so it may outlive the container until the
// supervisor exits.
type terminalInput struct {
	in   *os.File
	once sync.Once
	mu   sync.Mutex // guards w
	w    *os.File   // nil between runs
}

func newTerminalInput(in *os.File) *terminalInput { return &terminalInput{in: in} }

func (t *terminalInput) set(w *os.File) {
	t.mu.Lock()
	t.w = w
	t.mu.Unlock()
	if w != nil {
		t.once.Do(func() { go t.copy() })
	}
}

func (t *terminalInput) copy() {
	buf := make([]byte, 32<<10)
	for {
		n, err := t.in.Read(buf)
		if n > 0 {
			t.mu.Lock()
			w := t.w
			t.mu.Unlock()
			if w != nil {
				w.Write(buf[:n]) //nolint:errcheck // the container's terminal may be gone
			}
		}
		if err != nil {
			return
		}
	}
}

// stopSignal is c's stop signal: --stop-signal, the image's STOPSIGNAL, or
// SIGTERM.
func (r *Runtime) stopSignal(c *Container, img *fetch.Image) (syscall.Signal, error) {
	name := c.Spec.StopSignal
	if name == "" && img != nil {
		name = img.Config.Config.StopSignal
	}
	if name == "" {
		return syscall.SIGTERM, nil
	}
	sig, err := ParseSignal(name)
	if err != nil {
		return 0, fmt.Errorf("stop signal: %w", err)
	}
	return sig, nil
}

// containerImage is the image c was created from, by digest: from the
// kept manifest and config, else from the registry.
func (r *Runtime) containerImage(ctx context.Context, c *Container) (*fetch.Image, error) {
	if _, err := ParseImageName(c.Image); err != nil {
		return nil, err
	}
	img, lerr := r.localContainerImage(c)
	if lerr == nil {
		return img, nil
	}
	if r.cfg.Client == nil {
		return nil, fmt.Errorf("image %s of container %s: %w", c.ImageDigest, c.Name, lerr)
	}
	ref, err := fetch.DigestRef(c.Image, c.ImageDigest)
	if err != nil {
		return nil, err
	}
	return r.cfg.Client.Resolve(ctx, ref)
}

// localContainerImage is c's image as this root recorded it (manifest
// and config under images/blobs), without the registry.
func (r *Runtime) localContainerImage(c *Container) (*fetch.Image, error) {
	n, err := ParseImageName(c.Image)
	if err != nil {
		return nil, err
	}
	img := &fetch.Image{Ref: c.Image, Repo: n.Repository, Digest: c.ImageDigest}
	if img.RawManifest, err = r.imageBlob(c.ImageDigest); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(img.RawManifest, &img.Manifest); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", c.ImageDigest, err)
	}
	img.MediaType = img.Manifest.MediaType
	if img.RawConfig, err = r.imageBlob(img.Manifest.Config.Digest); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(img.RawConfig, &img.Config); err != nil {
		return nil, fmt.Errorf("config %s: %w", img.Manifest.Config.Digest, err)
	}
	return img, nil
}

func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalsBase + int(ws.Signal())
	}
	return ps.ExitCode()
}
