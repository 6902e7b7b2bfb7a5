package fusefs

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// opCounter counts the requests the kernel sends a mount.
type opCounter struct {
	fuse.RawFileSystem
	lookup, getattr, opendir, readdir, readdirplus, readlink, read atomic.Int64
}

func (c *opCounter) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.read.Add(1)
	return c.RawFileSystem.Read(cancel, in, buf)
}

func (c *opCounter) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	c.lookup.Add(1)
	return c.RawFileSystem.Lookup(cancel, h, name, out)
}

func (c *opCounter) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	c.getattr.Add(1)
	return c.RawFileSystem.GetAttr(cancel, in, out)
}

func (c *opCounter) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	c.opendir.Add(1)
	return c.RawFileSystem.OpenDir(cancel, in, out)
}

func (c *opCounter) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.readdir.Add(1)
	return c.RawFileSystem.ReadDir(cancel, in, out)
}

func (c *opCounter) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.readdirplus.Add(1)
	return c.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (c *opCounter) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	c.readlink.Add(1)
	return c.RawFileSystem.Readlink(cancel, h)
}

func (c *opCounter) String() string {
	return fmt.Sprintf("lookup %d getattr %d opendir %d readdir %d readdirplus %d readlink %d",
		c.lookup.Load(), c.getattr.Load(), c.opendir.Load(), c.readdir.Load(), c.readdirplus.Load(), c.readlink.Load())
}

// mountCounted mounts the layers with cfg, writable (with new upper and
// work directories) if asked, and counts the requests the kernel sends.
func mountCounted(t *testing.T, blobs [][]byte, cfg Config, writable bool) (string, *opCounter) {
	t.Helper()
	return mountCountedSpan(t, blobs, 64<<10, cfg, writable)
}

// mountCountedSpan is mountCounted with frames of span bytes.
func mountCountedSpan(t *testing.T, blobs [][]byte, span int64, cfg Config, writable bool) (string, *opCounter) {
	t.Helper()
	testutil.RequireFUSE(t, "FUSE")
	idxs, src := buildIndexes(t, blobs, span)
	dir := t.TempDir()
	if writable {
		cfg.UpperDir, cfg.WorkDir = t.TempDir(), t.TempDir()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	c := &opCounter{}
	m, err := mount(dir, idxs, src, cfg, func(raw fuse.RawFileSystem) fuse.RawFileSystem { c.RawFileSystem = raw; return c })
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
	})
	return dir, c
}

// treeLayer is a layer of dirs directories of files files each, and a
// symlink to the first directory.
func treeLayer(t *testing.T, dirs, files int) []byte {
	var fs []tarFile
	for d := range dirs {
		fs = append(fs, tarFile{hdr: tar.Header{Name: fmt.Sprintf("tree/d%02d/", d), Typeflag: tar.TypeDir, Mode: 0o755}})
		for f := range files {
			fs = append(fs, tarFile{hdr: tar.Header{Name: fmt.Sprintf("tree/d%02d/f%03d", d, f), Typeflag: tar.TypeReg, Mode: 0o644},
				body: []byte(fmt.Sprint(d, f))})
		}
	}
	fs = append(fs, tarFile{hdr: tar.Header{Name: "first", Typeflag: tar.TypeSymlink, Linkname: "tree/d00", Mode: 0o777}})
	return makeTar(t, fs)
}

