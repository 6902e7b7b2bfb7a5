package fusefs

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/fsops"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// buildIndexes indexes layer blobs (bottom first) and returns them with a
// source that serves them from memory.
func buildIndexes(t testing.TB, blobs [][]byte, span int64) ([]*index.Index, *memSource) {
	t.Helper()
	src := &memSource{blobs: map[digest.Digest][]byte{}}
	var idxs []*index.Index
	for _, b := range blobs {
		d := digest.FromBytes(b)
		x, err := index.Build(t.Context(), d, bytes.NewReader(b), index.BuildOptions{Span: span})
		if err != nil {
			t.Fatalf("index.Build: %v", err)
		}
		src.blobs[d] = b
		idxs = append(idxs, x)
	}
	return idxs, src
}

// cowMount is a writable mount for a test.
type cowMount struct {
	dir, upper, work string
	m                *Mount
}

// mountCow mounts the layers writable at a new directory with upper as
// the upper directory (a new one if ""). It is unmounted in t.Cleanup
// unless the test unmounts it first.
func mountCow(t *testing.T, idxs []*index.Index, src FrameSource, upper string, cfg Config) *cowMount {
	t.Helper()
	testutil.RequireFUSE(t, "FUSE")
	base := t.TempDir()
	c := &cowMount{dir: filepath.Join(base, "mnt"), upper: upper, work: filepath.Join(base, "work")}
	if c.upper == "" {
		c.upper = filepath.Join(base, "upper")
		must(t, os.Mkdir(c.upper, 0o755))
	}
	must(t, os.Mkdir(c.dir, 0o755))
	must(t, os.Mkdir(c.work, 0o755))
	cfg.UpperDir, cfg.WorkDir = c.upper, c.work
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	m, err := MountLayers(c.dir, idxs, src, cfg)
	if err != nil {
		t.Fatalf("MountLayers(writable): %v", err)
	}
	c.m = m
	t.Cleanup(func() {
		if c.m != nil {
			if err := c.m.Unmount(); err != nil {
				t.Errorf("Unmount: %v", err)
			}
		}
	})
	return c
}

func (c *cowMount) unmount(t *testing.T) {
	t.Helper()
	if err := c.m.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	c.m = nil
}

// copyRootMeta gives dst the mode, owner and times of src.
func copyRootMeta(t *testing.T, src, dst string) {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(src, &st))
	must(t, os.Lchown(dst, int(st.Uid), int(st.Gid)))
	must(t, unix.Chmod(dst, st.Mode&0o7777))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, dst, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW))
}

// mountOverlay mounts kernel overlayfs over lowers (bottom first) with the
// given upper directory and a new work directory; unmounted in t.Cleanup.
func mountOverlay(t *testing.T, lowers []string, upper string) string {
	t.Helper()
	base := t.TempDir()
	work, merged := filepath.Join(base, "work"), filepath.Join(base, "merged")
	must(t, os.Mkdir(work, 0o755))
	must(t, os.Mkdir(merged, 0o755))
	top := slices.Clone(lowers)
	slices.Reverse(top)
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(top, ":"), upper, work, fsops.OverlayOptions)
	if err := unix.Mount("overlay", merged, "overlay", 0, data); err != nil {
		t.Fatalf("mount -t overlay -o %s: %v", data, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay %s: %v", merged, err)
		}
	})
	return merged
}

// cowSeeds are the differential test's seeds, each run against a fresh
// kernel overlay and a fresh writable mount with a cache timeout: the
// default, an hour (nothing must go stale when the kernel caches long), and
// none.
var cowSeeds = []struct {
	seed uint64
	ttl  time.Duration
}{{1, 0}, {2, 0}, {3, 0}, {4, time.Hour}, {5, time.Hour}, {6, -1}}

const cowOps = 3000

