package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// memSource serves frames decoded from layer blobs in memory, checked
// against their digests as the cache checks them.
type memSource struct {
	blobs map[digest.Digest][]byte
	calls atomic.Int64
	fail  atomic.Bool
}

func newMemSource() *memSource { return &memSource{blobs: map[digest.Digest][]byte{}} }

func (m *memSource) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	m.calls.Add(1)
	if m.fail.Load() {
		return nil, errors.New("source failing on purpose")
	}
	data, err := x.DecodeFrameIn(m.blobs[x.Layer], i)
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(data) != x.Frames[i].Digest {
		return nil, index.ErrCorrupt
	}
	return data, nil
}

// add indexes a gzip blob of tarData (small frames, so files straddle
// them) and serves it.
func (m *memSource) add(t *testing.T, tarData []byte) *index.Index {
	t.Helper()
	blob := testutil.Gzip(t, tarData, 6)
	d := digest.FromBytes(blob)
	m.blobs[d] = blob
	x, err := index.Build(t.Context(), d, bytes.NewReader(blob), index.BuildOptions{Span: 64 << 10})
	if err != nil {
		t.Fatalf("index.Build: %v", err)
	}
	return x
}

// testLog is a logger into the test's output that fails the test on a
// warning unless warnings are expected.
func testLog(t *testing.T, expectWarn bool) (*slog.Logger, *atomic.Int64) {
	var warns atomic.Int64
	h := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	t.Cleanup(func() {
		if !expectWarn && warns.Load() > 0 {
			t.Errorf("%d unexpected warnings", warns.Load())
		}
	})
	return slog.New(warnCounter{h, &warns}), &warns
}

type warnCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (w warnCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.n.Add(1)
	}
	return w.Handler.Handle(ctx, r)
}

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("unpacking owners, devices and trusted xattrs needs root")
	}
}