// statWalk lstats every entry under root, as find -printf '%s' does, and
// returns how many it saw.
func statWalk(t *testing.T, root string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := d.Info(); err != nil {
			return err
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return n
}

// The tree of a read-only mount never changes, so the kernel may keep
// what it learnt: a second stat walk, a second listing of a directory, a
// second look for a missing name and a second walk through a symlink are
// answered without a request. The first walk looks up the files of its
// first directory alone: then READDIRPLUS brings the files' attributes
// with the listings (plusPolicy).
func TestReadOnlyMountIsCached(t *testing.T) {
	dir, c := mountCounted(t, [][]byte{treeLayer(t, 5, 40)}, Config{}, false)
	tree := filepath.Join(dir, "tree")
	if n := statWalk(t, tree); n != 1+5+5*40 {
		t.Fatalf("stat walk saw %d entries, want %d", n, 1+5+5*40)
	}
	first := c.String()
	if n := c.lookup.Load(); n > 1+40 { // "tree" itself, and the files of one directory
		t.Errorf("first stat walk: %s; want at most 41 LOOKUPs (READDIRPLUS)", first)
	}
	if n := c.opendir.Load(); n > 1 {
		t.Errorf("first stat walk: %s; want at most one OPENDIR (answered ENOSYS: directories need no handle)", first)
	}

	getattrs := c.getattr.Load() // the root's, for the mount's own stat
	statWalk(t, tree)
	for _, p := range []string{"missing", "tree/d00/missing"} {
		for range 2 {
			if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
				t.Fatalf("Lstat(%s) = %v, want not exist", p, err)
			}
		}
	}
	for range 2 {
		if _, err := os.Stat(filepath.Join(dir, "first", "f000")); err != nil {
			t.Fatal(err)
		}
	}
	before := c.lookup.Load()
	statWalk(t, tree)
	for _, p := range []string{"missing", "tree/d00/missing"} {
		os.Lstat(filepath.Join(dir, p))
	}
	os.Stat(filepath.Join(dir, "first", "f000"))
	readlinks := c.readlink.Load()
	os.Stat(filepath.Join(dir, "first", "f001"))
	if got := c.lookup.Load() - before; got != 0 {
		t.Errorf("second stat walk and lookups made %d LOOKUPs (%s), want none", got, c)
	}
	if c.readlink.Load() != readlinks || readlinks > 1 {
		t.Errorf("walks through a symlink made %d READLINKs, want one (the kernel keeps the target)", c.readlink.Load())
	}
	if n := c.getattr.Load() - getattrs; n != 0 {
		t.Errorf("walks made %d GETATTRs, want none (%s)", n, c)
	}
	lists := c.readdir.Load() + c.readdirplus.Load()
	statWalk(t, tree)
	if got := c.readdir.Load() + c.readdirplus.Load(); got != lists {
		t.Errorf("listing the same directories again made %d more READDIR(PLUS) requests, want none (FOPEN_CACHE_DIR)", got-lists)
	}
}

// Listings come from the merged tree by position: every name once, sorted,
// with the type and inode number stat shows, across several READDIRPLUS
// replies and after seekdir(3) to any position a listing handed out.
func TestReadOnlyMountListing(t *testing.T) {
	const n = 700 // names of 100 bytes: several replies of at most 32 KiB
	var fs []tarFile
	var want []string
	for i := range n {
		name := fmt.Sprintf("%04d-%096d", i, 0)
		want = append(want, name)
		typ := byte(tar.TypeReg)
		if i%7 == 0 {
			typ = tar.TypeDir
		}
		fs = append(fs, tarFile{hdr: tar.Header{Name: "big/" + name, Typeflag: typ, Mode: 0o755}})
	}
	fs = append(fs, tarFile{hdr: tar.Header{Name: "big/" + want[1] + "-link", Typeflag: tar.TypeLink, Linkname: "big/" + want[1]}})
	want = append(want, want[1]+"-link")
	slices.Sort(want)
	dir, _ := mountCounted(t, [][]byte{makeTar(t, fs)}, Config{}, false)
	big := filepath.Join(dir, "big")

	fd, err := unix.Open(big, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	type dirent struct {
		name string
		ino  uint64
		typ  uint8
		off  int64
	}
	read := func() []dirent {
		var out []dirent
		buf := make([]byte, 4096) // several getdents calls per reply
		for {
			m, err := unix.Getdents(fd, buf)
			if err != nil {
				t.Fatalf("getdents: %v", err)
			}
			if m == 0 {
				return out
			}
			// struct linux_dirent64: ino, off, reclen, type, name.
			for b := buf[:m]; len(b) > 0; {
				reclen := binary.LittleEndian.Uint16(b[16:])
				out = append(out, dirent{
					name: unix.ByteSliceToString(b[19:reclen]),
					ino:  binary.LittleEndian.Uint64(b),
					typ:  b[18],
					off:  int64(binary.LittleEndian.Uint64(b[8:])),
				})
				b = b[reclen:]
			}
		}
	}
	all := read()
	var names []string
	for _, d := range all {
		names = append(names, d.name)
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(big, d.name), &st))
		wantType := uint8(unix.DT_REG)
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			wantType = unix.DT_DIR
		}
		if d.ino != st.Ino || d.typ != wantType {
			t.Errorf("%s: listed ino %d type %d, stat ino %d mode %o", d.name, d.ino, d.typ, st.Ino, st.Mode)
		}
	}
	if !slices.Equal(names, want) {
		t.Fatalf("listing has %d names, want the %d sorted names of the layer", len(names), len(want))
	}
	for _, at := range []int{0, 1, 350, len(all) - 1} {
		if _, err := unix.Seek(fd, all[at].off, 0); err != nil {
			t.Fatal(err)
		}
		rest := read()
		if len(rest) != len(all)-at-1 || len(rest) > 0 && rest[0].name != all[at+1].name {
			t.Errorf("after seekdir to the offset of entry %d: %d entries, want %d", at, len(rest), len(all)-at-1)
		}
	}
	if _, err := unix.Seek(fd, 0, 0); err != nil {
		t.Fatal(err)
	}
	if again := read(); len(again) != len(all) {
		t.Errorf("after rewinddir: %d entries, want %d", len(again), len(all))
	}
	var a, b unix.Stat_t
	must(t, unix.Lstat(filepath.Join(big, want[1]), &a))
	must(t, unix.Lstat(filepath.Join(big, want[1]+"-link"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: ino %d and %d, nlink %d; want one inode with 2 links", a.Ino, b.Ino, a.Nlink)
	}
	if _, err := os.ReadDir(filepath.Join(big, want[1])); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("ReadDir of a file = %v, want ENOTDIR", err)
	}
}