// TestCowMatchesOverlay applies seeded random operations to kernel
// overlayfs and to a writable mount of the same layers, step by step (same
// errno, same observations), compares the final trees, and then checks
// that the upper directory the mount wrote is genuine overlayfs format:
// kernel overlayfs over the same lowers with that upper shows the same
// tree, and so does a new writable mount of it, and of the upper directory
// kernel overlayfs wrote.
func TestCowMatchesOverlay(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	tars := fsops.LayerTars(t)
	idxs, src := buildIndexes(t, tars, 64<<10)
	for _, tc := range cowSeeds {
		seed := tc.seed
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			base := t.TempDir()
			lowers := make([]string, len(tars))
			for i, l := range tars {
				lowers[i] = filepath.Join(base, fmt.Sprintf("lower%d", i))
				fsops.UnpackLower(t, lowers[i], l)
			}
			ref, refUpper := fsops.MountOverlay(t, lowers, "")
			upper := filepath.Join(base, "upper")
			must(t, os.Mkdir(upper, 0o755))
			copyRootMeta(t, refUpper, upper)
			ours := mountCow(t, idxs, src, upper, Config{WritableCacheTimeout: tc.ttl})

			recent := time.Now().Add(-2 * time.Second)
			start := time.Now()
			fsops.RunConfig(t, fsops.Config{Seed: seed, N: cowOps, Recent: recent}, ref, ours.dir)
			t.Logf("seed %d: %d operations in %v", seed, cowOps, time.Since(start).Round(time.Millisecond))
			ours.unmount(t)

			opts := testutil.CompareOptions{RecentSince: recent}
			kernel := mountOverlay(t, lowers, upper)
			testutil.CompareTreesWith(t, ref, kernel, opts)
			again := mountCow(t, idxs, src, upper, Config{})
			testutil.CompareTreesWith(t, ref, again.dir, opts)
			// And the other way: a writable mount of the upper directory
			// kernel overlayfs wrote.
			theirs := mountCow(t, idxs, src, refUpper, Config{})
			testutil.CompareTreesWith(t, ref, theirs.dir, opts)
		})
	}
}

