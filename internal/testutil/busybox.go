package testutil

import (
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BusyboxBinary is the statically linked busybox of Debian's busybox-static.
const BusyboxBinary = "/bin/busybox"

// BusyboxRoot builds a minimal root file system in a fresh t.TempDir and
// returns its path:
//
//	bin/busybox                 copy of /bin/busybox, 0755
//	bin/APPLET                  one per `busybox --list` entry, in sorted
//	                            order alternately a symlink to "busybox" and a
//	                            hard link of bin/busybox
//	etc/passwd, etc/group       root and nobody
//	etc/hostname                "lazyfs"
//	root (0700), tmp (1777), var/tmp (1777), var/log, dev, proc, sys
//	dev/null                    char device 1:3, 0666
//	var/fifo                    a fifo, 0644
//
// Everything is owned by 0:0 and has mtime DefaultModTime, so the same
// busybox gives the same layer. Needs root (mknod); skips without busybox
// or root unless LAZYFS_REQUIRE_REGISTRY=1.
func BusyboxRoot(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(BusyboxBinary); err != nil {
		skipOrFail(t, "BusyboxRoot: %s missing (apt-get install busybox-static)", BusyboxBinary)
	}
	if os.Geteuid() != 0 {
		skipOrFail(t, "BusyboxRoot: needs root for mknod and chown")
	}
	out, err := exec.Command(BusyboxBinary, "--list").Output()
	if err != nil {
		t.Fatalf("BusyboxRoot: busybox --list: %v", err)
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			applets = append(applets, a)
		}
	}
	sort.Strings(applets)
	if len(applets) < 10 {
		t.Fatalf("BusyboxRoot: busybox --list gave %d applets", len(applets))
	}

	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("BusyboxRoot: %v", err)
		}
	}
	for _, d := range []string{"bin", "etc", "root", "tmp", "var/tmp", "var/log", "dev", "proc", "sys"} {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	bb := filepath.Join(root, "bin/busybox")
	src, err := os.Open(BusyboxBinary)
	must(err)
	dst, err := os.OpenFile(bb, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	must(err)
	_, err = io.Copy(dst, src)
	src.Close()
	must(err)
	must(dst.Close())
	for i, a := range applets {
		p := filepath.Join(root, "bin", a)
		if i%2 == 0 {
			must(os.Symlink("busybox", p))
		} else {
			must(os.Link(bb, p))
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname": "lazyfs\n",
	}
	for p, c := range files {
		must(os.WriteFile(filepath.Join(root, p), []byte(c), 0o644))
	}
	must(unix.Mknod(filepath.Join(root, "dev/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(root, "var/fifo"), 0o644))

	modes := map[string]uint32{"root": 0o700, "tmp": 0o1777, "var/tmp": 0o1777, "dev/null": 0o666, "var/fifo": 0o644}
	ts := unix.Timespec{Sec: DefaultModTime.Unix(), Nsec: int64(DefaultModTime.Nanosecond())}
	var paths []string
	must(filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}))
	for i := len(paths) - 1; i >= 0; i-- {
		p := paths[i]
		rel, _ := filepath.Rel(root, p)
		must(os.Lchown(p, 0, 0))
		if m, ok := modes[filepath.ToSlash(rel)]; ok {
			must(unix.Fchmodat(unix.AT_FDCWD, p, m, 0))
		} else if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			must(unix.Fchmodat(unix.AT_FDCWD, p, 0o755, 0))
		}
		if p != root {
			must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		}
	}
	// bin/busybox must still be the real thing.
	if out, err := exec.Command(bb, "true").CombinedOutput(); err != nil || len(out) != 0 {
		t.Fatalf("BusyboxRoot: %s true = %q, %v", bb, out, err)
	}
	return root
}