// A small READ of a large file has the kernel keep the rest of the
// frames it used (FUSE_NOTIFY_STORE): more reads there need no request,
// and every byte the kernel holds is the file's.
func TestReadOnlyMountPushesFrames(t *testing.T) {
	const size = 10<<16 + 20000 // ten frames of 64 KiB and a bit
	content := pseudoBytes(size, 7)
	dir, c := mountCounted(t, [][]byte{makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, body: content},
	})}, Config{}, false)
	ro := c.RawFileSystem.(*roFS)
	f, err := os.Open(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pread := func(off int64) {
		t.Helper()
		buf := make([]byte, 4096)
		n, err := f.ReadAt(buf, off)
		if n == 0 || err != nil && n < len(buf) && off+int64(n) != size {
			t.Fatalf("ReadAt(%d) = %d, %v", off, n, err)
		}
		if !bytes.Equal(buf[:n], content[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d) differs from the file's content", off)
		}
	}
	pread(5 << 16)
	ro.waitPushes()
	reads := c.read.Load()
	// The frame holding file offset 5<<16 holds the 64 KiB from there less
	// the tar headers before the file's content (1.5 KiB).
	for _, off := range []int64{5<<16 + 8192, 5<<16 + 16384, 5<<16 + 40960} {
		pread(off)
	}
	if got := c.read.Load() - reads; got != 0 {
		t.Errorf("reads near one already read made %d READs, want none (the rest of its frame pushed)", got)
	}
	// The last frame: the file's last, partial page is pushed too, and the
	// file does not grow.
	pread(size - 15000)
	ro.waitPushes()
	reads = c.read.Load()
	pread(size - 100)
	if got := c.read.Load() - reads; got != 0 {
		t.Errorf("a read of the last page after one nearby made %d READs, want none", got)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != size {
		t.Errorf("Stat = %v, %v; want size %d", fi, err, size)
	}
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("reading the whole file after the pushes: %d bytes, %v; want its %d bytes", len(got), err, size)
	}
}

// A push gives the kernel at most maxPushAround bytes on either side of
// the READ, however large the frame.
func TestReadOnlyMountPushesAroundTheRead(t *testing.T) {
	const size = 4 << 20
	content := pseudoBytes(size, 5)
	dir, c := mountCountedSpan(t, [][]byte{makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, body: content},
	})}, 8<<20, Config{}, false) // one frame
	ro := c.RawFileSystem.(*roFS)
	f, err := os.Open(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	at := int64(3 << 20)
	if _, err := f.ReadAt(buf, at); err != nil {
		t.Fatal(err)
	}
	ro.waitPushes()
	for _, tc := range []struct {
		off   int64
		reads int64
	}{{at - maxPushAround, 0}, {at + maxPushAround - 4096, 0}, {at - maxPushAround - 4096, 1}} {
		before := c.read.Load()
		if _, err := f.ReadAt(buf, tc.off); err != nil || !bytes.Equal(buf, content[tc.off:tc.off+4096]) {
			t.Fatalf("ReadAt(%d): %v or wrong bytes", tc.off, err)
		}
		ro.waitPushes()
		if got := c.read.Load() - before; got != tc.reads {
			t.Errorf("ReadAt(%d) after one at %d made %d READs, want %d", tc.off, at, got, tc.reads)
		}
	}
}

