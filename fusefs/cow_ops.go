package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"strconv"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Opening and files.

func (n *cowNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		if errno := f.copyUp(ctx, n); errno != 0 {
			return nil, 0, errno
		}
	}
	f.mu.RLock()
	up, lower := n.upper, n.lower
	f.mu.RUnlock()
	if !up {
		// Lower files never change: the kernel may keep their pages. A
		// write through another descriptor of this inode updates them.
		// The copy is opened outside the lock (it may be hashed first);
		// a copy-up meanwhile is seen by Read.
		l := &lowerFile{n: n, copy: f.copies.open(lower)}
		if l.copy == nil {
			f.opened(lower)
			f.copies.later(lower)
		}
		return l, fuse.FOPEN_KEEP_CACHE, 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	rel, ok := n.rel()
	if !ok {
		return nil, 0, syscall.ENOENT
	}
	fd, err := unix.Open(f.upperPath(rel), openFlags(flags)|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	return newUpperFile(fd), 0, 0
}

// openFlags are the flags to open an upper file with for a FUSE open with
// flags: the kernel has done creation and truncation, and it computes
// append offsets itself.
func openFlags(flags uint32) int {
	return int(flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_APPEND|unix.O_NOCTTY|fuse.FMODE_EXEC) | unix.O_CLOEXEC
}

// upperFile is an open upper file. It forwards to fs.LoopbackFile but does
// not offer its descriptor for FUSE passthrough: the kernel refuses (EIO)
// to open an inode in passthrough mode while it is open in cached mode,
// as a lower file being copied up can be.
type upperFile struct {
	fd int
	lf *fs.LoopbackFile
}

var (
	_ fs.FileReader    = (*upperFile)(nil)
	_ fs.FileWriter    = (*upperFile)(nil)
	_ fs.FileFlusher   = (*upperFile)(nil)
	_ fs.FileFsyncer   = (*upperFile)(nil)
	_ fs.FileReleaser  = (*upperFile)(nil)
	_ fs.FileLseeker   = (*upperFile)(nil)
	_ fs.FileAllocater = (*upperFile)(nil)
)

func newUpperFile(fd int) *upperFile {
	return &upperFile{fd: fd, lf: fs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), ""))}
}

func (u *upperFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return u.lf.Read(ctx, dest, off)
}

func (u *upperFile) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	return u.lf.Write(ctx, data, off)
}

func (u *upperFile) Flush(ctx context.Context) syscall.Errno { return u.lf.Flush(ctx) }

func (u *upperFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return u.lf.Fsync(ctx, flags)
}

func (u *upperFile) Release(ctx context.Context) syscall.Errno { return u.lf.Release(ctx) }

func (u *upperFile) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return u.lf.Lseek(ctx, off, whence)
}

func (u *upperFile) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return u.lf.Allocate(ctx, off, size, mode)
}

// lowerFile is a lower file opened for reading: from the cache's whole
// copy of it when there is one (copies.go), else from its frames. Once the
// file has been copied up (through another descriptor) it reads the upper
// file, as overlayfs does since Linux 4.19.
type lowerFile struct {
	n    *cowNode
	copy *os.File // the cache's copy of the lower file; nil: none

	mu sync.Mutex // guards up
	up *os.File   // the upper file, opened on the first read after the copy-up
}

var (
	_ fs.FileReader   = (*lowerFile)(nil)
	_ fs.FileReleaser = (*lowerFile)(nil)
	_ fs.FileFsyncer  = (*lowerFile)(nil)
)

