package fusefs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// memSource serves frames from blobs held in memory, verifying digests as
// the real cache does, and counts the frames it decodes.
type memSource struct {
	blobs map[digest.Digest][]byte
	loads atomic.Int64
	fail  atomic.Bool
}

func (m *memSource) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	if m.fail.Load() {
		return nil, errors.New("registry unreachable")
	}
	m.loads.Add(1)
	data, err := x.DecodeFrameIn(m.blobs[x.Layer], i)
	if err != nil {
		return nil, err
	}
	if digest.FromBytes(data) != x.Frames[i].Digest {
		return nil, index.ErrCorrupt
	}
	return data, nil
}

type tarFile struct {
	hdr  tar.Header
	body []byte
}

func makeTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		h.Size = int64(len(f.body))
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 123456789)
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mountLayers(t *testing.T, blobs [][]byte, span int64) (string, *memSource) {
	t.Helper()
	return mountLayersWith(t, blobs, span, Config{})
}

// mountLayersWith is mountLayers with cfg (its Logger is the test's).
func mountLayersWith(t *testing.T, blobs [][]byte, span int64, cfg Config) (string, *memSource) {
	t.Helper()
	testutil.RequireFUSE(t, "FUSE")
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
	dir := t.TempDir()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	m, err := MountLayers(dir, idxs, src, cfg)
	if err != nil {
		t.Fatalf("MountLayers: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	return dir, src
}

func TestMountServesUnion(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 000 bytes, several frames
	lower := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("root:x:0:0::/root:/bin/sh\n")},
		{hdr: tar.Header{Name: "etc/gone", Typeflag: tar.TypeReg, Mode: 0o600}, body: []byte("deleted above")},
		{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o640, Uid: 1000, Gid: 1001}, body: big},
		{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o4755}, body: []byte("#!busybox")},
		{hdr: tar.Header{Name: "bin/sh", Typeflag: tar.TypeLink, Linkname: "bin/busybox"}},
		{hdr: tar.Header{Name: "bin/ls", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}},
		{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o600}},
		{hdr: tar.Header{Name: "empty", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "xattr", Typeflag: tar.TypeReg, Mode: 0o644,
			PAXRecords: map[string]string{"SCHILY.xattr.user.color": "blue"}}, body: []byte("x")},
	})
	upper := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "etc/.wh.gone", Typeflag: tar.TypeReg}},
		{hdr: tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("root:x:0:0::/root:/bin/ash\n")},
	})
	dir, src := mountLayers(t, [][]byte{gzipBytes(t, lower), upper}, 64<<10)

	got, err := os.ReadFile(filepath.Join(dir, "etc/passwd"))
	if err != nil || string(got) != "root:x:0:0::/root:/bin/ash\n" {
		t.Errorf("ReadFile(etc/passwd) = %q, %v; want the upper layer's", got, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Lstat(etc/gone) = %v, want not exist (whited out)", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "etc/.wh.gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout file is visible: %v", err)
	}

	before := src.loads.Load()
	f, err := os.Open(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	mid := make([]byte, 100)
	if _, err := f.ReadAt(mid, 300000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !bytes.Equal(mid, big[300000:300100]) {
		t.Errorf("ReadAt(big, 300000) = %q, want %q", mid, big[300000:300100])
	}
	if n := src.loads.Load() - before; n > 4 {
		t.Errorf("a 100-byte read decoded %d frames of 64 KiB; want a few (kernel readahead), not the whole file", n)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "big")); !bytes.Equal(got, big) {
		t.Errorf("ReadFile(big) differs from the layer's content")
	}

	var st, sh unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, "big"), &st))
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode != unix.S_IFREG|0o640 || st.Size != int64(len(big)) || st.Blocks != (int64(len(big))+511)/512 {
		t.Errorf("stat(big) = uid %d gid %d mode %o size %d blocks %d", st.Uid, st.Gid, st.Mode, st.Size, st.Blocks)
	}
	if st.Mtim.Sec != 1700000000 || st.Mtim.Nsec != 123456789 {
		t.Errorf("mtime(big) = %d.%09d, want 1700000000.123456789", st.Mtim.Sec, st.Mtim.Nsec)
	}
	must(t, unix.Lstat(filepath.Join(dir, "bin/busybox"), &st))
	must(t, unix.Lstat(filepath.Join(dir, "bin/sh"), &sh))
	if st.Ino != sh.Ino || st.Nlink != 2 || st.Mode&unix.S_ISUID == 0 {
		t.Errorf("bin/sh ino %d, busybox ino %d nlink %d mode %o; want one inode, 2 links, setuid", sh.Ino, st.Ino, st.Nlink, st.Mode)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/ls")); err != nil || target != "busybox" {
		t.Errorf("Readlink(bin/ls) = %q, %v", target, err)
	}
	must(t, unix.Lstat(filepath.Join(dir, "dev/null"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("dev/null mode %o rdev %d,%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	must(t, unix.Lstat(filepath.Join(dir, "fifo"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("fifo mode %o", st.Mode)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "empty")); err != nil || len(got) != 0 {
		t.Errorf("ReadFile(empty) = %q, %v", got, err)
	}
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(filepath.Join(dir, "xattr"), "user.color", buf)
	if err != nil || string(buf[:n]) != "blue" {
		t.Errorf("Lgetxattr(xattr, user.color) = %q, %v", buf[:n], err)
	}
	var sfs unix.Statfs_t
	must(t, unix.Statfs(dir, &sfs))
	if sfs.Files == 0 || sfs.Blocks == 0 || sfs.Namelen != 255 {
		t.Errorf("statfs = files %d blocks %d namelen %d", sfs.Files, sfs.Blocks, sfs.Namelen)
	}
	if err := os.WriteFile(filepath.Join(dir, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Errorf("WriteFile on the read-only mount = %v, want EROFS", err)
	}
}

func TestMountReadFailureIsEIO(t *testing.T) {
	layer := makeTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("data")}})
	var eios atomic.Int64
	dir, src := mountLayersWith(t, [][]byte{layer}, 0, Config{OnIOError: func() { eios.Add(1) }})
	src.fail.Store(true)
	_, err := os.ReadFile(filepath.Join(dir, "f"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("ReadFile with a failing source = %v, want EIO", err)
	}
	if n := eios.Load(); n < 1 {
		t.Errorf("OnIOError calls after a read failed with EIO = %d, want ≥ 1", n)
	}
	src.fail.Store(false)
	// The failure was not cached: the next read works without a remount.
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(got) != "data" {
		t.Errorf("ReadFile after recovery = %q, %v", got, err)
	}
}

// appendGNUSparse adds an old GNU sparse entry (type 'S', at most four
// fragments) to a tar made by makeTar, whose end-of-archive blocks it moves
// after the new entry. frags are [offset, length] pairs of content.
func appendGNUSparse(t *testing.T, tarData []byte, name string, content []byte, frags [][2]int64) []byte {
	t.Helper()
	if len(frags) > 4 {
		t.Fatalf("appendGNUSparse: %d fragments, at most 4 fit in the header", len(frags))
	}
	octal := func(b []byte, v int64) { copy(b, fmt.Sprintf("%0*o\x00", len(b)-1, v)) }
	var blk [512]byte
	copy(blk[0:100], name)
	octal(blk[100:108], 0o644)
	octal(blk[108:116], 0)
	octal(blk[116:124], 0)
	octal(blk[136:148], 1700000000)
	blk[156] = 'S'
	copy(blk[257:265], "ustar  \x00") // the old GNU magic
	var data []byte
	for i, f := range frags {
		octal(blk[386+i*24:][:12], f[0])
		octal(blk[386+i*24+12:][:12], f[1])
		data = append(data, content[f[0]:f[0]+f[1]]...)
	}
	octal(blk[124:136], int64(len(data)))    // stored size
	octal(blk[483:495], int64(len(content))) // real size
	copy(blk[148:156], "        ")
	var sum int
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))

	out := append([]byte(nil), tarData[:len(tarData)-1024]...)
	out = append(out, blk[:]...)
	out = append(out, data...)
	out = append(out, make([]byte, -len(data)&511)...)
	return append(out, make([]byte, 1024)...)
}

