package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A supervisor takes requests on containers/ID/supervisor.sock, a unix
// socket that only root reaches (the directory is 0700): one JSON
// controlRequest per connection, answered with one controlReply. It acts on
// the container's init, which it started and has not reaped, so a signal
// cannot reach a process that merely reuses the PID. The socket's path may
// be longer than a socket address can be (108 bytes); both sides name it
// through /proc/self/fd/N/supervisor.sock, N being the directory opened
// with O_PATH.

// Control operations.
const (
	opStop = "stop" // stop for good: the stop signal, then SIGKILL after the timeout
	opKill = "kill" // deliver a signal
)

type controlRequest struct {
	Op string `json:"op"`
	// Signal is the signal to send; 0 means the container's stop signal
	// (stop) or SIGKILL (kill).
	Signal int `json:"signal,omitempty"`
	// Timeout is how long stop waits before it kills: nil means the
	// container's stop timeout, a negative one never kills.
	Timeout *time.Duration `json:"timeout,omitempty"`
}

type controlReply struct {
	Error string `json:"error,omitempty"`
}

// controlCall is a request handed to the supervisor's loop, which sends
// the outcome on reply (buffered).
type controlCall struct {
	req   controlRequest
	reply chan error
}

// errSupervisorExiting is the reply to a request that came in while the
// supervisor was tearing the container down.
var errSupervisorExiting = errors.New("the container's supervisor is exiting")

// controlTimeout bounds one request's exchange.
const controlTimeout = 5 * time.Second

// controlServer accepts requests on a container's socket and hands them to
// the supervisor's loop through calls. Close stops it and waits for it.
type controlServer struct {
	path  string
	l     *net.UnixListener
	calls chan controlCall
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// listenControl starts serving the control socket in dir, replacing a
// stale one.
func listenControl(dir string) (*controlServer, error) {
	path := filepath.Join(dir, socketName)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var l *net.UnixListener
	err := viaDirFD(dir, func(p string) error {
		var err error
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Closing must not unlink through /proc/self/fd/N: N may name
	// something else by then.
	l.SetUnlinkOnClose(false)
	s := &controlServer{path: path, l: l, calls: make(chan controlCall), done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func (s *controlServer) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.l.AcceptUnix()
		if err != nil {
			return // closed
		}
		s.handle(conn)
	}
}

// handle answers one connection. Requests are few and quick: one at a time.
func (s *controlServer) handle(conn *net.UnixConn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout)) //nolint:errcheck // a socket takes deadlines
	var req controlRequest
	if err := json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&req); err != nil {
		return
	}
	call := controlCall{req: req, reply: make(chan error, 1)}
	var err error
	select {
	case s.calls <- call:
		select {
		case err = <-call.reply:
		case <-s.done:
			err = errSupervisorExiting
		}
	case <-s.done:
		err = errSupervisorExiting
	}
	var rep controlReply
	if err != nil {
		rep.Error = err.Error()
	}
	json.NewEncoder(conn).Encode(rep) //nolint:errcheck // the client sees EOF instead
}

// Close stops accepting requests, waits for the one in hand, and removes
// the socket. Calls not yet taken by the loop are answered with
// errSupervisorExiting.
func (s *controlServer) Close() {
	s.once.Do(func() {
		close(s.done)
		s.l.Close()
		s.wg.Wait()
		os.Remove(s.path)
	})
}

// viaDirFD calls fn with a short path to dir's entry socketName, through
// an O_PATH descriptor of dir that stays open during fn.
func viaDirFD(dir string, fn func(path string) error) error {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return fn(fmt.Sprintf("/proc/self/fd/%d/%s", fd, socketName))
}

// errNoSupervisor is wrapped when a container's supervisor does not answer
// because it is gone (or not listening yet).
var errNoSupervisor = errors.New("no supervisor answers")

// control sends req to c's supervisor and returns its answer.
func (c *Container) control(ctx context.Context, req controlRequest) error {
	var conn net.Conn
	err := viaDirFD(c.dir, func(p string) error {
		d := net.Dialer{Timeout: controlTimeout}
		var err error
		conn, err = d.DialContext(ctx, "unix", p)
		return err
	})
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("container %s: %w", c.Name, errNoSupervisor)
	}
	if err != nil {
		return fmt.Errorf("container %s: control socket: %w", c.Name, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout)) //nolint:errcheck // a socket takes deadlines
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("container %s: control socket: %w", c.Name, err)
	}
	var rep controlReply
	if err := json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&rep); err != nil {
		return fmt.Errorf("container %s: %w: %w", c.Name, errNoSupervisor, err)
	}
	if rep.Error != "" {
		if rep.Error == errSupervisorExiting.Error() {
			return fmt.Errorf("container %s: %w", c.Name, errNoSupervisor)
		}
		return fmt.Errorf("container %s: %s", c.Name, rep.Error)
	}
	return nil
}

