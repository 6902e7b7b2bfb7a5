package runtime

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/fsops"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// requireRootFS skips a test that makes devices and trusted.* xattrs unless
// it runs as root; with LAZYFS_REQUIRE_FUSE=1 (CI) it fails instead.
func requireRootFS(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("LAZYFS_REQUIRE_FUSE") == "1" {
		t.Fatal("the upper layer tests need root (mknod, trusted.* xattrs)")
	}
	t.Skip("the upper layer tests need root (mknod, trusted.* xattrs)")
}

// tarEntry is what the tests check of one tar entry.
type tarEntry struct {
	Name     string
	Type     byte
	Mode     int64
	UID, GID int
	Link     string
	Major    int64
	Minor    int64
	MTime    int64 // ns since the epoch
	Xattrs   map[string]string
	Content  string
}

func (e tarEntry) String() string {
	return fmt.Sprintf("%q type %c mode %o %d:%d link %q dev %d,%d mtime %d xattrs %v content %q",
		e.Name, e.Type, e.Mode, e.UID, e.GID, e.Link, e.Major, e.Minor, e.MTime, e.Xattrs, e.Content)
}

func readTarEntries(t *testing.T, data []byte) []tarEntry {
	t.Helper()
	var out []tarEntry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s: %v", hdr.Name, err)
		}
		e := tarEntry{Name: hdr.Name, Type: hdr.Typeflag, Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid,
			Link: hdr.Linkname, Major: hdr.Devmajor, Minor: hdr.Devminor, MTime: hdr.ModTime.UnixNano(), Content: string(body)}
		for k, v := range hdr.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.Xattrs == nil {
					e.Xattrs = map[string]string{}
				}
				e.Xattrs[x] = v
			}
		}
		out = append(out, e)
	}
}

// upperBuilder makes a hand-made overlayfs upper directory.
type upperBuilder struct {
	t     *testing.T
	root  string
	times []string // paths whose mtime to set at the end, in creation order
}

func (u *upperBuilder) path(rel string) string { return filepath.Join(u.root, rel) }

func (u *upperBuilder) check(err error) {
	u.t.Helper()
	if err != nil {
		u.t.Fatal(err)
	}
}

func (u *upperBuilder) dir(rel string, mode uint32) {
	u.t.Helper()
	u.check(os.Mkdir(u.path(rel), 0o700))
	u.check(os.Chmod(u.path(rel), os.FileMode(mode&0o777)|unixModeBits(mode)))
	u.times = append(u.times, rel)
}

func (u *upperBuilder) file(rel, content string, mode uint32) {
	u.t.Helper()
	u.check(os.WriteFile(u.path(rel), []byte(content), 0o600))
	u.check(os.Chmod(u.path(rel), os.FileMode(mode&0o777)|unixModeBits(mode)))
	u.times = append(u.times, rel)
}

func (u *upperBuilder) mknod(rel string, mode uint32, dev uint64) {
	u.t.Helper()
	u.check(unix.Mknod(u.path(rel), mode, int(dev)))
	u.check(unix.Fchmodat(unix.AT_FDCWD, u.path(rel), mode&0o7777, 0)) // past the umask
	u.times = append(u.times, rel)
}

func (u *upperBuilder) symlink(target, rel string) {
	u.t.Helper()
	u.check(os.Symlink(target, u.path(rel)))
	u.times = append(u.times, rel)
}

func (u *upperBuilder) xattr(rel, name, value string) {
	u.t.Helper()
	u.check(unix.Lsetxattr(u.path(rel), name, []byte(value), 0))
}