func TestMountSparseFile(t *testing.T) {
	const mib = 1 << 20
	content := make([]byte, 3*mib+5)
	frags := [][2]int64{{0, 1000}, {mib - 100, 200 << 10}, {3*mib + 4, 1}}
	for i, f := range frags {
		copy(content[f[0]:f[0]+f[1]], pseudoBytes(int(f[1]), byte(i)))
	}
	layer := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "before", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("plain file")},
	})
	layer = appendGNUSparse(t, layer, "sparse", content, frags)
	layer = appendGNUSparse(t, layer, "hole", make([]byte, mib), [][2]int64{{mib, 0}})
	layer = append(layer[:len(layer)-1024], makeTar(t, []tarFile{ // a plain file after them
		{hdr: tar.Header{Name: "after", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("after the sparse files")},
	})...)
	dir, src := mountLayers(t, [][]byte{gzipBytes(t, layer)}, 64<<10)

	got, err := os.ReadFile(filepath.Join(dir, "sparse"))
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("ReadFile(sparse) = %d bytes, %v; want its %d bytes of content with zeros in the holes", len(got), err, len(content))
	}
	f, err := os.Open(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{990, 20}, {mib - 110, 20}, {mib + 200<<10 - 110, 20}, {2 * mib, 4096}, {3*mib + 3, 2}} {
		buf := make([]byte, r[1])
		if _, err := f.ReadAt(buf, r[0]); err != nil {
			t.Errorf("ReadAt(sparse, %d, %d): %v", r[0], r[1], err)
		} else if !bytes.Equal(buf, content[r[0]:r[0]+r[1]]) {
			t.Errorf("ReadAt(sparse, %d, %d) = %.32q…, want %.32q…", r[0], r[1], buf, content[r[0]:r[0]+r[1]])
		}
	}
	f.Close()

	before := src.loads.Load()
	if got, err := os.ReadFile(filepath.Join(dir, "hole")); err != nil || !bytes.Equal(got, make([]byte, mib)) {
		t.Errorf("ReadFile(hole) = %d bytes, %v; want %d zeros", len(got), err, mib)
	}
	if n := src.loads.Load() - before; n != 0 {
		t.Errorf("reading a file that is all hole decoded %d frames, want none", n)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "after")); err != nil || string(got) != "after the sparse files" {
		t.Errorf("ReadFile(after) = %q, %v", got, err)
	}

	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, "sparse"), &st))
	// 512-byte blocks the fragments touch: [0,1000) 2, [1 MiB-100, +200 KiB)
	// blocks 2047 to 2447 = 401, the last byte 1.
	if st.Size != int64(len(content)) || st.Blocks != 2+401+1 {
		t.Errorf("stat(sparse) = size %d blocks %d, want %d and %d", st.Size, st.Blocks, len(content), 2+401+1)
	}
	must(t, unix.Lstat(filepath.Join(dir, "hole"), &st))
	if st.Size != mib || st.Blocks != 0 {
		t.Errorf("stat(hole) = size %d blocks %d, want %d and 0", st.Size, st.Blocks, mib)
	}
}

