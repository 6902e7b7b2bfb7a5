package fusefs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	iofs "io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

const (
	// OpaqueXattr marks an upper directory that hides the lower layers
	// below it (value "y"), as in overlayfs.
	OpaqueXattr = "trusted.overlay.opaque"

	// overlayXattrs are overlayfs' own xattrs: hidden from the merged
	// view. The view's trusted.overlay.X is stored as
	// trusted.overlay.overlay.X, as overlayfs (Linux ≥ 6.7) escapes it.
	overlayXattrs = "trusted.overlay."
	escapedXattrs = "trusted.overlay.overlay."

	// workSubdir is the mount's directory inside Config.WorkDir.
	workSubdir = "lazyfs-work"

	// upperIno is or-ed into the inode number of an upper entry: lower
	// entries are numbered from 1, so the two never collide.
	upperIno = 1 << 62

	// copyUpTimeout bounds one copy-up, which runs on after the request
	// that started it is interrupted: others may be waiting for it.
	copyUpTimeout = 10 * time.Minute

	nameMax = 255
)

// cowFS is what every node of a writable mount shares.
type cowFS struct {
	*fileSystem
	upper   string // Config.UpperDir, absolute
	tmp     string // workSubdir in Config.WorkDir
	timeout time.Duration
	root    *cowNode
	seq     atomic.Uint64 // names in tmp
	plus    plusPolicy    // which listings carry their files' attributes

	// mu guards every cowNode's upper and lower fields and the layout of
	// the upper directory: namespace changes hold it for writing;
	// lookups, readdir and path-based reads and attribute changes hold it
	// for reading so that a path stays valid. No content copy runs under
	// it.
	mu sync.RWMutex

	aliasMu sync.Mutex // guards alias and every cowNode's aliasKey
	// alias maps the identity an upper entry would get to the identity
	// of the live node it was copied up from, so that every name of one
	// upper file finds that node (one inode in the kernel).
	alias map[fs.StableAttr]fs.StableAttr
}

// cowNode is one node of a writable mount.
type cowNode struct {
	fs.Inode
	fs *cowFS

	// Guarded by fs.mu.
	upper bool  // the name has an upper entry (made there or copied up)
	lower *node // non-directory: the lower file shown while !upper; directory: the lower directory merged under it (nil: none)
	// linked: a lower non-directory with several names. Each name is its
	// own kernel inode, never cached, because copying one name up breaks
	// the link and gives that name another identity (overlayfs with
	// index=off does the same).
	linked bool

	// cu serializes copy-ups of this node; it is held across the content
	// copy, which every other caller for this node has to wait for anyway.
	cu sync.Mutex

	// tmpfile is the open file of a node made with O_TMPFILE, which has no
	// name to link it from. Guarded by fs.mu.
	tmpfile *upperFile

	// listedBare: a directory listed without its files' attributes, and
	// none of them looked up since (see plusPolicy).
	listedBare atomic.Bool

	aliasKey fs.StableAttr // the alias this node registered; guarded by fs.aliasMu
}

var (
	_ fs.NodeLookuper       = (*cowNode)(nil)
	_ fs.NodeGetattrer      = (*cowNode)(nil)
	_ fs.NodeSetattrer      = (*cowNode)(nil)
	_ fs.NodeOpener         = (*cowNode)(nil)
	_ fs.NodeReaddirer      = (*cowNode)(nil)
	_ fs.NodeReadlinker     = (*cowNode)(nil)
	_ fs.NodeGetxattrer     = (*cowNode)(nil)
	_ fs.NodeListxattrer    = (*cowNode)(nil)
	_ fs.NodeSetxattrer     = (*cowNode)(nil)
	_ fs.NodeRemovexattrer  = (*cowNode)(nil)
	_ fs.NodeCreater        = (*cowNode)(nil)
	_ fs.NodeMkdirer        = (*cowNode)(nil)
	_ fs.NodeMknoder        = (*cowNode)(nil)
	_ fs.NodeSymlinker      = (*cowNode)(nil)
	_ fs.NodeLinker         = (*cowNode)(nil)
	_ fs.NodeUnlinker       = (*cowNode)(nil)
	_ fs.NodeRmdirer        = (*cowNode)(nil)
	_ fs.NodeRenamer        = (*cowNode)(nil)
	_ fs.NodeStatfser       = (*cowNode)(nil)
	_ fs.NodeOnForgetter    = (*cowNode)(nil)
	_ fs.NodeTmpfiler       = (*cowNode)(nil)
	_ fs.NodeOpendirHandler = (*cowNode)(nil)
)