// finish sets every entry's mtime, deepest and last made first, so a
// directory's is not changed by its children afterwards. Entry i gets
// base + i seconds + i*1001 ns.
func (u *upperBuilder) finish(base int64) map[string]int64 {
	u.t.Helper()
	out := map[string]int64{}
	for i := len(u.times) - 1; i >= 0; i-- {
		ns := base + int64(i)*int64(time.Second) + int64(i)*1001
		ts := []unix.Timespec{unix.NsecToTimespec(ns), unix.NsecToTimespec(ns)}
		u.check(unix.UtimesNanoAt(unix.AT_FDCWD, u.path(u.times[i]), ts, unix.AT_SYMLINK_NOFOLLOW))
		out[u.times[i]] = ns
	}
	return out
}

func unixModeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func TestWriteUpperTar(t *testing.T) {
	requireRootFS(t)
	u := &upperBuilder{t: t, root: t.TempDir()}
	// Outside the upper, where a symlink points: must never be read.
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	u.dir("bin", 0o755)
	u.file("bin/tool", "#!tool\n", 0o4755)
	capability := "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	u.xattr("bin/tool", "security.capability", capability)
	u.xattr("bin/tool", "user.note", "hello")

	u.dir("data", 0o750) // rm -rf data; mkdir data
	u.xattr("data", "trusted.overlay.opaque", "y")
	u.check(os.Chown(u.path("data"), 1000, 1001))
	u.file("data/new", "new\n", 0o644)

	u.dir("dev", 0o755)
	u.mknod("dev/blk", unix.S_IFBLK|0o660, unix.Mkdev(7, 0))
	u.mknod("dev/null2", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))

	u.dir("etc", 0o755) // a copied-up parent
	u.xattr("etc", "trusted.overlay.impure", "y")
	u.xattr("etc", "trusted.overlay.origin", "\x00\xfb\x21")
	u.mknod("etc/gone", unix.S_IFCHR, 0)
	// The kernel shares one inode among whiteouts.
	u.check(os.Link(u.path("etc/gone"), u.path("etc/gone2")))
	u.file("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)

	u.mknod("fifo", unix.S_IFIFO|0o600, 0)

	u.dir("links", 0o1777)
	u.file("links/a", "same inode\n", 0o640)
	u.check(os.Chown(u.path("links/a"), 7, 8))
	u.check(os.Link(u.path("links/a"), u.path("links/b")))
	u.symlink("/", "links/dirsym")
	u.symlink(filepath.Join(outside, "secret"), "links/out")
	u.symlink("../etc/passwd", "links/sym")
	u.check(os.Lchown(u.path("links/sym"), 1, 2))

	l, err := net.Listen("unix", u.path("sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()

	u.dir("xdir", 0o700) // opaque=x is not opaque
	u.xattr("xdir", "trusted.overlay.opaque", "x")
	u.xattr("xdir", "trusted.lazyfs", "kept")
	u.file("xdir/f", "", 0o600)
	u.xattr("xdir/f", "trusted.overlay.whiteout", "")

	mt := u.finish(1_700_000_000_123_456_789)

	var buf bytes.Buffer
	if err := writeUpperTar(t.Context(), &buf, u.root); err != nil {
		t.Fatalf("writeUpperTar = %v", err)
	}
	got := readTarEntries(t, buf.Bytes())
	want := []tarEntry{
		{Name: "bin/", Type: tar.TypeDir, Mode: 0o755, MTime: mt["bin"]},
		{Name: "bin/tool", Type: tar.TypeReg, Mode: 0o4755, MTime: mt["bin/tool"], Content: "#!tool\n",
			Xattrs: map[string]string{"security.capability": capability, "user.note": "hello"}},
		{Name: "data/", Type: tar.TypeDir, Mode: 0o750, UID: 1000, GID: 1001, MTime: mt["data"]},
		{Name: "data/.wh..wh..opq", Type: tar.TypeReg, Mode: 0o750, UID: 1000, GID: 1001, MTime: mt["data"]},
		{Name: "data/new", Type: tar.TypeReg, Mode: 0o644, MTime: mt["data/new"], Content: "new\n"},
		{Name: "dev/", Type: tar.TypeDir, Mode: 0o755, MTime: mt["dev"]},
		{Name: "dev/blk", Type: tar.TypeBlock, Mode: 0o660, Major: 7, MTime: mt["dev/blk"]},
		{Name: "dev/null2", Type: tar.TypeChar, Mode: 0o666, Major: 1, Minor: 3, MTime: mt["dev/null2"]},
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755, MTime: mt["etc"]},
		{Name: "etc/.wh.gone", Type: tar.TypeReg, Mode: 0o600, MTime: mt["etc/gone"]},
		{Name: "etc/.wh.gone2", Type: tar.TypeReg, Mode: 0o600, MTime: mt["etc/gone"]}, // the same inode
		{Name: "etc/passwd", Type: tar.TypeReg, Mode: 0o644, MTime: mt["etc/passwd"], Content: "root:x:0:0::/root:/bin/sh\n"},
		{Name: "fifo", Type: tar.TypeFifo, Mode: 0o600, MTime: mt["fifo"]},
		{Name: "links/", Type: tar.TypeDir, Mode: 0o1777, MTime: mt["links"]},
		{Name: "links/a", Type: tar.TypeReg, Mode: 0o640, UID: 7, GID: 8, MTime: mt["links/a"], Content: "same inode\n"},
		{Name: "links/b", Type: tar.TypeLink, Mode: 0o640, UID: 7, GID: 8, MTime: mt["links/a"], Link: "links/a"},
		{Name: "links/dirsym", Type: tar.TypeSymlink, Mode: 0o777, MTime: mt["links/dirsym"], Link: "/"},
		{Name: "links/out", Type: tar.TypeSymlink, Mode: 0o777, MTime: mt["links/out"], Link: filepath.Join(outside, "secret")},
		{Name: "links/sym", Type: tar.TypeSymlink, Mode: 0o777, UID: 1, GID: 2, MTime: mt["links/sym"], Link: "../etc/passwd"},
		{Name: "xdir/", Type: tar.TypeDir, Mode: 0o700, MTime: mt["xdir"], Xattrs: map[string]string{"trusted.lazyfs": "kept"}},
		{Name: "xdir/f", Type: tar.TypeReg, Mode: 0o600, MTime: mt["xdir/f"]},
	}
	if len(got) != len(want) {
		t.Errorf("writeUpperTar wrote %d entries, want %d", len(got), len(want))
	}
	for i := range max(len(got), len(want)) {
		var g, w tarEntry
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g.String() != w.String() {
			t.Errorf("entry %d:\n got %v\nwant %v", i, g, w)
		}
	}

	// The same upper gives the same bytes.
	var again bytes.Buffer
	if err := writeUpperTar(t.Context(), &again, u.root); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Errorf("writeUpperTar is not deterministic")
	}
}

