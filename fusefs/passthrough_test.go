package fusefs

import (
	"archive/tar"
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// copySource is a memSource that keeps file copies in a directory, as
// layers.Source does in the cache.
type copySource struct {
	*memSource
	dir   string
	puts  atomic.Int64
	opens atomic.Int64
}

func (c *copySource) path(x *index.Index, off, n int64) string {
	return filepath.Join(c.dir, digest.FromString(x.Layer.String()+string(rune(off))+string(rune(n))).Encoded())
}

func (c *copySource) OpenCopy(x *index.Index, off, n int64) *os.File {
	f, err := os.Open(c.path(x, off, n))
	if err != nil {
		return nil
	}
	c.opens.Add(1)
	return f
}

func (c *copySource) CopyFile(ctx context.Context, x *index.Index, off, n int64) (bool, error) {
	p := c.path(x, off, n)
	if _, err := os.Stat(p); err == nil {
		return false, nil
	}
	first, end := x.FramesFor(off, n)
	buf := make([]byte, n)
	for i := first; i < end; i++ {
		data, err := c.Frame(ctx, x, i)
		if err != nil {
			return false, err
		}
		f := &x.Frames[i]
		lo, hi := max(f.Offset, off), min(f.Offset+f.Size, off+n)
		copy(buf[lo-off:hi-off], data[lo-f.Offset:hi-f.Offset])
	}
	c.puts.Add(1)
	return true, os.WriteFile(p, buf, 0o600)
}

// A file read once through the page cache is copied in the background; a
// later mount hands the kernel the copy (passthrough), whose reads never
// reach the mount. An inode opened the cached way stays so while that
// open lasts, even once its copy exists.
func TestPassthroughOfCopiedFiles(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	big := make([]byte, 700_000)
	for i := range big {
		big[i] = byte(rand.IntN(7)) // compressible, several frames
	}
	small := bytes.Repeat([]byte("s"), minCopy-1)
	others := [][]byte{bytes.Repeat([]byte("a"), 100_000), bytes.Repeat([]byte("b"), 200_000), bytes.Repeat([]byte("c"), 300_000)}
	layer := gzipBytes(t, makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o755}, body: big},
		{hdr: tar.Header{Name: "small", Typeflag: tar.TypeReg, Mode: 0o644}, body: small},
		{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644}, body: others[0]},
		{hdr: tar.Header{Name: "b", Typeflag: tar.TypeReg, Mode: 0o644}, body: others[1]},
		{hdr: tar.Header{Name: "c", Typeflag: tar.TypeReg, Mode: 0o644}, body: others[2]},
	}))
	idxs, mem := buildIndexes(t, [][]byte{layer}, 64<<10)
	src := &copySource{memSource: mem, dir: t.TempDir()}
	mountOnce := func() string {
		t.Helper()
		dir := t.TempDir()
		m, err := MountLayers(dir, idxs, src, Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := m.Unmount(); err != nil {
				t.Errorf("Unmount: %v", err)
			}
		})
		return dir
	}
	readAll := func(p string, want []byte) {
		t.Helper()
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %s: %d bytes, %v; want its %d bytes", p, len(got), err, len(want))
		}
	}
	waitPuts := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); src.puts.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d copies made in 10 s, want %d", src.puts.Load(), n)
			}
		}
	}

	first := mountOnce()
	held, err := os.Open(filepath.Join(first, "big")) // the cached way: no copy yet
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	readAll(filepath.Join(first, "big"), big)
	readAll(filepath.Join(first, "small"), small)
	for i, name := range []string{"a", "b", "c"} { // opened while big is being copied: queued
		readAll(filepath.Join(first, name), others[i])
	}
	waitPuts(4)
	// The copy exists, but the inode is in the page-cache mode while held
	// is open: another open must not fail (the kernel would refuse a
	// passthrough open with ETXTBSY) and reads the same bytes.
	readAll(filepath.Join(first, "big"), big)
	if n := src.opens.Load(); n != 0 {
		t.Errorf("%d copies opened while the inode was held open the cached way, want 0", n)
	}
	held.Close()

	second := mountOnce()
	loads := mem.loads.Load()
	readAll(filepath.Join(second, "big"), big)
	if n := mem.loads.Load() - loads; n != 0 {
		t.Errorf("reading the copied file on a new mount decoded %d frames, want 0 (passthrough)", n)
	}
	if n := src.opens.Load(); n != 1 {
		t.Errorf("%d copies opened for big, want 1", n)
	}
	// Opens of a passed-through inode share its backing file; a mapping
	// reads the copy too.
	f1, err := os.Open(filepath.Join(second, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	readAll(filepath.Join(second, "big"), big)
	b := make([]byte, 4096)
	if _, err := f1.ReadAt(b, 500_000); err != nil || !bytes.Equal(b, big[500_000:504_096]) {
		t.Errorf("ReadAt through the shared backing file: %v", err)
	}
	readAll(filepath.Join(second, "small"), small)
	loads = mem.loads.Load()
	for i, name := range []string{"a", "b", "c"} {
		readAll(filepath.Join(second, name), others[i])
	}
	if n := mem.loads.Load() - loads; n != 0 {
		t.Errorf("reading the other copied files decoded %d frames, want 0", n)
	}
	if n := src.puts.Load(); n != 4 {
		t.Errorf("%d copies made, want 4: a file under %d bytes is not copied", n, minCopy)
	}
}

// blockingCopier's copies never end by themselves.
type blockingCopier struct {
	*memSource
	started chan struct{}
	stopped atomic.Bool
}

func (c *blockingCopier) OpenCopy(*index.Index, int64, int64) *os.File { return nil }

func (c *blockingCopier) CopyFile(ctx context.Context, _ *index.Index, _, _ int64) (bool, error) {
	c.started <- struct{}{}
	<-ctx.Done()
	c.stopped.Store(true)
	return false, ctx.Err()
}

// An unmount lets a copy under way go on for a while, then stops it: a
// container's exit waits for a big file's copy only so long.
func TestUnmountStopsCopy(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	data := bytes.Repeat([]byte("x"), 100_000)
	layer := gzipBytes(t, makeTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: data}}))
	idxs, mem := buildIndexes(t, [][]byte{layer}, 64<<10)
	src := &blockingCopier{memSource: mem, started: make(chan struct{}, 1)}
	dir := t.TempDir()
	m, err := MountLayers(dir, idxs, src, Config{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	const grace = 200 * time.Millisecond
	m.fs.copies.grace = grace
	if got, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read f: %d bytes, %v", len(got), err)
	}
	select {
	case <-src.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no copy started in 10 s")
	}
	start := time.Now()
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < grace || d > grace+5*time.Second {
		t.Errorf("Unmount took %v with a copy under way; want about %v", d, grace)
	}
	if !src.stopped.Load() {
		t.Error("the copy under way was not stopped")
	}
}