// newCowFS checks the upper and work directories and empties the mount's
// part of the work directory (left-overs of a crash).
func newCowFS(f *fileSystem, cfg Config) (*cowFS, error) {
	if cfg.WorkDir == "" {
		return nil, errors.New("fusefs: a writable mount needs Config.WorkDir")
	}
	upper, err := filepath.Abs(cfg.UpperDir)
	if err != nil {
		return nil, fmt.Errorf("upper directory: %w", err)
	}
	work, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	var ust, wst unix.Stat_t
	if err := unix.Stat(upper, &ust); err != nil {
		return nil, &os.PathError{Op: "stat upper directory", Path: upper, Err: err}
	}
	if err := unix.Stat(work, &wst); err != nil {
		return nil, &os.PathError{Op: "stat work directory", Path: work, Err: err}
	}
	if ust.Mode&unix.S_IFMT != unix.S_IFDIR || wst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("fusefs: upper %s and work %s must be directories", upper, work)
	}
	if ust.Dev != wst.Dev {
		return nil, fmt.Errorf("fusefs: upper %s and work %s are on different file systems", upper, work)
	}
	if rel, err := filepath.Rel(upper, work); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
		return nil, fmt.Errorf("fusefs: work directory %s is inside the upper directory %s", work, upper)
	}
	tmp := filepath.Join(work, workSubdir)
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("empty work directory: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	if err := probeUpperFS(tmp); err != nil {
		return nil, err
	}
	c := &cowFS{fileSystem: f, upper: upper, tmp: tmp, alias: map[fs.StableAttr]fs.StableAttr{}}
	c.root = &cowNode{fs: c, upper: true, lower: f.tree.root}
	return c, nil
}

