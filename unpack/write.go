package unpack

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// metaPrefix starts aufs' own names (".wh..wh.plnk" and the like),
	// which mean nothing to an OCI layer.
	metaPrefix = ".wh..wh."
	// overlayXattrPrefix names the xattrs kernel overlayfs reads from its
	// lower directories (opaque, redirect, origin, metacopy …).
	overlayXattrPrefix = "trusted.overlay."
	overlayOpaque      = "trusted.overlay.opaque"
	// maxSymlinks bounds the symlinks followed while resolving one path,
	// as the kernel's 40 (and fusefs').
	maxSymlinks = 40
)

// implicitModTime is the mtime of a directory the layer has entries in but
// does not list itself (mode 0755, owner 0:0), as internal/testutil's
// reference unpack gives it.
var implicitModTime = time.Unix(0, 0)

// resolve is how every directory below the layer's root is opened: never
// through a symlink, never out of the root, never onto another mount. The
// unpacker resolves symlinks itself, from what it wrote; this is the
// kernel's guarantee that a mistake there cannot write outside the layer.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// node is what the layer has put at a path so far.
type node struct {
	e      *index.Entry // nil: a directory the layer does not list (or a whiteout)
	typ    index.Type   // a hard link has its target's type
	opaque bool         // a directory the layer makes opaque
}

// unpacker writes one layer into an empty directory. It is used by one
// goroutine.
type unpacker struct {
	ctx      context.Context
	x        *index.Index
	src      FrameSource
	log      *slog.Logger
	rootPath string
	root     int              // the layer directory, O_RDONLY
	nodes    map[string]*node // by resolved path relative to the root; "" is the root

	pdir string // the directory pfd is open on; pfd -1 when none
	pfd  int

	cur     int    // the frame curData holds; -1 none
	curData []byte // shared with src: never modified

	entries int
	bytes   int64
	skipped int
}

func newUnpacker(ctx context.Context, dir string, x *index.Index, src FrameSource, log *slog.Logger) (*unpacker, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &unpacker{ctx: ctx, x: x, src: src, log: log, rootPath: dir, root: fd,
		nodes: map[string]*node{"": {typ: index.TypeDir}}, pfd: -1, cur: -1}, nil
}

func (u *unpacker) close() {
	u.dropParent()
	unix.Close(u.root)
}

// run writes every entry, then the whiteouts, then the directories'
// metadata (their times last, once nothing is created in them any more).
func (u *unpacker) run() error {
	for i := range u.x.Entries {
		if err := u.ctx.Err(); err != nil {
			return err
		}
		e := &u.x.Entries[i]
		if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
			continue
		}
		if err := u.entry(e); err != nil {
			return fmt.Errorf("entry %q: %w", e.Path, err)
		}
		u.entries++
	}
	u.curData = nil
	// After the layer's own entries: a whiteout and an entry of the same
	// name in one layer leave the entry (the whiteout is for the layers
	// below), as fusefs applies a layer's whiteouts before its entries.
	for i := range u.x.Entries {
		e := &u.x.Entries[i]
		if base := path.Base(e.Path); strings.HasPrefix(base, whiteoutPrefix) {
			if err := u.whiteout(e, base); err != nil {
				return fmt.Errorf("whiteout %q: %w", e.Path, err)
			}
			u.entries++
		}
	}
	return u.dirMetadata()
}

