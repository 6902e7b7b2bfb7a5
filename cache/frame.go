package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// source says where a flight found its frame.
type source uint8

const (
	fromDisk source = iota + 1
	fromLoad
)

// flight is one shared fetch of a frame. Its fields are written once by
// the goroutine that runs it, before done is closed, and read only after.
type flight struct {
	done chan struct{}
	val  []byte
	src  source
	err  error
}

// Frame returns the frame with digest d, size bytes long: from memory, else
// from disk, else from load. The bytes always match d.
//
// A file on disk is verified before use; one that has the wrong size or
// fails verification is deleted, logged at Warn, and treated as a miss.
// Disk reads and loads are shared: all concurrent callers asking for d wait
// for one goroutine, owned by the Store, which calls load at most once.
// load runs under context.WithoutCancel(ctx) with the Store's FetchTimeout
// as its deadline (and is cancelled by Close), so a caller whose ctx ends
// returns ctx.Err() promptly while the load goes on for the others and
// still fills the cache. At most Config.MaxLoads loads run at once.
//
// Loaded bytes are verified before they are stored or returned; on a
// mismatch (or a length other than size) every waiter gets an error
// wrapping index.ErrCorrupt, nothing is stored, and the next call loads
// again. A load error is returned wrapped to every waiter and not cached.
// Verified bytes are written to disk atomically (see writeAtomic) before
// Frame returns them. A write that finds the disk full evicts least
// recently used frames and tries again; if that cannot make room, or the
// write fails otherwise, it is logged at Warn (an ENOSPC error names the
// cache directory) and the bytes are still returned: a full disk never
// fails a read.
//
// load hands the returned slice over to the Store. The slice Frame returns
// is shared with other callers and the memory tier: it must not be
// modified. load must not call Frame on the same Store (a load that
// obtains other frames on the way can hand them over with Put).
func (s *Store) Frame(ctx context.Context, d digest.Digest, size int64, load func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	h, err := hexOf(d)
	if err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("cache: frame %s: negative size %d", d, size)
	}
	if load == nil {
		return nil, fmt.Errorf("cache: frame %s: no load function", d)
	}
	if b, ok := s.memGet(h); ok && int64(len(b)) == size {
		s.st.memoryHits.Add(1)
		s.useMemory(h)
		return b, nil
	}

	f, err := s.join(ctx, h, size, load)
	if err != nil {
		return nil, err
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	if int64(len(f.val)) != size {
		// Another caller asked for d with a different size and got it.
		return nil, fmt.Errorf("cache: frame %s: %w: %d bytes, want %d", d, index.ErrCorrupt, len(f.val), size)
	}
	if f.src == fromDisk {
		s.st.diskHits.Add(1)
	} else {
		s.st.misses.Add(1)
	}
	return f.val, nil
}

// join returns the flight for h, starting one if none runs.
func (s *Store) join(ctx context.Context, h string, size int64, load func(context.Context) ([]byte, error)) (*flight, error) {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if f := s.flights[h]; f != nil {
		return f, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err // nobody would wait for a new flight
	}
	f := &flight{done: make(chan struct{})}
	s.flights[h] = f
	s.wg.Add(1)
	go s.run(ctx, f, h, size, load)
	return f, nil
}

// run fills f and removes it from the flights once the frame is stored (or
// known not to be), so that a caller arriving later finds it on disk.
func (s *Store) run(ctx context.Context, f *flight, h string, size int64, load func(context.Context) ([]byte, error)) {
	defer s.wg.Done()
	f.val, f.src, f.err = s.fill(ctx, h, size, load)
	s.flightMu.Lock()
	delete(s.flights, h)
	s.flightMu.Unlock()
	close(f.done)
}

// fill returns frame h from disk, else from load (verified and stored).
func (s *Store) fill(ctx context.Context, h string, size int64, load func(context.Context) ([]byte, error)) ([]byte, source, error) {
	if b, ok := s.readDisk(h, size); ok {
		s.memSet(h, b)
		return b, fromDisk, nil
	}

	select {
	case s.loadSem <- struct{}{}:
	case <-s.stop.Done():
		return nil, 0, fmt.Errorf("cache: load frame sha256:%s: %w", h, ErrClosed)
	}
	// Another process using the root may be loading it: wait for that a
	// while, then take the lock for this load (see framelock.go).
	if s.waitUnlocked(ctx, h, lockPatience) {
		if b, ok := s.readDisk(h, size); ok {
			<-s.loadSem
			s.memSet(h, b)
			return b, fromDisk, nil
		}
	}
	unlock, _ := s.tryLock(h)
	defer unlock()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	unhook := context.AfterFunc(s.stop, cancel)
	start := time.Now()
	b, err := load(lctx)
	unhook()
	cancel()
	<-s.loadSem

	s.st.loads.Add(1)
	if err != nil {
		s.st.loadErrors.Add(1)
		s.log.Debug("cache: load failed", "op", "load", "frame", "sha256:"+h, "dur", time.Since(start), "err", err)
		return nil, 0, fmt.Errorf("cache: load frame sha256:%s: %w", h, err)
	}
	s.st.bytesLoaded.Add(int64(len(b)))
	if err := verify(h, size, b); err != nil {
		s.st.corrupt.Add(1)
		s.log.Debug("cache: loaded frame corrupt", "op", "load", "frame", "sha256:"+h, "err", err)
		return nil, 0, fmt.Errorf("cache: load frame sha256:%s: %w", h, err)
	}
	// Disk first: a caller that finds the frame in memory may then expect
	// it on disk (Has).
	if err := s.storeDisk(h, b); err != nil {
		s.log.Warn("cache: frame not stored", "op", "store", "frame", "sha256:"+h, "len", len(b), "err", err)
	}
	s.memSet(h, b)
	return b, fromLoad, nil
}

