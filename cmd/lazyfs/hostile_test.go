package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
	"github.com/lazyfs/lazyfs/layers"
)

// Hostile images, end to end: layers made to escape the root or exhaust
// the machine, pushed to the real registry and read through the real
// binaries. Each case gives a clear error (naming the layer and the entry)
// or a safe result. RELIABILITY.md lists them with the figures these tests
// log.

var hostileModTime = time.Unix(1700000000, 0)

// tarOf writes entries with archive/tar (PAX), as given: archive/tar keeps
// "../x", "/x" and other names a helper might clean.
func tarOf(t *testing.T, hdrs ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range hdrs {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = hostileModTime
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func file(name, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg}, data: []byte(data)}
}

func dir(name string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}}
}

func symlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

func hardlink(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target}}
}

// rawHeader returns one ustar header block, with fill setting more fields
// before the checksum: for what archive/tar refuses to write.
func rawHeader(name string, typ byte, size int64, fill func(blk []byte)) []byte {
	blk := make([]byte, 512)
	copy(blk[0:100], name)
	copy(blk[100:108], "0000644\x00")
	copy(blk[108:116], "0000000\x00")
	copy(blk[116:124], "0000000\x00")
	copy(blk[124:136], fmt.Sprintf("%011o\x00", size))
	copy(blk[136:148], fmt.Sprintf("%011o\x00", hostileModTime.Unix()))
	blk[156] = typ
	copy(blk[257:265], "ustar\x0000")
	if fill != nil {
		fill(blk)
	}
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return blk
}

// padded returns b padded with zeros to whole 512-byte blocks.
func padded(b []byte) []byte { return append(b, make([]byte, -len(b)&511)...) }

// paxHeader returns a PAX extended header holding the records "k=v".
func paxHeader(recs ...string) []byte {
	var body []byte
	for _, r := range recs {
		n := len(r) + 3
		for len(strconv.Itoa(n))+len(r)+2 != n {
			n++
		}
		body = fmt.Appendf(body, "%d %s\n", n, r)
	}
	return append(rawHeader("PaxHeaders/x", tar.TypeXHeader, int64(len(body)), nil), padded(body)...)
}

// endOfArchive is the two zero blocks that end a tar.
var endOfArchive = make([]byte, 1024)

func gz(t *testing.T, b []byte) []byte { return testutil.Gzip(t, b, 6) }

// pushLayers pushes an image of the given layer blobs and returns its ref.
func pushLayers(t *testing.T, reg, repo string, blobs ...[]byte) string {
	t.Helper()
	var ls []testutil.Layer
	for _, b := range blobs {
		ls = append(ls, testutil.Layer{Blob: b})
	}
	ref, _ := testutil.PushImage(t, reg, repo, ls, testutil.ImageConfig{})
	return ref
}

// onHost fails the test if any of paths exists on the host; it is called
// before and after a hostile image is indexed and mounted.
func onHost(t *testing.T, when string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s: %s exists on the host", when, p)
		}
	}
}

// mountFlags returns the options of the mount at dir in /proc/self/mountinfo.
func mountFlags(t *testing.T, dir string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 5 && fields[4] == dir {
			return fields[5]
		}
	}
	t.Fatalf("%s is not in /proc/self/mountinfo", dir)
	return ""
}

