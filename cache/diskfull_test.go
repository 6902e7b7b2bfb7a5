package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// checkRoot fails the test if any frame file under dir does not match its
// name, and returns how many frame files and temp files it holds.
func checkRoot(t *testing.T, dir string) (frames, temps int) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, framesDir), func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if strings.HasPrefix(e.Name(), tempPrefix) {
			temps++
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		frames++
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != e.Name() {
			t.Errorf("frame file %s: %d bytes that do not match its name", p, len(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return frames, temps
}

// fsUsed returns the bytes in use on the file system that holds dir.
func fsUsed(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// TestDiskFullEvicts stores 10 MiB of frames, with no size budget, on a
// 4 MiB tmpfs: each write that finds the disk full evicts the least recently
// used frames and tries again, so every frame is returned and stored, and
// no warning is logged.
func TestDiskFullEvicts(t *testing.T) {
	dir := smallTmpfs(t, "4m")
	s, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	const n, size = 40, 256 << 10
	for i := range n {
		want, d := testFrame(uint64(20_000+i), size)
		l := &loader{b: want}
		got, err := s.Frame(t.Context(), d, size, l.load)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Frame(%d) = %d bytes, %v; want the frame", i, len(got), err)
		}
		if !s.Has(d) {
			t.Fatalf("Has(frame %d) = false just after it was stored", i)
		}
	}
	st := s.Stats()
	frames, temps := checkRoot(t, dir)
	if st.DiskFull == 0 || st.Evictions == 0 || temps != 0 || int64(frames) != st.DiskFrames || st.DiskBytes > 4<<20 {
		t.Errorf("Stats = %+v, %d frame files, %d temp files; want disk-full writes, evictions, no temp files, frames on disk as recorded", st, frames, temps)
	}
	// The frames kept are the newest: read back from disk.
	for i := n - frames; i < n; i++ {
		want, d := testFrame(uint64(20_000+i), size)
		l := &loader{b: want}
		if got, err := s.Frame(t.Context(), d, size, l.load); err != nil || !bytes.Equal(got, want) || l.calls.Load() != 0 {
			t.Errorf("Frame(%d) = %d bytes, %v, %d loads; want it from disk", i, len(got), err, l.calls.Load())
		}
	}
	t.Logf("4 MiB tmpfs, no budget: %d frames of 256 KiB stored, %d writes found the disk full, %d frames evicted, %d kept (%d bytes), all read back from disk",
		n, st.DiskFull, st.Evictions, frames, st.DiskBytes)
}

// TestDiskFullNothingToEvict fills a 1 MiB tmpfs with a file that is not
// the cache's: a frame is still returned (from memory), a Warn names the
// cache directory and ENOSPC, Put returns that error, and nothing of the
// frame stays on disk. Frames are not evicted when that could not make room
// (a frame larger than the disk, a disk full of other files).
func TestDiskFullNothingToEvict(t *testing.T) {
	dir := smallTmpfs(t, "1m")
	s, logs := openStore(t, Config{Dir: dir, MemoryBytes: -1})

	small, ds := testFrame(13, 256<<10)
	l := &loader{b: small}
	if _, err := s.Frame(t.Context(), ds, int64(len(small)), l.load); err != nil || !s.Has(ds) {
		t.Fatalf("Frame(small) = %v, Has = %v; want stored", err, s.Has(ds))
	}

	// A frame larger than the file system: the small one is not evicted
	// for nothing.
	big, db := testFrame(14, 2<<20)
	l = &loader{b: big}
	got, err := s.Frame(t.Context(), db, int64(len(big)), l.load)
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("Frame(2 MiB on 1 MiB) = %d bytes, %v, want the frame", len(got), err)
	}
	if s.Has(db) || !s.Has(ds) {
		t.Errorf("Has(big), Has(small) = %v, %v; want false, true", s.Has(db), s.Has(ds))
	}

	// Fill the rest with a file the cache does not own.
	ballast, err := os.Create(filepath.Join(dir, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := ballast.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	ballast.Close()
	// Evicting the small frame would not make room for this one: it stays.
	mid, dm := testFrame(15, 512<<10)
	l = &loader{b: mid}
	got, err = s.Frame(t.Context(), dm, int64(len(mid)), l.load)
	if err != nil || !bytes.Equal(got, mid) {
		t.Fatalf("Frame(full disk) = %d bytes, %v, want the frame from memory", len(got), err)
	}
	err = s.Put(t.Context(), dm, mid)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Put(full disk) = %v, want an error wrapping ENOSPC that names %s", err, dir)
	}
	w := logs.expectWarns()
	if len(w) != 2 || !strings.Contains(w[1], dir) || !strings.Contains(w[1], "no space left on device") {
		t.Errorf("warnings = %q, want 2, the last naming %s and ENOSPC", w, dir)
	}
	frames, temps := checkRoot(t, dir)
	if frames != 1 || temps != 0 || s.Has(dm) || !s.Has(ds) {
		t.Errorf("%d frame files, %d temp files, Has(mid) = %v, Has(small) = %v; want the small frame only, nothing partial", frames, temps, s.Has(dm), s.Has(ds))
	}
	st := s.Stats()
	t.Logf("full disk: %d writes found it full, %d evictions, error: %v", st.DiskFull, st.Evictions, err)

	// Once there is room again, frames are stored.
	if err := os.Remove(filepath.Join(dir, "ballast")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), dm, mid); err != nil || !s.Has(dm) {
		t.Errorf("Put(after ballast removed) = %v, Has = %v; want stored", err, s.Has(dm))
	}
}

// TestBudgetUnderDisk runs a 1 MiB budget on a 4 MiB tmpfs: the budget, not
// the disk, bounds the cache; the disk never fills.
func TestBudgetUnderDisk(t *testing.T) {
	dir := smallTmpfs(t, "4m")
	const budget, size, n = 1 << 20, 100 << 10, 60
	s, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1, MaxDiskBytes: budget})
	base := fsUsed(t, dir)
	var peak int64
	for i := range n {
		want, d := testFrame(uint64(30_000+i), size)
		if got, err := s.Frame(t.Context(), d, size, (&loader{b: want}).load); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Frame(%d) = %d bytes, %v", i, len(got), err)
		}
		u, err := Usage(dir)
		if err != nil {
			t.Fatal(err)
		}
		if u.FrameBytes > budget || u.TempFiles != 0 {
			t.Fatalf("after frame %d: Usage = %+v, want at most %d frame bytes and no temp file", i, u, budget)
		}
		peak = max(peak, fsUsed(t, dir)-base)
	}
	st := s.Stats()
	if st.DiskFull != 0 || st.DiskBytes > budget || st.Evictions != n-budget/size {
		t.Errorf("Stats = %+v; want no full disk, at most %d bytes, %d evictions", st, budget, n-budget/size)
	}
	if peak > budget+64<<10 {
		t.Errorf("tmpfs use peaked at %d bytes over its base, want at most the budget (%d) and directory overhead", peak, budget)
	}
	t.Logf("1 MiB budget on a 4 MiB tmpfs: %d frames of 100 KiB, %d evicted, %d kept (%d bytes), tmpfs use peaked at %d bytes",
		n, st.Evictions, st.DiskFrames, st.DiskBytes, peak)
}