// probeUpperFS checks, in the empty directory tmp, that this process can
// write overlayfs' format there: whiteouts (mknod needs CAP_MKNOD),
// trusted xattrs (CAP_SYS_ADMIN), rename with RENAME_WHITEOUT and
// RENAME_EXCHANGE (not every file system has them).
func probeUpperFS(tmp string) error {
	a, b := tmp+"/probe-a", tmp+"/probe-b"
	defer os.Remove(a)
	defer os.Remove(b)
	if err := unix.Mknod(a, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("fusefs: cannot make whiteouts in %s (a writable mount needs CAP_MKNOD): %w", tmp, err)
	}
	if err := unix.Lsetxattr(tmp, OpaqueXattr, []byte("y"), 0); err != nil {
		return fmt.Errorf("fusefs: cannot set %s in %s (a writable mount needs CAP_SYS_ADMIN and trusted xattrs): %w", OpaqueXattr, tmp, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_WHITEOUT); err != nil {
		return fmt.Errorf("fusefs: the file system of %s cannot rename with RENAME_WHITEOUT: %w", tmp, err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return fmt.Errorf("fusefs: the file system of %s cannot rename with RENAME_EXCHANGE: %w", tmp, err)
	}
	return unix.Lremovexattr(tmp, OpaqueXattr)
}

// upperPath is where the relative path rel ("" is the root) lives in the
// upper directory.
func (f *cowFS) upperPath(rel string) string {
	if rel == "" {
		return f.upper
	}
	return f.upper + "/" + rel
}

// tmpPath returns a new name in the work directory.
func (f *cowFS) tmpPath() string {
	return fmt.Sprintf("%s/#%x", f.tmp, f.seq.Add(1))
}

func (n *cowNode) isDir() bool { return n.Mode()&syscall.S_IFMT == syscall.S_IFDIR }

// rel returns the node's path relative to the root, false if it has no
// name any more (removed while in use).
func (n *cowNode) rel() (string, bool) {
	var parts []string
	in := &n.Inode
	for !in.IsRoot() {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		parts = append(parts, name)
		in = parent
	}
	slices.Reverse(parts)
	return strings.Join(parts, "/"), true
}

// parent returns the node's parent directory, nil for the root or a node
// without a name.
func (n *cowNode) parent() *cowNode {
	if n.IsRoot() {
		return nil
	}
	_, p := n.Parent()
	if p == nil {
		return nil
	}
	pn, _ := p.Operations().(*cowNode)
	return pn
}

// dentry is what the merged view has at one name of a directory.
type dentry struct {
	st     unix.Stat_t // the upper entry's, when up or wh
	gen    uint64      // the upper entry's birth time, for its identity
	up     bool        // an upper entry that is not a whiteout
	wh     bool        // an upper whiteout
	opaque bool        // up, a directory, marked opaque
	lower  *node       // what the directory's lower part has at the name; nil: nothing
}

// exists reports whether the merged view shows something at the name.
func (d *dentry) exists() bool { return d.up || !d.wh && d.lower != nil }

func (d *dentry) isDir() bool {
	if d.up {
		return d.st.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	return d.exists() && d.lower.isDir()
}

// lowerDir is the lower directory merged under the directory at the name:
// none below an opaque or non-directory upper entry.
func (d *dentry) lowerDir() *node {
	if !d.isDir() || d.lower == nil || !d.lower.isDir() || d.opaque {
		return nil
	}
	return d.lower
}

// mergeOrLower reports a directory with a lower part: overlayfs cannot
// rename it without redirect_dir.
func (d *dentry) mergeOrLower() bool { return d.isDir() && d.lowerDir() != nil }

// isWhiteout reports overlayfs' whiteout: a 0/0 character device.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// lstat is lstat(2) with the birth time, which tells a new file from an
// old one with a reused inode number.
func lstat(p string, st *unix.Stat_t) (gen uint64, err error) {
	return statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, st)
}

// fstat is lstat for an open file.
func fstat(fd int, st *unix.Stat_t) (gen uint64, err error) {
	return statx(fd, "", unix.AT_EMPTY_PATH, st)
}

func statx(dirfd int, p string, flags int, st *unix.Stat_t) (gen uint64, err error) {
	var x unix.Statx_t
	if err := unix.Statx(dirfd, p, flags, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &x); err != nil {
		return 0, err
	}
	statFromStatx(&x, st)
	if x.Mask&unix.STATX_BTIME != 0 {
		gen = uint64(x.Btime.Sec)*1e9 + uint64(x.Btime.Nsec)
	}
	return gen | 1, nil
}

func statFromStatx(x *unix.Statx_t, st *unix.Stat_t) {
	*st = unix.Stat_t{
		Dev:     unix.Mkdev(x.Dev_major, x.Dev_minor),
		Ino:     x.Ino,
		Nlink:   uint64(x.Nlink),
		Mode:    uint32(x.Mode),
		Uid:     x.Uid,
		Gid:     x.Gid,
		Rdev:    unix.Mkdev(x.Rdev_major, x.Rdev_minor),
		Size:    int64(x.Size),
		Blksize: int64(x.Blksize),
		Blocks:  int64(x.Blocks),
		Atim:    unix.Timespec{Sec: x.Atime.Sec, Nsec: int64(x.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: x.Mtime.Sec, Nsec: int64(x.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: x.Ctime.Sec, Nsec: int64(x.Ctime.Nsec)},
	}
}

// entryAt returns what the merged view has at name in the directory at
// dirRel, whose upper part exists if dirUp and whose lower part is
// dirLower. The caller holds mu.
func (f *cowFS) entryAt(dirUp bool, dirLower *node, dirRel, name string) (dentry, syscall.Errno) {
	var d dentry
	if len(name) > nameMax {
		return d, syscall.ENAMETOOLONG
	}
	if dirLower != nil {
		d.lower = dirLower.children[name]
	}
	if !dirUp {
		return d, 0
	}
	p := f.upperPath(path.Join(dirRel, name))
	gen, err := lstat(p, &d.st)
	switch {
	case errors.Is(err, unix.ENOENT):
		return d, 0
	case err != nil:
		return d, fs.ToErrno(err)
	case isWhiteout(&d.st):
		d.wh = true
		return d, 0
	}
	d.up, d.gen = true, gen
	if d.st.Mode&unix.S_IFMT == unix.S_IFDIR {
		opaque, err := isOpaque(p)
		if err != nil {
			return d, fs.ToErrno(err)
		}
		d.opaque = opaque
	}
	return d, 0
}

// entry is entryAt for a child of n. The caller holds mu.
func (f *cowFS) entry(n *cowNode, name string) (d dentry, dirRel string, errno syscall.Errno) {
	dirRel, ok := n.rel()
	if !ok {
		return d, "", syscall.ENOENT
	}
	d, errno = f.entryAt(n.upper, n.lower, dirRel, name)
	return d, dirRel, errno
}

func isOpaque(p string) (bool, error) {
	var buf [8]byte
	sz, err := unix.Lgetxattr(p, OpaqueXattr, buf[:])
	switch {
	case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ERANGE):
		return false, nil
	case err != nil:
		return false, &os.PathError{Op: "getxattr " + OpaqueXattr, Path: p, Err: err}
	}
	return sz == 1 && buf[0] == 'y', nil
}

// identity is the kernel-visible identity of the entry d at rel: a lower
// entry's inode number from the tree (one per name for a linked one), a
// merged directory's that of its lower directory, an upper entry's its
// upper inode number, or the identity of the node it was copied up from
// while that node lives.
func (f *cowFS) identity(d *dentry, rel string) fs.StableAttr {
	if !d.up {
		a := fs.StableAttr{Mode: typeBits(d.lower.typ()), Ino: d.lower.ino}
		if d.lower.linked() {
			a.Gen = pathGen(rel)
		}
		return a
	}
	if l := d.lowerDir(); l != nil {
		return fs.StableAttr{Mode: syscall.S_IFDIR, Ino: l.ino}
	}
	a := fs.StableAttr{Mode: d.st.Mode & unix.S_IFMT, Ino: d.st.Ino | upperIno, Gen: d.gen}
	f.aliasMu.Lock()
	defer f.aliasMu.Unlock()
	if b, ok := f.alias[a]; ok {
		return b
	}
	return a
}

// pathGen tells the names of a linked lower file apart.
func pathGen(rel string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(rel))
	return h.Sum64() | 1
}

// newChild returns the node for the entry d.
func (f *cowFS) newChild(d *dentry) *cowNode {
	c := &cowNode{fs: f, upper: d.up}
	if d.up {
		c.lower = d.lowerDir()
	} else {
		c.lower = d.lower
		c.linked = d.lower.linked()
	}
	return c
}

// fillEntry describes d, shown by c, in out, with the cache timeouts c
// gets.
func (f *cowFS) fillEntry(d *dentry, c *cowNode, out *fuse.EntryOut) {
	if d.up {
		attrFromStat(&out.Attr, &d.st)
		if d.lowerDir() != nil {
			out.Attr.Nlink = 1 // see mergedNlink
		}
	} else {
		f.fillAttr(d.lower, &out.Attr)
	}
	t := f.ttl(c)
	out.SetEntryTimeout(t)
	out.SetAttrTimeout(t)
}

// ttl is how long the kernel may cache c's entry and attributes.
func (f *cowFS) ttl(c *cowNode) time.Duration {
	if c.linked {
		return 0
	}
	return f.timeout
}

func (n *node) typ() index.Type {
	if n.entry == nil {
		return index.TypeDir
	}
	return n.entry.Type
}

// linked reports a lower non-directory with several names.
func (n *node) linked() bool { return !n.isDir() && n.nlink > 1 }

func (n *cowNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	in, errno := n.lookup(ctx, name, out)
	if errno == 0 && n.listedBare.Load() && !in.IsDir() && n.listedBare.CompareAndSwap(true, false) {
		n.fs.plus.miss()
	}
	return in, errno
}

// lookup finds name in n for a LOOKUP or a READDIRPLUS entry.
func (n *cowNode) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fs
	f.mu.RLock()
	defer f.mu.RUnlock()
	var d dentry
	if n.upper {
		var dirRel string
		var errno syscall.Errno
		if d, dirRel, errno = f.entry(n, name); errno != 0 {
			return nil, errno
		}
		if !d.exists() {
			return nil, syscall.ENOENT
		}
		c := f.newChild(&d)
		f.fillEntry(&d, c, out)
		return n.NewInode(ctx, c, f.identity(&d, path.Join(dirRel, name))), 0
	}
	// A directory shown from the lower tree alone: its path is needed
	// only to tell the names of a linked file apart. A READDIRPLUS looks
	// up every entry of a listing, so this is the common case of a walk.
	if !n.IsRoot() {
		if _, p := n.Parent(); p == nil {
			return nil, syscall.ENOENT // removed while in use
		}
	}
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	if d.lower = n.lower.children[name]; d.lower == nil {
		return nil, syscall.ENOENT
	}
	rel := ""
	if d.lower.linked() {
		dirRel, ok := n.rel()
		if !ok {
			return nil, syscall.ENOENT
		}
		rel = path.Join(dirRel, name)
	}
	c := f.newChild(&d)
	f.fillEntry(&d, c, out)
	return n.NewInode(ctx, c, f.identity(&d, rel)), 0
}

func (n *cowNode) OnForget() {
	f := n.fs
	f.aliasMu.Lock()
	defer f.aliasMu.Unlock()
	if n.aliasKey != (fs.StableAttr{}) && f.alias[n.aliasKey] == n.StableAttr() {
		delete(f.alias, n.aliasKey)
	}
}

func (n *cowNode) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fs
	// An open file or directory may have no name any more.
	fd := -1
	switch h := fh.(type) {
	case *upperFile:
		fd = h.fd
	case *dirHandle:
		fd = h.fd
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if fd >= 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		attrFromStat(&out.Attr, &st)
		mergedNlink(n, &out.Attr)
		out.SetTimeout(f.ttl(n))
		return 0
	}
	if !n.upper {
		f.fillAttr(n.lower, &out.Attr)
		out.SetTimeout(f.ttl(n))
		return 0
	}
	rel, ok := n.rel()
	if !ok {
		return syscall.ENOENT
	}
	var st unix.Stat_t
	if err := unix.Lstat(f.upperPath(rel), &st); err != nil {
		return fs.ToErrno(err)
	}
	attrFromStat(&out.Attr, &st)
	mergedNlink(n, &out.Attr)
	out.SetTimeout(f.ttl(n))
	return 0
}