func TestHostileImageMount(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	reg := testutil.StartRegistry(t)
	passwd := "root:x:0:0:root:/root:/bin/sh\n"
	deep := strings.Repeat("d/", 2100) + "deep" // 4204 bytes: past PATH_MAX
	longName := strings.Repeat("n", 255)
	bottom := tarOf(t,
		dir("etc/"),
		file("etc/passwd", passwd),
		file("../etc/dotdot", "escaped?"),
		file("/abs/file", "absolute"),
		file("../../../../../tmp/lazyfs-hostile-escape", "escaped?"),
		symlink("esc-abs", "/etc/shadow"),
		symlink("esc-up", "../../../../.."),
		symlink("chain1", "chain2"),
		symlink("chain2", "chain3"),
		symlink("chain3", "../../../../etc"),
		symlink("etcdir", "/etc"),
		file("etcdir/planted", "through a symlinked parent"),
		symlink("linkdir", "/etc"),
		hardlink("hl-via-sym", "linkdir/passwd"),
		hardlink("hl-out", "../../../etc/passwd"),
		hardlink("hl-chain", "hl-out"),
		hardlink("hl-missing", "../../../root/.ssh/id_rsa"),
		hardlink("hl-dir", "etc"),
		dir("dev/"),
		tarEntry{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o666}},
		tarEntry{hdr: tar.Header{Name: "dev/mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}},
		tarEntry{hdr: tar.Header{Name: "bin/suid", Typeflag: tar.TypeReg, Mode: 0o4755}, data: []byte("#!/bin/sh\nid -u\n")},
		tarEntry{hdr: tar.Header{Name: "bin/sgid", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 42}, data: []byte("#!/bin/sh\n")},
		file("dup", "first"),
		file("fd", "a file, then a directory in the same layer"),
		file("fd/child", "child"),
		dir("df/"),
		file("df/child", "gone when df becomes a file"),
		file("x-file", "a file, a directory in the next layer"),
		file("new\nline", "1"),
		file("\x01ctl", "2"),
		file("bad-\xff\xfe", "3"),
		file(deep, "deep"),
		file(longName, "255 bytes"),
		file("dup", "second"),
	)
	top := tarOf(t,
		file("x-file/inner", "inner"),
		file("df", "a file now"),
		file("dup", "third"),
	)
	host := []string{"/tmp/lazyfs-hostile-escape", "/etc/dotdot", "/abs/file", "/etc/planted"}
	onHost(t, "before", host...)
	ref := pushLayers(t, reg.Addr, "hostile/mount:v1", gz(t, bottom), top)
	root := t.TempDir()
	m := mount(t, root, ref)
	mnt := func(p string) string { return filepath.Join(m.dir, p) }

	read := func(p, want string) {
		t.Helper()
		if got, err := os.ReadFile(mnt(p)); err != nil || string(got) != want {
			t.Errorf("ReadFile(%q) = %q, %v, want %q", p, got, err, want)
		}
	}
	read("etc/dotdot", "escaped?")
	read("abs/file", "absolute")
	read("tmp/lazyfs-hostile-escape", "escaped?")
	read("dup", "third")
	read("fd/child", "child")
	read("x-file/inner", "inner")
	read("df", "a file now")
	read("new\nline", "1")
	read("\x01ctl", "2")
	read("bad-\xff\xfe", "3")
	read(longName, "255 bytes")

	// Symlinks are served as written; lazyfs itself never follows them.
	for name, want := range map[string]string{
		"esc-abs": "/etc/shadow", "esc-up": "../../../../..", "chain1": "chain2", "chain3": "../../../../etc", "linkdir": "/etc",
	} {
		if got, err := os.Readlink(mnt(name)); err != nil || got != want {
			t.Errorf("Readlink(%s) = %q, %v, want %q", name, got, err, want)
		}
	}
	// An entry under a symlinked parent lands where the link points,
	// resolved inside the root, as docker and containerd put it: etcdir ->
	// /etc is the image's etc, never the host's.
	if fi, err := os.Lstat(mnt("etcdir")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("Lstat(etcdir) = %v, %v, want the symlink kept", fi, err)
	}
	read("etc/planted", "through a symlinked parent")

	// A hard link to "../../../etc/passwd" is etc/passwd of the image, and
	// a chain of them is the same file, as is one through a symlinked
	// parent (linkdir -> /etc, resolved inside the root); links to nothing
	// or to a directory are dropped.
	var pw, hl, hc syscall.Stat_t
	if err := errors.Join(syscall.Stat(mnt("etc/passwd"), &pw), syscall.Stat(mnt("hl-out"), &hl), syscall.Stat(mnt("hl-chain"), &hc)); err != nil {
		t.Fatal(err)
	}
	var hs syscall.Stat_t
	if err := syscall.Stat(mnt("hl-via-sym"), &hs); err != nil {
		t.Fatal(err)
	}
	if hl.Ino != pw.Ino || hc.Ino != pw.Ino || hs.Ino != pw.Ino || pw.Nlink != 4 {
		t.Errorf("etc/passwd, hl-out, hl-chain, hl-via-sym inodes %d %d %d %d, nlink %d; want one inode with 4 links", pw.Ino, hl.Ino, hc.Ino, hs.Ino, pw.Nlink)
	}
	for _, p := range []string{"hl-missing", "hl-dir"} {
		if _, err := os.Lstat(mnt(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Lstat(%s) error %v, want the link dropped", p, err)
		}
	}

	// Device nodes and setuid bits are shown as the image has them, on a
	// mount the kernel makes nosuid and nodev.
	flags := mountFlags(t, m.dir)
	if !strings.Contains(","+flags+",", ",nosuid,") || !strings.Contains(","+flags+",", ",nodev,") {
		t.Errorf("mount options %q, want nosuid and nodev", flags)
	}
	if fi, err := os.Lstat(mnt("dev/sda")); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Errorf("Lstat(dev/sda) = %v, %v, want a block device", fi, err)
	}
	if f, err := os.Open(mnt("dev/mem")); !errors.Is(err, syscall.EACCES) {
		if err == nil {
			f.Close()
		}
		t.Errorf("Open(dev/mem) error %v, want EACCES (nodev)", err)
	}
	if fi, err := os.Stat(mnt("bin/suid")); err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("Stat(bin/suid) = %v, %v, want setuid shown", fi, err)
	}

	// A path past PATH_MAX is there, one element at a time.
	fd, err := unix.Open(m.dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	elems := strings.Split(deep, "/")
	for i, e := range elems {
		flags := unix.O_PATH | unix.O_DIRECTORY
		if i == len(elems)-1 {
			flags = unix.O_RDONLY
		}
		next, err := unix.Openat(fd, e, flags, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("openat(%q) at depth %d: %v", e, i, err)
		}
		fd = next
	}
	buf := make([]byte, 10)
	n, _ := unix.Read(fd, buf)
	unix.Close(fd)
	if string(buf[:n]) != "deep" {
		t.Errorf("read of the %d-byte path = %q, want %q", len(deep), buf[:n], "deep")
	}

	log := m.stop(t)
	for _, p := range []string{"hl-missing", "hl-dir"} {
		if !strings.Contains(log, "hard link target missing") || !strings.Contains(log, "path="+p) {
			t.Errorf("lazyfs mount did not warn about dropping %s:\n%s", p, log)
		}
	}
	onHost(t, "after", host...)
	if entries, _ := os.ReadDir(root); len(entries) != 1 || entries[0].Name() != "cache" {
		t.Errorf("--root holds %v, want only cache", entries)
	}
}

// deflateBomb returns a gzip member holding prefix and then n zero bytes in
// one fixed-Huffman deflate block, which no real encoder writes (13 bits
// per 258 zeros). prefix must end in a zero byte.
func deflateBomb(prefix []byte, n int64) []byte {
	var out bytes.Buffer
	out.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	var acc uint64
	var nb uint
	put := func(v uint64, bits uint) {
		acc |= v << nb
		for nb += bits; nb >= 8; nb -= 8 {
			out.WriteByte(byte(acc))
			acc >>= 8
		}
	}
	code := func(c uint64, bits uint) {
		var r uint64
		for i := range bits {
			r |= (c >> i & 1) << (bits - 1 - i)
		}
		put(r, bits)
	}
	put(1, 1)
	put(1, 2)
	for _, b := range prefix {
		if b < 144 {
			code(0x30+uint64(b), 8)
		} else {
			code(0x190+uint64(b-144), 9)
		}
	}
	for left := n; left > 0; {
		if left >= 258 {
			code(0xc5, 8)
			code(0, 5)
			left -= 258
		} else {
			code(0x30, 8)
			left--
		}
	}
	code(0, 7)
	if nb > 0 {
		put(0, 8-nb)
	}
	crc := crc32.ChecksumIEEE(prefix)
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zeros)) {
		crc = crc32.Update(crc, crc32.IEEETable, zeros[:min(left, int64(len(zeros)))])
	}
	binary.Write(&out, binary.LittleEndian, crc)
	binary.Write(&out, binary.LittleEndian, uint32(int64(len(prefix))+n))
	return out.Bytes()
}

