package cache

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Frames are fetched by every process that uses a cache root: a lazyrun
// supervisor per container, lazyfs mounts, the snapshotter. A process
// about to fetch a frame takes the frame's lock, an flock on
// ROOT/locks/<hex>, and another process that wants the frame meanwhile
// waits for the lock to go and then finds the frame on disk, instead of
// fetching it too: Frame does so around every load. The lock is only a
// way to share work: a process that cannot take it, or waits too long,
// fetches the frame anyway, and every frame is verified however it got
// to the disk. A process that dies
// leaves no lock behind (the kernel drops its flocks).
const locksDir = "locks"

func lockPath(root, h string) string { return filepath.Join(root, locksDir, h) }

// lockPatience is how long a load waits for another process's load of
// the same frame before it loads the frame itself.
const lockPatience = 2 * time.Second

// TryLockFrame takes the lock on fetching frame d unless another process
// (or this one) holds it. unlock releases it and removes its file. Frame
// takes it around every load itself; a caller that fetches frames by
// other means (a coalesced request, then Put) takes it for those. Any
// digest names a lock: a layer's index download takes one of its own
// (layers.Resolver).
func (s *Store) TryLockFrame(d digest.Digest) (unlock func(), ok bool) {
	h, err := hexOf(d)
	if err != nil {
		return func() {}, false
	}
	return s.tryLock(h)
}

func (s *Store) tryLock(h string) (unlock func(), ok bool) {
	p := lockPath(s.dir, h)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		}
	}
	if err != nil {
		return func() {}, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return func() {}, false
	}
	return func() {
		// Removed while held: a process that opened it meanwhile gets the
		// lock of a file no longer there, and finds the frame on disk.
		os.Remove(p)
		f.Close() // drops the flock
	}, true
}

// WaitFrameLock waits while another process holds the lock on d
// (TryLockFrame), at most max or until ctx ends. It reports whether it
// waited for a lock that was released: what its holder fetched is then
// likely on disk.
func (s *Store) WaitFrameLock(ctx context.Context, d digest.Digest, max time.Duration) bool {
	h, err := hexOf(d)
	if err != nil {
		return false
	}
	return s.waitUnlocked(ctx, h, max)
}

// lockPoll is how often waitUnlocked looks at a held lock again.
const lockPoll = 5 * time.Millisecond

// waitUnlocked waits while another process holds the lock on loading
// frame h, at most max (or until ctx ends). It reports whether it waited
// for one that was released: the frame is then likely on disk.
func (s *Store) waitUnlocked(ctx context.Context, h string, max time.Duration) bool {
	f, err := os.OpenFile(lockPath(s.dir, h), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false // no lock file: nobody fetches it
	}
	defer f.Close()
	deadline := time.Now().Add(max)
	for waited := false; ; waited = true {
		if unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB) == nil {
			return waited
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(lockPoll):
		}
	}
}