// sparseTar is a tar (GNU tar's PAX 1.0 sparse format) of one directory
// holding a file with data, holes between and a hole at its end, and a
// file that is all hole.
func sparseTar(t *testing.T) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar is needed to make sparse tar entries")
	}
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "sparse"), 0o755))
	f, err := os.Create(filepath.Join(dir, "sparse", "holes"))
	must(t, err)
	for _, off := range []int64{0, 3 << 20, 5<<20 + 100} {
		_, err := f.WriteAt(bytes.Repeat([]byte{byte(off>>20) + 'a'}, 70<<10), off)
		must(t, err)
	}
	must(t, f.Truncate(9<<20))
	must(t, f.Close())
	must(t, os.WriteFile(filepath.Join(dir, "sparse", "empty"), nil, 0o644))
	f, err = os.Create(filepath.Join(dir, "sparse", "allhole"))
	must(t, err)
	must(t, f.Truncate(2<<20))
	must(t, f.Close())
	mt := time.Unix(1700000300, 5)
	for _, p := range []string{"sparse/holes", "sparse/empty", "sparse/allhole", "sparse"} {
		must(t, os.Chtimes(filepath.Join(dir, p), mt, mt))
	}
	out, err := exec.Command("tar", "--sparse", "--format=posix", "--pax-option=delete=atime,delete=ctime",
		"--numeric-owner", "-C", dir, "-cf", "-", "sparse").Output()
	if err != nil {
		t.Fatalf("tar --sparse: %v", err)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// twoLayers is an image with every kind of entry, whiteouts, an opaque
// directory and hard links, its second layer changing the first.
func twoLayers(t *testing.T) (l1, l2 []byte) {
	mt := time.Unix(1700000100, 123456789)
	l1 = testutil.Tar(t, []testutil.File{
		{Path: "a/"}, {Path: "a/keep", Data: []byte("keep\n")}, {Path: "a/gone", Data: []byte("gone\n")},
		{Path: "a/sub/"}, {Path: "a/sub/x", Data: []byte("x")}, {Path: "a/sub/y", Data: []byte("y")},
		{Path: "opq/", Mode: 0o750}, {Path: "opq/old", Data: []byte("old")}, {Path: "opq/deep/"}, {Path: "opq/deep/y", Size: 300 << 10, Seed: 7},
		{Path: "link", Type: tar.TypeSymlink, Linkname: "a/keep", ModTime: mt},
		{Path: "abs", Type: tar.TypeSymlink, Linkname: "/etc/passwd"},
		{Path: "hard1", Data: []byte("hard"), Mode: 0o4755, UID: 1000, GID: 1000}, {Path: "hard2", Type: tar.TypeLink, Linkname: "hard1"},
		{Path: "a/hard3", Type: tar.TypeLink, Linkname: "hard1"},
		{Path: "dev/"}, {Path: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Path: "dev/sda", Type: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660, GID: 6},
		{Path: "fifo", Type: tar.TypeFifo},
		{Path: "tmp/", Mode: 0o1777},
		{Path: "x/", Xattrs: map[string]string{"user.k": "v", "trusted.overlay.redirect": "/evil"}},
		{Path: "x/f", Data: []byte("f"), Xattrs: map[string]string{"user.a": "1", "security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}},
		{Path: "replaced", Data: []byte("file first")},
		{Path: "big", Size: 1<<20 + 77, Seed: 3, ModTime: mt},
		{Path: "dup", Data: []byte("first")}, {Path: "dup", Data: []byte("second wins")},
	})
	l2 = testutil.Tar(t, []testutil.File{
		{Path: "a/", ModTime: mt}, {Path: "a/.wh.gone"}, {Path: "a/new", Data: []byte("new\n")},
		{Path: "a/sub/", ModTime: mt}, {Path: "a/sub/.wh.x"},
		{Path: "opq/", Mode: 0o700, ModTime: mt}, {Path: "opq/.wh..wh..opq"}, {Path: "opq/fresh", Data: []byte("fresh")},
		{Path: "replaced/", ModTime: mt}, {Path: "replaced/in", Data: []byte("in")},
		{Path: ".wh.fifo"}, {Path: ".wh..wh.plnk"},
		{Path: "hard2", Data: []byte("no longer linked")},
	})
	return l1, l2
}

// overlay mounts dirs (top first) read-only with kernel overlayfs, as the
// runtime stacks unpacked layers, and returns the mount point.
func overlay(t *testing.T, dirs []string) string {
	t.Helper()
	merged := t.TempDir()
	opts := "lowerdir=" + strings.Join(dirs, ":")
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Skipf("kernel overlayfs unusable here: mount %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})
	return merged
}

// TestUnpackMatchesReference unpacks each layer of an image (busybox, a
// layer of every kind of entry, a layer of whiteouts, an opaque directory
// and replacements, and one of sparse files), stacks them with kernel
// overlayfs as the runtime does, and compares the result with the layers
// unpacked into one directory by internal/testutil's reference. Each layer
// alone is compared with the reference too (whiteouts and the opaque marker
// in overlayfs' form).
func TestUnpackMatchesReference(t *testing.T) {
	requireRoot(t)
	log, _ := testLog(t, false)
	l0 := testutil.TarDir(t, testutil.BusyboxRoot(t))
	l1, l2 := twoLayers(t)
	l3 := sparseTar(t)
	tars := [][]byte{l0, l1, l2, l3}
	src := newMemSource()
	s := New(Config{Dir: filepath.Join(t.TempDir(), "layers"), Logger: log})
	var dirs []string
	for i, tarData := range tars {
		x := src.add(t, tarData)
		res, err := s.Unpack(t.Context(), x, src)
		if err != nil {
			t.Fatalf("Unpack(layer %d): %v", i, err)
		}
		if want, _ := s.Path(x.Layer); res.Path != want || res.Already || !s.Has(x.Layer) {
			t.Fatalf("Unpack(layer %d) = %+v; want a new layer at %s", i, res, want)
		}
		dirs = append([]string{res.Path}, dirs...)
	}

	want := filepath.Join(t.TempDir(), "want")
	testutil.Unpack(t, want, tars)
	// The image's own overlay xattr is dropped (checked below).
	testutil.CompareTreesWith(t, want, overlay(t, dirs), testutil.CompareOptions{IgnoreRootMeta: true, IgnoreXattrs: []string{"trusted.overlay.redirect"}})

	// l1 alone: everything exactly as the reference makes it, but for the
	// overlay xattr the image tried to set.
	one := filepath.Join(t.TempDir(), "one")
	testutil.Unpack(t, one, [][]byte{l1})
	testutil.CompareTreesWith(t, one, dirs[2], testutil.CompareOptions{IgnoreXattrs: []string{"trusted.overlay.redirect"}})
	if _, err := unix.Lgetxattr(filepath.Join(dirs[2], "x"), "trusted.overlay.redirect", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr(x, trusted.overlay.redirect) = %v; want ENODATA (the image's overlay xattrs are dropped)", err)
	}

	// l2 in overlayfs' form.
	var st unix.Stat_t
	for _, p := range []string{"a/gone", "a/sub/x", "fifo"} {
		must(t, unix.Lstat(filepath.Join(dirs[1], p), &st))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s in layer 2: mode %o rdev %d; want a 0/0 character device (a whiteout)", p, st.Mode, st.Rdev)
		}
	}
	for p, want := range map[string]string{"opq": "y", "a": ""} {
		buf := make([]byte, 8)
		n, _ := unix.Lgetxattr(filepath.Join(dirs[1], p), overlayOpaque, buf)
		if string(buf[:max(n, 0)]) != want {
			t.Errorf("%s in layer 2: %s = %q, want %q", p, overlayOpaque, buf[:max(n, 0)], want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dirs[1], ".wh.plnk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("aufs' .wh..wh.plnk became a whiteout: %v", err)
	}

	// Sparse files keep their holes.
	must(t, unix.Stat(filepath.Join(dirs[0], "sparse/holes"), &st))
	if st.Size != 9<<20 || st.Blocks*512 > 1<<20 {
		t.Errorf("sparse/holes: size %d, %d bytes allocated; want %d, at most 1 MiB", st.Size, st.Blocks*512, 9<<20)
	}
	must(t, unix.Stat(filepath.Join(dirs[0], "sparse/allhole"), &st))
	if st.Size != 2<<20 || st.Blocks != 0 {
		t.Errorf("sparse/allhole: size %d, %d blocks; want %d, 0", st.Size, st.Blocks, 2<<20)
	}

	// Nothing temporary is left, and a second unpack is no work.
	ents, err := os.ReadDir(filepath.Dir(dirs[0]))
	must(t, err)
	if len(ents) != len(tars) {
		t.Errorf("layers/sha256 holds %d entries, want %d", len(ents), len(tars))
	}
	before := src.calls.Load()
	x := src.add(t, l1)
	if res, err := s.Unpack(t.Context(), x, src); err != nil || !res.Already {
		t.Errorf("Unpack again = %+v, %v; want Already", res, err)
	}
	if n := src.calls.Load() - before; n != 0 {
		t.Errorf("Unpack of an unpacked layer read %d frames", n)
	}
}

// A layer that makes its root opaque cannot say so to overlayfs: the
// xattr on the layer directory tells the caller.
func TestUnpackRootOpaque(t *testing.T) {
	requireRoot(t)
	log, _ := testLog(t, false)
	src := newMemSource()
	s := New(Config{Dir: t.TempDir(), Logger: log})
	for _, c := range []struct {
		files []testutil.File
		want  bool
	}{
		{[]testutil.File{{Path: ".wh..wh..opq"}, {Path: "f", Data: []byte("f")}}, true},
		{[]testutil.File{{Path: "d/"}, {Path: "d/.wh..wh..opq"}}, false},
	} {
		x := src.add(t, testutil.Tar(t, c.files))
		res, err := s.Unpack(t.Context(), x, src)
		if err != nil {
			t.Fatal(err)
		}
		if got := RootOpaque(res.Path); got != c.want {
			t.Errorf("RootOpaque(%v) = %v, want %v", c.files, got, c.want)
		}
	}
}

// TestUnpackHostile: a layer's symlinks must never carry a write out of the
// layer directory. Each case is unpacked; nothing may appear in the
// directory the symlinks point at, and the layer must be what the
// reference makes of it (which resolves a layer's symlinks inside its root
// as containerd and fusefs do).
func TestUnpackHostile(t *testing.T) {
	requireRoot(t)
	outside := t.TempDir() // what a symlink of the layer points at
	must(t, os.WriteFile(filepath.Join(outside, "victim"), []byte("host file"), 0o644))
	for _, c := range []struct {
		name   string
		files  []testutil.File
		warns  bool // a hard link is left out
		noDiff bool // the reference refuses the layer: compare nothing
	}{
		{name: "file through an absolute symlink", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: outside}, {Path: "a/x", Data: []byte("escaped")}}},
		{name: "directory through an absolute symlink", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: outside}, {Path: "a/d/"}, {Path: "a/d/x", Data: []byte("escaped")}}},
		{name: "relative symlink up", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: "../../../../../../../../" + outside}, {Path: "a/x", Data: []byte("escaped")}}},
		{name: "symlink to dot-dot", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: ".."}, {Path: "a/x", Data: []byte("at the root")}}},
		{name: "chain of symlinks", files: []testutil.File{
			{Path: "b/"}, {Path: "b/c", Type: tar.TypeSymlink, Linkname: outside},
			{Path: "a", Type: tar.TypeSymlink, Linkname: "b/c"}, {Path: "a/x", Data: []byte("escaped")}}},
		{name: "directory replaced by a symlink", files: []testutil.File{
			{Path: "d/"}, {Path: "d/keep", Data: []byte("k")}, {Path: "d", Type: tar.TypeSymlink, Linkname: outside},
			{Path: "d/x", Data: []byte("escaped")}}},
		{name: "symlink over an existing file name", files: []testutil.File{
			{Path: "victim", Type: tar.TypeSymlink, Linkname: filepath.Join(outside, "victim")},
			{Path: "victim", Data: []byte("replaces the link, not its target")}}},
		{name: "device and fifo through a symlink", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: outside},
			{Path: "a/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3}, {Path: "a/fifo", Type: tar.TypeFifo},
			{Path: "a/s", Type: tar.TypeSymlink, Linkname: "/"}}},
		{name: "symlink loop", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: "b"}, {Path: "b", Type: tar.TypeSymlink, Linkname: "a"},
			{Path: "a/x", Data: []byte("x")}}},
		{name: "hard link through a symlinked directory", warns: true, noDiff: true, files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: outside}, {Path: "h", Type: tar.TypeLink, Linkname: "a/victim"}}},
		{name: "hard link to a file through a symlink inside", files: []testutil.File{
			{Path: "etc/"}, {Path: "etc/passwd", Data: []byte("root:x:0:0")},
			{Path: "a", Type: tar.TypeSymlink, Linkname: "/etc"}, {Path: "h", Type: tar.TypeLink, Linkname: "a/passwd"}}},
		{name: "hard link to a symlink", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: filepath.Join(outside, "victim")}, {Path: "h", Type: tar.TypeLink, Linkname: "a"}}},
		{name: "whiteout through a symlink", files: []testutil.File{
			{Path: "a", Type: tar.TypeSymlink, Linkname: outside}, {Path: "a/.wh.victim"}, {Path: "a/.wh..wh..opq"}}, noDiff: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			log, warns := testLog(t, c.warns)
			src := newMemSource()
			s := New(Config{Dir: t.TempDir(), Logger: log})
			tarData := testutil.Tar(t, c.files)
			x := src.add(t, tarData)
			res, err := s.Unpack(t.Context(), x, src)
			if err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 || ents[0].Name() != "victim" {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Fatalf("the directory outside the layer holds %q after the unpack; want only victim", names)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "host file" {
				t.Fatalf("a host file outside the layer was changed: %q", b)
			}
			if c.warns && (warns.Load() == 0 || res.Skipped != 1) {
				t.Errorf("Unpack = %+v with %d warnings; want the hard link skipped and logged", res, warns.Load())
			}
			if c.noDiff {
				return
			}
			want := filepath.Join(t.TempDir(), "want")
			testutil.Unpack(t, want, [][]byte{tarData})
			testutil.CompareTrees(t, want, res.Path)
		})
	}
}