func TestHostileLayersRefused(t *testing.T) {
	reg := testutil.StartRegistry(t)
	big := tarOf(t, file("big", strings.Repeat("b", 1<<20)))
	claim := rawHeader("claims-a-terabyte", tar.TypeReg, 0, func(blk []byte) {
		clear(blk[124:136])
		blk[124] = 0x80 // base-256
		binary.BigEndian.PutUint64(blk[128:], 1<<40)
	})
	gzLayer := gz(t, tarOf(t, file("a", strings.Repeat("some text ", 20000))))
	for _, tc := range []struct {
		name string
		blob []byte
		want []string
	}{
		{"NUL in a PAX path", append(append(paxHeader("path=ok\x00../../etc/passwd"), rawHeader("x", tar.TypeReg, 0, nil)...), endOfArchive...),
			[]string{"tar entry 0", "invalid tar header"}},
		{"name element past NAME_MAX", tarOf(t, file("dir/"+strings.Repeat("n", 256), "x")), []string{"path element of 256 bytes"}},
		{"symlink target past PATH_MAX", tarOf(t, symlink("s", strings.Repeat("t", 4096))), []string{"symlink target of 4096 bytes"}},
		{"hard link to the root", tarOf(t, hardlink("root-link", "../..")), []string{`"root-link"`, "hard link to the root"}},
		{"truncated gzip", gzLayer[:len(gzLayer)/2], []string{"unexpected EOF"}},
		{"truncated tar", big[:len(big)/2], []string{`"big"`, "content of 1048576 bytes"}},
		{"size claim of 1 TiB", append(claim, padded([]byte("only this"))...), []string{`"claims-a-terabyte"`, "content of 1099511627776 bytes"}},
		{"gzip bomb in one deflate block", deflateBomb(rawHeader("bomb", tar.TypeReg, 100<<20, nil), 100<<20+1024), []string{"gzip bomb"}},
		{"not a tar", bytes.Repeat([]byte("garbage!"), 1000), []string{"tar entry 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := testutil.Layer{Blob: tc.blob, MediaType: "application/vnd.oci.image.layer.v1.tar", DiffID: digest.Digest("sha256:" + strings.Repeat("0", 64))}
			if bytes.HasPrefix(tc.blob, []byte{0x1f, 0x8b}) {
				layer.MediaType = "application/vnd.oci.image.layer.v1.tar+gzip"
			}
			ref, _ := testutil.PushImage(t, reg.Addr, "hostile/refused:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
			root := t.TempDir()
			start := time.Now()
			_, stderr, err := lazyfs(t, "index", "--root", root, ref)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("lazyfs index of %s: %v, want exit 1\n%s", tc.name, err, stderr)
			}
			for _, w := range append(tc.want, digest.FromBytes(tc.blob).String()) {
				if !strings.Contains(stderr, w) {
					t.Errorf("lazyfs index of %s: stderr does not say %q:\n%s", tc.name, w, stderr)
				}
			}
			t.Logf("%s: refused in %v: %s", tc.name, time.Since(start).Round(time.Millisecond), strings.TrimSpace(stderr))
			if entries, _ := os.ReadDir(filepath.Join(root, "cache/index/sha256")); len(entries) != 0 {
				t.Errorf("an index was kept for a refused layer: %v", entries)
			}
		})
	}
	t.Run("mount refuses too", func(t *testing.T) {
		testutil.RequireFUSE(t, "FUSE")
		ref := pushLayers(t, reg.Addr, "hostile/refused-mount:v1", tarOf(t, file(strings.Repeat("n", 300), "x")))
		dir := t.TempDir()
		_, stderr, err := lazyfs(t, "mount", "--root", t.TempDir(), ref, dir)
		if err == nil || !strings.Contains(stderr, "path element of 300 bytes") {
			t.Errorf("lazyfs mount of a refused layer: %v, want exit 1 naming the entry\n%s", err, stderr)
		}
		if isMountPoint(dir) {
			t.Errorf("%s is mounted", dir)
		}
	})
}

