package fusefs

import (
	"fmt"
	"log/slog"
	"path"
	"strings"

	"github.com/lazyfs/lazyfs/index"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// node is one file of the merged tree. Hard links are one node reachable
// under several names.
type node struct {
	entry    *index.Entry // metadata and content; nil for a directory no layer names
	layer    int          // which layer's index entry and content belong to
	ino      uint64
	nlink    uint32
	children map[string]*node // directories only
}

func (n *node) isDir() bool { return n.children != nil }

// tree is the union of an image's layers, bottom layer first. It does not
// change once mergeLayers has returned it.
type tree struct {
	root  *node
	nodes int
	bytes int64 // content bytes of all distinct regular files

	byIno []*node // inode number → node; [0] is nil
	// kids holds every directory's children sorted by name, directory
	// after directory: those of the directory with inode number i are
	// kids[kidsAt[i]:][:len(children)]. Listings go by position in it.
	kids   []child
	kidsAt []uint32
}

// child is a name in a directory and the node it names.
type child struct {
	name string
	n    *node
}

// sorted returns a directory's children sorted by name.
func (t *tree) sorted(dir *node) []child {
	return t.kids[t.kidsAt[dir.ino]:][:len(dir.children)]
}

// mergeLayers applies the layers' file tables in order with OCI semantics:
// a layer's whiteouts remove what lower layers put at a path (".wh.NAME")
// or in a directory (".wh..wh..opq") before its own entries are added; an
// entry replaces a lower entry of another kind and updates a lower
// directory's metadata, keeping its children.
func mergeLayers(layers []*index.Index, log *slog.Logger) (*tree, error) {
	t := &tree{root: &node{children: map[string]*node{}}}
	for li, x := range layers {
		for i := range x.Entries {
			e := &x.Entries[i]
			dir, base := path.Split(e.Path)
			if !strings.HasPrefix(base, whiteoutPrefix) {
				continue
			}
			parent := t.resolveDir(strings.TrimSuffix(dir, "/"), false)
			if parent == nil || !parent.isDir() {
				continue
			}
			if base == opaqueMarker {
				clear(parent.children)
			} else {
				delete(parent.children, strings.TrimPrefix(base, whiteoutPrefix))
			}
		}
		for i := range x.Entries {
			e := &x.Entries[i]
			if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
				continue
			}
			if err := t.add(li, e, log); err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", li, x.Layer, err)
			}
		}
	}
	t.number()
	return t, nil
}

// lookup returns the node at a cleaned relative path ("" is the root), or nil.
func (t *tree) lookup(p string) *node {
	n := t.root
	if p == "" {
		return n
	}
	for name := range strings.SplitSeq(p, "/") {
		if !n.isDir() {
			return nil
		}
		if n = n.children[name]; n == nil {
			return nil
		}
	}
	return n
}

// maxSymlinks bounds the symlinks followed while resolving one path, as
// the kernel's 40.
const maxSymlinks = 40

// parentDir returns the directory that holds p, resolved as containerd's
// fs.RootPath and docker's chrooted unpack resolve it: a symlink on the way
// (a lower layer's "bin -> usr/bin") is followed inside the root, so
// "bin/tool" lands in usr/bin. Directories no layer names are created; a
// non-directory in the way is replaced, as a later layer's directory
// replaces a lower layer's file.
func (t *tree) parentDir(p string) *node {
	return t.resolveDir(path.Dir(p), true)
}

// resolveDir returns the directory at dir (cleaned, relative; "." or "" is
// the root), following symlinks inside the root as the kernel does with
// RESOLVE_IN_ROOT: a target's names are resolved one by one, so ".." after
// a symlink leaves the directory it led to, not the link's ("m -> l/../c"
// with "l -> a/b" is a/c), and ".." at the root stays there. Without
// create it returns nil where the path does not lead to a directory.
func (t *tree) resolveDir(dir string, create bool) *node {
	names := []string{}
	if dir != "." && dir != "" {
		names = strings.Split(dir, "/")
	}
	n, at := t.root, []string{} // at: the resolved path of n, directories only
	for followed := 0; len(names) > 0; {
		name := names[0]
		names = names[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			if len(at) > 0 {
				at = at[:len(at)-1]
				n = t.walk(at)
			}
			continue
		}
		child := n.children[name]
		if child != nil && child.entry != nil && child.entry.Type == index.TypeSymlink && followed < maxSymlinks {
			followed++
			target := child.entry.Linkname
			if path.IsAbs(target) {
				n, at = t.root, at[:0]
			}
			names = append(strings.Split(target, "/"), names...)
			continue
		}
		if child == nil || !child.isDir() {
			if !create {
				return nil
			}
			child = &node{children: map[string]*node{}}
			n.children[name] = child
		}
		n, at = child, append(at, name)
	}
	return n
}

// walk returns the directory at the resolved path at (every name a
// directory, as resolveDir keeps it).
func (t *tree) walk(at []string) *node {
	n := t.root
	for _, name := range at {
		n = n.children[name]
	}
	return n
}

// lookupEntry returns the node at p with its parent directories resolved
// as parentDir does, and the last element not followed; nil if none.
func (t *tree) lookupEntry(p string) *node {
	if p == "" || p == "." {
		return t.root
	}
	parent := t.resolveDir(path.Dir(p), false)
	if parent == nil {
		return nil
	}
	return parent.children[path.Base(p)]
}

func (t *tree) add(layer int, e *index.Entry, log *slog.Logger) error {
	parent := t.parentDir(e.Path)
	name := path.Base(e.Path)
	old := parent.children[name]
	switch e.Type {
	case index.TypeDir:
		if old != nil && old.isDir() {
			old.entry, old.layer = e, layer
			return nil
		}
		parent.children[name] = &node{entry: e, layer: layer, children: map[string]*node{}}
	case index.TypeHardlink:
		target := t.lookupEntry(e.Linkname)
		if target == nil || target.isDir() {
			// A link to nothing cannot be served; the rest of the layer can.
			log.Warn("hard link target missing, entry skipped", "path", e.Path, "target", e.Linkname)
			return nil
		}
		parent.children[name] = target
	default:
		parent.children[name] = &node{entry: e, layer: layer}
	}
	return nil
}

// number gives every distinct node an inode number (the root is 1) and
// counts links, walking in a fixed order so numbers are stable per image,
// and lays out the sorted children of every directory.
func (t *tree) number() {
	t.byIno = []*node{nil}
	var walk func(n *node)
	seen := map[*node]bool{}
	walk = func(n *node) {
		if !seen[n] {
			seen[n] = true
			n.ino = uint64(len(t.byIno))
			t.byIno = append(t.byIno, n)
			t.nodes++
			n.nlink = 0
			if n.entry != nil && n.entry.Type == index.TypeReg {
				t.bytes += n.entry.Size
			}
		}
		if !n.isDir() {
			n.nlink++
			return
		}
		n.nlink = 2
		at := len(t.kids)
		t.kidsAt = append(t.kidsAt, make([]uint32, len(t.byIno)-len(t.kidsAt))...)
		t.kidsAt[n.ino] = uint32(at)
		for _, name := range sortedNames(n.children) {
			t.kids = append(t.kids, child{name, n.children[name]})
		}
		for _, c := range t.kids[at:][:len(n.children)] {
			if c.n.isDir() {
				n.nlink++
			}
			walk(c.n)
		}
	}
	walk(t.root)
	t.kidsAt = append(t.kidsAt, make([]uint32, len(t.byIno)-len(t.kidsAt))...)
}
