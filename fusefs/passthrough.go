package fusefs

import (
	"os"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
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
// Copies are made after the fact (copies.go): cold starts never copy.
//
// The kernel keeps one mode per inode: while an open of it reads through
// the page cache (FOPEN_KEEP_CACHE), a passthrough open fails (ETXTBSY),
// and the other way round; all passthrough opens of one inode must use
// the same backing file. So a node opened the cached way stays so until
// all those opens are released, and the passthrough opens of a node share
// one registered backing file, unregistered when the last is released.

// passthrough is a read-only mount's record of its open files.
type passthrough struct {
	mu      sync.Mutex
	off     bool // the kernel refused a backing file: try no more
	handles map[uint64]handle
	nextFh  uint64
	backing map[*node]*backingFile
	cached  map[*node]int // the node's opens in the page-cache mode
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

func newPassthrough() *passthrough {
	return &passthrough{handles: map[uint64]handle{}, backing: map[*node]*backingFile{}, cached: map[*node]int{}}
}

// openFile answers an OPEN of the lower regular file n: passed through to
// its copy when it has one and no open of it reads through the page
// cache, else through the page cache (and then copied in the background
// if it can be).
func (r *roFS) openFile(n *node, out *fuse.OpenOut) {
	p := r.pt
	if !r.copies.on(n) {
		r.opened(n)
		out.OpenFlags = fuse.FOPEN_KEEP_CACHE
		return
	}
	// Opening a copy may read it whole (its SHA-256 is checked when its
	// file changed since it was written): not under the lock every open
	// takes.
	p.mu.Lock()
	try := p.backing[n] == nil && p.cached[n] == 0 && !p.off && r.server != nil
	p.mu.Unlock()
	var f *os.File
	if try {
		f = r.copies.open(n)
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
	r.copies.later(n)
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
