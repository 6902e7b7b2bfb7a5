package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// mountPoll is how often measureMount looks for the mount point in
// /proc/self/mountinfo (about 25 µs a look on this kind of machine).
const mountPoll = 2 * time.Millisecond

// umountTries is how often measureMount tries lazyfs umount, 100 ms apart.
const umountTries = 5

// measureMount times mount to ready: `lazyfs mount` of w's image with a
// fresh root (empty cache), from the process's start until its mount point
// shows in /proc/self/mountinfo (looked at every mountPoll; the file never
// waits on a FUSE server, as a stat of the mount point could). That
// covers resolving the manifest and config, every layer's index and the
// FUSE mount. Then `lazyfs umount` unmounts it and lazyfs exits; the
// traffic is counted until then (nothing reads the mount meanwhile).
func (r *runner) measureMount(ctx context.Context, w Workload) (s Sample) {
	sc, err := newScratch(ctx, r.cfg.WorkDir, "mount", r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	root, mnt := filepath.Join(sc.Dir, "lazyfs"), filepath.Join(sc.Dir, "mnt")
	if mnt, err = filepath.Abs(mnt); err != nil { // as mountinfo has it
		return Sample{Err: err.Error()}
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return Sample{Err: err.Error()}
	}
	log := r.logPath(w.Name + "-mount")
	r.measured(&s, requestsLog(log), func(mark func(string)) error {
		ready, exited, err := r.timeMount(ctx, log, mark, root, mnt, r.ref(w.Image))
		s.Wall = ready
		if exited > 0 {
			s.Phases = map[string]time.Duration{"to exit": exited}
		}
		return err
	})
	return s
}

// timeMount runs lazyfs mount REF MNT with its output in logPath and
// returns how long after its start MNT was a mount point, and when lazyfs
// had exited after `lazyfs umount MNT`. The process runs in a process
// group of its own, killed when the time limit passes or ctx ends.
func (r *runner) timeMount(ctx context.Context, logPath string, mark func(string), root, mnt, ref string) (ready, exited time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	logf, err := os.Create(logPath)
	if err != nil {
		return 0, 0, err
	}
	defer logf.Close()
	var mu sync.Mutex // one writer at a time into the log file
	logw := &lockedWriter{mu: &mu, w: logf}
	lazyfs := filepath.Join(r.cfg.BinDir, "lazyfs")
	argv := []string{lazyfs, "--root", root, "mount", ref, mnt}
	fmt.Fprintf(logw, "$ %s\n", strings.Join(argv, " "))
	errTail := &limitBuffer{max: 4096, keepTail: true}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logw, io.MultiWriter(errTail, logw)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("lazyfs mount: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	fail := func(err error) (time.Duration, time.Duration, error) {
		return 0, 0, fmt.Errorf("lazyfs mount: %w: %s", err, lastLines(errTail.String(), 3))
	}

	tick := time.NewTicker(mountPoll)
	defer tick.Stop()
	for {
		mounted, err := isMountPoint(mnt)
		if err != nil {
			_ = cmd.Cancel()
			<-done
			return fail(err)
		}
		if mounted {
			ready = time.Since(start)
			break
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("exited before its mount point was mounted")
			}
			return fail(err)
		case <-ctx.Done():
			<-done // killed by cmd.Cancel
			return fail(ctx.Err())
		case <-tick.C:
		}
	}
	mark("mounted")
	fmt.Fprintf(logw, "# mounted after %v\n", ready)

	mark("lazyfs umount")
	var uerr error
	for try := range umountTries {
		um := exec.CommandContext(ctx, lazyfs, "umount", mnt)
		um.Stdout, um.Stderr = logw, logw
		if uerr = um.Run(); uerr == nil || try == umountTries-1 {
			break
		}
		// EBUSY happens: something (another program walking the file
		// systems) may hold the new mount for a moment.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if uerr != nil {
		_ = cmd.Cancel() // still mounted, perhaps: lazyfs would not exit
	}
	err = <-done
	exited = time.Since(start)
	mark("lazyfs exited")
	fmt.Fprintf(logw, "# exit: %v after %v\n", err, exited)
	if uerr != nil {
		return ready, exited, fmt.Errorf("lazyfs umount: %w", uerr)
	}
	if err != nil {
		return ready, exited, fmt.Errorf("lazyfs mount after unmounting: %w: %s", err, lastLines(errTail.String(), 3))
	}
	return ready, exited, nil
}

// isMountPoint reports whether dir (absolute, clean) is a mount point in
// this process's mount namespace.
func isMountPoint(dir string) (bool, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	return mountinfoHas(string(mi), dir), nil
}

// mountinfoHas reports whether the mountinfo text lists a mount at dir.
func mountinfoHas(mountinfo, dir string) bool {
	for line := range strings.Lines(mountinfo) {
		f := strings.Fields(line)
		if len(f) >= 5 && unescapeMount(f[4]) == dir {
			return true
		}
	}
	return false
}