// A writable mount reads a lower file from its copy once an earlier mount
// made it, and the upper file once another descriptor copied it up.
func TestCowReadsCopies(t *testing.T) {
	data := make([]byte, 300_000)
	for i := range data {
		data[i] = byte(rand.IntN(7)) // compressible, several frames
	}
	layer := gzipBytes(t, makeTar(t, []tarFile{{hdr: tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}, body: data}}))
	idxs, mem := buildIndexes(t, [][]byte{layer}, 64<<10)
	src := &copySource{memSource: mem, dir: t.TempDir()}

	first := mountCow(t, idxs, src, "", Config{})
	if got, err := os.ReadFile(filepath.Join(first.dir, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read f: %d bytes, %v", len(got), err)
	}
	for deadline := time.Now().Add(10 * time.Second); src.puts.Load() < 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no copy made in 10 s")
		}
	}
	first.unmount(t)

	second := mountCow(t, idxs, src, "", Config{})
	p := filepath.Join(second.dir, "f")
	held, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	loads := mem.loads.Load()
	got := make([]byte, len(data))
	if _, err := held.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read f on a new mount: %v", err)
	}
	if n := mem.loads.Load() - loads; n != 0 {
		t.Errorf("reading a copied file decoded %d frames, want 0", n)
	}
	if n := src.opens.Load(); n != 1 {
		t.Errorf("%d copies opened, want 1", n)
	}
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("new"), 200_000); err != nil {
		t.Fatal(err)
	}
	must(t, w.Close())
	want := bytes.Clone(data)
	copy(want[200_000:], "new")
	if _, err := held.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read f after a copy-up through another descriptor: %v, or not the bytes written", err)
	}
	// NoPassthrough: no copy is used.
	third := mountCow(t, idxs, src, "", Config{NoPassthrough: true})
	opens := src.opens.Load()
	if got, err := os.ReadFile(filepath.Join(third.dir, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read f with NoPassthrough: %d bytes, %v", len(got), err)
	}
	if n := src.opens.Load() - opens; n != 0 {
		t.Errorf("with NoPassthrough %d copies were opened", n)
	}
}