// mergedNlink gives a merged directory one link, as overlayfs does: its
// upper directory's count misses the lower subdirectories, and tools like
// find(1) take 1 to mean "unknown". The caller holds mu.
func mergedNlink(n *cowNode, a *fuse.Attr) {
	if n.upper && n.isDir() && n.lower != nil {
		a.Nlink = 1
	}
}

func (n *cowNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	f := n.fs
	f.mu.RLock()
	defer f.mu.RUnlock()
	rel, ok := n.rel()
	if !ok {
		return nil, syscall.ENOENT
	}
	ents, errno := f.list(n.upper, n.lower, rel)
	if errno != 0 {
		return nil, errno
	}
	return fs.NewListDirStream(ents), 0
}

// OpendirHandle opens a directory: its entries are listed on the first
// read, and an upper directory is held open, for fsync(2) and so that
// fstat(2) works after it has been removed or replaced.
func (n *cowNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	f := n.fs
	h := &dirHandle{n: n, fd: -1}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if n.upper {
		rel, ok := n.rel()
		if !ok {
			return nil, 0, syscall.ENOENT
		}
		fd, err := unix.Open(f.upperPath(rel), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, 0, fs.ToErrno(err)
		}
		h.fd = fd
	}
	return h, 0, 0
}

// dirHandle is an open directory.
type dirHandle struct {
	n  *cowNode
	fd int // the upper directory, open; -1 for none

	mu   sync.Mutex // guards ds and plus
	ds   fs.DirStream
	plus listingPlus
}