// Put stores data as the frame with digest d, after verifying it, for a
// caller that obtained frames by other means (a coalesced prefetch). Like
// Frame it takes ownership of data, which must not be modified afterwards.
// It returns an error wrapping index.ErrCorrupt if data does not match d,
// and the disk error if the frame could not be written (on a disk full even
// after eviction it wraps syscall.ENOSPC and names the cache directory); a
// frame already on disk with the right size is only marked as used. The
// memory tier is offered data either way, unless ctx comes from
// WithoutMemory.
func (s *Store) Put(ctx context.Context, d digest.Digest, data []byte) error {
	h, err := hexOf(d)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	if err := verify(h, int64(len(data)), data); err != nil {
		s.st.corrupt.Add(1)
		return fmt.Errorf("cache: put frame %s: %w", d, err)
	}
	if !withoutMemory(ctx) {
		defer s.memSet(h, data)
	}
	if fi, err := os.Stat(framePath(s.dir, h)); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(data)) {
		s.use(h, fi.Size(), fi.ModTime())
		return nil
	}
	if err := s.storeDisk(h, data); err != nil {
		return fmt.Errorf("cache: put frame %s: %w", d, err)
	}
	return nil
}

type withoutMemoryKey struct{}

// WithoutMemory marks ctx so that Put stores frames on disk only and does
// not offer them to the memory tier: for a background fetch of frames
// nobody is reading, which would push out the frames readers use.
func WithoutMemory(ctx context.Context) context.Context {
	return context.WithValue(ctx, withoutMemoryKey{}, true)
}

func withoutMemory(ctx context.Context) bool {
	v, _ := ctx.Value(withoutMemoryKey{}).(bool)
	return v
}

// Has reports whether the frame with digest d is on disk. It does not
// verify the file; an invalid digest is never on disk.
func (s *Store) Has(d digest.Digest) bool {
	h, err := hexOf(d)
	if err != nil {
		return false
	}
	fi, err := os.Stat(framePath(s.dir, h))
	return err == nil && fi.Mode().IsRegular()
}

// InMemory reports whether the memory tier holds the frame with digest d,
// size bytes long: a read of it costs no disk read and no digest check.
func (s *Store) InMemory(d digest.Digest, size int64) bool {
	h, err := hexOf(d)
	if err != nil {
		return false
	}
	b, ok := s.memGet(h)
	return ok && int64(len(b)) == size
}

// Cached returns the frame with digest d if memory or disk holds it,
// size bytes long and verified, without loading it: for a load function
// that can use a neighbouring frame when there is one (it must not call
// Frame).
func (s *Store) Cached(d digest.Digest, size int64) ([]byte, bool) {
	h, err := hexOf(d)
	if err != nil {
		return nil, false
	}
	if b, ok := s.memGet(h); ok && int64(len(b)) == size {
		s.st.memoryHits.Add(1)
		s.useMemory(h)
		return b, true
	}
	b, ok := s.readDisk(h, size)
	if ok {
		s.st.diskHits.Add(1)
		s.memSet(h, b)
	}
	return b, ok
}

// verify checks that b is size bytes whose SHA-256 is the hex h.
func verify(h string, size int64, b []byte) error {
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], []byte(h)); err != nil {
		return fmt.Errorf("%w: %w", ErrBadDigest, err)
	}
	got := sha256.Sum256(b)
	if int64(len(b)) != size || !bytes.Equal(got[:], want[:]) {
		return fmt.Errorf("%w: %d bytes with digest sha256:%x, want %d bytes", index.ErrCorrupt, len(b), got, size)
	}
	return nil
}

// readDisk returns frame h from disk if its file is there, size bytes long
// and verified. A wrong file is deleted and logged; every other failure is
// a miss.
func (s *Store) readDisk(h string, size int64) ([]byte, bool) {
	p := framePath(s.dir, h)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0) // a planted symlink is not followed
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cache: frame unreadable", "op", "read", "path", p, "err", err)
		}
		s.forget(h)
		return nil, false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.log.Warn("cache: frame unreadable", "op", "read", "path", p, "err", err)
		return nil, false
	}
	if !fi.Mode().IsRegular() {
		s.log.Warn("cache: frame is not a regular file", "op", "read", "path", p, "mode", fi.Mode().String())
		s.forget(h)
		return nil, false
	}
	if fi.Size() != size {
		s.discard(p, h, fi, fmt.Errorf("%w: %d bytes, want %d", index.ErrCorrupt, fi.Size(), size))
		return nil, false
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		s.log.Warn("cache: frame unreadable", "op", "read", "path", p, "err", err)
		return nil, false
	}
	if err := verify(h, size, b); err != nil {
		s.discard(p, h, fi, err)
		return nil, false
	}
	s.use(h, size, fi.ModTime())
	return b, true
}

