package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ErrBadDigest is wrapped by every error about a digest that is not a
// well-formed sha256 digest ("sha256:" and 64 lower-case hex digits). Such a
// digest is never turned into a path.
var ErrBadDigest = errors.New("cache: invalid digest")

const (
	framesDir = "frames"
	indexDir  = "index"
	indexAlgo = "sha256" // subdirectory of indexDir

	// tempPrefix starts the name of every file being written. A name that
	// starts with a dot can never be a digest's hex, so a temp file is never
	// mistaken for a frame.
	tempPrefix = ".tmp-"

	// staleTemp is how old a temp file must be before Open or Prune removes
	// it: younger ones may belong to another process sharing the root that
	// is writing right now.
	staleTemp = 10 * time.Minute

	dirPerm = 0o700
)

// hexOf returns the hex part of d after checking that d is a sha256 digest
// in canonical form. Only its result is ever joined into a path.
func hexOf(d digest.Digest) (string, error) {
	h, ok := strings.CutPrefix(string(d), "sha256:")
	if !ok || !isHex64(h) {
		s := string(d)
		if len(s) > 80 {
			s = s[:80] + "…"
		}
		return "", fmt.Errorf("%w: %q", ErrBadDigest, s)
	}
	return h, nil
}

// isHex64 reports whether s is 64 lower-case hex digits.
func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

// isHexPrefix reports whether s is two lower-case hex digits: the name of a
// frame subdirectory.
func isHexPrefix(s string) bool {
	return len(s) == 2 && isHexDigit(s[0]) && isHexDigit(s[1])
}

func isHexDigit(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// frameDir is the directory that holds the frame with hex h.
func frameDir(root, h string) string { return filepath.Join(root, framesDir, h[:2]) }

// framePath is where the frame with hex h lives: root/frames/ab/abcdef….
func framePath(root, h string) string { return filepath.Join(root, framesDir, h[:2], h) }

// indexPath is where the index blob with hex h lives: root/index/sha256/h.
func indexPath(root, h string) string { return filepath.Join(root, indexDir, indexAlgo, h) }

// FramePath returns where the frame with digest d is stored under the cache
// root dir, or an error wrapping ErrBadDigest.
func FramePath(dir string, d digest.Digest) (string, error) {
	h, err := hexOf(d)
	if err != nil {
		return "", err
	}
	return framePath(dir, h), nil
}

// IndexPath returns where the index blob keyed by d is stored under the
// cache root dir, or an error wrapping ErrBadDigest.
func IndexPath(dir string, d digest.Digest) (string, error) {
	h, err := hexOf(d)
	if err != nil {
		return "", err
	}
	return indexPath(dir, h), nil
}

// scanned is one frame file found on disk.
type scanned struct {
	hex   string
	size  int64
	mtime time.Time
}

// scanResult is what one walk of a root found.
type scanResult struct {
	frames     []scanned
	indexes    int64
	indexBytes int64
	temps      int64 // temp files left in place
	tempBytes  int64
	removed    int64 // stale temp files removed
}

// scan walks root's frames and indexes. If removeBefore is not zero, temp
// files last modified before it are removed. Files that are neither frames,
// indexes nor temp files are left alone and not counted. A missing frames or
// index directory is empty; any other error is returned.
func scan(root string, removeBefore time.Time) (scanResult, error) {
	var r scanResult
	temp := func(dir string, info fs.FileInfo) {
		if !removeBefore.IsZero() && info.ModTime().Before(removeBefore) {
			if err := os.Remove(filepath.Join(dir, info.Name())); err == nil || errors.Is(err, fs.ErrNotExist) {
				r.removed++
				return
			}
		}
		r.temps++
		r.tempBytes += info.Size()
	}

	top := filepath.Join(root, framesDir)
	subs, err := os.ReadDir(top)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("cache: scan %s: %w", top, err)
	}
	for _, sub := range subs {
		name := sub.Name()
		if !sub.IsDir() || !isHexPrefix(name) {
			continue
		}
		dir := filepath.Join(top, name)
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed by another process meanwhile
			}
			return r, fmt.Errorf("cache: scan %s: %w", dir, err)
		}
		for _, e := range ents {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() {
				continue // gone meanwhile, or not ours
			}
			switch n := e.Name(); {
			case strings.HasPrefix(n, tempPrefix):
				temp(dir, info)
			case isHex64(n) && n[:2] == name:
				r.frames = append(r.frames, scanned{hex: n, size: info.Size(), mtime: info.ModTime()})
			}
		}
	}

	idir := filepath.Join(root, indexDir, indexAlgo)
	ents, err := os.ReadDir(idir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r, fmt.Errorf("cache: scan %s: %w", idir, err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		switch n := e.Name(); {
		case strings.HasPrefix(n, tempPrefix):
			temp(idir, info)
		case isHex64(n):
			r.indexes++
			r.indexBytes += info.Size()
		}
	}
	return r, nil
}