// timedRun runs the lazyfs binary to completion and returns its stderr,
// wall time and peak RSS (getrusage's ru_maxrss).
func timedRun(t *testing.T, args ...string) (stderr string, took time.Duration, rssKiB int64) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), lazyfsBin, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("lazyfs %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	took = time.Since(start)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rssKiB = ru.Maxrss
	}
	return errb.String(), took, rssKiB
}

// vmHWM returns the peak resident set of process pid, in KiB.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// indexSize returns the size of the stored index of the only layer under root.
func indexSize(t *testing.T, root string) int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "cache/index/sha256"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("stored indexes under %s: %v, %v; want one", root, entries, err)
	}
	fi, err := entries[0].Info()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// figures logs what indexing and mounting ref cost, and returns the mount.
func figures(t *testing.T, what, ref string) *mounted {
	t.Helper()
	root := t.TempDir()
	_, took, rss := timedRun(t, "index", "--root", root, ref)
	size := indexSize(t, root)
	start := time.Now()
	m := mount(t, root, ref)
	mountTook := time.Since(start)
	t.Logf("%s: lazyfs index %v (peak RSS %.1f MiB), index %d bytes; lazyfs mount ready in %v, VmHWM %.1f MiB",
		what, took.Round(time.Millisecond), float64(rss)/1024, size, mountTook.Round(time.Millisecond),
		float64(vmHWM(t, m.cmd.Process.Pid))/1024)
	return m
}

