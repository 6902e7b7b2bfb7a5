package fusefs

import (
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/lazyfs/lazyfs/index"
)

// roFS serves a read-only mount at go-fuse's protocol level
// (fuse.RawFileSystem) straight from the merged tree, rather than through
// go-fuse's node API (package fs) as the writable mount does.
//
// The tree never changes and is wholly in memory, so none of what the node
// API keeps is needed: a node's FUSE node ID is its inode number (the
// root's is 1, as FUSE requires); a LOOKUP is a map access; FORGET has
// nothing to release; a directory is listed by position in its sorted
// children (tree.sorted), so a listing needs no open handle. Through the
// node API the mount built an Inode per file up front, and every entry of
// a READDIRPLUS registered its Inode again under two locks and two maps: a
// find(1) over 57 000 entries took 130-180 ms of the server's user CPU,
// more than the kernel's side; this takes 10-20 ms.
//
// Safe for concurrent use: the tree is not written once merged; what
// changes (plusPolicy, listedBare, the pushes and relists under way) is
// guarded by a mutex, atomics and channels.
type roFS struct {
	fuse.RawFileSystem // ENOSYS for everything below that is not here
	*fileSystem
	timeout time.Duration // entry, attribute and negative cache lifetime

	server *fuse.Server // set by Init, before any request but INIT

	pushSem chan struct{} // a token per push under way (maxPushes)

	plus plusPolicy // which READDIRPLUS replies carry their files' attributes
	// listedBare, by node ID: a directory listed without its files'
	// attributes, none of them looked up since.
	listedBare []atomic.Bool
	relistSem  chan struct{} // held by the relist under way

	pt *passthrough // opens of lower files
}

func newROFS(f *fileSystem, timeout time.Duration) *roFS {
	return &roFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fileSystem: f, timeout: timeout,
		pushSem: make(chan struct{}, maxPushes), relistSem: make(chan struct{}, 1),
		listedBare: make([]atomic.Bool, len(f.tree.byIno)), pt: newPassthrough()}
}

func (r *roFS) String() string { return "lazyfs" }

func (r *roFS) Init(s *fuse.Server) { r.server = s }

// node returns the node of a node ID the kernel sent.
func (r *roFS) node(id uint64) (*node, fuse.Status) {
	if id == 0 || id >= uint64(len(r.tree.byIno)) {
		return nil, fuse.Status(syscall.ESTALE) // not one we gave out
	}
	return r.tree.byIno[id], fuse.OK
}

// dir returns the node of a directory's node ID and its sorted children.
func (r *roFS) dir(id uint64) (*node, []child, fuse.Status) {
	n, st := r.node(id)
	if !st.Ok() {
		return nil, nil, st
	}
	if !n.isDir() {
		return nil, nil, fuse.Status(syscall.ENOTDIR)
	}
	return n, r.tree.sorted(n), fuse.OK
}

// entryOut describes n as a LOOKUP or READDIRPLUS answers it.
func (r *roFS) entryOut(n *node, out *fuse.EntryOut) {
	out.NodeId = n.ino
	r.fillAttr(n, &out.Attr)
	out.SetEntryTimeout(r.timeout)
	out.SetAttrTimeout(r.timeout)
}

func (r *roFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	p, _, st := r.dir(h.NodeId)
	if !st.Ok() {
		return st
	}
	if name == "." || name == ".." {
		// Sent only to reconnect NFS file handles, which this mount
		// does not export.
		return fuse.ENOENT
	}
	c := p.children[name]
	if c == nil {
		// Node ID 0 with a timeout: the kernel caches the name's absence.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(r.timeout)
		return fuse.OK
	}
	if !c.isDir() && r.listedBare[p.ino].Load() && r.listedBare[p.ino].CompareAndSwap(true, false) {
		r.plus.miss()
		r.relist()
	}
	r.entryOut(c, out)
	return fuse.OK
}

// relist has the kernel drop, in the background, its cached listings of
// the directories listed without their files' attributes (the kernel
// keeps a listing for as long as it keeps the directory: FOPEN_CACHE_DIR),
// so that it lists them again, with the attributes while plusPolicy's
// credit lasts, rather than LOOKUP each file: a stat walk after a walk of
// names would otherwise LOOKUP every file it stats. One at a time; a miss
// while one is under way leaves the directories it has passed to the next.
func (r *roFS) relist() {
	if r.server == nil {
		return
	}
	select {
	case r.relistSem <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.relistSem }()
		for ino := range r.listedBare {
			if r.listedBare[ino].Load() && r.listedBare[ino].CompareAndSwap(true, false) {
				// Best effort: ENOENT if the kernel has dropped the
				// directory meanwhile.
				r.server.InodeNotify(uint64(ino), 0, 0)
			}
		}
	}()
}

