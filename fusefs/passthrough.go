package fusefs

import (
	"context"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazyfs/lazyfs/index"
)

// Files the read-only mount passes through to the kernel (FUSE
// passthrough, Linux 6.9+): an open of a lower file whose whole copy the
// cache holds (FileCopier) hands the kernel that copy, which it then reads
// and maps without asking the mount, through a page cache every mount of
// the layer shares. Without it each container's new mount starts with an
// empty page cache, and every byte a warm start reads crosses FUSE again:
// python3 -c on a fresh mount took 32 ms in-process (and 57 ms in a new
// supervisor, whose frames come from disk) against 11 ms natively; with
// its files passed through, 12-14 ms.
//
// A copy is made after the fact: an open of a file that has no copy
// queues it, and one goroutine copies the queued files in turn from their
// cached frames (a file with a frame missing is skipped), so that the next
// mount passes them through. Cold starts never copy (their frames are not
// all there) and never wait for a copy; an unmount lets the copy under way
// finish and drops the rest.
//
// The kernel keeps one mode per inode: while an open of it reads through
// the page cache (FOPEN_KEEP_CACHE), a passthrough open fails (ETXTBSY),
// and the other way round; all passthrough opens of one inode must use
// the same backing file. So a node opened the cached way stays so until
// all those opens are released, and the passthrough opens of a node share
// one registered backing file, unregistered when the last is released.
//
// A copy is written as its frames are read, so a file of any size can
// have one. Through FUSE a 1 GiB file read 1 MiB at a time from 64 KiB
// frames on disk ran at 368 MB/s against 644 MB/s native (57 %: on two
// cores hashing each frame and FUSE's round trips cost as much CPU as the
// read); passed through to its copy, at 549 MB/s (85 %;
// bench/results/2026-11-24-fs-copies). An unmount waits copyGrace for the
// copy under way, then stops it: a big file opened in a container's last
// seconds is copied at a later mount.
const (
	minCopy   = 16 << 10 // smaller files: an open and a read cost about the same either way
	copyQueue = 256      // files waiting to be copied
	copyGrace = 5 * time.Second
)

// passthrough is a read-only mount's record of its open files.
type passthrough struct {
	copier FileCopier // nil: no copies, every open is cached

	mu      sync.Mutex
	off     bool // the kernel refused a backing file: try no more
	handles map[uint64]handle
	nextFh  uint64
	backing map[*node]*backingFile
	cached  map[*node]int  // the node's opens in the page-cache mode
	copied  map[*node]bool // nodes this mount copied or tried to

	queue     chan *node         // files to copy, in the order opened
	done      chan struct{}      // closed by waitCopies
	ctx       context.Context    // of the copies; cancelled grace after done
	cancel    context.CancelFunc //
	grace     time.Duration      // copyGrace; shorter in tests
	startOnce sync.Once          // of copyQueued
	stopOnce  sync.Once
	wg        sync.WaitGroup // copyQueued
}

type handle struct {
	n           *node
	passthrough bool
}

type backingFile struct {
	id   int32
	f    *os.File
	refs int
}

