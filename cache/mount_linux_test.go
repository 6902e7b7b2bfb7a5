package cache

import (
	"os"
	"syscall"
	"testing"
)

func mountTmpfs(dir, opts string) error {
	return syscall.Mount("tmpfs", dir, "tmpfs", 0, opts)
}

func unmount(dir string) error { return syscall.Unmount(dir, 0) }

// smallTmpfs mounts a tmpfs of the given size ("4m") on a new temp dir and
// unmounts it at cleanup. Without the right to mount it skips, or fails
// when LAZYFS_REQUIRE_FUSE=1 (CI, root) says mounts must work.
func smallTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := mountTmpfs(dir, "size="+size+",mode=0700"); err != nil {
		if os.Getenv("LAZYFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("mount a %s tmpfs on %s: %v (LAZYFS_REQUIRE_FUSE=1: mounts must work)", size, dir, err)
		}
		t.Skipf("cannot mount a small tmpfs (needs root and mount rights): %v", err)
	}
	t.Cleanup(func() {
		if err := unmount(dir); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}