func TestWriteUpperTarRefuses(t *testing.T) {
	requireRootFS(t)
	for _, tc := range []struct {
		name string
		make func(u *upperBuilder)
	}{
		{"whiteout name", func(u *upperBuilder) { u.file(".wh.x", "", 0o644) }},
		{"redirected dir", func(u *upperBuilder) {
			u.dir("moved", 0o755)
			u.xattr("moved", "trusted.overlay.redirect", "/orig")
		}},
		{"metacopy", func(u *upperBuilder) {
			u.dir("d", 0o755)
			u.file("d/f", "", 0o644)
			u.xattr("d/f", "trusted.overlay.metacopy", "")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &upperBuilder{t: t, root: t.TempDir()}
			tc.make(u)
			err := writeUpperTar(t.Context(), io.Discard, u.root)
			if !errors.Is(err, ErrUpperUnsupported) {
				t.Errorf("writeUpperTar = %v, want ErrUpperUnsupported", err)
			}
		})
	}
}

func TestWriteUpperTarRootSymlink(t *testing.T) {
	// An upper that is itself a symlink is not followed.
	dir := t.TempDir()
	target := t.TempDir()
	if err := os.WriteFile(filepath.Join(target, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "upper")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeUpperTar(t.Context(), io.Discard, link); err == nil {
		t.Errorf("writeUpperTar(symlink to a dir) succeeded")
	}
}

func TestWriteLayerFile(t *testing.T) {
	upper := t.TempDir()
	if err := os.MkdirAll(filepath.Join(upper, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("lazyfs commit "), 300_000) // 4 MiB: several frames
	if err := os.WriteFile(filepath.Join(upper, "a/b/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lf, err := writeLayerFile(t.Context(), upper, dir)
	if err != nil {
		t.Fatalf("writeLayerFile = %v", err)
	}
	blob, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(lf.Path) != dir {
		t.Errorf("layer written to %s, want under %s", lf.Path, dir)
	}
	if d := digest.FromBytes(blob); lf.Digest != d || lf.Size != int64(len(blob)) {
		t.Errorf("layer file = %s, %d bytes; the file is %s, %d bytes", lf.Digest, lf.Size, d, len(blob))
	}
	zr, err := kgzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tarball, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if d := digest.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256(tarball))); lf.DiffID != d {
		t.Errorf("diff_id = %s, want %s", lf.DiffID, d)
	}
	var names []string
	for _, e := range readTarEntries(t, tarball) {
		names = append(names, e.Name)
		if e.Name == "a/b/big" && e.Content != string(big) {
			t.Errorf("a/b/big: %d bytes back, want %d", len(e.Content), len(big))
		}
	}
	if want := []string{"a/", "a/b/", "a/b/big"}; strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("entries = %q, want %q", names, want)
	}

	// The index builder reads it as it would read the pushed blob.
	x, err := index.Build(t.Context(), lf.Digest, bytes.NewReader(blob), index.BuildOptions{})
	if err != nil {
		t.Fatalf("index.Build = %v", err)
	}
	if x.Format != index.FormatGzip || x.BlobSize != lf.Size || len(x.Frames) < 2 {
		t.Errorf("index: format %v, blob %d bytes, %d frames; want gzip, %d, several", x.Format, x.BlobSize, len(x.Frames), lf.Size)
	}

	// A failed write leaves no file behind.
	if err := os.WriteFile(filepath.Join(upper, "a/.wh.bad"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := writeLayerFile(t.Context(), upper, dir); !errors.Is(err, ErrUpperUnsupported) {
		t.Errorf("writeLayerFile with a .wh. name = %v, want ErrUpperUnsupported", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("%d files in the temp dir after a failed write, want the first layer only", len(ents))
	}
}

// TestUpperTarMatchesOverlay is differential: seeded random operations on a
// kernel overlayfs mount of fsops' layers (whiteouts, opaque directories,
// renames, hard links, devices, xattrs), then the upper directory as a
// layer on top of the same layers, unpacked with OCI rules, must give the
// tree the overlay mount shows.
func TestUpperTarMatchesOverlay(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			lower := fsops.LayerTars(t)
			merged, upper := fsops.Overlay(t, lower, "")
			start, err := fsops.ScanTree(merged)
			if err != nil {
				t.Fatal(err)
			}
			g := fsops.NewGenerator(seed, start)
			for range 400 {
				op := g.Next()
				g.Observe(op, fsops.Apply(merged, op))
			}
			var layer bytes.Buffer
			if err := writeUpperTar(t.Context(), &layer, upper); err != nil {
				t.Fatalf("writeUpperTar = %v", err)
			}
			got := t.TempDir()
			testutil.Unpack(t, got, append(lower, layer.Bytes()))
			// The upper's root is not in the layer (as in docker's), nor are
			// sockets.
			o := testutil.CompareOptions{IgnoreRootMeta: true}
			now, err := fsops.ScanTree(merged)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range now {
				if e.Mode&unix.S_IFMT == unix.S_IFSOCK {
					o.IgnorePaths = append(o.IgnorePaths, e.Path)
				}
			}
			testutil.CompareTreesWith(t, merged, got, o)
		})
	}
}
