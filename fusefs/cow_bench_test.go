package fusefs

import (
	"archive/tar"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// BenchmarkCowMetadata measures a stat-heavy walk (lstat of every path of
// a 10×50-file tree) and open-read-close of small lower files on the
// read-only mount and on writable mounts with several cache timeouts. An
// op is one lstat or one open-read-close.
func BenchmarkCowMetadata(b *testing.B) {
	var files []tarFile
	var paths []string
	for d := range 10 {
		dir := fmt.Sprintf("usr/lib%d", d)
		files = append(files, tarFile{hdr: tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755}})
		for i := range 50 {
			p := fmt.Sprintf("%s/file%d.so", dir, i)
			files = append(files, tarFile{hdr: tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte(p)})
			paths = append(paths, p)
		}
	}
	idxs, src := buildIndexes(b, [][]byte{makeTar(b, files)}, 0)
	for _, mode := range []struct {
		name string
		ttl  time.Duration
		ro   bool
	}{{"read-only", 0, true}, {"writable-nocache", -1, false}, {"writable-1s", time.Second, false}, {"writable-1h", time.Hour, false}} {
		b.Run(mode.name, func(b *testing.B) {
			testutil.RequireFUSE(b, "FUSE")
			base := b.TempDir()
			mnt, upper, work := filepath.Join(base, "mnt"), filepath.Join(base, "upper"), filepath.Join(base, "work")
			for _, d := range []string{mnt, upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			cfg := Config{Logger: slog.New(slog.DiscardHandler), WritableCacheTimeout: mode.ttl}
			if !mode.ro {
				cfg.UpperDir, cfg.WorkDir = upper, work
			}
			m, err := MountLayers(mnt, idxs, src, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Unmount()
			b.Run("lstat", func(b *testing.B) {
				var st unix.Stat_t
				i := 0
				for b.Loop() {
					if err := unix.Lstat(filepath.Join(mnt, paths[i%len(paths)]), &st); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("open-read", func(b *testing.B) {
				buf := make([]byte, 64)
				i := 0
				for b.Loop() {
					fd, err := unix.Open(filepath.Join(mnt, paths[i%len(paths)]), unix.O_RDONLY, 0)
					if err != nil {
						b.Fatal(err)
					}
					unix.Read(fd, buf)
					unix.Close(fd)
					i++
				}
			})
		})
	}
}

// BenchmarkCowCopyUp measures the copy-up of a 4 MiB lower file (content
// decoded from a gzip layer through the frame source, written, synced,
// renamed into place) triggered by chmod.
func BenchmarkCowCopyUp(b *testing.B) {
	const files, size = 16, 4 << 20
	var entries []tarFile
	for i := range files {
		entries = append(entries, tarFile{hdr: tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644}, body: pseudoBytes(size, byte(i))})
	}
	idxs, src := buildIndexes(b, [][]byte{gzipBytes(b, makeTar(b, entries))}, 1<<20)
	testutil.RequireFUSE(b, "FUSE")
	b.SetBytes(size)
	var mnt string
	var m *Mount
	defer func() {
		if m != nil {
			m.Unmount()
		}
	}()
	for i := 0; i < b.N; i++ {
		if i%files == 0 {
			b.StopTimer()
			if m != nil {
				if err := m.Unmount(); err != nil {
					b.Fatal(err)
				}
			}
			base := b.TempDir()
			mnt = filepath.Join(base, "mnt")
			upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
			for _, d := range []string{mnt, upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
			}
			var err error
			m, err = MountLayers(mnt, idxs, src, Config{Logger: slog.New(slog.DiscardHandler), UpperDir: upper, WorkDir: work})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if err := unix.Chmod(filepath.Join(mnt, fmt.Sprintf("f%d", i%files)), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}
