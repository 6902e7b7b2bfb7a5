package fsops

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lazyfs/lazyfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// opsPerSeed is how many operations the differential tests run per seed.
const opsPerSeed = 3000

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root (mknod, chown, overlayfs)")
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// plainCopy unpacks layers into a plain directory: the merged tree with
// POSIX semantics.
func plainCopy(t *testing.T, layers [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	testutil.Unpack(t, dir, layers)
	return dir
}

// successRate is the share of mutating operations that succeeded on the
// first root.
func successRate(s Stats) float64 {
	ok, all := 0, 0
	for k, byErrno := range s {
		if k.Probe() {
			continue
		}
		for e, n := range byErrno {
			all += n
			if e == 0 {
				ok += n
			}
		}
	}
	return float64(ok) / float64(max(all, 1))
}

// TestTwoOverlaysAgree runs the same seeds against two independent kernel
// overlay mounts of the same layers: the harness must find no difference.
func TestTwoOverlaysAgree(t *testing.T) {
	needRoot(t)
	layers := LayerTars(t)
	for _, tc := range []struct {
		seed    uint64
		options string
	}{
		{1, ""}, {2, ""}, {3, ""}, {4, ""},
		{5, "redirect_dir=on,index=on,metacopy=off,xino=off"},
	} {
		t.Run(fmt.Sprintf("seed%d", tc.seed), func(t *testing.T) {
			a, _ := Overlay(t, layers, tc.options)
			b, _ := Overlay(t, layers, tc.options)
			fds := openFDs(t)
			m, stats, err := Check(Config{Seed: tc.seed, N: opsPerSeed}, a, b)
			if err != nil {
				t.Fatal(err)
			}
			if m != nil {
				t.Fatalf("Check(seed %d, two overlays) = %v, want no mismatch", tc.seed, m)
			}
			if got := openFDs(t); got != fds {
				t.Errorf("open file descriptors after Check = %d, want %d", got, fds)
			}
			if r := successRate(stats); r < 0.5 {
				t.Errorf("%.0f%% of the operations succeeded, want most: the model is off\n%v", 100*r, stats)
			}
			t.Logf("options %q; outcomes:\n%v", tc.options, stats)
		})
	}
}

// TestOverlayDiffersFromPlainDir proves the harness can fail: kernel
// overlayfs is not POSIX (EXDEV for directory renames, hard links broken
// by copy-up, …), so against a plain copy of the merged tree some seed
// must give a mismatch.
func TestOverlayDiffersFromPlainDir(t *testing.T) {
	needRoot(t)
	layers := LayerTars(t)
	var found []string
	for seed := uint64(1); seed <= 5; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			ov, _ := Overlay(t, layers, "")
			plain := plainCopy(t, layers)
			m, _, err := Check(Config{Seed: seed, N: opsPerSeed}, ov, plain)
			if err != nil {
				t.Fatal(err)
			}
			if m == nil {
				return
			}
			if m.Step == StepBefore {
				t.Fatalf("the trees differ before any operation: %v", m)
			}
			t.Logf("difference found, as it should be:\n%v", m)
			found = append(found, fmt.Sprintf("seed %d step %d: %v", seed, m.Step, m.Op))
		})
	}
	if len(found) == 0 {
		t.Fatalf("Check(overlay, plain directory) found no difference in 5 seeds, want some")
	}
	t.Logf("first differences:\n\t%s", strings.Join(found, "\n\t"))
}