// DiskUsage is what a cache root holds on disk.
type DiskUsage struct {
	Frames, FrameBytes   int64
	Indexes, IndexBytes  int64
	TempFiles, TempBytes int64 // files being written, or left by a crash
}

// Usage walks the cache root dir and reports what it holds. It writes
// nothing, so it suits a process that did not write the frames itself (a
// stats command) and may run while other processes use the root. An error
// wraps fs.ErrNotExist when dir itself does not exist.
func Usage(dir string) (DiskUsage, error) {
	if _, err := os.Stat(dir); err != nil {
		return DiskUsage{}, fmt.Errorf("cache: usage: %w", err)
	}
	r, err := scan(dir, time.Time{})
	if err != nil {
		return DiskUsage{}, err
	}
	u := DiskUsage{
		Frames:     int64(len(r.frames)),
		Indexes:    r.indexes,
		IndexBytes: r.indexBytes,
		TempFiles:  r.temps,
		TempBytes:  r.tempBytes,
	}
	for _, f := range r.frames {
		u.FrameBytes += f.size
	}
	return u, nil
}

// writeAtomic writes data under the name final in dir, so that final
// either does not change or holds all of data, and so that a process killed
// at any point leaves nothing behind that could be taken for a finished file.
//
// It writes an unnamed file (O_TMPFILE), which the kernel frees if the
// process dies, and links it to final once written. Where the file system
// has no O_TMPFILE, or final exists already (it is then replaced), it falls
// back to a named temp file (tempPrefix…) and a rename; on error that file
// is removed, and one left by a killed process is removed by Open or Prune
// once stale. The directory is created if missing (another process may have
// removed it).
func writeAtomic(dir, final string, data []byte) error {
	if !forceNamedTemp {
		err := writeUnnamed(dir, final, data)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(dir, dirPerm); err == nil {
				err = writeUnnamed(dir, final, data)
			}
		}
		if !errors.Is(err, errNoUnnamed) {
			return err
		}
	}
	return writeNamed(dir, final, data)
}

// forceNamedTemp makes writeAtomic use named temp files only. Tests set it
// to exercise the fallback.
var forceNamedTemp = false

// errNoUnnamed says writeUnnamed could not be used here (no O_TMPFILE, no
// /proc, or final exists): the caller falls back to a named temp file.
var errNoUnnamed = errors.New("cache: unnamed temp file not usable")

// writeUnnamed writes data to an O_TMPFILE file in dir and links it as
// final. It returns an error wrapping errNoUnnamed when that cannot be done
// here but a named temp file may work.
func writeUnnamed(dir, final string, data []byte) error {
	f, err := os.OpenFile(dir, os.O_WRONLY|unix.O_TMPFILE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("%w: %w", errNoUnnamed, err)
		}
		return err
	}
	// The file is linked while still open (the link goes through its fd), so
	// an error only close would report (a late ENOSPC on NFS) is not seen
	// here: the digest check on first use catches what it damaged.
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(fd)), unix.AT_FDCWD, final, unix.AT_SYMLINK_FOLLOW)
	}); err != nil {
		return err
	}
	switch {
	case lerr == nil:
		return nil
	case errors.Is(lerr, syscall.EEXIST):
		// Replacing a file takes a rename.
		return fmt.Errorf("%w: %s exists", errNoUnnamed, final)
	case errors.Is(lerr, syscall.ENOENT) && !dirExists(dir):
		return &fs.PathError{Op: "link", Path: final, Err: lerr}
	case errors.Is(lerr, syscall.ENOENT), errors.Is(lerr, syscall.EPERM), errors.Is(lerr, syscall.EXDEV):
		return fmt.Errorf("%w: link %s: %w", errNoUnnamed, final, lerr) // no /proc, or a file system that refuses it
	default:
		return &fs.PathError{Op: "link", Path: final, Err: lerr}
	}
}

func dirExists(dir string) bool {
	fi, err := os.Stat(dir)
	return err == nil && fi.IsDir()
}

// writeNamed writes data to a temp file named tempPrefix… in dir and renames
// it to final. On error the temp file is removed.
func writeNamed(dir, final string, data []byte) error {
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, dirPerm); err == nil {
			f, err = os.CreateTemp(dir, tempPrefix+"*")
		}
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
