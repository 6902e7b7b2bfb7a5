package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseOpened(t *testing.T) {
	root := t.TempDir()
	write := func(rel string, n int) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/bin/python3.11", 1000)
	write("usr/lib/libc.so.6", 300)
	write("etc/ld.so.cache", 20)
	if err := os.Symlink("python3.11", filepath.Join(root, "usr/bin/python3")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	trace := strings.Join([]string{
		`100 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3`, // host, before the chroot
		`100 chroot("/var/tmp/lazybench/native/mnt") = 0`,
		`100 execve("/usr/bin/python3", ["python3"], 0x7ffd /* 3 vars */) = 0`, // symlink → python3.11
		`100 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3`,
		`100 openat(AT_FDCWD, "/lib/libc.so.6", O_RDONLY|O_CLOEXEC) = 3`,    // through a symlinked directory
		`101 openat(AT_FDCWD, "usr/lib/libc.so.6", O_RDONLY|O_CLOEXEC) = 3`, // relative to / (counted once)
		`101 openat(3, "libc.so.6", O_RDONLY) = 4`,                          // relative to a descriptor: not counted
		`101 openat(AT_FDCWD, "/proc/self/maps", O_RDONLY) = 5`,
		`101 openat(AT_FDCWD, "/tmp/made.c", O_WRONLY|O_CREAT, 0644) = 6`, // not in the image
		`101 openat(AT_FDCWD, "/usr/lib", O_RDONLY|O_DIRECTORY) = 7`,      // a directory
		`101 +++ exited with 0 +++`,
	}, "\n")
	got, err := parseOpened(bufio.NewScanner(strings.NewReader(trace)), root)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, size := range got {
		n += size
	}
	if len(got) != 3 || n != 1320 {
		t.Errorf("parseOpened = %v, want 3 files, 1320 bytes", got)
	}
}
