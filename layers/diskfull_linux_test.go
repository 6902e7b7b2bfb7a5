package layers

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/cache"
)

// TestSourceReadsOnFullDisk reads every frame of a gzip, a tar and a zstd
// layer through a cache whose disk (a 1 MiB tmpfs) is full of files that
// are not the cache's, with no memory tier: no frame can be stored, and
// every read still returns the frame's bytes.
func TestSourceReadsOnFullDisk(t *testing.T) {
	e := newPullEnv(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		if os.Getenv("LAZYFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("mount a tmpfs on %s: %v (LAZYFS_REQUIRE_FUSE=1: mounts must work)", dir, err)
		}
		t.Skipf("cannot mount a small tmpfs (needs root and mount rights): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	store, err := cache.Open(cache.Config{Dir: filepath.Join(dir, "cache"), MemoryBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ballast, err := os.Create(filepath.Join(dir, "ballast"))
	if err != nil {
		t.Fatal(err)
	}
	for chunk := make([]byte, 4096); ; {
		if _, err := ballast.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	ballast.Close()

	src := NewSource(e.client, e.img.Repo, store, nil)
	defer src.Close()
	frames := 0
	for _, l := range e.ls {
		x := l.Index
		for i := len(x.Frames) - 1; i >= 0; i-- { // backwards: no read-ahead
			data, err := src.Frame(t.Context(), x, i)
			if err != nil {
				t.Fatalf("Frame(%s layer, %d) on a full disk: %v", x.Format, i, err)
			}
			if digest.FromBytes(data) != x.Frames[i].Digest || int64(len(data)) != x.Frames[i].Size {
				t.Fatalf("Frame(%s layer, %d) does not match its digest", x.Format, i)
			}
			frames++
		}
	}
	st := store.Stats()
	if st.DiskFrames != 0 || st.DiskFull == 0 {
		t.Errorf("Stats = %+v, want no frame stored and writes that found the disk full", st)
	}
	t.Logf("full disk, no memory tier: %d frames of 3 layers read right; %d writes found the disk full; zstd layer fetched %d times for %d frames",
		frames, st.DiskFull, e.proxy.Stats().Blobs[e.ls[2].Index.Layer].Requests, len(e.ls[2].Index.Frames))
}