// TestDiskFullConcurrent has four goroutines store 20 MiB of frames on a
// 4 MiB tmpfs at once: evictions by one make room for the others, every
// frame is returned and stored, and the root ends consistent (no bad file,
// no temp file, the record matching the disk).
func TestDiskFullConcurrent(t *testing.T) {
	dir := smallTmpfs(t, "4m")
	s, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1}) // a Warn (a frame not stored) fails the test
	const writers, each, size = 4, 20, 256 << 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				want, d := testFrame(uint64(50_000+w*each+i), size)
				got, err := s.Frame(t.Context(), d, size, (&loader{b: want}).load)
				if err != nil || !bytes.Equal(got, want) {
					errs <- fmt.Errorf("writer %d, frame %d: %d bytes, %v", w, i, len(got), err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	frames, temps := checkRoot(t, dir)
	u, err := Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if temps != 0 || st.DiskBytes != u.FrameBytes || int64(frames) != st.DiskFrames {
		t.Errorf("Stats = %+v, Usage = %+v, %d temp files; want the record to match the disk, no temp file", st, u, temps)
	}
	t.Logf("4 writers, 80 frames of 256 KiB on a 4 MiB tmpfs: %d writes found the disk full, %d evictions, %d frames kept, all stored",
		st.DiskFull, st.Evictions, frames)
}