// pseudoBytes returns n non-zero bytes that do not repeat quickly.
func pseudoBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x>>24) | 1
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A read-only mount of layers without any extended attribute answers the
// first getxattr with ENOSYS, so the kernel stops asking: overlayfs on top
// would otherwise ask for trusted.overlay.metacopy of every file it looks
// up, one FUSE round trip each.
func TestMountWithoutXattrsStopsTheKernelAsking(t *testing.T) {
	layer := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("a")},
		{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("b")},
	})
	dir, _ := mountLayers(t, [][]byte{layer}, 64<<10)
	for _, name := range []string{"a", "b", "a"} {
		if _, err := unix.Getxattr(filepath.Join(dir, name), "trusted.overlay.metacopy", nil); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("getxattr %s = %v, want EOPNOTSUPP", name, err)
		}
		if n, err := unix.Listxattr(filepath.Join(dir, name), nil); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("listxattr %s = %d, %v, want EOPNOTSUPP", name, n, err)
		}
	}
	// A file read as usual: nothing else changed.
	if got, err := os.ReadFile(filepath.Join(dir, "b")); err != nil || string(got) != "b" {
		t.Errorf("ReadFile(b) = %q, %v", got, err)
	}
}

// A copy of the mount in another mount namespace (here a process that
// entered a new one while it was mounted) keeps the kernel from dropping
// the file system after the unmount, and the server from stopping: Unmount
// aborts the connection after unmountGrace instead of waiting for ever.
func TestUnmountHeldElsewhere(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	layer := makeTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("f")}})
	x, err := index.Build(t.Context(), digest.FromBytes(layer), bytes.NewReader(layer), index.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var logs testutil.SyncBuffer
	m, err := MountLayers(dir, []*index.Index{x}, &memSource{blobs: map[digest.Digest][]byte{x.Layer: layer}},
		Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	// The holder's namespace has the copy once unshare has made it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
		self, _ := os.Readlink("/proc/self/ns/mnt")
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", holder.Process.Pid))
		if ns != "" && ns != self && strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder did not enter a mount namespace of its own")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := m.Unmount(); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	took := time.Since(start)
	t.Logf("Unmount with a copy held elsewhere returned in %v", took)
	if took < unmountGrace {
		t.Errorf("Unmount returned in %v: the copy elsewhere did not hold it (the test proves nothing)", took)
	}
	if !strings.Contains(logs.String(), "aborting its connection") || !strings.Contains(logs.String(), fmt.Sprint(holder.Process.Pid)) {
		t.Errorf("the log does not say it aborted, naming the holder %d:\n%s", holder.Process.Pid, logs.String())
	}
}