// Two processes (here two Stores) unpacking one layer at once: one does
// the work, the other waits and finds it done; the result is whole.
func TestUnpackConcurrent(t *testing.T) {
	requireRoot(t)
	log, _ := testLog(t, false)
	l1, _ := twoLayers(t)
	src := newMemSource()
	x := src.add(t, l1)
	dir := t.TempDir()
	// A crashed unpack's leftovers are cleaned by the next one.
	h := x.Layer.Encoded()
	must(t, os.MkdirAll(filepath.Join(dir, "sha256", tempPrefix+h+"-crashed", "half"), 0o700))

	var wg sync.WaitGroup
	results := make([]Result, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			results[i], errs[i] = New(Config{Dir: dir, Logger: log}).Unpack(t.Context(), x, src)
		})
	}
	wg.Wait()
	fresh := 0
	for i := range results {
		if errs[i] != nil {
			t.Fatalf("Unpack %d: %v", i, errs[i])
		}
		if !results[i].Already {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d of 4 concurrent unpacks did the work, want 1", fresh)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "sha256"))
	if len(ents) != 1 || ents[0].Name() != h {
		t.Errorf("sha256/ holds %v, want only the layer", ents)
	}
	want := filepath.Join(t.TempDir(), "want")
	testutil.Unpack(t, want, [][]byte{l1})
	testutil.CompareTreesWith(t, want, results[0].Path, testutil.CompareOptions{IgnoreXattrs: []string{"trusted.overlay.redirect"}})
}

// A failure in the middle leaves no layer that looks done, nor a temporary
// directory; a cancelled context while waiting for another's lock returns.
func TestUnpackFailureLeavesNothing(t *testing.T) {
	requireRoot(t)
	log, _ := testLog(t, false)
	l1, _ := twoLayers(t)
	src := newMemSource()
	x := src.add(t, l1)
	s := New(Config{Dir: t.TempDir(), Logger: log})
	src.fail.Store(true)
	if _, err := s.Unpack(t.Context(), x, src); err == nil || !strings.Contains(err.Error(), "failing on purpose") {
		t.Errorf("Unpack with a failing source = %v, want its error", err)
	}
	if s.Has(x.Layer) {
		t.Errorf("a failed unpack left the layer looking done")
	}
	ents, _ := os.ReadDir(filepath.Join(s.dir, "sha256"))
	if len(ents) != 0 {
		t.Errorf("a failed unpack left %v", ents)
	}

	h := x.Layer.Encoded()
	unlock, err := lock(t.Context(), filepath.Join(s.dir, locksDir, h))
	must(t, err)
	defer unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := s.Unpack(ctx, x, src); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Unpack while another holds the lock, ctx ending = %v, want DeadlineExceeded", err)
	}
	if _, err := s.Path("sha256:../../etc"); !errors.Is(err, ErrBadDigest) {
		t.Errorf("Path of a bad digest = %v, want ErrBadDigest", err)
	}
}
