package testutil

import (
	"archive/tar"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestUnpackLayerSemantics(t *testing.T) {
	needRoot(t)
	t1, t2, t3 := time.Unix(1000, 0), time.Unix(2000, 5), time.Unix(3000, 0)
	l1 := []File{
		{Path: "a/", ModTime: t1},
		{Path: "a/f1", Data: []byte("one")},
		{Path: "a/f2", Data: []byte("two")},
		{Path: "a/sub/", ModTime: t1},
		{Path: "a/sub/deep", Data: []byte("deep")},
		{Path: "b/", Mode: 0o700, UID: 1, GID: 2, ModTime: t1},
		{Path: "b/keep", Data: []byte("keep"), Mode: 0o4755},
		{Path: "b/gone", Data: []byte("gone")},
		{Path: "c", Data: []byte("c-file")},
		{Path: "d/", ModTime: t1},
		{Path: "d/x", Data: []byte("x")},
		{Path: "e", Type: tar.TypeSymlink, Linkname: "a/f1"},
		{Path: "s", Type: tar.TypeSymlink, Linkname: "target", UID: 3, GID: 4, ModTime: time.Unix(1000, 7)},
		{Path: "h", Data: []byte("hard"), Mode: 0o600, ModTime: t1},
		{Path: "h2", Type: tar.TypeLink, Linkname: "h"},
		{Path: "k", Data: []byte("kk")},
		{Path: "k2", Type: tar.TypeLink, Linkname: "./k"},
		{Path: "imp/licit/file", Data: []byte("i")},
		{Path: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Path: "p", Type: tar.TypeFifo, Mode: 0o640},
		{Path: "xa", Data: []byte("x"), Xattrs: map[string]string{"user.k": "v", "trusted.t": "w"}},
	}
	l2 := []File{
		{Path: "a/", Mode: 0o750, ModTime: t2}, // before its opaque marker: order in the layer does not matter
		{Path: "a/.wh..wh..opq"},
		{Path: "a/new", Data: []byte("new")},
		{Path: "b/.wh.gone"},
		{Path: "c/", ModTime: t1},
		{Path: "c/inside", Data: []byte("in")},
		{Path: "d", Data: []byte("d-file")},
		{Path: "e", Data: []byte("e-file")},
		{Path: "h", Data: []byte("new h")},
		{Path: "x/.wh.nothing"},
		{Path: ".wh.missing"},
		{Path: "b/.wh..wh.plnk"},
	}
	l3 := []File{
		{Path: ".wh.imp"},
		{Path: "imp/again", Data: []byte("again")},
		{Path: "c/", Mode: 0o711, UID: 5, ModTime: t3},
		{Path: ".wh.z"},
		{Path: "z", Data: []byte("z")},
		{Path: "./", Mode: 0o751, ModTime: t3},
	}
	dst := t.TempDir()
	Unpack(t, dst, [][]byte{Tar(t, l1), Tar(t, l2), Tar(t, l3)})

	want := []string{
		`. dir 0751 0:0 3000`,
		`a dir 0750 0:0 2000.000000005`,
		`a/new file 0644 0:0 1700000000 "new"`,
		`b dir 0700 1:2 1000`,
		`b/keep file 4755 0:0 1700000000 "keep"`,
		`c dir 0711 5:0 3000`,
		`c/inside file 0644 0:0 1700000000 "in"`,
		`d file 0644 0:0 1700000000 "d-file"`,
		`dev dir 0755 0:0 0`,
		`dev/null char 0666 0:0 1700000000 dev 1:3`,
		`e file 0644 0:0 1700000000 "e-file"`,
		`h file 0644 0:0 1700000000 "new h"`,
		`h2 file 0600 0:0 1000 "hard"`,
		`imp dir 0755 0:0 0`,
		`imp/again file 0644 0:0 1700000000 "again"`,
		`k file 0644 0:0 1700000000 "kk" nlink 2`,
		`k2 file 0644 0:0 1700000000 "kk" nlink 2`,
		`p fifo 0640 0:0 1700000000`,
		`s symlink 3:4 1000.000000007 -> target`,
		`x dir 0755 0:0 0`,
		`xa file 0644 0:0 1700000000 "x" xattr trusted.t=w xattr user.k=v`,
		`z file 0644 0:0 1700000000 "z"`,
	}
	got := describe(t, dst)
	if !slices.Equal(got, want) {
		t.Errorf("Unpack result differs (- want, + got):%s", diffLines(want, got))
	}
}

func TestUnpackRefusesEscapes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []File
		want  string
	}{
		{"dotdot", []File{{Path: "../evil", Data: []byte("x")}}, "leaves the root"},
		{"nested dotdot", []File{{Path: "a/../../evil", Data: []byte("x")}}, "leaves the root"},
		{"hard link target", []File{{Path: "l", Type: tar.TypeLink, Linkname: "../../etc/passwd"}}, "leaves the root"},
		{"hard link to nothing", []File{{Path: "l", Type: tar.TypeLink, Linkname: "nothing"}}, "not a file extracted before it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "root")
			f := runFake(t, func(tb testing.TB) { Unpack(tb, dst, [][]byte{Tar(t, tc.files)}) })
			if !f.fatal || len(f.errs) != 1 || !strings.Contains(f.errs[0], tc.want) {
				t.Errorf("Unpack(%s) failures = %q, want one containing %q", tc.name, f.errs, tc.want)
			}
			if _, err := os.Stat(filepath.Join(parent, "evil")); err == nil {
				t.Errorf("Unpack(%s) wrote outside dst", tc.name)
			}
		})
	}
}

