package fsops

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Kind names one file operation.
type Kind uint8

// The operations. Paths are relative to the root under test; "." is the root.
const (
	Create      Kind = iota // open(Path, O_CREAT|O_EXCL|O_WRONLY, Mode)
	CreateTrunc             // open(Path, O_CREAT|O_TRUNC|O_WRONLY, Mode), then write Len bytes
	Write                   // pwrite Len bytes at Off into an existing file (follows symlinks)
	Append                  // write Len bytes with O_APPEND (follows symlinks)
	Truncate                // truncate(Path, Off) (follows symlinks)
	Chmod                   // chmod(Path, Mode) (follows symlinks)
	Chown                   // lchown(Path, UID, GID); -1 keeps an id
	Utimens                 // utimensat(Path, {Atime, Mtime}, AT_SYMLINK_NOFOLLOW)
	Setxattr                // lsetxattr(Path, Name, Value, Flags)
	Removexattr             // lremovexattr(Path, Name)
	Mkdir                   // mkdir(Path, Mode)
	Mknod                   // mknod(Path, Mode (type and permission bits), Dev)
	Symlink                 // symlink(Target, Path)
	Link                    // link(Path, To): a hard link, not following a symlink Path
	Unlink                  // unlink(Path)
	Rmdir                   // rmdir(Path)
	Rename                  // renameat2(Path, To, Flags)

	// Probes: they change nothing and report what they saw in Result.Value.

	Read      // the content of a regular file (follows symlinks): size and sha256
	Lstat     // type, permissions, owner, size, nlink and mtime
	Readlink  // a symlink's target
	Listxattr // the user.* xattrs with their values
	Getxattr  // one xattr's value
	Readdir   // the sorted names in a directory (follows symlinks)

	numKinds
)

var kindNames = [numKinds]string{
	Create: "create", CreateTrunc: "create", Write: "write", Append: "append",
	Truncate: "truncate", Chmod: "chmod", Chown: "lchown", Utimens: "utimens",
	Setxattr: "lsetxattr", Removexattr: "lremovexattr", Mkdir: "mkdir",
	Mknod: "mknod", Symlink: "symlink", Link: "link", Unlink: "unlink",
	Rmdir: "rmdir", Rename: "rename", Read: "read", Lstat: "lstat",
	Readlink: "readlink", Listxattr: "listxattr", Getxattr: "getxattr",
	Readdir: "readdir",
}

func (k Kind) String() string {
	if k < numKinds {
		if k == CreateTrunc {
			return "create_trunc"
		}
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Probe reports whether k only observes.
func (k Kind) Probe() bool { return k >= Read && k < numKinds }

// Op is one file operation with its arguments. Which fields are used
// depends on Kind (see the Kind constants); the others are zero. Written
// content is never stored: it is Len bytes of testutil.PatternAt(Seed, Off).
type Op struct {
	Kind Kind
	// Path is the object; for Link and Rename the old name, for Symlink the
	// link to create.
	Path string
	// To is the new name of Link and Rename.
	To string
	// Target is the content of a Symlink.
	Target string
	// Mode holds permission bits (with setuid, setgid and sticky) for
	// Create, CreateTrunc, Mkdir and Chmod, and the file type too for Mknod.
	Mode uint32
	// Dev is the device number of a Mknod (unix.Mkdev).
	Dev uint64
	// UID and GID are Chown's new owner; -1 leaves one unchanged.
	UID, GID int
	// Off is where Write writes and Truncate's new size.
	Off int64
	// Len is how many bytes Write, Append and CreateTrunc write.
	Len int
	// Seed selects the content written (with Off: testutil.PatternAt).
	Seed int64
	// Atime and Mtime are Utimens' times; Nsec may be unix.UTIME_NOW or
	// unix.UTIME_OMIT.
	Atime, Mtime unix.Timespec
	// Name and Value are an xattr's.
	Name, Value string
	// Flags are renameat2's (unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE) or
	// lsetxattr's (unix.XATTR_CREATE, unix.XATTR_REPLACE).
	Flags int
}

// String renders op as a call, e.g. rename("a/b", "c", RENAME_NOREPLACE).
func (op Op) String() string {
	q := strconv.Quote
	args := []string{q(op.Path)}
	switch op.Kind {
	case Create:
		args = append(args, "O_CREAT|O_EXCL", octal(op.Mode))
	case CreateTrunc:
		args = append(args, "O_CREAT|O_TRUNC", octal(op.Mode), data(op))
	case Write:
		args = append(args, "off "+strconv.FormatInt(op.Off, 10), data(op))
	case Append:
		args = append(args, data(op))
	case Truncate:
		args = append(args, strconv.FormatInt(op.Off, 10))
	case Chmod, Mkdir:
		args = append(args, octal(op.Mode))
	case Chown:
		args = append(args, strconv.Itoa(op.UID), strconv.Itoa(op.GID))
	case Utimens:
		args = append(args, "atime "+fmtTime(op.Atime), "mtime "+fmtTime(op.Mtime))
	case Setxattr:
		args = append(args, q(op.Name), quoteValue(op.Value), xattrFlags(op.Flags))
	case Removexattr, Getxattr:
		args = append(args, q(op.Name))
	case Mknod:
		s := fileType(op.Mode) + " " + octal(op.Mode&0o7777)
		if t := op.Mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
			s += fmt.Sprintf(" %d:%d", unix.Major(op.Dev), unix.Minor(op.Dev))
		}
		args = append(args, s)
	case Symlink:
		args = []string{q(op.Target), q(op.Path)}
	case Link:
		args = append(args, q(op.To))
	case Rename:
		args = append(args, q(op.To), renameFlags(op.Flags))
	}
	name := op.Kind.String()
	if op.Kind < numKinds {
		name = kindNames[op.Kind] // create for both Create and CreateTrunc
	}
	return name + "(" + strings.Join(args, ", ") + ")"
}

func octal(m uint32) string { return fmt.Sprintf("%#o", m) }

func data(op Op) string { return fmt.Sprintf("%d bytes seed %d", op.Len, op.Seed) }

func quoteValue(v string) string {
	if len(v) > 40 {
		return fmt.Sprintf("%q… (%d bytes)", v[:40], len(v))
	}
	return strconv.Quote(v)
}

func fmtTime(ts unix.Timespec) string {
	switch ts.Nsec {
	case unix.UTIME_NOW:
		return "NOW"
	case unix.UTIME_OMIT:
		return "OMIT"
	}
	return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec)
}

