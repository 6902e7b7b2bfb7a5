package fusefs

import (
	"strings"
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
// find(1) over 57 000 entries took ~180 ms of the server's CPU, more than
// the kernel's side, and this takes ~15 ms.
//
// Safe for concurrent use: nothing is written after Init.
type roFS struct {
	fuse.RawFileSystem // ENOSYS for everything below that is not here
	*fileSystem
	timeout time.Duration // entry, attribute and negative cache lifetime

	server *fuse.Server // set by Init, before any request but INIT
}

func newROFS(f *fileSystem, timeout time.Duration) *roFS {
	return &roFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), fileSystem: f, timeout: timeout}
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
	r.entryOut(c, out)
	return fuse.OK
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
	if _, st := r.node(in.NodeId); !st.Ok() {
		return st
	}
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0 {
		return fuse.EROFS
	}
	// Lower files never change: let the kernel keep their pages.
	out.Fh = 0
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE
	return fuse.OK
}

func (r *roFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	n, st := r.node(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	ctx := &fuse.Context{Caller: in.Caller, Cancel: cancel}
	res, errno := r.read(ctx, n, buf, int64(in.Offset))
	return res, fuse.Status(errno)
}

// Release has nothing to do: opens keep no state.
func (r *roFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {}

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
	for i := in.Offset; i < uint64(len(kids)); i++ {
		c := kids[i]
		e := out.AddDirLookupEntry(fuse.DirEntry{Name: c.name, Mode: typeBits(c.n.typ()), Ino: c.n.ino, Off: i + 1})
		if e == nil {
			break
		}
		r.entryOut(c.n, e)
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

func (r *roFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if r.noXattrs {
		// The kernel answers EOPNOTSUPP itself from now on.
		return 0, fuse.ENOSYS
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if n.entry == nil {
		return 0, fuse.ENODATA
	}
	for _, x := range n.entry.Xattrs {
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
	if r.noXattrs {
		return 0, fuse.ENOSYS
	}
	n, st := r.node(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if n.entry == nil {
		return 0, fuse.OK
	}
	var b strings.Builder
	for _, x := range n.entry.Xattrs {
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