// TestCheckComparesTrees checks the tree comparisons before and after the
// operations, with fixed operations.
func TestCheckComparesTrees(t *testing.T) {
	needRoot(t)
	layers := LayerTars(t)

	t.Run("before", func(t *testing.T) {
		a, b := plainCopy(t, layers), plainCopy(t, layers)
		if err := os.Chmod(filepath.Join(b, "etc/hosts"), 0o600); err != nil {
			t.Fatal(err)
		}
		m, _, err := Check(Config{Seed: 1, N: 10}, a, b)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil || m.Step != StepBefore || !slices.ContainsFunc(m.TreeDiffs, func(d string) bool { return strings.HasPrefix(d, "etc/hosts: mode") }) {
			t.Fatalf("Check(trees differing in a mode) = %v, want a difference before the first step", m)
		}
	})

	t.Run("after", func(t *testing.T) {
		// Writing to one name of a lower hard-link pair: the same errnos,
		// but overlayfs (index=off) copies up that name only.
		ov, _ := Overlay(t, layers, "")
		plain := plainCopy(t, layers)
		ops := []Op{{Kind: Write, Path: "data/hard1", Off: 0, Len: 3, Seed: 9}}
		m, _, err := Check(Config{Ops: ops}, ov, plain)
		if err != nil {
			t.Fatal(err)
		}
		if m == nil || m.Step != StepAfter {
			t.Fatalf("Check(write to a lower hard link; overlay, plain) = %v, want a difference of the final trees", m)
		}
		joined := strings.Join(m.TreeDiffs, "\n")
		for _, want := range []string{"data/hard1: hard links", "data/hard2: content"} {
			if !strings.Contains(joined, want) {
				t.Errorf("tree differences lack %q:\n%v", want, m)
			}
		}
		t.Logf("%v", m)
	})

	t.Run("recent mtimes", func(t *testing.T) {
		// Files changed during the run have different mtimes on the two
		// roots; they compare equal as "recent".
		a, b := plainCopy(t, layers), plainCopy(t, layers)
		ops := []Op{
			{Kind: Write, Path: "etc/hosts", Off: 3, Len: 10, Seed: 1},
			{Kind: Mkdir, Path: "etc/new", Mode: 0o755},
			{Kind: Lstat, Path: "etc/hosts"},
			{Kind: Utimens, Path: "etc/conf", Atime: unix.Timespec{Sec: 1, Nsec: 2}, Mtime: unix.Timespec{Sec: 3, Nsec: 4}},
			{Kind: Lstat, Path: "etc/conf"},
		}
		if m, _, err := Check(Config{Ops: ops}, a, b); err != nil || m != nil {
			t.Fatalf("Check(same ops on two plain copies) = %v, %v, want no mismatch", m, err)
		}
	})
}

// TestGenerateDeterministic: a seed names one sequence; another seed gives
// another; every kind shows up; the paths are well-formed.
func TestGenerateDeterministic(t *testing.T) {
	start := []Entry{
		{Path: "d", Mode: unix.S_IFDIR},
		{Path: "d/f", Mode: unix.S_IFREG, Size: 100, ID: 1},
		{Path: "d/g", Mode: unix.S_IFREG, Size: 5, ID: 2},
		{Path: "h", Mode: unix.S_IFREG, Size: 5, ID: 2},
		{Path: "d/sub", Mode: unix.S_IFDIR},
		{Path: "l", Mode: unix.S_IFLNK, Target: "d"},
		{Path: "e", Mode: unix.S_IFDIR},
	}
	const n = 5000
	a, b := Generate(42, n, start), Generate(42, n, start)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("Generate(42) twice: op %d is %v, then %v", i, a[i], b[i])
		}
	}
	if c := Generate(43, n, start); slices.Equal(a, c) {
		t.Errorf("Generate(42) = Generate(43), want different sequences")
	}
	kinds := map[Kind]int{}
	for i, op := range a {
		kinds[op.Kind]++
		for _, p := range []string{op.Path, op.To} {
			if p == "" {
				continue
			}
			for _, c := range strings.Split(p, "/") {
				if c == "" || c == ".." || strings.HasPrefix(c, ".wh.") || (c == "." && p != ".") {
					t.Errorf("op %d: %v: bad path %q", i, op, p)
				}
			}
		}
		if op.Kind == Symlink && (op.Target == "" || strings.HasPrefix(op.Target, "/")) {
			t.Errorf("op %d: %v: symlink target must be relative", i, op)
		}
		if op.Kind == Mknod && op.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(op.Dev) < 240 {
			t.Errorf("op %d: %v: block device with a real major number", i, op)
		}
	}
	for k := Kind(0); k < numKinds; k++ {
		if kinds[k] == 0 {
			t.Errorf("Generate(42, %d) has no %v", n, k)
		}
	}
}

