package fsops

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lazyfs/lazyfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// inRoot is how Apply resolves every path: symlinks (absolute ones and ".."
// too) never leave the root, and no mount point below it is crossed.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// maxRead bounds what Read reads of one file.
const maxRead = 64 << 20

// Apply performs op on the tree under root and returns its outcome.
//
// Paths are resolved with openat2(RESOLVE_IN_ROOT): whatever symlinks the
// tree holds, nothing outside root is touched. An operation that does not
// follow a symlink in its last component (lchown, utimens, xattrs, lstat,
// readlink, link, unlink, rename, …) works on the last component relative
// to its parent directory opened that way. One that follows it (opening for
// Read, Write, Append and CreateTrunc; Chmod; Truncate; Readdir) resolves the
// whole path that way to an O_PATH descriptor and then works through
// /proc/self/fd; it never opens a fifo, socket or device node (Result.Value
// says "not opened"), so a device in a layer cannot block or be written.
//
// Every descriptor is closed before Apply returns, so root may be a FUSE
// mount served by the calling process.
func Apply(root string, op Op) Result {
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Result{Errno: errnoOf(err), Value: "open root: " + err.Error()}
	}
	defer unix.Close(rootfd)
	return apply(rootfd, op)
}

func apply(rootfd int, op Op) Result {
	switch op.Kind {
	case Create:
		fd, err := openIn(rootfd, op.Path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, op.Mode)
		if err != nil {
			return fail(err)
		}
		return fail(unix.Close(fd))
	case CreateTrunc:
		fd, r := openContent(rootfd, op.Path, unix.O_WRONLY|unix.O_TRUNC, op.Mode, true)
		if fd < 0 {
			return r
		}
		defer unix.Close(fd)
		return writeAt(fd, op, 0, false)
	case Write, Append:
		flags := unix.O_WRONLY
		if op.Kind == Append {
			flags |= unix.O_APPEND
		}
		fd, r := openContent(rootfd, op.Path, flags, 0, false)
		if fd < 0 {
			return r
		}
		defer unix.Close(fd)
		return writeAt(fd, op, op.Off, op.Kind == Append)
	case Truncate:
		return viaProc(rootfd, op.Path, func(p string) error { return unix.Truncate(p, op.Off) })
	case Chmod:
		return viaProc(rootfd, op.Path, func(p string) error { return unix.Fchmodat(unix.AT_FDCWD, p, op.Mode, 0) })
	case Chown:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.Fchownat(dir, base, op.UID, op.GID, unix.AT_SYMLINK_NOFOLLOW)
		})
	case Utimens:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.UtimesNanoAt(dir, base, []unix.Timespec{op.Atime, op.Mtime}, unix.AT_SYMLINK_NOFOLLOW)
		})
	case Setxattr:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.Lsetxattr(procPath(dir, base), op.Name, []byte(op.Value), op.Flags)
		})
	case Removexattr:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.Lremovexattr(procPath(dir, base), op.Name)
		})
	case Mkdir:
		return atParent(rootfd, op.Path, func(dir int, base string) error { return unix.Mkdirat(dir, base, op.Mode) })
	case Mknod:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.Mknodat(dir, base, op.Mode, int(op.Dev))
		})
	case Symlink:
		return atParent(rootfd, op.Path, func(dir int, base string) error { return unix.Symlinkat(op.Target, dir, base) })
	case Link:
		return atParents(rootfd, op.Path, op.To, func(od int, ob string, nd int, nb string) error {
			return unix.Linkat(od, ob, nd, nb, 0)
		})
	case Unlink:
		return atParent(rootfd, op.Path, func(dir int, base string) error { return unix.Unlinkat(dir, base, 0) })
	case Rmdir:
		return atParent(rootfd, op.Path, func(dir int, base string) error {
			return unix.Unlinkat(dir, base, unix.AT_REMOVEDIR)
		})
	case Rename:
		return atParents(rootfd, op.Path, op.To, func(od int, ob string, nd int, nb string) error {
			return unix.Renameat2(od, ob, nd, nb, uint(op.Flags))
		})
	case Read:
		return readFile(rootfd, op.Path)
	case Lstat:
		var val string
		var mtime time.Time
		r := atParent(rootfd, op.Path, func(dir int, base string) error {
			var st unix.Stat_t
			if err := unix.Fstatat(dir, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			val, mtime = describe(&st), time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
			return nil
		})
		r.Value, r.Mtime = val, mtime
		return r
	case Readlink:
		return probeAt(rootfd, op.Path, func(dir int, base string) (string, error) {
			buf := make([]byte, unix.PathMax)
			n, err := unix.Readlinkat(dir, base, buf)
			if err != nil {
				return "", err
			}
			return strconv.Quote(string(buf[:n])), nil
		})
	case Listxattr:
		return probeAt(rootfd, op.Path, func(dir int, base string) (string, error) {
			return userXattrs(procPath(dir, base))
		})
	case Getxattr:
		return probeAt(rootfd, op.Path, func(dir int, base string) (string, error) {
			v, err := getxattr(procPath(dir, base), op.Name)
			return quoteValue(v), err
		})
	case Readdir:
		return readDir(rootfd, op.Path)
	}
	return Result{Errno: unix.ENOSYS, Value: "unknown op " + op.Kind.String()}
}