// join is path.Join for resolved paths, where "" is the root.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// parentOf splits a cleaned entry path into its directory ("" for the
// root) and name.
func parentOf(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// resolveDir returns the resolved path of directory dir (cleaned, relative,
// "" the root) as fusefs' resolveDir finds it: a symlink of the layer on
// the way is followed inside the root (an absolute target starts again at
// the root, ".." at the root stays there), a directory that is missing is
// made (implicit), and a non-directory in the way is replaced by one, as a
// later layer's directory replaces a lower layer's file — or, without
// replace, makes ok false.
func (u *unpacker) resolveDir(dir string, replace bool) (_ string, ok bool, _ error) {
	return u.walk(dir, func(at, name string, n *node) (bool, error) {
		if n != nil && !replace {
			return false, nil
		}
		if err := u.replace(at, name, n); err != nil {
			return false, err
		}
		if err := u.mkdir(at, name); err != nil {
			return false, err
		}
		u.nodes[join(at, name)] = &node{typ: index.TypeDir}
		return true, nil
	})
}

// lookup returns the resolved path of an existing entry p with its parent
// directories resolved as resolveDir does but never made, and its last
// element not followed; ok false if there is no such entry.
func (u *unpacker) lookup(p string) (string, bool) {
	dir, name := parentOf(p)
	at, ok, _ := u.walk(dir, func(string, string, *node) (bool, error) { return false, nil })
	if !ok {
		return "", false
	}
	p = join(at, name)
	_, ok = u.nodes[p]
	return p, ok
}

// walk resolves dir element by element as the layer's tree so far has it,
// following its symlinks (at most maxSymlinks, relative to where they
// are, absolute ones from the root; ".." at the root stays there). Where
// an element is not a directory (n nil: missing), notDir decides: true to
// go on into it (made a directory), false to stop with ok false.
func (u *unpacker) walk(dir string, notDir func(at, name string, n *node) (bool, error)) (_ string, ok bool, _ error) {
	var names []string
	if dir != "" {
		names = strings.Split(dir, "/")
	}
	at := ""
	for followed := 0; len(names) > 0; {
		name := names[0]
		names = names[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if at != "" {
				at, _ = parentOf(at)
			}
			continue
		}
		next := join(at, name)
		n := u.nodes[next]
		if n != nil && n.typ == index.TypeSymlink && followed < maxSymlinks {
			followed++
			if path.IsAbs(n.e.Linkname) {
				at = ""
			}
			names = append(strings.Split(n.e.Linkname, "/"), names...)
			continue
		}
		if n == nil || n.typ != index.TypeDir {
			if goOn, err := notDir(at, name, n); !goOn || err != nil {
				return "", false, err
			}
		}
		at = next
	}
	return at, true, nil
}

// parent returns a descriptor of resolved directory dir, opened beneath the
// root without following any symlink. It stays open (and owned by u) until
// another directory is asked for or something is removed.
func (u *unpacker) parent(dir string) (int, error) {
	if dir == "" {
		return u.root, nil
	}
	if u.pfd >= 0 && u.pdir == dir {
		return u.pfd, nil
	}
	u.dropParent()
	fd, err := openBeneath(u.root, dir)
	if err != nil {
		return -1, err
	}
	u.pdir, u.pfd = dir, fd
	return fd, nil
}

// openBeneath opens directory dir ("" is root itself, duplicated) of the
// layer, never through a symlink nor out of it.
func openBeneath(root int, dir string) (int, error) {
	if dir == "" {
		return unix.Dup(root)
	}
	fd, err := unix.Openat2(root, dir, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: resolve,
	})
	if err != nil {
		return -1, fmt.Errorf("open directory %q beneath the layer: %w", dir, err)
	}
	return fd, nil
}

func (u *unpacker) dropParent() {
	if u.pfd >= 0 {
		unix.Close(u.pfd)
		u.pfd = -1
	}
}

func (u *unpacker) mkdir(dir, name string) error {
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	if err := unix.Mkdirat(pfd, name, 0o700); err != nil {
		return fmt.Errorf("mkdir %q: %w", join(dir, name), err)
	}
	return nil
}

// replace removes what the layer put at dir/name before (n, nil if
// nothing), a directory with everything below it.
func (u *unpacker) replace(dir, name string, n *node) error {
	if n == nil {
		return nil
	}
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	p := join(dir, name)
	if n.typ == index.TypeDir {
		if err := removeAllAt(pfd, name); err != nil {
			return fmt.Errorf("remove %q: %w", p, err)
		}
		for k := range u.nodes {
			if strings.HasPrefix(k, p+"/") {
				delete(u.nodes, k)
			}
		}
		if u.pfd >= 0 && strings.HasPrefix(u.pdir+"/", p+"/") {
			u.dropParent()
		}
	} else if err := unix.Unlinkat(pfd, name, 0); err != nil {
		return fmt.Errorf("remove %q: %w", p, err)
	}
	delete(u.nodes, p)
	return nil
}

// removeAllAt removes directory name in dirfd and everything below it,
// through descriptors only: no path is resolved twice, no symlink followed.
func removeAllAt(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(fd), name)
	ents, err := d.ReadDir(-1)
	if err == nil {
		for _, e := range ents {
			if e.IsDir() {
				err = removeAllAt(fd, e.Name())
			} else {
				err = unix.Unlinkat(fd, e.Name(), 0)
			}
			if err != nil {
				break
			}
		}
	}
	d.Close()
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