func TestOpString(t *testing.T) {
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Kind: Rename, Path: "a/b", To: "c", Flags: unix.RENAME_NOREPLACE}, `rename("a/b", "c", RENAME_NOREPLACE)`},
		{Op{Kind: Write, Path: "f", Off: 10, Len: 20, Seed: 3}, `write("f", off 10, 20 bytes seed 3)`},
		{Op{Kind: CreateTrunc, Path: "f", Mode: 0o644, Len: 1, Seed: 2}, `create("f", O_CREAT|O_TRUNC, 0644, 1 bytes seed 2)`},
		{Op{Kind: Mknod, Path: "n", Mode: unix.S_IFCHR | 0o600, Dev: unix.Mkdev(240, 1)}, `mknod("n", chr 0600 240:1)`},
		{Op{Kind: Symlink, Path: "l", Target: "../t"}, `symlink("../t", "l")`},
		{Op{Kind: Chown, Path: "o", UID: 70000, GID: -1}, `lchown("o", 70000, -1)`},
		{Op{Kind: Utimens, Path: "u", Atime: unix.Timespec{Nsec: unix.UTIME_OMIT}, Mtime: unix.Timespec{Sec: 5, Nsec: 7}}, `utimens("u", atime OMIT, mtime 5.000000007)`},
		{Op{Kind: Setxattr, Path: "x", Name: "user.a", Value: "v", Flags: unix.XATTR_CREATE}, `lsetxattr("x", "user.a", "v", XATTR_CREATE)`},
	} {
		if got := tc.op.String(); got != tc.want {
			t.Errorf("Op.String() = %s, want %s", got, tc.want)
		}
	}
}

// TestApplyStaysInRoot: symlinks pointing outside (absolute, or with ".."
// past the root) resolve inside the root; devices and fifos are never
// opened.
func TestApplyStaysInRoot(t *testing.T) {
	needRoot(t)
	outer := t.TempDir()
	root := filepath.Join(outer, "root")
	secret := filepath.Join(outer, "secret")
	if err := os.WriteFile(secret, []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Unpack(t, root, [][]byte{testutil.Tar(t, []testutil.File{
		{Path: "secret", Data: []byte("inside")},
		{Path: "abs", Type: tar.TypeSymlink, Linkname: secret},
		{Path: "up", Type: tar.TypeSymlink, Linkname: "../secret"},
		{Path: "d/", Type: tar.TypeDir},
		{Path: "d/upup", Type: tar.TypeSymlink, Linkname: "../../../secret"},
		{Path: "fifo", Type: tar.TypeFifo},
		{Path: "chr", Type: tar.TypeChar, Devmajor: 1, Devminor: 5}, // /dev/zero: must not be opened
		{Path: "tochr", Type: tar.TypeSymlink, Linkname: "chr"},
	})})

	for _, link := range []string{"abs", "up", "d/upup"} {
		for _, op := range []Op{
			{Kind: Write, Path: link, Off: 0, Len: 4, Seed: 1},
			{Kind: Append, Path: link, Len: 4, Seed: 1},
			{Kind: Truncate, Path: link, Off: 1},
			{Kind: Chmod, Path: link, Mode: 0o600},
			{Kind: CreateTrunc, Path: link, Mode: 0o600},
			{Kind: Read, Path: link},
		} {
			if r := Apply(root, op); r.Errno != 0 && r.Errno != unix.ENOENT {
				t.Errorf("Apply(%v) = %v", op, r)
			}
		}
	}
	if got, err := os.ReadFile(secret); err != nil || string(got) != "outside" {
		t.Errorf("file outside the root = %q, %v: it was changed", got, err)
	}
	if fi, err := os.Stat(secret); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("file outside the root: %v, %v: it was changed", fi.Mode(), err)
	}
	for _, op := range []Op{
		{Kind: Write, Path: "fifo", Len: 1},
		{Kind: Read, Path: "chr"},
		{Kind: Read, Path: "tochr"},
		{Kind: CreateTrunc, Path: "tochr", Len: 1},
	} {
		if r := Apply(root, op); r.Errno != 0 || !strings.HasPrefix(r.Value, "not opened") {
			t.Errorf("Apply(%v) = %v, want not opened", op, r)
		}
	}
}

