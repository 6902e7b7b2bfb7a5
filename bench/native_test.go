package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseOpened(t *testing.T) {
	root, extra := t.TempDir(), t.TempDir()
	write := func(rel string, n int) {
		writeIn(t, root, rel, n)
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
		`101 openat(AT_FDCWD, "/hello.go", O_RDONLY|O_CLOEXEC) = 8`,       // only in extra
		`101 +++ exited with 0 +++`,
	}, "\n")
	sum := func(got map[string]int64) (n int64) {
		for _, size := range got {
			n += size
		}
		return n
	}
	got, err := parseOpened(bufio.NewScanner(strings.NewReader(trace)), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || sum(got) != 1320 {
		t.Errorf("parseOpened(root) = %v, want 3 files, 1320 bytes", got)
	}

	// A directory stacked above root (Image.Files): its files count, and
	// hide root's at the same path.
	writeIn(t, extra, "hello.go", 60)
	writeIn(t, extra, "etc/ld.so.cache", 5)
	got, err = parseOpened(bufio.NewScanner(strings.NewReader(trace)), extra, root)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || sum(got) != 1000+300+5+60 {
		t.Errorf("parseOpened(extra, root) = %v, want 4 files, 1365 bytes", got)
	}
}

func writeIn(t *testing.T, root, rel string, n int) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
}