// TestHostileTarBomb mounts a layer of 10⁶ empty files in 1000 directories.
func TestHostileTarBomb(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	if testing.Short() {
		t.Skip("-short: skips the layer of a million entries")
	}
	const dirs, perDir = 1000, 1000
	path := filepath.Join(t.TempDir(), "bomb.tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	for d := range dirs {
		tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%03d/", d), Typeflag: tar.TypeDir, Mode: 0o755, ModTime: hostileModTime})
		for i := range perDir {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d%03d/f%04d", d, i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: hostileModTime})
		}
	}
	if err := errors.Join(tw.Close(), zw.Close(), f.Close()); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	reg := testutil.StartRegistry(t)
	ref, _ := testutil.PushImage(t, reg.Addr, "hostile/tarbomb:v1", []testutil.Layer{{Path: path}}, testutil.ImageConfig{})
	t.Logf("tar bomb: %d entries, %.1f MB of gzip", dirs*perDir+dirs, float64(fi.Size())/1e6)
	m := figures(t, "tar bomb of 10⁶ entries", ref)
	start := time.Now()
	names, err := os.ReadDir(filepath.Join(m.dir, "d999"))
	if err != nil || len(names) != perDir {
		t.Errorf("ReadDir(d999) = %d names, %v, want %d", len(names), err, perDir)
	}
	if _, err := os.Stat(filepath.Join(m.dir, "d500/f0500")); err != nil {
		t.Error(err)
	}
	t.Logf("tar bomb: listing a directory of %d and a stat took %v; VmHWM after %.1f MiB", perDir,
		time.Since(start).Round(time.Microsecond), float64(vmHWM(t, m.cmd.Process.Pid))/1024)
	m.stop(t)
}

// TestHostileSparseTerabyte mounts a GNU sparse file (PAX 1.0) that claims
// 1 TiB with 26 bytes of data in the middle.
func TestHostileSparseTerabyte(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	const size, at = 1 << 40, 1 << 39
	data := []byte("the only data, at 512 GiB\n")
	smap := padded(fmt.Appendf(nil, "1\n%d\n%d\n", at, len(data)))
	var blob []byte
	blob = append(blob, paxHeader("GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name=huge",
		fmt.Sprintf("GNU.sparse.realsize=%d", int64(size)))...)
	body := append(smap, data...)
	blob = append(blob, rawHeader("GNUSparseFile.0/huge", tar.TypeReg, int64(len(body)), nil)...)
	blob = append(blob, padded(body)...)
	blob = append(blob, endOfArchive...)
	reg := testutil.StartRegistry(t)
	ref := pushLayers(t, reg.Addr, "hostile/sparse:v1", gz(t, blob))
	m := figures(t, "1 TiB sparse file", ref)
	p := filepath.Join(m.dir, "huge")
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Size != size || st.Blocks > 8 {
		t.Errorf("stat(huge) size %d, %d blocks, %v; want 1 TiB in at most 8 blocks", st.Size, st.Blocks, err)
	}
	t.Logf("1 TiB sparse file: st_size %d, st_blocks %d", st.Size, st.Blocks)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off  int64
		want []byte
	}{
		{at, data},
		{0, make([]byte, 64)},
		{size - 64, make([]byte, 64)},
		{at - 3, append([]byte{0, 0, 0}, data[:5]...)},
	} {
		got := make([]byte, len(c.want))
		if n, err := f.ReadAt(got, c.off); (err != nil && err != io.EOF) || !bytes.Equal(got[:n], c.want) {
			t.Errorf("ReadAt(huge, %d) = %q, %v, want %q", c.off, got[:n], err, c.want)
		}
	}
	f.Close()
	m.stop(t)
}