// waitRelist returns once no relist is under way.
func (r *roFS) waitRelist() {
	r.relistSem <- struct{}{}
	<-r.relistSem
}

// Forget has nothing to do: every node lives as long as the mount.
func (r *roFS) Forget(nodeid, nlookup uint64) {}

func (r *roFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	r.fillAttr(n, &out.Attr)
	out.SetTimeout(r.timeout)
	return fuse.OK
}

func (r *roFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return fuse.EROFS
	}
	// Lower files never change: the kernel keeps their pages, or reads
	// their copies itself (passthrough.go).
	r.openFile(n, out)
	return fuse.OK
}

func (r *roFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	ctx := &fuse.Context{Caller: in.Caller, Cancel: cancel}
	off := int64(in.Offset)
	if len(buf) >= pushReadMax || n.entry == nil || n.entry.Sparse != nil {
		res, errno := r.read(ctx, n, buf, off)
		return res, fuse.Status(errno)
	}
	var used []usedFrame
	res, errno := r.readFrames(ctx, n, buf, off, func(i int, data []byte) { used = append(used, usedFrame{i, data}) })
	if errno == 0 {
		r.push(n, off, int64(len(buf)), used)
	}
	return res, fuse.Status(errno)
}

// pushReadMax is the size from which a READ's frames are not pushed (see
// push): the kernel reads that much only when it reads ahead, and then it
// asks for the rest of the frames soon enough itself.
const pushReadMax = 64 << 10

// maxPushAround bounds what a push gives the kernel on each side of the
// READ's range.
const maxPushAround = 1 << 20

// maxPushes bounds the pushes under way; a READ that finds them all busy
// pushes nothing.
const maxPushes = 2

// usedFrame is a frame a READ took bytes from.
type usedFrame struct {
	i    int
	data []byte // verified (FrameSource)
}

// push gives the kernel's page cache, in the background, the rest of the
// file's bytes in the frames a small READ of [off, off+size) used
// (FUSE_NOTIFY_STORE). A frame is read from the cache's disk and its
// SHA-256 checked as a whole however little of it a READ wants: with
// 256 KiB frames, 20 000 random 4 KiB reads of a 1 GiB file read and
// hashed ~14 700 frames (of 3 249) when only the bytes asked for stayed in
// the page cache, ~3 650 with the rest pushed (7.7-8.9 s -> 3.2 s). The bytes
// are the verified frames the READ itself got from the FrameSource (asking
// it again would look like a sequential reader to layers.Source and start
// its read-ahead).
//
// The READ's own range is left out: the kernel holds those pages locked
// until the reply, which goes out only after Read returns. Other pages
// may be locked by other READs under way; a push waits for those, which
// the server answers meanwhile. A sparse file is not pushed (its content
// is not one run of the stream), nor more than maxPushAround bytes on
// either side of the READ (a gzip frame ends where a deflate block does,
// which may be megabytes past the span).
func (r *roFS) push(n *node, off, size int64, used []usedFrame) {
	if len(used) == 0 || r.server == nil || off == 0 && size >= n.entry.Size {
		return // nothing, or nothing but what the READ asked for
	}
	select {
	case r.pushSem <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.pushSem }()
		e, x := n.entry, r.layers[n.layer]
		for _, u := range used {
			fileOff, at, k := e.Within(x.Frames[u.i].Offset, int64(len(u.data)))
			if lo := off - maxPushAround; fileOff < lo {
				at, k, fileOff = at+lo-fileOff, k-(lo-fileOff), lo
			}
			k = min(k, off+size+maxPushAround-fileOff)
			if k <= 0 {
				continue
			}
			data := u.data[at : at+k]
			r.store(n, fileOff, data[:max(0, min(off-fileOff, k))]) // before the READ's range
			if skip := off + size - fileOff; skip < k {
				r.store(n, max(fileOff, off+size), data[max(0, skip):]) // after it
			}
		}
	}()
}

