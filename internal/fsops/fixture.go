package fsops

import (
	"archive/tar"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// Layers returns two small image layers, bottom first, with one of
// everything copy-on-write has to get right: files of several sizes (one of
// 200 KiB), setuid and sticky bits, owners no passwd names, nanosecond
// mtimes, user xattrs on files and directories, a hard-link pair, symlinks
// (relative, to a directory, dangling, absolute, a loop, one with ".."),
// a fifo, character and block devices (with local-use numbers no driver
// has), empty and nested directories; and in the top layer a replaced
// file, whiteouts of a file and of a directory and an opaque directory.
//
// Every layer that has something in a directory has an entry for the
// directory too, with the same metadata, so that overlayfs (topmost layer
// wins) and OCI (last entry wins) agree on it.
func Layers() [][]testutil.File {
	t0 := time.Unix(1_600_000_000, 0)
	at := func(s, ns int64) time.Time { return t0.Add(time.Duration(s)*time.Second + time.Duration(ns)) }
	dir := func(p string, mode int64, mt time.Time) testutil.File {
		return testutil.File{Path: p, Type: tar.TypeDir, Mode: mode, ModTime: mt}
	}
	etc := dir("etc/", 0o755, at(1, 1))
	bin := dir("bin/", 0o755, at(2, 2))
	usr, usrLib := dir("usr/", 0o755, at(3, 3)), dir("usr/lib/", 0o755, at(4, 4))
	data := testutil.File{Path: "data/", Mode: 0o1777, ModTime: at(5, 5), Xattrs: map[string]string{"user.dir": "data"}}
	return [][]testutil.File{{
		etc,
		{Path: "etc/hosts", Data: []byte("127.0.0.1 localhost\n"), ModTime: at(10, 123)},
		{Path: "etc/conf", Mode: 0o640, GID: 42, Data: []byte("key = value\n"), Xattrs: map[string]string{"user.origin": "lower0", "user.empty": ""}},
		bin,
		{Path: "bin/tool", Mode: 0o755, Size: 4096, Seed: 1},
		{Path: "bin/suid", Mode: 0o4755, Size: 100, Seed: 2},
		usr, usrLib,
		{Path: "usr/lib/libx.so.1", Size: 64 << 10, Seed: 3},
		{Path: "usr/lib/libx.so", Type: tar.TypeSymlink, Linkname: "libx.so.1", ModTime: at(11, 999_999_999)},
		data,
		{Path: "data/big", Size: 200 << 10, Seed: 4},
		{Path: "data/hard1", Data: []byte("shared\n"), Mode: 0o600},
		{Path: "data/hard2", Type: tar.TypeLink, Linkname: "data/hard1"},
		{Path: "data/empty", Data: []byte{}},
		dir("gone/", 0o755, at(6, 0)),
		{Path: "gone/a", Data: []byte("a")},
		dir("gone/sub/", 0o700, at(6, 1)),
		{Path: "gone/sub/b", Data: []byte("b")},
		dir("old/", 0o755, at(7, 0)),
		{Path: "old/x", Data: []byte("x")},
		dir("old/y/", 0o755, at(7, 1)),
		{Path: "old/y/z", Data: []byte("z")},
		{Path: "del-me", Data: []byte("to be whited out")},
		{Path: "fifo", Type: tar.TypeFifo, Mode: 0o620},
		dir("dev/", 0o755, at(8, 0)),
		{Path: "dev/chr", Type: tar.TypeChar, Devmajor: 240, Devminor: 1, Mode: 0o600},
		{Path: "dev/blk", Type: tar.TypeBlock, Devmajor: 240, Devminor: 2, Mode: 0o600},
		dir("emptydir/", 0o750, at(9, 0)),
		{Path: "owned", UID: 70000, GID: 123456, Data: []byte("nobody's"), ModTime: time.Unix(1_500_000_000, 123_456_789)},
		dir("deep/", 0o755, at(12, 0)), dir("deep/a/", 0o755, at(12, 1)),
		dir("deep/a/b/", 0o755, at(12, 2)), dir("deep/a/b/c/", 0o755, at(12, 3)),
		{Path: "deep/a/b/c/f", Data: []byte("deep")},
		{Path: "deep/a/up", Type: tar.TypeSymlink, Linkname: "../../etc"},
		{Path: "link-dir", Type: tar.TypeSymlink, Linkname: "usr/lib"},
		{Path: "dangling", Type: tar.TypeSymlink, Linkname: "nowhere"},
		{Path: "abs", Type: tar.TypeSymlink, Linkname: "/etc/hosts"},
		{Path: "loop", Type: tar.TypeSymlink, Linkname: "loop"},
	}, {
		etc,
		{Path: "etc/hosts", Data: []byte("127.0.0.1 localhost\n::1 localhost\n"), ModTime: at(20, 0)},
		{Path: "etc/new.conf", Data: []byte("new\n")},
		bin,
		{Path: "bin/tool2", Mode: 0o755, Size: 5000, Seed: 5},
		{Path: "bin/.wh.suid"},
		{Path: ".wh.del-me"},
		{Path: ".wh.gone"},
		dir("old/", 0o750, at(21, 0)),
		{Path: "old/.wh..wh..opq"},
		{Path: "old/x2", Data: []byte("x2")},
		usr, usrLib,
		{Path: "usr/lib/libx.so.1", Size: 70 << 10, Seed: 6},
		data,
		{Path: "data/top", Data: []byte("top"), Xattrs: map[string]string{"user.layer": "1"}},
		dir("top-only/", 0o755, at(22, 0)),
		{Path: "top-only/file", Data: []byte("top only")},
	}}
}

// LayerTars returns Layers as uncompressed tars.
func LayerTars(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, files := range Layers() {
		out = append(out, testutil.Tar(t, files))
	}
	return out
}