func TestUnpackAbsoluteAndSymlinkedParents(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("v"), 0o644); err != nil {
		t.Fatal(err)
	}
	l1 := Tar(t, []File{{Path: "lnk", Type: tar.TypeSymlink, Linkname: outside}, {Path: "/abs/file", Data: []byte("a")}})
	l2 := Tar(t, []File{{Path: "lnk/.wh.victim"}, {Path: "lnk/new", Data: []byte("n")}})
	dst := t.TempDir()
	Unpack(t, dst, [][]byte{l1, l2})
	if _, err := os.Stat(filepath.Join(outside, "victim")); err != nil {
		t.Errorf("whiteout behind a symlinked parent removed a file outside dst: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Errorf("entry behind a symlinked parent was written outside dst")
	}
	// The symlinked parent is followed inside dst, as containerd resolves
	// it: the absolute target names a directory under dst.
	in := strings.TrimPrefix(outside, "/")
	want := []string{
		`. dir 0755 0:0 0`,
		`abs dir 0755 0:0 0`,
		`abs/file file 0644 0:0 1700000000 "a"`,
		`lnk symlink 0:0 1700000000 -> ` + outside,
	}
	for p := path.Dir(in); p != "."; p = path.Dir(p) {
		want = append(want, p+` dir 0755 0:0 0`)
	}
	want = append(want, in+` dir 0755 0:0 0`, in+`/new file 0644 0:0 1700000000 "n"`)
	slices.Sort(want)
	if got := describe(t, dst); !slices.Equal(got, want) {
		t.Errorf("Unpack result differs (- want, + got):%s", diffLines(want, got))
	}
}

func TestUnpackLayersCompressed(t *testing.T) {
	needRoot(t)
	files := []File{
		{Path: "etc/", Mode: 0o755},
		{Path: "etc/hosts", Data: []byte("127.0.0.1 localhost\n")},
		{Path: "big", Size: 3<<20 + 5, Seed: 7},
	}
	plain := t.TempDir()
	Unpack(t, plain, [][]byte{Tar(t, files)})
	for _, mt := range []types.MediaType{types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer, ""} {
		var l Layer
		if mt == "" {
			l = Layer{Blob: Gzip(t, Tar(t, files), 1)} // detected
		} else {
			l = WriteLayer(t, files, mt)
		}
		dst := t.TempDir()
		UnpackLayers(t, dst, []Layer{l})
		CompareTrees(t, plain, dst)
	}
}
