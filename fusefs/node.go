package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// opened tells the frame source, if it is a FileOpener, that the lower
// regular file n is being opened (sparse files are left out: their
// content is not one range of the stream).
func (f *fileSystem) opened(n *node) {
	fo, ok := f.src.(FileOpener)
	if e := n.entry; ok && e != nil && e.Type == index.TypeReg && e.Sparse == nil && e.Size > 0 {
		fo.OpenedFile(f.layers[n.layer], e.Offset, e.Size)
	}
}

// read reads the content of a lower regular file.
func (f *fileSystem) read(ctx context.Context, n *node, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.readFrames(ctx, n, dest, off, nil)
}

// readFrames is read; used, if not nil, is called with each frame the
// read took bytes from (its number in the node's layer, and its bytes).
func (f *fileSystem) readFrames(ctx context.Context, n *node, dest []byte, off int64, used func(i int, data []byte)) (fuse.ReadResult, syscall.Errno) {
	e := n.entry
	if e == nil || e.Type != index.TypeReg {
		return nil, syscall.EISDIR
	}
	x := f.layers[n.layer]
	got := 0
	// Pieces clips the read to the file; holes (of sparse files) read as zeros.
	for _, p := range e.Pieces(off, int64(len(dest))) {
		buf := dest[got : got+int(p.Len)]
		got += len(buf)
		if p.Hole() {
			clear(buf)
			continue
		}
		if frame, err := f.readStream(ctx, x, p.Stream, buf, used); err != nil {
			return nil, f.errno(ctx, "read", e.Path, err, slog.Int64("off", off), slog.Int("frame", frame))
		}
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// readStream fills buf with the layer's uncompressed tar stream from off,
// frame by frame, calling used (if not nil) with each. On failure it
// returns the frame that failed.
func (f *fileSystem) readStream(ctx context.Context, x *index.Index, off int64, buf []byte, used func(i int, data []byte)) (int, error) {
	first, end := x.FramesFor(off, int64(len(buf)))
	if rf, ok := f.src.(RunFetcher); ok && end-first > 1 {
		rf.FetchRun(x, first, end)
	}
	got := 0
	for i := first; i < end; i++ {
		data, err := f.src.Frame(ctx, x, i)
		if err != nil {
			return i, err
		}
		from := off + int64(got) - x.Frames[i].Offset
		if from < 0 || from >= int64(len(data)) {
			return i, fmt.Errorf("frame %d: %w: %d bytes, no byte %d", i, index.ErrCorrupt, len(data), from)
		}
		got += copy(buf[got:], data[from:])
		if used != nil {
			used(i, data)
		}
	}
	if got != len(buf) {
		return end - 1, fmt.Errorf("stream [%d,+%d): %w: frames [%d,%d) hold %d of its bytes", off, len(buf), index.ErrCorrupt, first, end, got)
	}
	return 0, nil
}

// fillAttr describes a node as stat(2) shows it.
func (f *fileSystem) fillAttr(n *node, a *fuse.Attr) {
	a.Ino = n.ino
	a.Nlink = n.nlink
	a.Blksize = 4096
	e := n.entry
	if e == nil {
		// A directory no layer names, as a container runtime creates it.
		a.Mode = syscall.S_IFDIR | 0o755
		a.Size = 4096
		a.Blocks = 8
		return
	}
	a.Mode = typeBits(e.Type) | e.Mode
	a.Uid, a.Gid = e.UID, e.GID
	sec, nsec := uint64(e.ModTime.Unix()), uint32(e.ModTime.Nanosecond())
	a.Mtime, a.Mtimensec = sec, nsec
	a.Atime, a.Atimensec = sec, nsec
	a.Ctime, a.Ctimensec = sec, nsec
	switch e.Type {
	case index.TypeReg:
		a.Size = uint64(e.Size)
		a.Blocks = uint64(e.Blocks()) // a sparse file's holes take no space
	case index.TypeDir:
		a.Size = 4096
		a.Blocks = 8
	case index.TypeSymlink:
		a.Size = uint64(len(e.Linkname))
	case index.TypeChar, index.TypeBlock:
		a.Rdev = uint32(unix.Mkdev(e.Devmajor, e.Devminor))
	}
}

func typeBits(t index.Type) uint32 {
	switch t {
	case index.TypeDir:
		return syscall.S_IFDIR
	case index.TypeSymlink:
		return syscall.S_IFLNK
	case index.TypeChar:
		return syscall.S_IFCHR
	case index.TypeBlock:
		return syscall.S_IFBLK
	case index.TypeFIFO:
		return syscall.S_IFIFO
	}
	return syscall.S_IFREG
}

// errno turns an error at the FUSE boundary into the code the reading
// process sees, and logs it once. A cancelled request is EINTR; anything
// else (fetch failure, corrupt frame) is EIO, never ENOENT.
func (f *fileSystem) errno(ctx context.Context, op, path string, err error, attrs ...slog.Attr) syscall.Errno {
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return syscall.EINTR
	}
	args := []any{"op", op, "path", path, "err", err}
	for _, a := range attrs {
		args = append(args, a)
	}
	f.log.Error("read failed", args...)
	if f.onEIO != nil {
		f.onEIO()
	}
	return syscall.EIO
}