// discard deletes the corrupt frame file p (whose stat is fi) and logs it.
// The file is removed only if p still names it: another process may have
// just renamed a good copy into place.
func (s *Store) discard(p, h string, fi os.FileInfo, why error) {
	s.st.corrupt.Add(1)
	s.log.Warn("cache: corrupt frame deleted", "op", "read", "path", p, "err", why)
	if cur, err := os.Lstat(p); err == nil && os.SameFile(cur, fi) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("cache: corrupt frame not removed", "op", "read", "path", p, "err", err)
		}
	}
	s.forget(h)
}

// storeDisk writes frame h atomically, records it, and evicts down to the
// disk limit. A frame larger than the limit is not written.
//
// When the file system is full (ENOSPC, EDQUOT) it evicts least recently
// used frames, at least as many bytes as the frame at first and twice as
// many each round after, and tries again, until the frame fits or nothing
// this process knows of is left to evict: the error then wraps the file
// system's and names the cache directory. Nothing of a failed write stays
// on disk.
func (s *Store) storeDisk(h string, b []byte) error {
	n := int64(len(b))
	if s.maxDisk > 0 && n > s.maxDisk {
		return fmt.Errorf("frame of %d bytes exceeds the disk limit of %d", n, s.maxDisk)
	}
	var evicted, freed int64
	for want := max(n, 1); ; want *= 2 {
		err := writeAtomic(frameDir(s.dir, h), framePath(s.dir, h), b)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
			return err
		}
		s.st.diskFull.Add(1)
		s.mu.Lock()
		s.rec.remove(h) // never evict the frame being written
		var victims []*entry
		if avail, ok := availBytes(s.dir); !ok || avail+s.rec.bytes >= n {
			victims = s.rec.evict(max(s.rec.bytes-want, 0), 0)
		} // else evicting all would not make room: keep the frames
		s.mu.Unlock()
		if len(victims) == 0 {
			return fmt.Errorf("cache %s full: no room for a frame of %d bytes (evicted %d frames, %d bytes; evicting more would not make room): %w",
				s.dir, n, evicted, freed, err)
		}
		k, kb := s.removeFrames(victims, &s.st.evictions)
		evicted += k
		freed += kb
		s.log.Debug("cache: disk full, frames evicted", "op", "store", "frame", "sha256:"+h, "len", n,
			"evicted", k, "evicted_bytes", kb, "err", err)
	}
	s.stored(h, n)
	return nil
}

// stored records frame h, n bytes, just written, and evicts down to the
// disk limit.
func (s *Store) stored(h string, n int64) {
	now := time.Now()
	s.mu.Lock()
	s.rec.use(h, n, now, now)
	var victims []*entry
	if s.maxDisk > 0 && s.rec.bytes > s.maxDisk {
		victims = s.rec.evict(s.maxDisk, 0)
	}
	s.mu.Unlock()
	s.removeFrames(victims, &s.st.evictions)
}

// availBytes returns the bytes an unprivileged writer may still use on the
// file system that holds dir.
func availBytes(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}

// use records a use of frame h found on disk and sets its file's mtime if
// that is due.
func (s *Store) use(h string, size int64, mtime time.Time) {
	now := time.Now()
	s.mu.Lock()
	touch := s.rec.use(h, size, now, mtime)
	s.mu.Unlock()
	if touch {
		s.touch(h, now)
	}
}

// useMemory records a use of frame h served from memory, if it is on disk.
func (s *Store) useMemory(h string) {
	now := time.Now()
	s.mu.Lock()
	touch := s.rec.useIfKnown(h, now)
	s.mu.Unlock()
	if touch {
		s.touch(h, now)
	}
}

// touch sets frame h's file mtime to now, so other processes see the use.
func (s *Store) touch(h string, now time.Time) {
	p := framePath(s.dir, h)
	if err := os.Chtimes(p, now, now); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.forget(h)
			return
		}
		s.log.Debug("cache: frame mtime not set", "op", "touch", "path", p, "err", err)
	}
}

// forget drops frame h from the record: its file is gone.
func (s *Store) forget(h string) {
	s.mu.Lock()
	s.rec.remove(h)
	s.mu.Unlock()
}

func (s *Store) memGet(h string) ([]byte, bool) {
	if s.mem == nil {
		return nil, false
	}
	if b, ok := s.recent.get(h); ok {
		return b, true
	}
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if s.memClosed {
		return nil, false
	}
	return s.mem.Get(h)
}

// memSet offers b to the memory tier, which may drop it.
func (s *Store) memSet(h string, b []byte) {
	if s.mem == nil || len(b) == 0 {
		return
	}
	s.recent.put(h, b)
	s.memMu.RLock()
	defer s.memMu.RUnlock()
	if !s.memClosed {
		s.mem.Set(h, b, int64(len(b)))
	}
}
