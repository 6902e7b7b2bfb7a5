package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/fusefs"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// memSource serves frames from blobs in memory.
type memSource map[digest.Digest][]byte

func (m memSource) Frame(ctx context.Context, x *index.Index, i int) ([]byte, error) {
	return x.DecodeFrameIn(m[x.Layer], i)
}

// TestOverlayOfLazyLayersMatchesUnpack mounts every layer alone, in
// overlayfs' lower form, stacks them with kernel overlayfs as the
// snapshotter's mounts do, and compares the result with the layers
// unpacked into a plain directory.
func TestOverlayOfLazyLayersMatchesUnpack(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	log, _ := newLog(t)
	mt := time.Unix(1700000100, 0)
	l1 := testutil.Tar(t, []testutil.File{
		{Path: "a/"}, {Path: "a/keep", Data: []byte("keep\n")}, {Path: "a/gone", Data: []byte("gone\n")},
		{Path: "a/sub/"}, {Path: "a/sub/x", Data: []byte("x")}, {Path: "a/sub/y", Data: []byte("y")},
		{Path: "opq/", Mode: 0o750}, {Path: "opq/old", Data: []byte("old")}, {Path: "opq/deep/"}, {Path: "opq/deep/y", Size: 300 << 10, Seed: 7},
		{Path: "link", Type: tar.TypeSymlink, Linkname: "a/keep"},
		{Path: "hard1", Data: []byte("hard")}, {Path: "hard2", Type: tar.TypeLink, Linkname: "hard1"},
		{Path: "dev/"}, {Path: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Path: "fifo", Type: tar.TypeFifo},
		{Path: "x/", Xattrs: map[string]string{"user.k": "v"}},
		{Path: "replaced", Data: []byte("file first")},
	})
	l2 := testutil.Tar(t, []testutil.File{
		{Path: "a/", ModTime: mt}, {Path: "a/.wh.gone"}, {Path: "a/new", Data: []byte("new\n")},
		{Path: "a/sub/", ModTime: mt}, {Path: "a/sub/.wh.x"},
		{Path: "opq/", Mode: 0o700, ModTime: mt}, {Path: "opq/.wh..wh..opq"}, {Path: "opq/fresh", Data: []byte("fresh")},
		{Path: "replaced/", ModTime: mt}, {Path: "replaced/in", Data: []byte("in")},
		{Path: ".wh.fifo"},
	})
	blobs := [][]byte{testutil.Gzip(t, l1, 6), testutil.Gzip(t, l2, 6)}

	src := memSource{}
	var lowers []string
	for i, b := range blobs {
		d := digest.FromBytes(b)
		src[d] = b
		x, err := index.Build(t.Context(), d, bytes.NewReader(b), index.BuildOptions{Span: 64 << 10})
		if err != nil {
			t.Fatalf("index.Build(layer %d): %v", i, err)
		}
		lower, _ := overlayLower(x)
		dir := t.TempDir()
		m, err := fusefs.MountLayers(dir, []*index.Index{lower}, src, fusefs.Config{Logger: log})
		if err != nil {
			t.Fatalf("MountLayers(layer %d): %v", i, err)
		}
		t.Cleanup(func() {
			if err := m.Unmount(); err != nil {
				t.Errorf("Unmount: %v", err)
			}
		})
		lowers = append([]string{dir}, lowers...) // nearest first
	}
	merged := t.TempDir()
	opts := "lowerdir=" + strings.Join(lowers, ":")
	if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, 0); err != nil {
			t.Errorf("unmount overlay: %v", err)
		}
	})

	want := filepath.Join(t.TempDir(), "want")
	testutil.Unpack(t, want, [][]byte{l1, l2})
	testutil.CompareTreesWith(t, want, merged, testutil.CompareOptions{IgnoreRootMeta: true})
}
