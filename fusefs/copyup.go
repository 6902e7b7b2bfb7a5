package fusefs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// copyUp gives n an upper entry, a copy of its lower one (content,
// owner, mode, times and xattrs), after its parent directories. A file's
// content is copied into the work directory without mu held, then renamed
// into place; the copy goes on if the request that started it is
// interrupted.
func (f *cowFS) copyUp(ctx context.Context, n *cowNode) syscall.Errno {
	f.mu.RLock()
	up := n.upper
	f.mu.RUnlock()
	if up {
		return 0
	}
	if n.isDir() {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.copyUpDirLocked(n)
	}

	n.cu.Lock()
	defer n.cu.Unlock()
	f.mu.RLock()
	up, lower := n.upper, n.lower
	f.mu.RUnlock()
	if up {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), copyUpTimeout)
	defer cancel()
	tmp, err := f.prepare(ctx, lower)
	if err != nil {
		var lerr *lowerReadError
		if errors.As(err, &lerr) {
			return f.errno(ctx, "copy-up", lower.entry.Path, lerr.err, slog.Int("frame", lerr.frame))
		}
		return fs.ToErrno(err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	errno := f.placeCopyLocked(n, tmp)
	if errno != 0 {
		os.Remove(tmp)
	}
	return errno
}

// placeCopyLocked renames the copy of n's lower entry at tmp into place.
// The caller holds mu for writing.
func (f *cowFS) placeCopyLocked(n *cowNode, tmp string) syscall.Errno {
	if n.upper {
		return syscall.EEXIST // cannot happen: n.cu serializes copy-ups of n
	}
	p := n.parent()
	if p == nil {
		return syscall.ENOENT // removed meanwhile
	}
	if errno := f.copyUpDirLocked(p); errno != 0 {
		return errno
	}
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	dst := f.upperPath(rel)
	if err := moveIn(tmp, dst); err != nil {
		return fs.ToErrno(err)
	}
	n.upper = true
	if n.linked {
		// The copy is a new inode for this name only; its next lookup
		// gives it an upper identity (it is never cached).
		return 0
	}
	// Keep the node's identity for every name of the copy while the node
	// lives, so that links made from it share one kernel inode.
	var st unix.Stat_t
	gen, err := lstat(dst, &st)
	if err != nil {
		return fs.ToErrno(err)
	}
	key := fs.StableAttr{Mode: st.Mode & unix.S_IFMT, Ino: st.Ino | upperIno, Gen: gen}
	f.aliasMu.Lock()
	f.alias[key] = n.StableAttr()
	n.aliasKey = key
	f.aliasMu.Unlock()
	return 0
}

// copyUpDirLocked gives the directory n an upper directory, after its
// parents. The caller holds mu for writing.
func (f *cowFS) copyUpDirLocked(n *cowNode) syscall.Errno {
	if n.upper {
		return 0
	}
	p := n.parent()
	if p == nil {
		return syscall.ENOENT
	}
	if errno := f.copyUpDirLocked(p); errno != 0 {
		return errno
	}
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	tmp, err := f.prepare(context.Background(), n.lower)
	if err != nil {
		return fs.ToErrno(err)
	}
	if err := moveIn(tmp, f.upperPath(rel)); err != nil {
		os.Remove(tmp)
		return fs.ToErrno(err)
	}
	n.upper = true
	return 0
}

// moveIn renames a new entry from the work directory to dst, which must
// not exist, and keeps the times of dst's directory: to the merged view a
// copy-up changes nothing (overlayfs does the same).
func moveIn(tmp, dst string) error {
	dir := filepath.Dir(dst)
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: dir, Err: err}
	}
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE); err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: dst, Err: err}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: dir, Err: err}
	}
	return nil
}

// lowerReadError is a failure to read a lower file's content.
type lowerReadError struct {
	frame int
	err   error
}

func (e *lowerReadError) Error() string { return e.err.Error() }
func (e *lowerReadError) Unwrap() error { return e.err }