// Pushes run beside READs of the same pages: random small reads from
// several goroutines and whole-file reads at once all see the file's bytes
// and finish (a push waits for pages other READs hold locked).
func TestReadOnlyMountPushStress(t *testing.T) {
	const size = 40 << 16
	content := pseudoBytes(size, 3)
	dir, _ := mountCounted(t, [][]byte{makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644}, body: content},
	})}, Config{}, false)
	p := filepath.Join(dir, "big")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			f, err := os.Open(p)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 4096)
			for range 300 {
				off := rng.Int64N(size/4096) * 4096
				if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, content[off:off+4096]) {
					errs <- fmt.Errorf("ReadAt(%d): %v or wrong bytes", off, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 3 {
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, content) {
				errs <- fmt.Errorf("ReadFile: %d bytes, %v; want the file's %d", len(got), err, size)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A lower directory is listed without its files' attributes until someone
// looks one of them up; the next listings then carry them (plusPolicy).
func TestListingsCarryFileAttributesOnDemand(t *testing.T) {
	for _, writable := range []bool{false, true} {
		t.Run(fmt.Sprintf("writable=%v", writable), func(t *testing.T) {
			dir, c := mountCounted(t, [][]byte{treeLayer(t, 3, 20)}, Config{WritableCacheTimeout: time.Hour}, writable)
			tree := filepath.Join(dir, "tree")
			var names int
			err := filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
				names++
				return err
			})
			if err != nil || names != 1+3+3*20 {
				t.Fatalf("walk of names: %d, %v; want %d names", names, err, 1+3+3*20)
			}
			if n := c.lookup.Load(); n > 1 { // "tree" itself
				t.Errorf("a walk of names made %d LOOKUPs (%s), want at most 1: no file's attributes are needed", n, c)
			}

			before := c.lookup.Load()
			entries, err := os.ReadDir(filepath.Join(tree, "d00"))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if _, err := e.Info(); err != nil {
					t.Fatal(err)
				}
			}
			if n := c.lookup.Load() - before; n != 20 {
				t.Errorf("stat of the 20 files of a directory listed without their attributes made %d LOOKUPs, want 20", n)
			}
			if ro, ok := c.RawFileSystem.(*roFS); ok {
				// The kernel keeps the read-only mount's listings:
				// those of d01 and d02 are dropped in the background.
				ro.waitRelist()
			}
			before = c.lookup.Load()
			if n := statWalk(t, filepath.Join(tree, "d01")); n != 21 {
				t.Fatalf("stat walk of d01 saw %d entries, want 21", n)
			}
			if n := c.lookup.Load() - before; n != 0 {
				t.Errorf("a stat walk after that made %d LOOKUPs, want none: the listing carries the attributes", n)
			}
		})
	}
}

func TestPlusPolicy(t *testing.T) {
	var p plusPolicy
	listings := func(n int) (bare int) {
		for range n {
			if p.bare() {
				bare++
			}
		}
		return bare
	}
	if got := listings(10); got != 10 {
		t.Errorf("before any miss: %d of 10 listings bare, want all", got)
	}
	for i, want := range []int{firstPlusCredit, 2 * firstPlusCredit, 4 * firstPlusCredit} {
		p.miss()
		if got := listings(want + 5); got != 5 {
			t.Errorf("after miss %d: %d of %d listings bare, want the last 5 (a credit of %d)", i+1, got, want+5, want)
		}
	}
	for range 20 {
		p.miss()
	}
	if got := listings(maxPlusCredit + 1); got != 1 {
		t.Errorf("after many misses: %d of %d listings bare, want 1 (a credit of at most %d)", got, maxPlusCredit+1, maxPlusCredit)
	}
}
