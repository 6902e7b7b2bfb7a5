package fusefs

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/lazyfs/lazyfs/index"
)

// copies makes and opens a mount's whole copies of lower files
// (FileCopier), which the read-only mount passes through to the kernel
// (passthrough.go) and the writable mount reads lower files from (a pread
// of one file, not a frame lookup and digest check per 64 KiB).
//
// A copy is made after the fact: an open of a file that has no copy
// queues it, and one goroutine copies the queued files in turn from their
// cached frames (a file with a frame missing is skipped), so that the next
// mount uses them. Cold starts never copy (their frames are not all
// there) and never wait for a copy. A copy is written as its frames are
// read, so a file of any size can have one. Through FUSE a 1 GiB file read
// 1 MiB at a time from 64 KiB frames on disk ran at 368 MB/s against 644
// MB/s native (57 %: on two cores hashing each frame and FUSE's round
// trips cost as much CPU as the read); passed through to its copy, at 549
// MB/s (85 %; bench/results/2026-11-24-fs-copies). An unmount waits
// copyGrace for the copy under way, then stops it and drops the rest: a
// big file opened in a container's last seconds is copied at a later
// mount.
const (
	minCopy   = 16 << 10 // smaller files: an open and a read cost about the same either way
	copyQueue = 256      // files waiting to be copied
	copyGrace = 5 * time.Second
)

type copies struct {
	copier FileCopier // nil: no copies made or used
	fs     *fileSystem

	mu    sync.Mutex
	tried map[*node]bool // nodes this mount copied, queued or found copied

	queue     chan *node         // files to copy, in the order opened
	done      chan struct{}      // closed by wait
	ctx       context.Context    // of the copies; cancelled grace after done
	cancel    context.CancelFunc //
	grace     time.Duration      // copyGrace; shorter in tests
	startOnce sync.Once          // of run
	stopOnce  sync.Once
	wg        sync.WaitGroup // run
}

func newCopies(f *fileSystem, enabled bool) *copies {
	c := &copies{fs: f, tried: map[*node]bool{}, queue: make(chan *node, copyQueue),
		done: make(chan struct{}), grace: copyGrace}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if fc, ok := f.src.(FileCopier); ok && enabled {
		c.copier = fc
	}
	return c
}

// copyable reports whether n's content is one run of its layer's stream
// of a size worth copying.
func copyable(n *node) bool {
	e := n.entry
	return e != nil && e.Type == index.TypeReg && e.Sparse == nil && e.Size >= minCopy
}

// on reports whether this mount makes and uses copies of files like n.
func (c *copies) on(n *node) bool { return c.copier != nil && copyable(n) }

// open returns n's copy, or nil when it has none. Opening a copy may read
// it whole (when its file changed since it was written, see
// cache.Store.OpenCopy).
func (c *copies) open(n *node) *os.File {
	if !c.on(n) {
		return nil
	}
	f := c.copier.OpenCopy(c.fs.layers[n.layer], n.entry.Offset, n.entry.Size)
	if f != nil {
		c.mu.Lock()
		c.tried[n] = true
		c.mu.Unlock()
	}
	return f
}

// later queues n to be copied in the background, unless this mount has
// tried already; a full queue drops it (a later open tries again).
func (c *copies) later(n *node) {
	if !c.on(n) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tried[n] {
		return
	}
	c.startOnce.Do(func() {
		c.wg.Add(1)
		go c.run()
	})
	select {
	case c.queue <- n:
		c.tried[n] = true
	default:
	}
}

// run copies the queued files one after the other until wait.
func (c *copies) run() {
	defer c.wg.Done()
	for {
		select {
		case <-c.done:
			return
		case n := <-c.queue:
			select {
			case <-c.done: // the mount is going: the rest is for a later one
				return
			default:
			}
			e := n.entry
			made, err := c.copier.CopyFile(c.ctx, c.fs.layers[n.layer], e.Offset, e.Size)
			if err != nil && c.ctx.Err() == nil {
				c.fs.log.Debug("cannot keep a copy of a file", "ino", n.ino, "err", err)
			}
			if !made && err == nil {
				c.mu.Lock()
				delete(c.tried, n) // its frames may all be there at its next open
				c.mu.Unlock()
			}
		}
	}
}

// wait stops copying, letting a copy under way finish for up to c.grace,
// and waits.
func (c *copies) wait() {
	c.stopOnce.Do(func() { close(c.done) })
	finished := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(c.grace):
	}
	c.cancel()
	<-finished
}