// TestCowSemantics checks, with plain syscalls, what the differential
// test cannot see: inode identities across copy-up, descriptors opened
// before a copy-up, and the upper directory's on-disk format.
func TestCowSemantics(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	tars := fsops.LayerTars(t)
	idxs, src := buildIndexes(t, tars, 64<<10)
	c := mountCow(t, idxs, src, "", Config{WritableCacheTimeout: time.Hour})
	mnt := func(p string) string { return filepath.Join(c.dir, p) }
	up := func(p string) string { return filepath.Join(c.upper, p) }
	lstat := func(p string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		return st
	}

	// A descriptor opened read-only before a copy-up reads the copy
	// afterwards, as on overlayfs since Linux 4.19.
	old := lstat(mnt("data/hard1"))
	ro, err := os.Open(mnt("etc/conf"))
	must(t, err)
	buf := make([]byte, 64)
	n, err := ro.ReadAt(buf, 0)
	if string(buf[:n]) != "key = value\n" {
		t.Fatalf("ReadAt(etc/conf) = %q, %v", buf[:n], err)
	}
	must(t, os.WriteFile(mnt("etc/conf"), []byte("changed\n"), 0))
	n, _ = ro.ReadAt(buf, 0)
	ro.Close()
	if string(buf[:n]) != "changed\n" {
		t.Errorf("read through a descriptor opened before the copy-up = %q, want the new content", buf[:n])
	}
	if st := lstat(up("etc/conf")); st.Mode != unix.S_IFREG|0o640 || st.Gid != 42 {
		t.Errorf("copied-up etc/conf: mode %o gid %d, want 0640 and gid 42 kept", st.Mode, st.Gid)
	}
	if got, _ := unix.Lgetxattr(up("etc/conf"), "user.origin", buf); string(buf[:got]) != "lower0" {
		t.Errorf("copied-up etc/conf lost its xattr user.origin: %q", buf[:got])
	}
	if st := lstat(mnt("etc")); st.Mtim != lstat(up("etc")).Mtim || st.Mtim.Sec != 1_600_000_001 {
		t.Errorf("etc mtime %v after a copy-up into it, want the layer's 1600000001.000000001 kept", st.Mtim)
	}

	// Copying up one name of a lower hard-link pair breaks the link
	// (overlayfs with index=off); link(2) links the copy.
	must(t, os.WriteFile(mnt("data/hard1"), []byte("new"), 0))
	h1, h2 := lstat(mnt("data/hard1")), lstat(mnt("data/hard2"))
	if h1.Ino == h2.Ino || h1.Nlink != 1 || h2.Nlink != 2 || h2.Ino != old.Ino {
		t.Errorf("after writing data/hard1: inodes %d and %d (was %d), nlink %d and %d; want the link broken, hard2 as before with nlink 2",
			h1.Ino, h2.Ino, old.Ino, h1.Nlink, h2.Nlink)
	}
	must(t, os.Link(mnt("data/hard2"), mnt("data/hard3")))
	h2, h3 := lstat(mnt("data/hard2")), lstat(mnt("data/hard3"))
	if h2.Ino != h3.Ino || h2.Nlink != 2 || h2.Ino == old.Ino {
		t.Errorf("after link(hard2, hard3): inodes %d and %d, nlink %d; want one new inode with 2 links", h2.Ino, h3.Ino, h2.Nlink)
	}
	// A copied-up file with one name keeps its inode number.
	tool := lstat(mnt("bin/tool"))
	must(t, os.Chmod(mnt("bin/tool"), 0o700))
	must(t, os.Link(mnt("bin/tool"), mnt("bin/tool-link")))
	if a, b := lstat(mnt("bin/tool")), lstat(mnt("bin/tool-link")); a.Ino != tool.Ino || b.Ino != tool.Ino || b.Nlink != 2 {
		t.Errorf("bin/tool inode %d, then %d and link %d (nlink %d); want %d throughout", tool.Ino, a.Ino, b.Ino, b.Nlink, tool.Ino)
	}

	// Whiteouts and opaque directories, as overlayfs writes them.
	must(t, os.Remove(mnt("etc/hosts")))
	must(t, os.Remove(mnt("old/x2")))
	isWhiteout := func(p string) {
		t.Helper()
		if st := lstat(up(p)); st.Mode != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("upper %s: mode %o rdev %d, want a whiteout (character device 0/0)", p, st.Mode, st.Rdev)
		}
	}
	isWhiteout("etc/hosts")
	isWhiteout("old/x2")
	must(t, unix.Rmdir(mnt("old")))
	isWhiteout("old")
	must(t, os.Mkdir(mnt("old"), 0o700))
	must(t, os.Mkdir(mnt("new"), 0o755))
	must(t, os.Rename(mnt("new"), mnt("moved")))
	if err := os.Rename(mnt("deep"), mnt("deep2")); !errors.Is(err, unix.EXDEV) {
		t.Errorf("rename of a lower directory = %v, want EXDEV", err)
	}
	for p, want := range map[string]string{"old": "y", "moved": "y", "etc": ""} {
		n, _ := unix.Lgetxattr(up(p), "trusted.overlay.opaque", buf) // overlayfs' name, not our constant
		if got := string(buf[:max(n, 0)]); got != want {
			t.Errorf("upper %s: trusted.overlay.opaque = %q, want %q", p, got, want)
		}
	}
	if ents, err := os.ReadDir(mnt("old")); err != nil || len(ents) != 0 {
		t.Errorf("ReadDir(old) = %v, %v; want empty (opaque)", ents, err)
	}
	if _, err := unix.Lgetxattr(mnt("old"), OpaqueXattr, buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the merged view shows %s: %v", OpaqueXattr, err)
	}
	if err := unix.Mknod(mnt("wh"), unix.S_IFCHR|0o600, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("mknod of a 0/0 character device = %v, want EPERM", err)
	}
	c.unmount(t)

	// Kernel overlayfs reads the same tree from this upper directory.
	base := t.TempDir()
	lowers := make([]string, len(tars))
	for i, l := range tars {
		lowers[i] = filepath.Join(base, fmt.Sprintf("lower%d", i))
		fsops.UnpackLower(t, lowers[i], l)
	}
	kernel := mountOverlay(t, lowers, c.upper)
	again := mountCow(t, idxs, src, c.upper, Config{})
	testutil.CompareTreesWith(t, kernel, again.dir, testutil.CompareOptions{IgnoreRootMeta: true})
	if _, err := os.Lstat(filepath.Join(kernel, "etc/hosts")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kernel overlay over our upper shows etc/hosts: %v", err)
	}
	if ents, err := os.ReadDir(filepath.Join(kernel, "old")); err != nil || len(ents) != 0 {
		t.Errorf("kernel overlay over our upper: ReadDir(old) = %v, %v; want empty", ents, err)
	}
}