// StopOptions are docker stop's flags.
type StopOptions struct {
	// Signal is sent first; 0 means the container's stop signal
	// (--stop-signal, else the image's STOPSIGNAL, else SIGTERM).
	Signal syscall.Signal
	// Timeout is how long the program has to exit before it is killed:
	// nil means the container's (--stop-timeout, else Config.StopTimeout);
	// negative waits for ever.
	Timeout *time.Duration
}

// stopGrace is how long, beyond the stop timeout, Stop waits for the
// supervisor to tear the container down (unmount, delete its cgroup).
const stopGrace = 30 * time.Second

// Stop stops a running container for good, as docker stop does: its
// program gets the stop signal, is killed when it has not exited within
// the timeout, and is not restarted whatever its restart policy. It returns
// once the supervisor has exited and the state says exited. Stopping a
// container that does not run does nothing.
func (r *Runtime) Stop(ctx context.Context, c *Container, opt StopOptions) error {
	if !c.State.Alive() {
		return nil
	}
	err := c.control(ctx, controlRequest{Op: opStop, Signal: int(opt.Signal), Timeout: opt.Timeout})
	if err != nil && !errors.Is(err, errNoSupervisor) {
		return err
	}
	limit := r.stopTimeout(c)
	if opt.Timeout != nil {
		limit = *opt.Timeout
	}
	if limit >= 0 {
		limit += stopGrace
	}
	return r.waitStopped(ctx, c, limit)
}

// stopTimeout is c's stop timeout; negative means none.
func (r *Runtime) stopTimeout(c *Container) time.Duration {
	if t := c.Spec.StopTimeout; t != nil {
		if *t < 0 {
			return -1
		}
		return time.Duration(*t) * time.Second
	}
	return r.cfg.StopTimeout
}

// Kill sends sig (0 = SIGKILL) to a running container's program, as docker
// kill does. SIGKILL, or the container's stop signal, also ends its
// restarts; after SIGKILL, Kill returns once the supervisor has exited.
func (r *Runtime) Kill(ctx context.Context, c *Container, sig syscall.Signal) error {
	if !c.State.Alive() {
		return fmt.Errorf("%w: container %s is not running", ErrConflict, c.Name)
	}
	if err := c.control(ctx, controlRequest{Op: opKill, Signal: int(sig)}); err != nil {
		if errors.Is(err, errNoSupervisor) {
			return fmt.Errorf("%w: container %s is not running", ErrConflict, c.Name)
		}
		return err
	}
	if sig == 0 || sig == syscall.SIGKILL {
		return r.waitStopped(ctx, c, stopGrace)
	}
	return nil
}

// waitStopped waits until c's supervisor has exited (limit < 0: for ever),
// then reads its state again. It waits for the process itself: with --rm
// the lock file goes away before the supervisor is done. Whatever else
// holds the lock (a commit) is waited for by probing the lock.
func (r *Runtime) waitStopped(ctx context.Context, c *Container, limit time.Duration) error {
	var deadline <-chan time.Time
	if limit >= 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		deadline = t.C
	}
	timedOut := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("container %s did not stop within %v", c.Name, limit)
		default:
			return nil
		}
	}
	if pidfd, err := r.supervisorPidfd(c); err == nil {
		defer unix.Close(pidfd)
		for {
			n, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, 50)
			if n > 0 {
				break // it exited
			}
			if err != nil && !errors.Is(err, syscall.EINTR) {
				return fmt.Errorf("wait for the supervisor of %s: %w", c.Name, err)
			}
			if err := timedOut(); err != nil {
				return err
			}
		}
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for c.locked() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("container %s did not stop within %v", c.Name, limit)
		case <-tick.C:
		}
	}
	if nc, err := r.load(c.ID); err == nil {
		c.State = nc.State
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// supervisorPidfd opens a pidfd of c's supervisor, as its state names it,
// and makes sure that it is that: a lazyrun-supervisor of c, alive after
// the check. It fails when c has no supervisor.
func (r *Runtime) supervisorPidfd(c *Container) (int, error) {
	nc, err := r.load(c.ID)
	if err != nil {
		return -1, err
	}
	pid := nc.State.SupervisorPid
	if pid <= 0 || !nc.locked() {
		return -1, errNoSupervisor
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, err
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.HasPrefix(cmdline, []byte(SupervisorArg0+"\x00")) || !bytes.Contains(cmdline, []byte("\x00"+c.ID+"\x00")) ||
		unix.PidfdSendSignal(pidfd, 0, nil, 0) != nil {
		unix.Close(pidfd)
		return -1, errNoSupervisor
	}
	return pidfd, nil
}