func xattrFlags(f int) string {
	switch f {
	case 0:
		return "0"
	case unix.XATTR_CREATE:
		return "XATTR_CREATE"
	case unix.XATTR_REPLACE:
		return "XATTR_REPLACE"
	}
	return strconv.Itoa(f)
}

func renameFlags(f int) string {
	switch f {
	case 0:
		return "0"
	case unix.RENAME_NOREPLACE:
		return "RENAME_NOREPLACE"
	case unix.RENAME_EXCHANGE:
		return "RENAME_EXCHANGE"
	}
	return strconv.Itoa(f)
}

// fileType names the type bits of a mode.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "reg"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chr"
	case unix.S_IFBLK:
		return "blk"
	case unix.S_IFSOCK:
		return "sock"
	}
	return fmt.Sprintf("type%#o", mode&unix.S_IFMT)
}

// Result is what applying an Op to one root gave.
type Result struct {
	// Errno is the error of the operation, 0 on success.
	Errno unix.Errno
	// Value is what a probe observed. For an operation that would have to
	// open a fifo, socket or device node to do its work, which Apply never
	// does, it is "not opened: TYPE" and Errno is 0.
	Value string
	// Mtime is the mtime seen by Lstat; the zero Time otherwise.
	Mtime time.Time
}

// Same reports whether r and o agree: equal Errno and Value, and mtimes
// that are equal or both at or after recent (both set by the clock while
// the operations ran).
func (r Result) Same(o Result, recent time.Time) bool {
	if r.Errno != o.Errno || r.Value != o.Value || r.Mtime.IsZero() != o.Mtime.IsZero() {
		return false
	}
	return r.Mtime.Equal(o.Mtime) || isRecent(r.Mtime, recent) && isRecent(o.Mtime, recent)
}

func isRecent(t, recent time.Time) bool { return !recent.IsZero() && !t.Before(recent) }

// Format renders r, marking an mtime at or after recent as recent.
func (r Result) Format(recent time.Time) string {
	s := "ok"
	if r.Errno != 0 {
		s = unix.ErrnoName(r.Errno)
		if s == "" {
			s = fmt.Sprintf("errno %d", uintptr(r.Errno))
		}
	}
	if r.Value != "" {
		s += ": " + r.Value
	}
	if !r.Mtime.IsZero() {
		s += " mtime=" + r.Mtime.UTC().Format(time.RFC3339Nano)
		if isRecent(r.Mtime, recent) {
			s += " (recent)"
		}
	}
	return s
}

func (r Result) String() string { return r.Format(time.Time{}) }