// entry writes one entry of the layer (not a whiteout).
func (u *unpacker) entry(e *index.Entry) error {
	d, name := parentOf(e.Path)
	dir, _, err := u.resolveDir(d, true)
	if err != nil {
		return err
	}
	p := join(dir, name)
	old := u.nodes[p]
	if e.Type == index.TypeDir && old != nil && old.typ == index.TypeDir {
		old.e = e // a directory listed again: its metadata changes, its contents stay
		return nil
	}
	if e.Type == index.TypeHardlink {
		return u.hardlink(e, dir, name, old)
	}
	if err := u.replace(dir, name, old); err != nil {
		return err
	}
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	switch e.Type {
	case index.TypeDir:
		err = unix.Mkdirat(pfd, name, 0o700)
	case index.TypeReg:
		err = u.file(pfd, name, e)
	case index.TypeSymlink:
		err = unix.Symlinkat(e.Linkname, pfd, name)
	case index.TypeChar:
		err = unix.Mknodat(pfd, name, unix.S_IFCHR|0o600, int(unix.Mkdev(e.Devmajor, e.Devminor)))
	case index.TypeBlock:
		err = unix.Mknodat(pfd, name, unix.S_IFBLK|0o600, int(unix.Mkdev(e.Devmajor, e.Devminor)))
	case index.TypeFIFO:
		err = unix.Mknodat(pfd, name, unix.S_IFIFO|0o600, 0)
	default:
		err = fmt.Errorf("type %s not supported", e.Type)
	}
	if err != nil {
		return err
	}
	u.nodes[p] = &node{e: e, typ: e.Type}
	switch e.Type {
	case index.TypeDir, index.TypeReg:
		return nil // metadata at the end, or set by file through its descriptor
	}
	return u.metadataAt(pfd, name, e)
}

// hardlink links dir/name to the entry e.Linkname names, a file this layer
// wrote before. A target that is missing or a directory leaves the link
// out, as fusefs does: the rest of the layer can still be used.
func (u *unpacker) hardlink(e *index.Entry, dir, name string, old *node) error {
	target, ok := u.lookup(e.Linkname)
	tn := u.nodes[target]
	if !ok || tn.typ == index.TypeDir {
		u.log.Warn("hard link target is not a file of the layer: link left out", "layer", u.x.Layer, "path", e.Path, "target", e.Linkname)
		u.skipped++
		return nil
	}
	p := join(dir, name)
	if target == p {
		return nil // a link to itself: it is there
	}
	if err := u.replace(dir, name, old); err != nil {
		return err
	}
	tdir, tname := parentOf(target)
	// Two descriptors: the target's directory is opened on its own, not
	// through the cache that holds the new link's.
	tfd, err := openBeneath(u.root, tdir)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	// Flags 0: a symlink target is linked itself, not followed.
	if err := unix.Linkat(tfd, tname, pfd, name, 0); err != nil {
		return fmt.Errorf("link to %q: %w", target, err)
	}
	u.nodes[p] = tn
	return nil
}