// listingPlus is what a listing's READDIRPLUS replies describe.
type listingPlus uint8

const (
	plusUndecided listingPlus = iota
	plusAll                   // every entry's attributes
	plusDirs                  // the subdirectories' alone (plusPolicy)
)

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
)

// Fsyncdir syncs the upper directory; a lower one has nothing to sync.
func (h *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		return 0
	}
	return fs.ToErrno(unix.Fsync(h.fd))
}

func (h *dirHandle) stream(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if h.ds == nil {
		ds, errno := h.n.Readdir(ctx)
		if errno != 0 {
			return nil, errno
		}
		h.ds = ds
	}
	return h.ds, 0
}

func (h *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ds, errno := h.stream(ctx)
	if errno != 0 || !ds.HasNext() {
		return nil, errno
	}
	e, errno := ds.Next()
	return &e, errno
}

// Lookup describes an entry of a READDIRPLUS reply. An entry it answers
// with an error goes out without attributes (node ID 0), which the kernel
// takes as "ask later", not as absence: so are the files of a lower-only
// directory when plusPolicy says so.
func (h *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n, f := h.n, h.n.fs
	h.mu.Lock()
	if h.plus == plusUndecided {
		h.plus = plusAll
		f.mu.RLock()
		lowerOnly := !n.upper && n.lower != nil
		f.mu.RUnlock()
		if lowerOnly && f.plus.bare() {
			h.plus = plusDirs
			n.listedBare.Store(true)
		}
	}
	bare := h.plus == plusDirs
	h.mu.Unlock()
	if bare {
		f.mu.RLock()
		var c *node
		if !n.upper { // else copied up since: describe it as it is now
			c = n.lower.children[name]
		}
		f.mu.RUnlock()
		if c != nil && !c.isDir() {
			return nil, syscall.ENOENT
		}
	}
	return n.lookup(ctx, name, out)
}

