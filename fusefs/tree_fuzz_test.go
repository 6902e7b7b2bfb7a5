package fusefs

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// fuzzPath picks one of the 39 paths of depth 1 to 3 over the names a, b, c.
func fuzzPath(b byte) string {
	depth, n := 1+int(b)%3, int(b)/3
	var parts []string
	for range depth {
		parts = append(parts, string(rune('a'+n%3)))
		n /= 3
	}
	return strings.Join(parts, "/")
}

// fuzzLayers turns data into layers, two bytes an entry: the first picks
// the kind (or starts a new layer), the second the path. Symlinks are all
// named "l" and never sit on the way to another entry, so the OCI rules
// alone, without symlink resolution, tell the result.
func fuzzLayers(data []byte) []*index.Index {
	layers := []*index.Index{{Layer: "sha256:0"}}
	for i := 0; i+1 < len(data); i += 2 {
		x := layers[len(layers)-1]
		p := fuzzPath(data[i+1])
		dir, base := path.Split(p)
		e := index.Entry{Mode: 0o644}
		switch data[i] % 8 {
		case 0:
			layers = append(layers, &index.Index{Layer: digest.Digest("sha256:" + strconv.Itoa(len(layers)))})
			continue
		case 1, 2:
			e.Path, e.Type, e.Mode = p, index.TypeDir, 0o755
		case 3, 4:
			e.Path, e.Type = p, index.TypeReg
		case 5:
			e.Path, e.Type, e.Linkname = dir+"l", index.TypeSymlink, base
		case 6:
			e.Path, e.Type = dir+whiteoutPrefix+base, index.TypeReg
		case 7:
			e.Path, e.Type = p+"/"+opaqueMarker, index.TypeReg
			if data[i+1] >= 243 {
				e.Path = opaqueMarker
			}
		}
		x.Entries = append(x.Entries, e)
	}
	return layers
}

// ociMerge is the reference: the OCI image layer rules over a map from
// path to "kind layer", parent directories created ("implicit") as needed.
func ociMerge(layers []*index.Index) map[string]string {
	fs := map[string]string{}
	removeTree := func(p string) {
		for q := range fs {
			if q == p || strings.HasPrefix(q, p+"/") {
				delete(fs, q)
			}
		}
	}
	isDir := func(p string) bool {
		k, ok := fs[p]
		return p == "" || ok && (strings.HasPrefix(k, "dir ") || k == "implicit")
	}
	for li, x := range layers {
		for _, e := range x.Entries {
			dir, base := path.Split(e.Path)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == opaqueMarker:
				if isDir(dir) {
					for q := range fs {
						if dir == "" || strings.HasPrefix(q, dir+"/") {
							delete(fs, q)
						}
					}
				}
			case strings.HasPrefix(base, whiteoutPrefix):
				if isDir(dir) {
					removeTree(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)))
				}
			}
		}
		for _, e := range x.Entries {
			if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
				continue
			}
			parts := strings.Split(e.Path, "/")
			for i := 1; i < len(parts); i++ {
				if p := strings.Join(parts[:i], "/"); !isDir(p) {
					fs[p] = "implicit"
				}
			}
			if e.Type == index.TypeDir && isDir(e.Path) {
				fs[e.Path] = fmt.Sprintf("dir %d", li)
				continue
			}
			removeTree(e.Path)
			fs[e.Path] = fmt.Sprintf("%s %d", e.Type, li)
		}
	}
	return fs
}

// FuzzMergeLayers checks the union of layers against ociMerge: whiteouts
// remove a lower path and all below it, an opaque marker empties its lower
// directory and only that, a layer's own entries survive its whiteouts, no
// whiteout name is visible; inode numbers are distinct and link counts
// right.
func FuzzMergeLayers(f *testing.F) {
	f.Add([]byte{1, 0, 3, 3, 0, 0, 6, 0, 3, 9})        // d a; f a/a | .wh.a; f a/b
	f.Add([]byte{1, 0, 3, 3, 3, 4, 0, 0, 7, 0, 3, 12}) // opaque a keeps the upper a/?
	f.Add([]byte{3, 0, 0, 0, 3, 3, 5, 3, 0, 0, 6, 3})
	f.Add([]byte{1, 1, 3, 4, 0, 0, 7, 250, 3, 13, 0, 0, 6, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 200 {
			return
		}
		layers := fuzzLayers(data)
		tr, err := mergeLayers(layers, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatalf("mergeLayers: %v", err)
		}
		got := map[string]string{}
		inos := map[uint64]bool{1: true}
		var walk func(prefix string, n *node)
		walk = func(prefix string, n *node) {
			subdirs := 0
			for name, c := range n.children {
				p := prefix + name
				if strings.HasPrefix(name, whiteoutPrefix) {
					t.Errorf("whiteout name %s visible", p)
				}
				if inos[c.ino] {
					t.Errorf("%s: inode %d given twice", p, c.ino)
				}
				inos[c.ino] = true
				if c.entry == nil {
					got[p] = "implicit"
				} else {
					got[p] = fmt.Sprintf("%s %d", c.entry.Type, c.layer)
				}
				if c.isDir() {
					subdirs++
					walk(p+"/", c)
				} else if c.nlink != 1 {
					t.Errorf("%s: nlink %d, want 1", p, c.nlink)
				}
			}
			if n.nlink != uint32(2+subdirs) {
				t.Errorf("%s: nlink %d, want %d", prefix, n.nlink, 2+subdirs)
			}
		}
		walk("", tr.root)
		if tr.nodes != len(got)+1 {
			t.Errorf("tree counts %d nodes, has %d", tr.nodes, len(got)+1)
		}
		want := ociMerge(layers)
		if !maps.Equal(got, want) {
			t.Fatalf("layers:\n%s\nmergeLayers:\n%s\nOCI rules:\n%s", showLayers(layers), showMap(got), showMap(want))
		}
	})
}

func showMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, k+" "+v)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func showLayers(layers []*index.Index) string {
	var b strings.Builder
	for i, x := range layers {
		fmt.Fprintf(&b, "layer %d:", i)
		for _, e := range x.Entries {
			fmt.Fprintf(&b, " %s:%s", e.Type, e.Path)
			if e.Linkname != "" {
				fmt.Fprintf(&b, ">%s", e.Linkname)
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// Names and places of the link graphs FuzzResolveDir builds.
var (
	fuzzDirs      = []string{"a", "b", "c", "a/a", "a/b", "b/c", "c/a", "a/b/c"}
	fuzzLinkDirs  = []string{"", "a", "b", "a/b"}
	fuzzLinkNames = []string{"l", "m"}
	fuzzNames     = []string{"a", "b", "c", "l", "m"}
)

// fuzzTarget makes a symlink target from two bytes: absolute, or
// relative with up to three leading "..", then one to three names, a ".."
// after the first of them when b1 says so (which the kernel resolves after
// the name, symlink or not).
func fuzzTarget(b0, b1 byte) string {
	var parts []string
	switch b0 % 5 {
	case 0:
		parts = append(parts, "")
	case 1, 2:
	default:
		for range int(b0%5) - 2 {
			parts = append(parts, "..")
		}
	}
	n := int(b1)
	for i := range 1 + int(b0/5)%3 {
		parts = append(parts, fuzzNames[n%len(fuzzNames)])
		n /= len(fuzzNames)
		if i == 0 && b1 >= 16 {
			parts = append(parts, "..")
		}
	}
	if b0 >= 250 {
		return "."
	}
	return strings.Join(parts, "/")
}

// FuzzResolveDir builds a random graph of directories and symlinks (into
// the root, out of it with "..", absolute, chained, cyclic) both as a
// tree and on disk, and checks that resolveDir finds the same directory as
// the kernel's openat2 with RESOLVE_IN_ROOT, or none where the kernel
// fails (a missing name, a non-directory, more than 40 links).
func FuzzResolveDir(f *testing.F) {
	f.Add(byte(0xff), []byte{0, 1, 5, 0}, []byte{0, 3})                      // links at the root
	f.Add(byte(0x0f), []byte{3, 0, 5, 6, 4, 2}, []byte{3, 3, 1})             // chains through ..
	f.Add(byte(0x01), []byte{1, 3, 1, 4}, []byte{3, 3, 3})                   // l -> l, m -> m: loops
	f.Add(byte(0xa5), []byte{0, 0, 250, 0, 6, 18, 3, 1}, []byte{0, 1, 2, 3}) // absolute and "."
	f.Fuzz(func(t *testing.T, dirMask byte, links, query []byte) {
		if len(links) > 16 || len(query) > 8 {
			return
		}
		x := &index.Index{}
		root := t.TempDir()
		have := map[string]bool{}
		for i, d := range fuzzDirs {
			if dirMask&(1<<i) == 0 || !have[path.Dir(d)] && path.Dir(d) != "." {
				continue
			}
			have[d] = true
			x.Entries = append(x.Entries, index.Entry{Path: d, Type: index.TypeDir, Mode: 0o755})
			if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i+1 < len(links); i += 2 {
			slot := int(links[i+1]) % (len(fuzzLinkDirs) * len(fuzzLinkNames))
			d := fuzzLinkDirs[slot/len(fuzzLinkNames)]
			if d != "" && !have[d] {
				continue
			}
			p := path.Join(d, fuzzLinkNames[slot%len(fuzzLinkNames)])
			if have[p] {
				continue
			}
			have[p] = true
			target := fuzzTarget(links[i], links[i+1]/8)
			x.Entries = append(x.Entries, index.Entry{Path: p, Type: index.TypeSymlink, Mode: 0o777, Linkname: target})
			if err := os.Symlink(target, filepath.Join(root, p)); err != nil {
				t.Fatal(err)
			}
		}
		var q []string
		for _, b := range query {
			q = append(q, fuzzNames[int(b)%len(fuzzNames)])
		}
		dir := strings.Join(q, "/")

		tr, err := mergeLayers([]*index.Index{x}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		paths := map[*node]string{}
		var walk func(prefix string, n *node)
		walk = func(prefix string, n *node) {
			paths[n] = strings.TrimSuffix(prefix, "/")
			for name, c := range n.children {
				if c.isDir() {
					walk(prefix+name+"/", c)
				}
			}
		}
		walk("", tr.root)
		got, gotOK := "", false
		if n := tr.resolveDir(dir, false); n != nil {
			var ok bool
			if got, ok = paths[n]; !ok {
				t.Fatalf("resolveDir(%q) returned a directory outside the tree", dir)
			}
			gotOK = true
		}

		want, wantOK := kernelResolve(t, root, dir)
		if got != want || gotOK != wantOK {
			t.Fatalf("graph %s; resolveDir(%q) = %q, %v; the kernel resolves %q, %v", showLayers([]*index.Index{x}), dir, got, gotOK, want, wantOK)
		}
		if n := tr.resolveDir(dir, true); n == nil || !n.isDir() {
			t.Fatalf("resolveDir(%q, create) = %v", dir, n)
		}
	})
}

// kernelResolve opens dir under root with RESOLVE_IN_ROOT and returns
// the directory it lands in, relative to root.
func kernelResolve(t *testing.T, root, dir string) (string, bool) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(rfd, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		t.Fatalf("the kernel resolved %q under %s to %s", dir, root, p)
	}
	if rel == "." {
		rel = ""
	}
	return rel, true
}