// posixSkips are the go-fuse posixtest tests not run on the writable
// mount, with the reason.
var posixSkips = map[string]string{
	// It expects a second descriptor of the same process to conflict
	// with the first one's POSIX lock, which only go-fuse's loopback
	// (mapping them to OFD locks) does; go-fuse's own TestAll skips it.
	// This mount leaves locks to the kernel, with POSIX semantics.
	"FcntlFlockLocksFile": "asserts a process conflicts with its own POSIX lock (go-fuse's TestAll skips it too)",
}

// TestCowPosix runs go-fuse's posixtest suite on a writable mount over the
// fsops fixture layers, each test twice: in a directory a lower layer has
// (empty, so the test's first change copies it up and it becomes merged)
// and in a new one.
func TestCowPosix(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	names := slices.Sorted(maps.Keys(posixtest.All))
	dirs := []tarFile{{hdr: tar.Header{Name: "posix/", Typeflag: tar.TypeDir, Mode: 0o755}}}
	for _, name := range names {
		dirs = append(dirs, tarFile{hdr: tar.Header{Name: "posix/" + name + "/", Typeflag: tar.TypeDir, Mode: 0o755}})
	}
	idxs, src := buildIndexes(t, append(fsops.LayerTars(t), makeTar(t, dirs)), 64<<10)
	c := mountCow(t, idxs, src, "", Config{})
	for _, where := range []string{"lower", "new"} {
		t.Run(where, func(t *testing.T) {
			for _, name := range names {
				t.Run(name, func(t *testing.T) {
					if why, ok := posixSkips[name]; ok {
						t.Skip(why)
					}
					dir := filepath.Join(c.dir, "posix", name)
					if where == "new" {
						dir = filepath.Join(c.dir, "new", name)
						must(t, os.MkdirAll(dir, 0o755))
					}
					posixtest.All[name](t, dir)
				})
			}
		})
	}
}

// TestCowCopyUpFailure: a copy-up that cannot read the lower content fails
// with EIO and leaves nothing in the upper or work directory; the next
// attempt works.
func TestCowCopyUpFailure(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	layer := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "d/f", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("lower content")},
	})
	idxs, src := buildIndexes(t, [][]byte{layer}, 0)
	c := mountCow(t, idxs, src, "", Config{})
	p := filepath.Join(c.dir, "d/f")
	src.fail.Store(true)
	if err := os.WriteFile(p, []byte("x"), 0); !errors.Is(err, unix.EIO) {
		t.Errorf("WriteFile with a failing source = %v, want EIO", err)
	}
	if _, err := os.Lstat(filepath.Join(c.upper, "d/f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed copy-up left d/f in the upper directory: %v", err)
	}
	if ents, err := os.ReadDir(filepath.Join(c.work, workSubdir)); err != nil || len(ents) != 0 {
		t.Errorf("work directory after a failed copy-up: %v, %v; want empty", ents, err)
	}
	src.fail.Store(false)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(" and more")
	f.Close()
	must(t, err)
	if got, err := os.ReadFile(p); err != nil || string(got) != "lower content and more" {
		t.Errorf("ReadFile(d/f) = %q, %v", got, err)
	}
}

// TestCowConcurrentCopyUp: many writers of one lower file and readers of
// its directory at once; the file is copied up once and every write lands.
func TestCowConcurrentCopyUp(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	const writers, size = 8, 256 << 10
	content := pseudoBytes(size, 7)
	layer := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "d/big", Typeflag: tar.TypeReg, Mode: 0o644}, body: content},
	})
	idxs, src := buildIndexes(t, [][]byte{gzipBytes(t, layer)}, 64<<10)
	c := mountCow(t, idxs, src, "", Config{})
	p := filepath.Join(c.dir, "d/big")
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for i := range writers {
		wg.Go(func() {
			fd, err := unix.Open(p, unix.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer unix.Close(fd)
			if _, err := unix.Pwrite(fd, []byte{byte('A' + i)}, int64(i*1000)); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(c.dir, "d"), &st); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range writers {
		content[i*1000] = byte('A' + i)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, content) {
		t.Errorf("ReadFile(d/big) = %d bytes, %v; want the lower content with every write", len(got), err)
	}
}
