package testutil

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sampleFiles is a tree with one of everything Diff compares.
var sampleFiles = []File{
	{Path: "dir/", Mode: 0o2750, UID: 7, GID: 8, ModTime: time.Unix(1000, 1)},
	{Path: "dir/file", Data: []byte("hello"), ModTime: time.Unix(1001, 2)},
	{Path: "dir/other", Data: []byte("other content")},
	{Path: "dir/twin", Data: []byte("hello"), ModTime: time.Unix(1001, 2)},
	{Path: "dir/sub/", ModTime: time.Unix(1002, 0)},
	{Path: "dir/sub/deep", Data: []byte("deep"), Mode: 0o6755},
	{Path: "link", Type: tar.TypeSymlink, Linkname: "dir/file", ModTime: time.Unix(1003, 3)},
	{Path: "hard1", Data: []byte("shared"), Mode: 0o4755},
	{Path: "hard2", Type: tar.TypeLink, Linkname: "hard1"},
	{Path: "null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
	{Path: "fifo", Type: tar.TypeFifo},
	{Path: "xa", Data: []byte("x"), Xattrs: map[string]string{"user.a": "1", "trusted.b": "2"}},
	{Path: "tmp/", Mode: 0o1777},
}

// sampleTree unpacks sampleFiles into a new directory.
func sampleTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	Unpack(t, dir, [][]byte{Tar(t, sampleFiles)})
	return dir
}

