package layers

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// BenchmarkWarmSequentialRead reads a file of a pulled image (every frame
// on disk) through a read-only FUSE mount over a Source, 1 MiB a read:
// from its frames (frames-MB/s) and passed through to its copy
// (copy-MB/s); and the same bytes from a plain file beside the cache
// (native-MB/s), of which the ratios are shares: the file-system
// section's sequential read (bench/fs.go) without containers, to try a
// change in a minute. As root the page cache is dropped before each read,
// as that section does, so both read the disk. Needs root (FUSE) and
// docker-registry. LAZYFS_BENCH_MIB sets the file's size (default 1024:
// this machine's disk served a 256 MiB file from a cache of its own, at
// 1.1-1.9 GB/s, half the time).
//
//	go test ./layers -run '^$' -bench WarmSequentialRead -benchtime 3x
func BenchmarkWarmSequentialRead(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: FUSE mounts")
	}
	size := int64(1 << 30)
	if s := os.Getenv("LAZYFS_BENCH_MIB"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("LAZYFS_BENCH_MIB=%q: want a positive number of MiB", s)
		}
		size = int64(n) << 20
	}
	const seed = 1
	reg := testutil.StartRegistry(b)
	layer := testutil.WriteLayer(b, []testutil.File{{Path: "data/", Mode: 0o755}, {Path: "data/big", Size: size, Seed: seed}}, types.OCILayer)
	testutil.PushImage(b, reg.Addr, "bench/warmread:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	client := fetch.New(fetch.Config{Logger: slog.New(slog.DiscardHandler)})
	img, err := client.Resolve(b.Context(), reg.Addr+"/bench/warmread:v1")
	if err != nil {
		b.Fatal(err)
	}
	root := b.TempDir()
	store := openStore(b, root)
	r := NewResolver(Config{Client: client, Store: store})
	ls, err := r.Layers(b.Context(), img)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.Pull(b.Context(), img, ls, PullConfig{}); err != nil {
		b.Fatal(err)
	}
	x := ls[0].Index
	b.Logf("layer: %d frames for %d MiB", len(x.Frames), x.TarSize>>20)

	native := filepath.Join(root, "native")
	f, err := os.Create(native)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, testutil.PatternReader(seed, size)); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}

	src := NewSource(client, img.Repo, store, nil)
	b.Cleanup(src.Close)
	// The file through FUSE from its frames, and passed through to its
	// copy (made first, as a mount makes it after the file's first open).
	mount := func(name string, cfg fusefs.Config) string {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		m, err := fusefs.MountLayers(dir, []*index.Index{x}, src, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Unmount() }) //nolint:errcheck // the test is over
		return filepath.Join(dir, "data", "big")
	}
	viaFrames := mount("frames", fusefs.Config{NoPassthrough: true})
	e := entryOf(b, x, "data/big")
	if made, err := src.CopyFile(b.Context(), x, e.Offset, e.Size); !made || err != nil {
		b.Fatalf("copy of data/big: made %v, %v", made, err)
	}
	viaCopy := mount("copy", fusefs.Config{})

	buf := make([]byte, 1<<20)
	var nativeTime, framesTime, copyTime time.Duration
	for b.Loop() {
		nativeTime += timedRead(b, native, buf, size)
		before := store.Stats()
		framesTime += timedRead(b, viaFrames, buf, size)
		after := store.Stats()
		b.Logf("frames served from memory %d, from disk %d (read ahead or read)",
			after.MemoryHits-before.MemoryHits, after.DiskHits-before.DiskHits)
		copyTime += timedRead(b, viaCopy, buf, size)
		if st := store.Stats(); st.MemoryHits+st.DiskHits != after.MemoryHits+after.DiskHits {
			b.Fatalf("the read passed through to the copy read %d frames", st.MemoryHits+st.DiskHits-after.MemoryHits-after.DiskHits)
		}
	}
	n := float64(b.N)
	for _, m := range []struct {
		name string
		t    time.Duration
	}{{"native", nativeTime}, {"frames", framesTime}, {"copy", copyTime}} {
		b.ReportMetric(float64(size)/1e6/(m.t.Seconds()/n), m.name+"-MB/s")
		if m.name != "native" {
			b.ReportMetric(nativeTime.Seconds()/m.t.Seconds(), m.name+"/native")
		}
	}
}

// timedRead drops the page cache (as root) and times reading the file p
// whole, len(buf) bytes a read.
func timedRead(b *testing.B, p string, buf []byte, want int64) time.Duration {
	b.StopTimer()
	defer b.StartTimer()
	if os.Geteuid() == 0 {
		syscall.Sync()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
			b.Fatal(err)
		}
	}
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	var got int64
	for {
		n, err := f.Read(buf)
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if got != want {
		b.Fatalf("read %d bytes of %s, want %d", got, p, want)
	}
	return time.Since(start)
}