// prepare makes a copy of the lower entry c in the work directory and
// returns its name.
func (f *cowFS) prepare(ctx context.Context, c *node) (string, error) {
	tmp := f.tmpPath()
	e := c.entry
	var err error
	switch c.typ() {
	case index.TypeDir:
		err = unix.Mkdir(tmp, 0o700)
	case index.TypeReg:
		err = f.copyContent(ctx, c, tmp)
	case index.TypeSymlink:
		err = unix.Symlink(e.Linkname, tmp)
	case index.TypeChar:
		err = unix.Mknod(tmp, unix.S_IFCHR|0o600, int(unix.Mkdev(e.Devmajor, e.Devminor)))
	case index.TypeBlock:
		err = unix.Mknod(tmp, unix.S_IFBLK|0o600, int(unix.Mkdev(e.Devmajor, e.Devminor)))
	case index.TypeFIFO:
		err = unix.Mknod(tmp, unix.S_IFIFO|0o600, 0)
	default:
		return "", fmt.Errorf("copy up %s: %w: type %v", e.Path, syscall.EINVAL, c.typ())
	}
	if err == nil {
		err = copyMeta(c, tmp)
	}
	if err != nil {
		os.RemoveAll(tmp)
		var lerr *lowerReadError
		if errors.As(err, &lerr) {
			return "", err
		}
		return "", &os.PathError{Op: "copy up", Path: tmp, Err: err}
	}
	return tmp, nil
}

// copyChunk is how much of a lower file a copy-up reads at once.
const copyChunk = 4 << 20

// copyContent writes the content of the lower regular file c to a new
// file dst, leaving its holes unwritten, and syncs it.
func (f *cowFS) copyContent(ctx context.Context, c *node, dst string) (err error) {
	fd, err := unix.Open(dst, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
	}()
	e := c.entry
	x := f.layers[c.layer]
	buf := make([]byte, copyChunk)
	for off := int64(0); off < e.Size; off += copyChunk {
		pos := off
		for _, p := range e.Pieces(off, copyChunk) {
			if !p.Hole() {
				b := buf[:p.Len]
				if frame, err := f.readStream(ctx, x, p.Stream, b, nil); err != nil {
					return &lowerReadError{frame: frame, err: err}
				}
				for len(b) > 0 {
					n, err := unix.Pwrite(fd, b, pos)
					if err != nil {
						return err
					}
					b, pos = b[n:], pos+int64(n)
				}
				continue
			}
			pos += p.Len
		}
	}
	if err := unix.Ftruncate(fd, e.Size); err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// copyMeta gives the copy at p of the lower entry c its xattrs, owner,
// mode and times.
func copyMeta(c *node, p string) error {
	e := c.entry
	if e == nil {
		// A directory no layer names: as the read-only mount shows it.
		if err := unix.Chmod(p, 0o755); err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, make([]unix.Timespec, 2), unix.AT_SYMLINK_NOFOLLOW)
	}
	for _, x := range e.Xattrs {
		if strings.HasPrefix(x.Name, overlayXattrs) && !strings.HasPrefix(x.Name, escapedXattrs) {
			continue
		}
		err := unix.Lsetxattr(p, x.Name, []byte(x.Value), 0)
		if err != nil && !(e.Type != index.TypeReg && e.Type != index.TypeDir && errors.Is(err, unix.EPERM)) {
			return err
		}
	}
	if err := unix.Lchown(p, int(e.UID), int(e.GID)); err != nil {
		return err
	}
	if e.Type != index.TypeSymlink {
		// After chown, which clears setuid and setgid bits.
		if err := unix.Chmod(p, e.Mode&0o7777); err != nil {
			return err
		}
	}
	ts := unix.NsecToTimespec(e.ModTime.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// visibleXattr is the name the merged view shows for the stored xattr
// name, false for one of overlayfs' own.
func visibleXattr(stored string) (string, bool) {
	if rest, ok := strings.CutPrefix(stored, escapedXattrs); ok {
		return overlayXattrs + rest, true
	}
	if strings.HasPrefix(stored, overlayXattrs) {
		return "", false
	}
	return stored, true
}

// storedXattr is the name under which the xattr the merged view calls
// name is stored.
func storedXattr(name string) string {
	if rest, ok := strings.CutPrefix(name, overlayXattrs); ok {
		return escapedXattrs + rest
	}
	return name
}