// errnoOf returns err's errno, EIO if it has none.
func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// fail turns err into a Result: success for nil.
func fail(err error) Result {
	if err == nil {
		return Result{}
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return Result{Errno: e}
	}
	return Result{Errno: unix.EIO, Value: err.Error()}
}

// openIn opens p below rootfd, following symlinks inside the root only.
func openIn(rootfd int, p string, flags int, mode uint32) (int, error) {
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NOCTTY // openat2 refuses it with O_PATH
	}
	how := &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: inRoot}
	if flags&unix.O_CREAT != 0 {
		how.Mode = uint64(mode)
	}
	for range 10 {
		fd, err := unix.Openat2(rootfd, p, how)
		if err != unix.EAGAIN { // EAGAIN: a concurrent rename raced the resolution
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// procPath names base in the directory open as dir, without following a
// symlink base: for the l*xattr calls, which have no *at variants.
func procPath(dir int, base string) string { return procFD(dir) + "/" + base }

// atParent runs fn on p's parent directory, opened inside the root, and
// p's last component.
func atParent(rootfd int, p string, fn func(dir int, base string) error) Result {
	dir, base, err := openParent(rootfd, p)
	if err != nil {
		return fail(err)
	}
	if dir != rootfd {
		defer unix.Close(dir)
	}
	return fail(fn(dir, base))
}

// probeAt is atParent for a probe: fn's value becomes Result.Value when it
// succeeds.
func probeAt(rootfd int, p string, fn func(dir int, base string) (string, error)) Result {
	var val string
	r := atParent(rootfd, p, func(dir int, base string) (err error) {
		val, err = fn(dir, base)
		return err
	})
	if r.Errno == 0 {
		r.Value = val
	}
	return r
}

// atParents is atParent for the two paths of link and rename; the old
// name's parent is resolved first, as the kernel does.
func atParents(rootfd int, oldp, newp string, fn func(od int, ob string, nd int, nb string) error) Result {
	od, ob, err := openParent(rootfd, oldp)
	if err != nil {
		return fail(err)
	}
	if od != rootfd {
		defer unix.Close(od)
	}
	nd, nb, err := openParent(rootfd, newp)
	if err != nil {
		return fail(err)
	}
	if nd != rootfd {
		defer unix.Close(nd)
	}
	return fail(fn(od, ob, nd, nb))
}

// openParent opens p's parent (rootfd itself for a top-level name) as an
// O_PATH descriptor and returns p's last component.
func openParent(rootfd int, p string) (int, string, error) {
	dir, base := path.Dir(p), path.Base(p)
	if dir == "." {
		return rootfd, base, nil
	}
	fd, err := openIn(rootfd, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	return fd, base, err
}

// viaProc resolves p (following symlinks inside the root) to an O_PATH
// descriptor and runs fn on its /proc/self/fd name, which the kernel
// follows to the same file without a new path walk.
func viaProc(rootfd int, p string, fn func(procName string) error) Result {
	fd, err := openIn(rootfd, p, unix.O_PATH, 0)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(fd)
	return fail(fn(procFD(fd)))
}

// openContent opens p (following symlinks inside the root) with flags for
// reading or writing content. A regular file or directory is reopened
// through /proc/self/fd with flags (a directory then gives the kernel's
// EISDIR); anything else is not opened and r says so. With create, a
// missing p is created with O_CREAT and mode. fd is -1 when r is the
// outcome.
func openContent(rootfd int, p string, flags int, mode uint32, create bool) (fd int, r Result) {
	pfd, err := openIn(rootfd, p, unix.O_PATH, 0)
	if err == unix.ENOENT && create {
		fd, err := openIn(rootfd, p, flags|unix.O_CREAT, mode)
		if err != nil {
			return -1, fail(err)
		}
		return fd, Result{}
	}
	if err != nil {
		return -1, fail(err)
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return -1, fail(err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		return -1, Result{Value: "not opened: " + fileType(st.Mode)}
	}
	fd, err = unix.Open(procFD(pfd), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return -1, fail(err)
	}
	return fd, Result{}
}

// writeAt writes op's content to fd: at off, or appended.
func writeAt(fd int, op Op, off int64, appendMode bool) Result {
	if op.Len == 0 {
		return Result{}
	}
	buf := make([]byte, op.Len)
	if off >= 0 {
		testutil.PatternAt(op.Seed, off, buf)
	}
	var n int
	var err error
	if appendMode {
		n, err = unix.Write(fd, buf)
	} else {
		n, err = unix.Pwrite(fd, buf, off)
	}
	if err != nil {
		return fail(err)
	}
	if n != len(buf) {
		return Result{Value: fmt.Sprintf("short write: %d of %d bytes", n, len(buf))}
	}
	return Result{}
}

// readFile reports a regular file's size and sha256.
func readFile(rootfd int, p string) Result {
	fd, r := openContent(rootfd, p, unix.O_RDONLY, 0, false)
	if fd < 0 {
		return r
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(struct{ io.Reader }{f}, maxRead))
	if err != nil {
		return fail(err)
	}
	return Result{Value: fmt.Sprintf("%d bytes sha256 %x", n, h.Sum(nil)[:12])}
}

// readDir lists a directory's names, sorted.
func readDir(rootfd int, p string) Result {
	// O_DIRECTORY fails with ENOTDIR before anything else is opened.
	fd, err := openIn(rootfd, p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fail(err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fail(err)
	}
	slices.Sort(names)
	for i, n := range names {
		names[i] = strconv.Quote(n)
	}
	return Result{Value: "[" + strings.Join(names, " ") + "]"}
}

// describe renders what Lstat compares besides the mtime: type,
// permissions, owner, and for non-directories size and link count (a
// directory's size and nlink are the file system's business: overlayfs
// reports nlink 1 for merged directories), and device numbers.
func describe(st *unix.Stat_t) string {
	s := fmt.Sprintf("%s %04o %d:%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return s
	case unix.S_IFCHR, unix.S_IFBLK:
		s += fmt.Sprintf(" dev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	return s + fmt.Sprintf(" size %d nlink %d", st.Size, st.Nlink)
}

// userXattrs lists the user.* xattrs of p (not following a symlink) with
// their values, sorted.
func userXattrs(p string) (string, error) {
	var names []string
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Llistxattr(p, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return "", err
		}
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if strings.HasPrefix(name, "user.") {
				names = append(names, name)
			}
		}
		break
	}
	slices.Sort(names)
	out := make([]string, 0, len(names))
	for _, name := range names {
		v, err := getxattr(p, name)
		if err != nil {
			return "", fmt.Errorf("getxattr %s: %w", name, err)
		}
		out = append(out, name+"="+quoteValue(v))
	}
	return "{" + strings.Join(out, " ") + "}", nil
}

func getxattr(p, name string) (string, error) {
	for size := 1024; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if err == unix.ERANGE && size < 1<<20 {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