func (h *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 && h.ds != nil {
		h.ds.Close()
		h.ds = nil // rewinddir(3) lists again
	}
	ds, errno := h.stream(ctx)
	if errno != 0 {
		return errno
	}
	if sd, ok := ds.(fs.FileSeekdirer); ok {
		return sd.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (h *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ds != nil {
		h.ds.Close()
	}
	if h.fd >= 0 {
		unix.Close(h.fd)
		h.fd = -1
	}
}

// list returns the merged view of the directory at rel, sorted by name.
// The caller holds mu.
func (f *cowFS) list(up bool, lower *node, rel string) ([]fuse.DirEntry, syscall.Errno) {
	if !up {
		if lower == nil {
			return nil, 0
		}
		// Most of an image is never written to: its directories are
		// the tree's, already sorted.
		kids := f.tree.sorted(lower)
		out := make([]fuse.DirEntry, len(kids))
		for i, c := range kids {
			out[i] = fuse.DirEntry{Name: c.name, Mode: typeBits(c.n.typ()), Ino: c.n.ino}
		}
		return out, 0
	}
	var out []fuse.DirEntry
	taken := map[string]bool{} // names the upper part has, whiteouts included
	if up {
		ents, err := os.ReadDir(f.upperPath(rel))
		if err != nil {
			return nil, fs.ToErrno(err)
		}
		for _, e := range ents {
			name := e.Name()
			taken[name] = true
			mode := fileTypeBits(e.Type())
			if mode == unix.S_IFCHR {
				var st unix.Stat_t
				if err := unix.Lstat(f.upperPath(path.Join(rel, name)), &st); err != nil {
					if errors.Is(err, unix.ENOENT) {
						continue
					}
					return nil, fs.ToErrno(err)
				}
				if isWhiteout(&st) {
					continue
				}
			}
			out = append(out, fuse.DirEntry{Name: name, Mode: mode})
		}
	}
	if lower != nil {
		for name, c := range lower.children {
			if !taken[name] {
				out = append(out, fuse.DirEntry{Name: name, Mode: typeBits(c.typ()), Ino: c.ino})
			}
		}
	}
	slices.SortFunc(out, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, 0
}

// emptyDir reports whether the directory d at rel shows nothing, and
// whether its upper part holds whiteouts. The caller holds mu.
func (f *cowFS) emptyDir(d *dentry, rel string) (empty, whiteouts bool, errno syscall.Errno) {
	lower := d.lowerDir()
	if d.up {
		ents, err := os.ReadDir(f.upperPath(rel))
		if err != nil {
			return false, false, fs.ToErrno(err)
		}
		for _, e := range ents {
			var st unix.Stat_t
			if err := unix.Lstat(f.upperPath(path.Join(rel, e.Name())), &st); err != nil {
				return false, false, fs.ToErrno(err)
			}
			if !isWhiteout(&st) {
				return false, false, 0
			}
			whiteouts = true
		}
		if lower == nil {
			return true, whiteouts, 0
		}
		for name := range lower.children {
			var st unix.Stat_t
			if err := unix.Lstat(f.upperPath(path.Join(rel, name)), &st); errors.Is(err, unix.ENOENT) {
				return false, false, 0
			}
		}
		return true, whiteouts, 0
	}
	return len(d.lower.children) == 0, false, 0
}

func (n *cowNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	f := n.fs
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !n.upper {
		if e := n.lower.entry; e != nil && e.Type == index.TypeSymlink {
			return []byte(e.Linkname), 0
		}
		return nil, syscall.EINVAL
	}
	rel, ok := n.rel()
	if !ok {
		return nil, syscall.ENOENT
	}
	buf := make([]byte, unix.PathMax)
	sz, err := unix.Readlink(f.upperPath(rel), buf)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return buf[:sz], 0
}

func (n *cowNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.fs.upper, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// fileTypeBits turns the type of an io/fs mode into S_IF* bits.
func fileTypeBits(m iofs.FileMode) uint32 {
	switch {
	case m&iofs.ModeDir != 0:
		return unix.S_IFDIR
	case m&iofs.ModeSymlink != 0:
		return unix.S_IFLNK
	case m&iofs.ModeCharDevice != 0:
		return unix.S_IFCHR
	case m&iofs.ModeDevice != 0:
		return unix.S_IFBLK
	case m&iofs.ModeNamedPipe != 0:
		return unix.S_IFIFO
	case m&iofs.ModeSocket != 0:
		return unix.S_IFSOCK
	}
	return unix.S_IFREG
}

// attrFromStat is fuse.Attr.FromStat for a unix.Stat_t.
func attrFromStat(a *fuse.Attr, st *unix.Stat_t) {
	*a = fuse.Attr{
		Ino:       st.Ino,
		Size:      uint64(st.Size),
		Blocks:    uint64(st.Blocks),
		Atime:     uint64(st.Atim.Sec),
		Atimensec: uint32(st.Atim.Nsec),
		Mtime:     uint64(st.Mtim.Sec),
		Mtimensec: uint32(st.Mtim.Nsec),
		Ctime:     uint64(st.Ctim.Sec),
		Ctimensec: uint32(st.Ctim.Nsec),
		Mode:      st.Mode,
		Nlink:     uint32(st.Nlink),
		Owner:     fuse.Owner{Uid: st.Uid, Gid: st.Gid},
		Rdev:      uint32(st.Rdev),
		Blksize:   uint32(st.Blksize),
	}
}