// keepTimes restores the mtimes of the given paths after fn, so that a
// mutation changes exactly one field.
func keepTimes(t *testing.T, paths []string, fn func()) {
	t.Helper()
	saved := map[string]unix.Timespec{}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		saved[p] = st.Mtim
	}
	fn()
	for p, ts := range saved {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestDiffIdenticalTrees(t *testing.T) {
	needRoot(t)
	a, b := sampleTree(t), sampleTree(t)
	diffs, err := Diff(a, b, CompareOptions{})
	if err != nil || len(diffs) != 0 {
		t.Errorf("Diff(same layers twice) = %q, %v, want none", diffs, err)
	}
	CompareTrees(t, a, b)
}

func TestDiffReportsEachField(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name   string
		mutate func(t *testing.T, root string)
		want   string // the only difference expected
		opts   CompareOptions
	}{
		{"missing", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() { check(t, os.Remove(r+"/dir/other")) })
		}, "dir/other: missing (want regular file)", CompareOptions{}},
		{"missing subtree reported once", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() { check(t, os.RemoveAll(r+"/dir/sub")) })
		}, "dir/sub: missing (want directory)", CompareOptions{}},
		{"extra", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() { check(t, os.WriteFile(r+"/dir/new", nil, 0o644)) })
		}, "dir/new: extra (got regular file)", CompareOptions{}},
		{"type", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() {
				check(t, os.Remove(r+"/dir/other"))
				check(t, os.Mkdir(r+"/dir/other", 0o755))
			})
		}, "dir/other: type: want regular file, got directory", CompareOptions{}},
		{"mode", func(t *testing.T, r string) { check(t, os.Chmod(r+"/dir/other", 0o600)) },
			"dir/other: mode: want 0644, got 0600", CompareOptions{}},
		{"setuid and setgid bits", func(t *testing.T, r string) { check(t, unix.Chmod(r+"/dir/sub/deep", 0o755)) },
			"dir/sub/deep: mode: want 6755, got 0755", CompareOptions{}},
		{"sticky bit", func(t *testing.T, r string) { check(t, unix.Chmod(r+"/tmp", 0o777)) },
			"tmp: mode: want 1777, got 0777", CompareOptions{}},
		{"uid", func(t *testing.T, r string) { check(t, os.Lchown(r+"/link", 5, 0)) },
			"link: uid: want 0, got 5", CompareOptions{}},
		{"gid", func(t *testing.T, r string) {
			check(t, os.Lchown(r+"/dir", 7, 9))
			check(t, unix.Chmod(r+"/dir", 0o2750)) // chown cleared setgid
		}, "dir: gid: want 8, got 9", CompareOptions{}},
		{"size", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir/other"}, func() { check(t, os.WriteFile(r+"/dir/other", []byte("longer other content"), 0)) })
		}, "dir/other: size: want 13, got 20", CompareOptions{}},
		{"content", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir/other"}, func() { check(t, os.WriteFile(r+"/dir/other", []byte("OTHER content"), 0)) })
		}, "dir/other: content: want sha256", CompareOptions{}},
		{"mtime seconds", func(t *testing.T, r string) {
			check(t, os.Chtimes(r+"/dir/other", time.Unix(5, 0), time.Unix(5, 0)))
		}, "dir/other: mtime: want 2023-11-14T22:13:20Z, got 1970-01-01T00:00:05Z", CompareOptions{}},
		{"mtime nanoseconds", func(t *testing.T, r string) {
			check(t, os.Chtimes(r+"/dir/file", time.Unix(1001, 3), time.Unix(1001, 3)))
		}, "dir/file: mtime: want 1970-01-01T00:16:41.000000002Z, got 1970-01-01T00:16:41.000000003Z", CompareOptions{}},
		{"mtime nanoseconds at second granularity", func(t *testing.T, r string) {
			check(t, os.Chtimes(r+"/dir/file", time.Unix(1001, 3), time.Unix(1001, 3)))
		}, "", CompareOptions{MtimeGranularity: time.Second}},
		{"symlink mtime", func(t *testing.T, r string) {
			ts := unix.NsecToTimespec(1003_000_000_004)
			check(t, unix.UtimesNanoAt(unix.AT_FDCWD, r+"/link", []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		}, "link: mtime: want 1970-01-01T00:16:43.000000003Z, got 1970-01-01T00:16:43.000000004Z", CompareOptions{}},
		{"symlink target", func(t *testing.T, r string) {
			keepTimes(t, []string{r}, func() {
				check(t, os.Remove(r+"/link"))
				check(t, os.Symlink("dir/twin", r+"/link"))
			})
			ts := unix.Timespec{Sec: 1003, Nsec: 3}
			check(t, unix.UtimesNanoAt(unix.AT_FDCWD, r+"/link", []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
		}, `link: symlink target: want "dir/file", got "dir/twin"`, CompareOptions{}},
		{"rdev", func(t *testing.T, r string) {
			keepTimes(t, []string{r}, func() {
				check(t, os.Remove(r+"/null"))
				check(t, unix.Mknod(r+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
			})
			check(t, unix.Chmod(r+"/null", 0o666))
			check(t, os.Chtimes(r+"/null", DefaultModTime, DefaultModTime))
		}, "null: rdev: want 1:3, got 1:5", CompareOptions{}},
		{"xattr value", func(t *testing.T, r string) { check(t, unix.Lsetxattr(r+"/xa", "user.a", []byte("9"), 0)) },
			`xa: xattr user.a: want "1", got "9"`, CompareOptions{}},
		{"xattr missing", func(t *testing.T, r string) { check(t, unix.Lremovexattr(r+"/xa", "trusted.b")) },
			`xa: xattr trusted.b: want "2", got none`, CompareOptions{}},
		{"xattr extra", func(t *testing.T, r string) { check(t, unix.Lsetxattr(r+"/dir", "user.new", []byte("n"), 0)) },
			`dir: xattr user.new: want none, got "n"`, CompareOptions{}},
		{"xattr ignored", func(t *testing.T, r string) { check(t, unix.Lsetxattr(r+"/dir", "user.new", []byte("n"), 0)) },
			"", CompareOptions{IgnoreXattrs: []string{"user.new"}}},
		{"hard link broken", func(t *testing.T, r string) {
			keepTimes(t, []string{r}, func() {
				check(t, os.Remove(r+"/hard2"))
				check(t, os.WriteFile(r+"/hard2", []byte("shared"), 0))
			})
			check(t, unix.Chmod(r+"/hard2", 0o4755))
			check(t, os.Chtimes(r+"/hard2", DefaultModTime, DefaultModTime))
		}, "hard1: hard links: want [hard1 hard2], got none (hard1 alone)", CompareOptions{}},
		{"hard link added", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() {
				check(t, os.Remove(r+"/dir/twin"))
				check(t, os.Link(r+"/dir/file", r+"/dir/twin"))
			})
		}, "dir/file: hard links: want none (dir/file alone), got [dir/file dir/twin]", CompareOptions{}},
		{"ignored path", func(t *testing.T, r string) {
			keepTimes(t, []string{r + "/dir"}, func() { check(t, os.RemoveAll(r+"/dir/sub")) })
		}, "", CompareOptions{IgnorePaths: []string{"dir/sub"}}},
		{"root metadata", func(t *testing.T, r string) { check(t, unix.Chmod(r, 0o700)) },
			".: mode: want 0755, got 0700", CompareOptions{}},
		{"root metadata ignored", func(t *testing.T, r string) { check(t, unix.Chmod(r, 0o700)) },
			"", CompareOptions{IgnoreRootMeta: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, got := sampleTree(t), sampleTree(t)
			tc.mutate(t, got)
			diffs, err := Diff(want, got, tc.opts)
			if err != nil {
				t.Fatalf("Diff: %v", err)
			}
			switch {
			case tc.want == "" && len(diffs) != 0:
				t.Errorf("Diff = %q, want none", diffs)
			case tc.want != "" && (len(diffs) != 1 || !strings.HasPrefix(diffs[0], tc.want)):
				t.Errorf("Diff = %q, want exactly one starting with %q", diffs, tc.want)
			}
		})
	}
}

func TestCompareTreesFailsAndCaps(t *testing.T) {
	needRoot(t)
	want, got := t.TempDir(), t.TempDir()
	for i := range 60 {
		check(t, os.WriteFile(filepath.Join(want, fmt.Sprintf("f%02d", i)), []byte("x"), 0o644))
	}
	f := runFake(t, func(tb testing.TB) { CompareTreesWith(tb, want, got, CompareOptions{IgnoreRootMeta: true}) })
	if len(f.errs) != 1 {
		t.Fatalf("CompareTrees reported %d failures, want 1: %q", len(f.errs), f.errs)
	}
	msg := f.errs[0]
	if !strings.Contains(msg, "60 differences") || !strings.Contains(msg, "f49: missing") ||
		strings.Contains(msg, "f50: missing") || !strings.Contains(msg, "and 10 more") {
		t.Errorf("CompareTrees message = %q, want 60 differences, the first 50 listed", msg)
	}
	f = runFake(t, func(tb testing.TB) { CompareTrees(tb, want, want) })
	if len(f.errs) != 0 {
		t.Errorf("CompareTrees(same dir) = %q, want no failure", f.errs)
	}
}

func TestTarDirRoundTrip(t *testing.T) {
	needRoot(t)
	src := sampleTree(t)
	// A file with nanoseconds, a long name and an inode linked three times.
	long := strings.Repeat("long-name-", 15)
	check(t, os.WriteFile(filepath.Join(src, "dir", long), []byte("l"), 0o640))
	check(t, os.Link(filepath.Join(src, "hard1"), filepath.Join(src, "dir", "hard3")))
	check(t, os.Chtimes(filepath.Join(src, "dir"), time.Unix(1000, 1), time.Unix(1000, 1)))

	dst := t.TempDir()
	Unpack(t, dst, [][]byte{TarDir(t, src)})
	CompareTreesWith(t, src, dst, CompareOptions{IgnoreRootMeta: true})

	// Through a streamed layer file too.
	l := WriteLayerDir(t, src, "application/vnd.oci.image.layer.v1.tar+gzip")
	dst2 := t.TempDir()
	UnpackLayers(t, dst2, []Layer{l})
	CompareTreesWith(t, src, dst2, CompareOptions{IgnoreRootMeta: true})
}