// waitPushes returns once no push is under way: it takes every push's
// token, then gives them back.
func (r *roFS) waitPushes() {
	for range maxPushes {
		r.pushSem <- struct{}{}
	}
	for range maxPushes {
		<-r.pushSem
	}
}

// store gives the kernel the file's bytes from off, whole pages of them
// (and the file's last, partial one): the kernel keeps a partial page it
// is given only when it ends the file.
func (r *roFS) store(n *node, off int64, data []byte) {
	page := int64(os.Getpagesize())
	end := off + int64(len(data))
	from := (off + page - 1) / page * page
	to := end
	if end != n.entry.Size {
		to = end / page * page
	}
	if to <= from {
		return
	}
	// Best effort: ENOENT if the kernel has dropped the inode meanwhile.
	r.server.InodeNotifyStoreCache(n.ino, from, data[from-off:to-off])
}

// Release ends an open (passthrough.go).
func (r *roFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) { r.release(in.Fh) }

// OpenDir keeps no state either: listings go by position. When the kernel
// allows it (FUSE_NO_OPENDIR_SUPPORT, Linux 5.1+) the answer is ENOSYS,
// after which the kernel opens directories without asking, sends no
// RELEASEDIR, and caches listings (FOPEN_CACHE_DIR is its default then):
// two round trips fewer per directory walked. Otherwise it is told to
// cache them.
func (r *roFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if _, _, st := r.dir(in.NodeId); !st.Ok() {
		return st
	}
	if r.server != nil && r.server.KernelSettings().Flags64()&fuse.CAP_NO_OPENDIR_SUPPORT != 0 {
		return fuse.ENOSYS
	}
	out.Fh = 0
	out.OpenFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (r *roFS) ReleaseDir(in *fuse.ReleaseIn) {}

func (r *roFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	_, kids, st := r.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	for i := in.Offset; i < uint64(len(kids)); i++ {
		c := kids[i]
		if !out.AddDirEntry(fuse.DirEntry{Name: c.name, Mode: typeBits(c.n.typ()), Ino: c.n.ino, Off: i + 1}) {
			break
		}
	}
	return fuse.OK
}

func (r *roFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	_, kids, st := r.dir(in.NodeId)
	if !st.Ok() {
		return st
	}
	if in.Offset >= uint64(len(kids)) {
		return fuse.OK // the end: no entries, no decision
	}
	// See plusPolicy; a directory listed in several replies may get
	// both kinds.
	bare := r.plus.bare()
	if bare {
		r.listedBare[in.NodeId].Store(true)
	}
	for i := in.Offset; i < uint64(len(kids)); i++ {
		c := kids[i]
		e := out.AddDirLookupEntry(fuse.DirEntry{Name: c.name, Mode: typeBits(c.n.typ()), Ino: c.n.ino, Off: i + 1})
		if e == nil {
			break
		}
		if !bare || c.n.isDir() {
			r.entryOut(c.n, e)
		} // else node ID 0: the kernel takes it as "no attributes", not as absence
	}
	return fuse.OK
}

func (r *roFS) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	if e := n.entry; e != nil && e.Type == index.TypeSymlink {
		return []byte(e.Linkname), fuse.OK
	}
	return nil, fuse.EINVAL
}

// xattrs returns the extended attributes of node id.
func (r *roFS) xattrs(id uint64) ([]index.Xattr, fuse.Status) {
	if r.noXattrs {
		// The kernel answers EOPNOTSUPP itself from now on.
		return nil, fuse.ENOSYS
	}
	n, st := r.node(id)
	if !st.Ok() || n.entry == nil {
		return nil, st
	}
	return n.entry.Xattrs, fuse.OK
}

func (r *roFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	xs, st := r.xattrs(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	for _, x := range xs {
		if x.Name == attr {
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), fuse.ERANGE
			}
			return uint32(copy(dest, x.Value)), fuse.OK
		}
	}
	return 0, fuse.ENODATA
}

func (r *roFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	xs, st := r.xattrs(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	var b strings.Builder
	for _, x := range xs {
		b.WriteString(x.Name)
		b.WriteByte(0)
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), fuse.ERANGE
	}
	return uint32(copy(dest, b.String())), fuse.OK
}

func (r *roFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = uint64(r.tree.bytes+bsize-1) / bsize
	out.Files = uint64(r.tree.nodes)
	out.NameLen = 255
	return fuse.OK
}
