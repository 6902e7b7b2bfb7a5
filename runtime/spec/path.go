package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	securejoin "github.com/cyphar/filepath-securejoin"
	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

// ErrTooLarge is wrapped when a file read from the container's root is
// larger than the caller's bound.
var ErrTooLarge = errors.New("file too large")

// ErrNotRegular is wrapped when a file read from the container's root is not
// a regular file (a FIFO, a device, a directory).
var ErrNotRegular = errors.New("not a regular file")

// HostPath returns where the container path p lies under rootfs, the
// container's root file system seen from the host. p is taken as absolute
// inside the container whether or not it starts with "/"; ".." stops at the
// root; symbolic links are followed as the container would follow them, with
// an absolute target starting again at rootfs. The result is always rootfs or
// below it. p need not exist: the missing tail is appended as is.
//
// The resolution is lexical (filepath-securejoin's SecureJoin), so it is safe
// only while nobody changes the tree concurrently (before the container's
// processes run). To read a file race-free, use ReadFile.
func HostPath(rootfs, p string) (string, error) {
	hp, err := securejoin.SecureJoin(rootfs, path.Join("/", p))
	if err != nil {
		return "", fmt.Errorf("resolve %s in %s: %w", p, rootfs, err)
	}
	return hp, nil
}

// ReadFile reads the container file p under rootfs (resolved as HostPath
// says, but race-free: openat2 RESOLVE_IN_ROOT, or an O_PATH walk on old
// kernels). It refuses anything but a regular file (wrapping ErrNotRegular),
// so a FIFO or device planted by an image cannot block or flood the reader,
// and a file longer than limit bytes (wrapping ErrTooLarge). A missing file
// gives an error that wraps fs.ErrNotExist.
func ReadFile(rootfs, p string, limit int64) ([]byte, error) {
	p = path.Join("/", p)
	h, err := pathrs.OpenInRoot(rootfs, p)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", p, rootfs, unwrapPath(err))
	}
	defer h.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(h.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s in %s: %w", p, rootfs, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("read %s in %s: %w", p, rootfs, ErrNotRegular)
	}
	if st.Size > limit {
		return nil, fmt.Errorf("read %s in %s: %w (%d bytes, limit %d)", p, rootfs, ErrTooLarge, st.Size, limit)
	}
	f, err := pathrs.Reopen(h, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("open %s in %s: %w", p, rootfs, unwrapPath(err))
	}
	defer f.Close()
	// The size may have changed since fstat: read at most limit+1 bytes.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", p, rootfs, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("read %s in %s: %w (limit %d bytes)", p, rootfs, ErrTooLarge, limit)
	}
	return b, nil
}

// MkdirAll creates the container directory p and its missing parents under
// rootfs with mode perm (before umask), without leaving the root, as docker
// creates a missing working directory: p is resolved as HostPath says (so a
// dangling symbolic link is followed, inside the root) and the missing tail
// created. Like os.MkdirAll it succeeds when p already is a directory. It is
// meant for a root that nobody changes concurrently.
func MkdirAll(rootfs, p string, perm fs.FileMode) error {
	hp, err := HostPath(rootfs, p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(hp, perm); err != nil {
		return fmt.Errorf("mkdir %s in %s: %w", path.Join("/", p), rootfs, unwrapPath(err))
	}
	return nil
}

// unwrapPath drops the *fs.PathError that the securejoin functions put
// around an error, whose path is the unresolved one and whose operation
// names the library: our messages already name both.
func unwrapPath(err error) error {
	for {
		var pe *fs.PathError
		if !errors.As(err, &pe) || pe.Err == nil {
			return err
		}
		err = pe.Err
	}
}

// notExist reports whether err means that a path is absent: missing, or one
// of its parents is not a directory (as glibc's lookups treat it).
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR)
}
