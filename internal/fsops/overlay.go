package fsops

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lazyfs/lazyfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// RequireEnv turns "overlayfs cannot be mounted here" from a skip into a
// failure when set to "1"; .ci/run sets it.
const RequireEnv = "LAZYFS_REQUIRE_FUSE"

// OverlayOptions are the overlayfs features MountOverlay asks for unless
// told otherwise, spelled out rather than taken from the module's
// defaults (/sys/module/overlay/parameters, which distributions set
// differently; on the reference machine they are these too):
//
//   - redirect_dir=off: renaming a directory that exists in a lower layer
//     (or is merged with one) fails with EXDEV, as rename(2) across file
//     systems does; tools like mv fall back to copying. With "on" overlayfs
//     would record the move in a trusted.overlay.redirect xattr instead.
//   - index=off: copying up one name of a lower file with several hard
//     links breaks the link: the other names keep the old content and the
//     lower link count.
//   - metacopy=off: a metadata change copies the data up too.
//   - xino=off: inode numbers are the real ones (all layers are on one
//     file system in the tests, so they are unique).
//
// A lazyfs copy-on-write mount is compared with a kernel overlay mounted
// with these options and must behave the same.
const OverlayOptions = "redirect_dir=off,index=off,metacopy=off,xino=off"

// Whiteout and opaque markers of overlayfs' on-disk format.
const (
	OpaqueXattr = "trusted.overlay.opaque" // value "y" on an opaque directory
	whiteoutDev = 0                        // a whiteout is a 0/0 character device
)

// skipOrFail skips t with the reason, or fails it when RequireEnv is "1".
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, RequireEnv)
	}
	t.Skip(msg)
}

// UnpackLower unpacks one uncompressed tar layer into dst (created if
// missing) as an overlayfs lower directory: the entries as testutil.Unpack
// extracts a single layer, OCI whiteouts .wh.NAME as 0/0 character devices
// NAME and .wh..wh..opq as the trusted.overlay.opaque=y xattr on its
// directory. Directory mtimes are kept as the layer has them.
//
// Overlayfs takes a directory's metadata from the topmost layer that has
// it, OCI from the last layer with an entry for it: a layer that has files
// in a directory should have an entry for the directory too, or the two
// disagree about it. Hard links must point inside their layer.
func UnpackLower(t testing.TB, dst string, layer []byte) {
	t.Helper()
	testutil.Unpack(t, dst, [][]byte{layer})
	if err := overlayWhiteouts(dst, layer); err != nil {
		t.Fatalf("UnpackLower(%s): %v", dst, err)
	}
}

func overlayWhiteouts(dst string, layer []byte) error {
	type marker struct {
		dir, name string // name "" for opaque
	}
	var markers []marker
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		p := path.Clean(strings.TrimLeft(hdr.Name, "/"))
		if p == ".." || strings.HasPrefix(p, "../") {
			return fmt.Errorf("%q leaves the root", hdr.Name)
		}
		dir, base := path.Dir(p), path.Base(p)
		switch {
		case base == ".wh..wh..opq":
			markers = append(markers, marker{dir: dir})
		case strings.HasPrefix(base, ".wh..wh."):
			// aufs metadata: nothing in overlayfs.
		case strings.HasPrefix(base, ".wh."):
			markers = append(markers, marker{dir: dir, name: strings.TrimPrefix(base, ".wh.")})
		}
	}
	// Keep the mtimes of the directories that get whiteouts.
	times := map[string]unix.Timespec{}
	for _, mk := range markers {
		full := filepath.Join(dst, filepath.FromSlash(mk.dir))
		if _, ok := times[full]; ok {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: full, Err: err}
		}
		times[full] = st.Mtim
	}
	for _, mk := range markers {
		dir := filepath.Join(dst, filepath.FromSlash(mk.dir))
		if mk.name == "" {
			if err := unix.Lsetxattr(dir, OpaqueXattr, []byte("y"), 0); err != nil {
				return &os.PathError{Op: "setxattr " + OpaqueXattr, Path: dir, Err: err}
			}
			continue
		}
		wh := filepath.Join(dir, mk.name)
		if err := unix.Mknod(wh, unix.S_IFCHR, whiteoutDev); err != nil {
			return &os.PathError{Op: "mknod whiteout", Path: wh, Err: err}
		}
	}
	for full, ts := range times {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimes", Path: full, Err: err}
		}
	}
	return nil
}

// Overlay unpacks each of layers (uncompressed tars, bottom first) with
// UnpackLower into its own directory and mounts them with MountOverlay.
func Overlay(t testing.TB, layers [][]byte, options string) (merged, upper string) {
	t.Helper()
	base := t.TempDir()
	lowers := make([]string, len(layers))
	for i, l := range layers {
		lowers[i] = filepath.Join(base, fmt.Sprintf("lower%d", i))
		UnpackLower(t, lowers[i], l)
	}
	return MountOverlay(t, lowers, options)
}

// MountOverlay mounts kernel overlayfs over lowers (bottom first, like
// image layers) with a new, empty upper and work directory and returns
// the mount point and the upper directory; options empty means
// OverlayOptions. The upper directory gets the mode, owner and mtime of
// the top lower's root, because overlayfs shows the upper's root as the
// merged root. It is unmounted in t.Cleanup. The test is skipped if
// overlayfs cannot be mounted here (not root, no overlay support) unless
// RequireEnv is set.
func MountOverlay(t testing.TB, lowers []string, options string) (merged, upper string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "mounting overlayfs needs root")
	}
	if len(lowers) == 0 {
		t.Fatalf("MountOverlay: no lower directories")
	}
	if options == "" {
		options = OverlayOptions
	}
	base := t.TempDir()
	upper, work, merged := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("MountOverlay: %v", err)
		}
	}
	if err := copyRootMeta(lowers[len(lowers)-1], upper); err != nil {
		t.Fatalf("MountOverlay: %v", err)
	}
	top := slices.Clone(lowers)
	slices.Reverse(top) // overlayfs lists the top layer first
	for _, d := range append(top, upper, work) {
		if strings.ContainsAny(d, ",:\\") {
			t.Fatalf("MountOverlay: %q: overlayfs options cannot hold ',', ':' or '\\' unescaped", d)
		}
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(top, ":"), upper, work, options)
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) {
			skipOrFail(t, "cannot mount overlayfs: %v", err)
		}
		t.Fatalf("MountOverlay: mount -t overlay -o %s %s: %v", data, merged, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay %s: %v", merged, err)
		}
	})
	return merged, upper
}

// copyRootMeta gives dst the mode, owner and times of src.
func copyRootMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
		return &os.PathError{Op: "chmod", Path: dst, Err: err}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: dst, Err: err}
	}
	return nil
}