// Fsync has nothing to do: the file was opened for reading.
func (l *lowerFile) Fsync(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (l *lowerFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := l.n.fs
	f.mu.RLock()
	up, lower := l.n.upper, l.n.lower
	rel, ok := l.n.rel()
	f.mu.RUnlock()
	if !up && l.copy != nil {
		return readFile(l.copy, dest, off)
	}
	if !up {
		return f.read(ctx, lower, dest, off)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up == nil {
		if !ok {
			return nil, syscall.ENOENT
		}
		file, err := os.OpenFile(f.upperPath(rel), os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		l.up = file
	}
	return readFile(l.up, dest, off)
}

// readFile answers a READ from the plain file f.
func readFile(f *os.File, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := f.ReadAt(dest, off)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (l *lowerFile) Release(ctx context.Context) syscall.Errno {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up != nil {
		l.up.Close()
		l.up = nil
	}
	if l.copy != nil {
		l.copy.Close() // no READ comes after RELEASE
	}
	return 0
}

// Attributes and xattrs.

func (n *cowNode) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fs
	uf, _ := fh.(*upperFile)
	if uf == nil {
		if errno := f.copyUp(ctx, n); errno != 0 {
			return errno
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	// p names the file: the open descriptor (an unlinked file has no
	// other name) or the upper path.
	var p string
	if uf != nil {
		p = "/proc/self/fd/" + strconv.Itoa(uf.fd)
	} else {
		rel, ok := n.rel()
		if !ok {
			return syscall.ENOENT
		}
		p = f.upperPath(rel)
	}
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
			return fs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		var err error
		if uf != nil {
			err = unix.Fchown(uf.fd, u, g)
		} else {
			err = unix.Lchown(p, u, g)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	if size, ok := in.GetSize(); ok {
		var err error
		if uf != nil {
			// ftruncate(2) sets the times even when the size stays: so
			// does O_TRUNC, which the kernel sends as this.
			err = unix.Ftruncate(uf.fd, int64(size))
		} else {
			err = unix.Truncate(p, int64(size))
		}
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		switch {
		case in.Valid&fuse.FATTR_ATIME_NOW != 0:
			ts[0].Nsec = unix.UTIME_NOW
		case in.Valid&fuse.FATTR_ATIME != 0:
			ts[0] = unix.Timespec{Sec: int64(in.Atime), Nsec: int64(in.Atimensec)}
		}
		switch {
		case in.Valid&fuse.FATTR_MTIME_NOW != 0:
			ts[1].Nsec = unix.UTIME_NOW
		case in.Valid&fuse.FATTR_MTIME != 0:
			ts[1] = unix.Timespec{Sec: int64(in.Mtime), Nsec: int64(in.Mtimensec)}
		}
		flags := unix.AT_SYMLINK_NOFOLLOW
		if uf != nil {
			flags = 0 // follow /proc/self/fd/N to the file
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, flags); err != nil {
			return fs.ToErrno(err)
		}
	}
	var st unix.Stat_t
	var err error
	if uf != nil {
		err = unix.Fstat(uf.fd, &st)
	} else {
		err = unix.Lstat(p, &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	attrFromStat(&out.Attr, &st)
	mergedNlink(n, &out.Attr)
	out.SetTimeout(f.ttl(n))
	return 0
}

func (n *cowNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	f := n.fs
	stored := storedXattr(attr)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !n.upper {
		if n.lower.entry == nil {
			return 0, syscall.ENODATA
		}
		for _, x := range n.lower.entry.Xattrs {
			if x.Name == stored {
				if len(dest) < len(x.Value) {
					return uint32(len(x.Value)), syscall.ERANGE
				}
				return uint32(copy(dest, x.Value)), 0
			}
		}
		return 0, syscall.ENODATA
	}
	rel, ok := n.rel()
	if !ok {
		return 0, syscall.ENOENT
	}
	p := f.upperPath(rel)
	sz, err := unix.Lgetxattr(p, stored, dest)
	if errors.Is(err, unix.ERANGE) {
		if sz, err = unix.Lgetxattr(p, stored, nil); err == nil {
			return uint32(sz), syscall.ERANGE
		}
	}
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(sz), 0
}

func (n *cowNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	f := n.fs
	var names []string
	f.mu.RLock()
	if !n.upper {
		if e := n.lower.entry; e != nil {
			for _, x := range e.Xattrs {
				names = append(names, x.Name)
			}
		}
	} else {
		rel, ok := n.rel()
		if !ok {
			f.mu.RUnlock()
			return 0, syscall.ENOENT
		}
		var err error
		if names, err = listXattrs(f.upperPath(rel)); err != nil {
			f.mu.RUnlock()
			return 0, fs.ToErrno(err)
		}
	}
	f.mu.RUnlock()
	var b []byte
	for _, stored := range names {
		if name, ok := visibleXattr(stored); ok {
			b = append(append(b, name...), 0)
		}
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// listXattrs returns the names of p's xattrs, not following a symlink.
func listXattrs(p string) ([]string, error) {
	for {
		sz, err := unix.Llistxattr(p, nil)
		if err != nil || sz == 0 {
			return nil, err
		}
		buf := make([]byte, sz)
		sz, err = unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, name := range bytes.Split(buf[:sz], []byte{0}) {
			if len(name) > 0 {
				names = append(names, string(name))
			}
		}
		return names, nil
	}
}

func (n *cowNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	f := n.fs
	if errno := f.copyUp(ctx, n); errno != 0 {
		return errno
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	return fs.ToErrno(unix.Lsetxattr(f.upperPath(rel), storedXattr(attr), data, int(flags)))
}

func (n *cowNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	f := n.fs
	stored := storedXattr(attr)
	f.mu.RLock()
	if !n.upper {
		// Removing what a lower entry does not have copies nothing up.
		found := false
		if e := n.lower.entry; e != nil {
			for _, x := range e.Xattrs {
				found = found || x.Name == stored
			}
		}
		if !found {
			f.mu.RUnlock()
			return syscall.ENODATA
		}
	}
	f.mu.RUnlock()
	if errno := f.copyUp(ctx, n); errno != 0 {
		return errno
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	return fs.ToErrno(unix.Lremovexattr(f.upperPath(rel), stored))
}

// Making entries.

// newEntry prepares to make name in the directory n: it copies n up and
// returns what the upper directory has at the name (nothing, or a
// whiteout). The caller holds mu for writing.
func (f *cowFS) newEntry(n *cowNode, name string) (dentry, string, syscall.Errno) {
	if errno := f.copyUpDirLocked(n); errno != 0 {
		return dentry{}, "", errno
	}
	d, dirRel, errno := f.entry(n, name)
	if errno == 0 && d.exists() {
		errno = syscall.EEXIST
	}
	return d, dirRel, errno
}

// owner returns the owner of a new entry in the upper directory dir: the
// caller's, with the directory's group if it is setgid (and then a new
// directory is setgid too).
func owner(ctx context.Context, dir string) (uid, gid int, setgid bool, err error) {
	if c, ok := fuse.FromContext(ctx); ok {
		uid, gid = int(c.Uid), int(c.Gid)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return 0, 0, false, err
	}
	if st.Mode&unix.S_ISGID != 0 {
		return uid, int(st.Gid), true, nil
	}
	return uid, gid, false, nil
}

// create makes a new entry name in n: build makes it at tmp in the work
// directory with the owner given, then it is renamed into place (over a
// whiteout, if one is there). It fills out and returns the new node.
func (f *cowFS) create(ctx context.Context, n *cowNode, name string, out *fuse.EntryOut,
	build func(tmp string, uid, gid int, setgid, overWhiteout bool) error) (*fs.Inode, syscall.Errno) {
	d, dirRel, errno := f.newEntry(n, name)
	if errno != 0 {
		return nil, errno
	}
	dir := f.upperPath(dirRel)
	uid, gid, setgid, err := owner(ctx, dir)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	tmp := f.tmpPath()
	if err := build(tmp, uid, gid, setgid, d.wh); err != nil {
		os.RemoveAll(tmp)
		return nil, fs.ToErrno(err)
	}
	rel := path.Join(dirRel, name)
	if err := placeNew(tmp, f.upperPath(rel), d.wh); err != nil {
		os.RemoveAll(tmp)
		return nil, fs.ToErrno(err)
	}
	return f.newNode(ctx, n, dirRel, name, out)
}

// placeNew renames a new entry from the work directory to dst: over a
// whiteout there, else where nothing is.
func placeNew(tmp, dst string, overWhiteout bool) error {
	if !overWhiteout {
		return unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	}
	// A directory cannot replace a non-directory: exchange, then remove
	// the whiteout, now at tmp.
	if err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); err != nil {
		return err
	}
	unix.Unlink(tmp) // a left-over in the work directory, emptied at the next mount
	return nil
}

// newNode returns the node for the upper entry just made at name in n and
// fills out. The caller holds mu.
func (f *cowFS) newNode(ctx context.Context, n *cowNode, dirRel, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	d, errno := f.entryAt(true, n.lower, dirRel, name)
	if errno != 0 {
		return nil, errno
	}
	if !d.up {
		return nil, syscall.EIO // removed behind our back
	}
	c := f.newChild(&d)
	f.fillEntry(&d, c, out)
	return n.NewInode(ctx, c, f.identity(&d, path.Join(dirRel, name))), 0
}

// setOwnerMode gives a new entry its owner, then its mode (chown may clear
// setuid and setgid bits).
func setOwnerMode(p string, uid, gid int, mode uint32, symlink bool) error {
	if err := unix.Lchown(p, uid, gid); err != nil {
		return err
	}
	if symlink {
		return nil
	}
	return unix.Fchmodat(unix.AT_FDCWD, p, mode&0o7777, 0)
}

func (n *cowNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	fd := -1
	in, errno := f.create(ctx, n, name, out, func(tmp string, uid, gid int, _, _ bool) error {
		var err error
		fd, err = unix.Open(tmp, openFlags(flags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		if err := setOwnerMode(tmp, uid, gid, mode, false); err != nil {
			unix.Close(fd)
			fd = -1
			return err
		}
		return nil
	})
	if errno != 0 {
		if fd >= 0 {
			unix.Close(fd)
		}
		return nil, nil, 0, errno
	}
	return in, newUpperFile(fd), 0, 0
}

func (n *cowNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.create(ctx, n, name, out, func(tmp string, uid, gid int, setgid, overWhiteout bool) error {
		if err := unix.Mkdir(tmp, 0o700); err != nil {
			return err
		}
		if overWhiteout {
			// Whatever the lower layers had here stays hidden.
			if err := unix.Lsetxattr(tmp, OpaqueXattr, []byte("y"), 0); err != nil {
				return err
			}
		}
		if setgid {
			mode |= unix.S_ISGID
		}
		return setOwnerMode(tmp, uid, gid, mode, false)
	})
}

func (n *cowNode) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == 0 {
		return nil, syscall.EPERM // a whiteout: overlayfs refuses it too
	}
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.create(ctx, n, name, out, func(tmp string, uid, gid int, _, _ bool) error {
		if err := unix.Mknod(tmp, mode&unix.S_IFMT|0o600, int(dev)); err != nil {
			return err
		}
		return setOwnerMode(tmp, uid, gid, mode, false)
	})
}

func (n *cowNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.create(ctx, n, name, out, func(tmp string, uid, gid int, _, _ bool) error {
		if err := unix.Symlink(target, tmp); err != nil {
			return err
		}
		return setOwnerMode(tmp, uid, gid, 0, true)
	})
}

func (n *cowNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	t, ok := target.(*cowNode)
	if !ok || t.fs != f {
		return nil, syscall.EXDEV
	}
	// As overlayfs: the target is copied up first (a lower file with
	// other names loses them), then linked.
	if errno := f.copyUp(ctx, t); errno != 0 {
		return nil, errno
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !t.upper {
		return nil, syscall.ENOENT
	}
	trel, ok := t.rel()
	if !ok && t.tmpfile == nil {
		return nil, syscall.ENOENT
	}
	return f.create(ctx, n, name, out, func(tmp string, _, _ int, _, _ bool) error {
		if !ok {
			// An O_TMPFILE file: link it from its descriptor.
			src := "/proc/self/fd/" + strconv.Itoa(t.tmpfile.fd)
			return unix.Linkat(unix.AT_FDCWD, src, unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW)
		}
		return unix.Link(f.upperPath(trel), tmp)
	})
}

// Tmpfile makes an unnamed file (open(2) with O_TMPFILE) in the upper
// directory, as overlayfs does since Linux 6.7.
func (n *cowNode) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.copyUpDirLocked(n); errno != 0 {
		return nil, nil, 0, errno
	}
	rel, ok := n.rel()
	if !ok {
		return nil, nil, 0, syscall.ENOENT
	}
	dir := f.upperPath(rel)
	uid, gid, _, err := owner(ctx, dir)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	fd, err := unix.Open(dir, openFlags(flags)&^unix.O_TMPFILE|unix.O_TMPFILE, 0o600)
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	if err := setOwnerMode("/proc/self/fd/"+strconv.Itoa(fd), uid, gid, mode, false); err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	var st unix.Stat_t
	gen, err := fstat(fd, &st)
	if err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	uf := newUpperFile(fd)
	c := &cowNode{fs: f, upper: true, tmpfile: uf}
	attrFromStat(&out.Attr, &st)
	out.SetEntryTimeout(f.timeout)
	out.SetAttrTimeout(f.timeout)
	id := fs.StableAttr{Mode: unix.S_IFREG, Ino: st.Ino | upperIno, Gen: gen}
	return n.NewInode(ctx, c, id), uf, 0, 0
}

// Removing entries.

func (n *cowNode) Unlink(ctx context.Context, name string) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	d, dirRel, errno := f.entry(n, name)
	switch {
	case errno != 0:
		return errno
	case !d.exists():
		return syscall.ENOENT
	case d.isDir():
		return syscall.EISDIR
	}
	return f.remove(n, &d, dirRel, name)
}

func (n *cowNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	f := n.fs
	f.mu.Lock()
	defer f.mu.Unlock()
	d, dirRel, errno := f.entry(n, name)
	switch {
	case errno != 0:
		return errno
	case !d.exists():
		return syscall.ENOENT
	case !d.isDir():
		return syscall.ENOTDIR
	}
	empty, _, errno := f.emptyDir(&d, path.Join(dirRel, name))
	if errno != 0 {
		return errno
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	return f.remove(n, &d, dirRel, name)
}

// remove takes the entry d, at name in n, out of the merged view: where a
// lower layer has the name a whiteout replaces it. A directory must show
// nothing; its upper part may hold whiteouts. The caller holds mu for
// writing.
func (f *cowFS) remove(n *cowNode, d *dentry, dirRel, name string) syscall.Errno {
	dst := f.upperPath(path.Join(dirRel, name))
	if d.lower == nil {
		// Only the upper layer has it.
		if !d.isDir() {
			return fs.ToErrno(unix.Unlink(dst))
		}
		err := unix.Rmdir(dst)
		if errors.Is(err, unix.ENOTEMPTY) {
			err = f.removeDir(dst) // whiteouts only
		}
		return fs.ToErrno(err)
	}
	if errno := f.copyUpDirLocked(n); errno != 0 {
		return errno
	}
	wh := f.tmpPath()
	if err := unix.Mknod(wh, unix.S_IFCHR, 0); err != nil {
		return fs.ToErrno(err)
	}
	var err error
	switch {
	case !d.up:
		err = unix.Renameat2(unix.AT_FDCWD, wh, unix.AT_FDCWD, dst, unix.RENAME_NOREPLACE)
	case !d.isDir():
		err = unix.Rename(wh, dst)
	default:
		// Swap the directory out for the whiteout, then clear it away
		// (what is left is emptied at the next mount).
		if err = unix.Renameat2(unix.AT_FDCWD, wh, unix.AT_FDCWD, dst, unix.RENAME_EXCHANGE); err == nil {
			if rerr := os.RemoveAll(wh); rerr != nil {
				f.log.Warn("cannot clear a removed directory from the work directory", "path", wh, "err", rerr)
			}
		}
	}
	if err != nil {
		os.Remove(wh)
		return fs.ToErrno(err)
	}
	return 0
}

// removeDir moves the directory dir to the work directory and removes it
// there with what it holds.
func (f *cowFS) removeDir(dir string) error {
	tmp := f.tmpPath()
	if err := unix.Rename(dir, tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(tmp); err != nil {
		f.log.Warn("cannot clear a removed directory from the work directory", "path", tmp, "err", err)
	}
	return nil
}

// Renaming.

// Rename renames as overlayfs without redirect_dir does: a directory that
// has a lower part (a lower or merged directory) cannot be renamed, not
// even onto a non-empty directory or as either side of RENAME_EXCHANGE:
// EXDEV, after the kernel's own checks (EINVAL for a move into itself,
// ENOTDIR, EISDIR, EEXIST for RENAME_NOREPLACE). Tools like mv then copy
// and delete. What moves is copied up first; where a lower layer has the
// old name a whiteout is left; a directory moved into a merged directory
// is made opaque.
func (n *cowNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := n.fs
	np, ok := newParent.(*cowNode)
	if !ok || np.fs != f {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0

	// Refuse what overlayfs refuses before anything is copied up.
	check := func() (od, nd dentry, orel, nrel string, errno syscall.Errno) {
		if od, orel, errno = f.entry(n, name); errno != 0 {
			return
		}
		if nd, nrel, errno = f.entry(np, newName); errno != 0 {
			return
		}
		orel, nrel = path.Join(orel, name), path.Join(nrel, newName)
		switch {
		case !od.exists(), exchange && !nd.exists():
			errno = syscall.ENOENT
		case od.mergeOrLower(), exchange && nd.mergeOrLower():
			errno = syscall.EXDEV
		case !exchange && nd.isDir() && !(nd.up && nd.lowerDir() == nil):
			var empty bool
			if empty, _, errno = f.emptyDir(&nd, nrel); errno == 0 && !empty {
				errno = syscall.ENOTEMPTY
			}
		}
		return
	}
	f.mu.RLock()
	_, _, _, _, errno := check()
	f.mu.RUnlock()
	if errno != 0 {
		return errno
	}
	// Copy up what moves, without mu held; the kernel has looked both
	// names up, so their nodes are known.
	moving := []*fs.Inode{n.GetChild(name)}
	if exchange {
		moving = append(moving, np.GetChild(newName))
	}
	for _, c := range moving {
		if c == nil {
			continue
		}
		if cn, ok := c.Operations().(*cowNode); ok {
			if errno := f.copyUp(ctx, cn); errno != 0 {
				return errno
			}
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.copyUpDirLocked(n); errno != 0 {
		return errno
	}
	if errno := f.copyUpDirLocked(np); errno != 0 {
		return errno
	}
	od, nd, orel, nrel, errno := check()
	if errno != 0 {
		return errno
	}
	if !od.up || exchange && !nd.up {
		return syscall.EIO // the kernel knew no node to copy up
	}
	src, dst := f.upperPath(orel), f.upperPath(nrel)
	if !exchange && nd.isDir() && nd.lowerDir() != nil {
		// An empty merged directory is replaced: make it opaque, then
		// drop its whiteouts, so that the lower part stays hidden if
		// the rename fails.
		if nd.up {
			if err := unix.Lsetxattr(dst, OpaqueXattr, []byte("y"), 0); err != nil {
				return fs.ToErrno(err)
			}
			if err := clearWhiteouts(dst); err != nil {
				return fs.ToErrno(err)
			}
		}
	}
	rflags := flags &^ unix.RENAME_NOREPLACE
	cleanup := false
	if !exchange {
		switch {
		case od.lower != nil && nd.wh:
			rflags |= unix.RENAME_EXCHANGE // the whiteout moves to the old name
		case od.lower != nil:
			rflags |= unix.RENAME_WHITEOUT
		case od.isDir() && nd.wh:
			rflags |= unix.RENAME_EXCHANGE
			cleanup = true
		}
	}
	if od.isDir() && !od.opaque && np.lower != nil {
		if err := unix.Lsetxattr(src, OpaqueXattr, []byte("y"), 0); err != nil {
			return syscall.EXDEV
		}
	}
	if exchange && nd.isDir() && !nd.opaque && n.lower != nil {
		if err := unix.Lsetxattr(dst, OpaqueXattr, []byte("y"), 0); err != nil {
			return syscall.EXDEV
		}
	}
	if err := unix.Renameat2(unix.AT_FDCWD, src, unix.AT_FDCWD, dst, uint(rflags)); err != nil {
		return fs.ToErrno(err)
	}
	if cleanup {
		// The whiteout the directory was exchanged with hides nothing
		// at the old name: drop it (if that fails it stays harmless).
		unix.Unlink(src)
	}
	return 0
}

// clearWhiteouts removes the whiteouts in the upper directory dir.
func clearWhiteouts(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := dir + "/" + e.Name()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if isWhiteout(&st) {
			if err := unix.Unlink(p); err != nil {
				return err
			}
		}
	}
	return nil
}