func newPassthrough(src FrameSource, enabled bool) *passthrough {
	p := &passthrough{handles: map[uint64]handle{}, backing: map[*node]*backingFile{},
		cached: map[*node]int{}, copied: map[*node]bool{},
		queue: make(chan *node, copyQueue), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.grace = copyGrace
	if c, ok := src.(FileCopier); ok && enabled {
		p.copier = c
	}
	return p
}

// copyable reports whether n's content is one run of its layer's stream
// of a size worth passing through.
func copyable(n *node) bool {
	e := n.entry
	return e != nil && e.Type == index.TypeReg && e.Sparse == nil && e.Size >= minCopy
}

// openFile answers an OPEN of the lower regular file n: passed through to
// its copy when it has one and no open of it reads through the page
// cache, else through the page cache (and then copied in the background
// if it can be).
func (r *roFS) openFile(n *node, out *fuse.OpenOut) {
	p := r.pt
	if p.copier == nil || !copyable(n) {
		r.opened(n)
		out.OpenFlags = fuse.FOPEN_KEEP_CACHE
		return
	}
	// Opening a copy reads it whole the first time (its SHA-256 is
	// checked): not under the lock every open takes.
	p.mu.Lock()
	try := p.backing[n] == nil && p.cached[n] == 0 && !p.off && r.server != nil
	p.mu.Unlock()
	var f *os.File
	if try {
		f = p.copier.OpenCopy(r.layers[n.layer], n.entry.Offset, n.entry.Size)
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backingLocked(r, n, f); b != nil {
		b.refs++
		out.Fh = p.handleLocked(n, true)
		// FOPEN_KEEP_CACHE and the like are refused with it (EINVAL).
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH
		out.BackingID = b.id
		return
	}
	p.cached[n]++
	out.Fh = p.handleLocked(n, false)
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	r.opened(n)
	if !p.copied[n] {
		r.copyLater(n)
	}
}

// backingLocked returns n's registered backing file, or registers f, the
// copy of n just opened (nil: none), when no open of n reads through the
// page cache; nil when n is to be read through the page cache. It closes
// f when f is not registered.
func (p *passthrough) backingLocked(r *roFS, n *node, f *os.File) *backingFile {
	b := p.backing[n]
	if f == nil {
		return b
	}
	if b != nil || p.cached[n] > 0 || p.off {
		// Another open registered a copy, or opened n the cached way,
		// while this one opened f.
		f.Close()
		return b
	}
	id, errno := r.server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		f.Close()
		p.off = true
		r.log.Info("the kernel refused a passthrough file: files are read through the mount", "err", syscall.Errno(errno))
		return nil
	}
	b = &backingFile{id: id, f: f}
	p.backing[n] = b
	p.copied[n] = true
	return b
}

func (p *passthrough) handleLocked(n *node, passthrough bool) uint64 {
	p.nextFh++
	p.handles[p.nextFh] = handle{n, passthrough}
	return p.nextFh
}

// release ends the open fh.
func (r *roFS) release(fh uint64) {
	p := r.pt
	p.mu.Lock()
	defer p.mu.Unlock()
	h, ok := p.handles[fh]
	if !ok {
		return
	}
	delete(p.handles, fh)
	if !h.passthrough {
		if p.cached[h.n]--; p.cached[h.n] <= 0 {
			delete(p.cached, h.n)
		}
		return
	}
	b := p.backing[h.n]
	if b.refs--; b.refs > 0 {
		return
	}
	delete(p.backing, h.n)
	if errno := r.server.UnregisterBackingFd(b.id); errno != 0 {
		r.log.Debug("unregister passthrough file", "ino", h.n.ino, "err", syscall.Errno(errno))
	}
	b.f.Close()
}

// copyLater queues n to be copied in the background, if all its frames
// are cached then; a full queue drops it (a later open tries again).
// Called with p.mu held.
func (r *roFS) copyLater(n *node) {
	p := r.pt
	p.startOnce.Do(func() {
		p.wg.Add(1)
		go r.copyQueued()
	})
	select {
	case p.queue <- n:
		p.copied[n] = true
	default:
	}
}

// copyQueued copies the queued files one after the other until
// waitCopies.
func (r *roFS) copyQueued() {
	p := r.pt
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case n := <-p.queue:
			select {
			case <-p.done: // the mount is going: the rest is for a later one
				return
			default:
			}
			e := n.entry
			made, err := p.copier.CopyFile(p.ctx, r.layers[n.layer], e.Offset, e.Size)
			if err != nil && p.ctx.Err() == nil {
				r.log.Debug("cannot keep a copy of a file", "ino", n.ino, "err", err)
			}
			if !made && err == nil {
				p.mu.Lock()
				delete(p.copied, n) // its frames may all be there at its next open
				p.mu.Unlock()
			}
		}
	}
}

// waitCopies stops copying, letting a copy under way finish for up to
// p.grace, and waits.
func (p *passthrough) waitCopies() {
	p.stopOnce.Do(func() { close(p.done) })
	finished := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(p.grace):
	}
	p.cancel()
	<-finished
}