// TestApplyProbes pins down what the probes report.
func TestApplyProbes(t *testing.T) {
	needRoot(t)
	root := plainCopy(t, LayerTars(t))
	for _, tc := range []struct {
		op   Op
		want string
	}{
		{Op{Kind: Lstat, Path: "owned"}, "ok: reg 0644 70000:123456 size 8 nlink 1 mtime=2017-07-14T02:40:00.123456789Z"},
		{Op{Kind: Lstat, Path: "data/hard2"}, "ok: reg 0600 0:0 size 7 nlink 2 mtime=2023-11-14T22:13:20Z"},
		{Op{Kind: Lstat, Path: "dev/chr"}, "ok: chr 0600 0:0 dev 240:1 size 0 nlink 1 mtime=2023-11-14T22:13:20Z"},
		{Op{Kind: Readlink, Path: "abs"}, `ok: "/etc/hosts"`},
		{Op{Kind: Read, Path: "abs"}, "ok: 34 bytes sha256 "},
		{Op{Kind: Read, Path: "data"}, "EISDIR"},
		{Op{Kind: Readdir, Path: "old"}, `ok: ["x2"]`},
		{Op{Kind: Readdir, Path: "deep/a/up"}, `ok: ["conf" "hosts" "new.conf"]`},
		{Op{Kind: Listxattr, Path: "etc/conf"}, `ok: {user.empty="" user.origin="lower0"}`},
		{Op{Kind: Getxattr, Path: "etc/conf", Name: "user.nope"}, "ENODATA"},
		{Op{Kind: Rmdir, Path: "deep"}, "ENOTEMPTY"},
		{Op{Kind: Rename, Path: "deep", To: "deep/a/x"}, "EINVAL"},
		{Op{Kind: Readdir, Path: "loop"}, "ELOOP"},
		{Op{Kind: Lstat, Path: "etc/hosts/x"}, "ENOTDIR"},
	} {
		if got := Apply(root, tc.op).String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("Apply(%v) = %s, want %s", tc.op, got, tc.want)
		}
	}
}

// TestOverlayQuirks pins down where kernel overlayfs with OverlayOptions
// differs from POSIX (see the package documentation): a lazyfs
// copy-on-write mount has to do the same.
func TestOverlayQuirks(t *testing.T) {
	needRoot(t)
	merged, _ := Overlay(t, LayerTars(t), "")
	for i, tc := range []struct {
		op   Op
		want string // a prefix of Result.String()
	}{
		{Op{Kind: Rename, Path: "deep", To: "deep2"}, "EXDEV"},                                  // POSIX: ok
		{Op{Kind: Rename, Path: "deep", To: "emptydir"}, "EXDEV"},                               // POSIX: ok
		{Op{Kind: Rename, Path: "deep", To: "etc"}, "EXDEV"},                                    // POSIX: ENOTEMPTY
		{Op{Kind: Rename, Path: "etc/hosts", To: "deep", Flags: unix.RENAME_EXCHANGE}, "EXDEV"}, // POSIX: ok
		{Op{Kind: Rename, Path: "deep", To: "deep/a/x"}, "EINVAL"},
		{Op{Kind: Rename, Path: "deep", To: "etc/hosts"}, "ENOTDIR"},
		{Op{Kind: Rename, Path: "deep", To: "etc", Flags: unix.RENAME_NOREPLACE}, "EEXIST"},
		{Op{Kind: Lstat, Path: "etc/hosts"}, "ok: reg 0644 0:0 size 34 nlink 1"},
		{Op{Kind: Mkdir, Path: "new", Mode: 0o755}, "ok"},
		{Op{Kind: Rename, Path: "new", To: "new2"}, "ok"},
		{Op{Kind: Rmdir, Path: "emptydir"}, "ok"},
		{Op{Kind: Mkdir, Path: "emptydir", Mode: 0o755}, "ok"}, // opaque, upper only
		{Op{Kind: Rename, Path: "emptydir", To: "moved"}, "ok"},
		{Op{Kind: Mknod, Path: "wh", Mode: unix.S_IFCHR | 0o600}, "EPERM"}, // POSIX: ok
		{Op{Kind: Write, Path: "data/hard1", Len: 3, Seed: 1}, "ok"},
		{Op{Kind: Lstat, Path: "data/hard1"}, "ok: reg 0600 0:0 size 7 nlink 1"}, // POSIX: nlink 2
		{Op{Kind: Lstat, Path: "data/hard2"}, "ok: reg 0600 0:0 size 7 nlink 2"},
		{Op{Kind: Unlink, Path: "data/hard1"}, "ok"},
		{Op{Kind: Lstat, Path: "data/hard2"}, "ok: reg 0600 0:0 size 7 nlink 2"}, // POSIX: nlink 1
		{Op{Kind: Link, Path: "data/hard2", To: "data/hard3"}, "ok"},
		{Op{Kind: Lstat, Path: "data/hard3"}, "ok: reg 0600 0:0 size 7 nlink 2"},
		{Op{Kind: Create, Path: ".wh.x", Mode: 0o644}, "ok"},
		{Op{Kind: Readdir, Path: "."}, `ok: [".wh.x" "abs"`},
	} {
		if got := Apply(merged, tc.op).String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%d: Apply(overlay, %v) = %s, want %s", i, tc.op, got, tc.want)
		}
	}
}