// file creates regular file name in pfd with e's content and metadata.
func (u *unpacker) file(pfd int, name string, e *index.Entry) error {
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	err = u.content(f, e)
	if err == nil {
		err = u.metadataFd(fd, e, false)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// content writes a regular file's bytes: its stream ranges from the
// layer's frames, its holes left as holes.
func (u *unpacker) content(f *os.File, e *index.Entry) error {
	var at int64 // file offset of the piece
	for _, p := range e.Pieces(0, e.Size) {
		if !p.Hole() {
			if err := u.copyStream(f, at, p.Stream, p.Len); err != nil {
				return err
			}
		}
		at += p.Len
	}
	if e.Sparse != nil {
		// A hole at the end is only the file's size.
		if err := f.Truncate(e.Size); err != nil {
			return err
		}
	}
	u.bytes += e.StoredSize()
	return nil
}

// copyStream writes the layer's uncompressed bytes [off, off+n) to f at at.
func (u *unpacker) copyStream(f *os.File, at, off, n int64) error {
	first, end := u.x.FramesFor(off, n)
	if end-first == 0 || u.x.Frames[end-1].Offset+u.x.Frames[end-1].Size < off+n {
		return fmt.Errorf("stream range [%d,+%d) past the layer's end %d: %w", off, n, u.x.TarSize, index.ErrCorrupt)
	}
	for k := first; k < end; k++ {
		data, err := u.frame(k)
		if err != nil {
			return err
		}
		fr := &u.x.Frames[k]
		lo, hi := max(off, fr.Offset), min(off+n, fr.Offset+fr.Size)
		if _, err := f.WriteAt(data[lo-fr.Offset:hi-fr.Offset], at+lo-off); err != nil {
			return err
		}
	}
	return nil
}

// frame returns frame k of the layer, keeping the last one: files follow
// one another through the stream, many in one frame.
func (u *unpacker) frame(k int) ([]byte, error) {
	if k == u.cur {
		return u.curData, nil
	}
	data, err := u.src.Frame(u.ctx, u.x, k)
	if err != nil {
		return nil, fmt.Errorf("frame %d: %w", k, err)
	}
	if int64(len(data)) != u.x.Frames[k].Size {
		return nil, fmt.Errorf("frame %d: %d bytes, want %d: %w", k, len(data), u.x.Frames[k].Size, index.ErrCorrupt)
	}
	u.cur, u.curData = k, data
	return data, nil
}

// whiteout writes a whiteout entry in overlayfs' form. One under a
// non-directory of the layer means nothing (that file hides the layers
// below already) and is dropped.
func (u *unpacker) whiteout(e *index.Entry, base string) error {
	if strings.HasPrefix(base, metaPrefix) && base != opaqueMarker {
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if base != opaqueMarker && (name == "" || name == "." || name == "..") {
		return nil
	}
	d, _ := parentOf(e.Path)
	dir, ok, err := u.resolveDir(d, false)
	if err != nil || !ok {
		return err
	}
	if base == opaqueMarker {
		u.nodes[dir].opaque = true
		return nil
	}
	p := join(dir, name)
	if _, ok := u.nodes[p]; ok {
		return nil // the layer's own entry of that name stays
	}
	pfd, err := u.parent(dir)
	if err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, name, unix.S_IFCHR, 0); err != nil {
		return err
	}
	u.nodes[p] = &node{typ: index.TypeChar}
	return nil
}

// dirMetadata sets every directory's owner, mode, xattrs and times, the
// opaque xattr where the layer made one opaque.
func (u *unpacker) dirMetadata() error {
	u.dropParent()
	for p, n := range u.nodes {
		if n.typ != index.TypeDir {
			continue
		}
		if err := u.ctx.Err(); err != nil {
			return err
		}
		e := n.e
		if e == nil {
			e = &index.Entry{Path: p, Type: index.TypeDir, Mode: 0o755, ModTime: implicitModTime}
		}
		fd, err := openBeneath(u.root, p)
		if err != nil {
			return err
		}
		err = u.metadataFd(fd, e, n.opaque)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("directory %q: %w", p, err)
		}
	}
	return nil
}

// metadataFd sets owner, mode, xattrs and times of an open file or
// directory, and with opaque marks it opaque for overlayfs.
func (u *unpacker) metadataFd(fd int, e *index.Entry, opaque bool) error {
	if err := unix.Fchown(fd, int(e.UID), int(e.GID)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	// After chown, which clears setuid and setgid.
	if err := unix.Fchmod(fd, e.Mode&0o7777); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for _, a := range e.Xattrs {
		if strings.HasPrefix(a.Name, overlayXattrPrefix) {
			continue // the image's own: it must not steer the overlay
		}
		if err := unix.Fsetxattr(fd, a.Name, []byte(a.Value), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", a.Name, err)
		}
	}
	if opaque {
		if err := unix.Fsetxattr(fd, overlayOpaque, []byte("y"), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", overlayOpaque, err)
		}
	}
	ts := timespec(e.ModTime)
	if err := unix.UtimesNanoAt(fd, "", []unix.Timespec{ts, ts}, unix.AT_EMPTY_PATH); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}

// metadataAt sets owner, mode, xattrs and times of name in pfd, which is
// not opened (a symlink, a device, a fifo), never following it.
func (u *unpacker) metadataAt(pfd int, name string, e *index.Entry) error {
	if err := unix.Fchownat(pfd, name, int(e.UID), int(e.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if e.Type != index.TypeSymlink {
		// A device or fifo just made: nothing to follow.
		if err := unix.Fchmodat(pfd, name, e.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for _, a := range e.Xattrs {
		if strings.HasPrefix(a.Name, overlayXattrPrefix) {
			continue
		}
		// The directory through its descriptor's magic link, the last
		// element not followed: no path of the image is resolved.
		p := "/proc/self/fd/" + strconv.Itoa(pfd) + "/" + name
		if err := unix.Lsetxattr(p, a.Name, []byte(a.Value), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", a.Name, err)
		}
	}
	ts := timespec(e.ModTime)
	if err := unix.UtimesNanoAt(pfd, name, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("utimes: %w", err)
	}
	return nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}