// TestHostileGzipBomb indexes and reads a layer of one file of zeros that
// gzip compresses about 1030:1: 10 GiB in 10 MB (1 GiB with -short).
func TestHostileGzipBomb(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	size := int64(10 << 30)
	if testing.Short() {
		size = 1 << 30
	}
	member := func(r io.Reader) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, 6)
		io.Copy(zw, r)
		zw.Close()
		return b.Bytes()
	}
	// Members of 1 GiB each: one compression of 1 GiB, not of size.
	blob := member(bytes.NewReader(rawHeader("zeros", tar.TypeReg, size, nil)))
	gib := member(io.LimitReader(zeroReader{}, 1<<30))
	left := size
	for ; left >= 1<<30; left -= 1 << 30 {
		blob = append(blob, gib...)
	}
	blob = append(blob, member(io.LimitReader(zeroReader{}, left+1024))...)
	reg := testutil.StartRegistry(t)
	ref := pushLayers(t, reg.Addr, "hostile/gzipbomb:v1", blob)
	m := figures(t, fmt.Sprintf("gzip bomb, %d GiB of zeros in %.1f MB", size>>30, float64(len(blob))/1e6), ref)
	f, err := os.Open(filepath.Join(m.dir, "zeros"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	start := time.Now()
	if _, err := f.ReadAt(got, size-int64(len(got))); err != nil || !bytes.Equal(got, make([]byte, len(got))) {
		t.Errorf("ReadAt(last MiB) = %v, want zeros", err)
	}
	f.Close()
	t.Logf("gzip bomb: reading the last MiB took %v; VmHWM after %.1f MiB", time.Since(start).Round(time.Millisecond),
		float64(vmHWM(t, m.cmd.Process.Pid))/1024)
	m.stop(t)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHostileIndexArtifact pushes, for image A, the index of another layer:
// once as it is (refused at download, naming the blob) and once relabelled
// with A's layer digest and size (its frames do not match A's bytes, so
// every read of content is EIO, never another layer's bytes).
func TestHostileIndexArtifact(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	reg := testutil.StartRegistry(t)
	content := func(who string) []byte { return bytes.Repeat([]byte(who), 4096) } // same length for both
	// Uncompressed layers of the same length, so that B's frames fit A's blob.
	refA := pushLayers(t, reg.Addr, "hostile/artifact-a:v1", tarOf(t, file("secret", string(content("AAAA")))))
	refB := pushLayers(t, reg.Addr, "hostile/artifact-b:v1", tarOf(t, file("secret", string(content("BBBB")))))

	rootB := t.TempDir()
	mustLazyfs(t, "index", "--root", rootB, refB)
	entries, err := os.ReadDir(filepath.Join(rootB, "cache/index/sha256"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("index of B: %v, %v", entries, err)
	}
	data, err := os.ReadFile(filepath.Join(rootB, "cache/index/sha256", entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	xB, err := index.Decode(data)
	if err != nil {
		t.Fatal(err)
	}

	ctx := t.Context()
	client := fetch.New(fetch.Config{Retries: 1})
	imgA, err := client.Resolve(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	descA := imgA.Manifest.Layers[0]
	push := func(x *index.Index) {
		t.Helper()
		if _, err := layers.NewResolver(layers.Config{Client: client}).Push(ctx, imgA, []layers.Layer{{Desc: descA, Index: x}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // the newest artifact wins by its creation second
	}

	t.Run("another layer's index", func(t *testing.T) {
		push(xB)
		dir := t.TempDir()
		_, stderr, err := lazyfs(t, "mount", "--root", t.TempDir(), refA, dir)
		if err == nil || !strings.Contains(stderr, "describes layer "+xB.Layer.String()) || !strings.Contains(stderr, descA.Digest.String()) {
			t.Errorf("lazyfs mount with B's index for A: %v, want refused naming both layers\n%s", err, stderr)
		}
	})
	t.Run("relabelled", func(t *testing.T) {
		lie := *xB
		lie.Layer, lie.BlobSize = descA.Digest, descA.Size
		if err := lie.Validate(); err != nil {
			t.Skipf("B's frames do not fit in A's blob (%v): cannot relabel", err)
		}
		push(&lie)
		m := mount(t, t.TempDir(), refA, "--retries", "1")
		got, err := os.ReadFile(filepath.Join(m.dir, "secret"))
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("ReadFile(secret) through a relabelled index = %d bytes (%.8q), %v; want EIO", len(got), got, err)
		}
		if bytes.Contains(got, []byte("BBBB")) {
			t.Errorf("ReadFile(secret) served the other layer's bytes")
		}
		t.Logf("relabelled index: read of secret = %v", err)
		m.stop(t)
	})
}

// TestHostileManifestLies pushes manifests whose layer descriptor lies
// about the blob's size, and reads a config whose bytes do not match its
// digest (a fault proxy flips one).
func TestHostileManifestLies(t *testing.T) {
	reg := testutil.StartRegistry(t)
	p := testutil.PushImageInfo(t, reg.Addr, "hostile/manifest:v1", []testutil.Layer{{Blob: gz(t, tarOf(t, file("f", "x")))}}, testutil.ImageConfig{})
	for _, tc := range []struct {
		name  string
		delta int64
	}{{"layer size smaller than the blob", -10}, {"layer size larger than the blob", 10}} {
		t.Run(tc.name, func(t *testing.T) {
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
				Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: p.ConfigDigest, Size: configSize(t, p)},
				Layers: []ocispec.Descriptor{{MediaType: string(p.Layers[0].MediaType), Digest: digest.Digest(p.Layers[0].Digest.String()), Size: p.Layers[0].Size + tc.delta}}}
			m.SchemaVersion = 2
			body, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			tag := fmt.Sprintf("lie%d", tc.delta+100)
			testutil.PushManifest(t, reg.Addr, "hostile/manifest", tag, "application/vnd.oci.image.manifest.v1+json", body)
			ref := reg.Addr + "/hostile/manifest:" + tag
			_, stderr, err := lazyfs(t, "index", "--root", t.TempDir(), ref)
			want := fmt.Sprintf("manifest says %d", p.Layers[0].Size+tc.delta)
			if err == nil || !strings.Contains(stderr, want) || !strings.Contains(stderr, p.Layers[0].Digest.String()) {
				t.Errorf("lazyfs index with a %s: %v, want an error naming the layer and saying %q\n%s", tc.name, err, want, stderr)
			}
		})
	}
	t.Run("config bytes do not match its digest", func(t *testing.T) {
		proxy := testutil.NewFaultProxy(t, reg.Addr)
		// Damaged once, the config is read again; served wrong every time
		// (its 3 reads are the first blob GETs), it is refused.
		proxy.Corrupt(1)
		if _, stderr, err := lazyfs(t, "index", "--root", t.TempDir(), proxy.Addr+"/hostile/manifest:v1"); err != nil {
			t.Errorf("lazyfs index with a config corrupted once: %v, want it read again\n%s", err, stderr)
		}
		proxy.ClearFaults()
		proxy.Corrupt(3)
		_, stderr, err := lazyfs(t, "index", "--root", t.TempDir(), proxy.Addr+"/hostile/manifest:v1")
		if err == nil || !strings.Contains(stderr, "digest mismatch") || !strings.Contains(stderr, "config "+p.ConfigDigest.String()) {
			t.Errorf("lazyfs index with a config always corrupted: %v, want a digest mismatch naming the config\n%s", err, stderr)
		}
	})
}

func configSize(t *testing.T, p *testutil.PushedImage) int64 {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(p.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m.Config.Size
}
