package snapshotter

import (
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/lazyfs/lazyfs/index"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// overlayXattrPrefix names the xattrs kernel overlayfs reads from its
	// lower directories (opaque, redirect, origin, metacopy …).
	overlayXattrPrefix = "trusted.overlay."
	overlayOpaque      = "trusted.overlay.opaque"
)

// overlayLower returns a copy of x whose file table, mounted alone, is the
// layer as a lower directory of kernel overlayfs: a whiteout ".wh.NAME"
// becomes NAME as a 0/0 character device, an opaque marker ".wh..wh..opq"
// becomes the xattr trusted.overlay.opaque=y on its directory (an entry is
// added for a directory the layer does not list), and trusted.overlay.*
// xattrs the layer itself carries are dropped, so that an image cannot
// steer the kernel's overlay (redirects, origins). Frames are shared with x.
//
// A layer that makes its own root opaque cannot be expressed (the mount's
// root has no entry): lostRootOpaque reports it, and the caller logs it.
func overlayLower(x *index.Index) (out *index.Index, lostRootOpaque bool) {
	cp := *x
	cp.Entries = make([]index.Entry, 0, len(x.Entries))
	opaque := map[string]index.Entry{} // directory → its marker
	for _, e := range x.Entries {
		dir, base := path.Split(e.Path)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == opaqueMarker:
			opaque[dir] = e
			continue
		case strings.HasPrefix(base, whiteoutPrefix):
			name := strings.TrimPrefix(base, whiteoutPrefix)
			if name == "" || name == "." || name == ".." {
				continue
			}
			e = index.Entry{Path: path.Join(dir, name), Type: index.TypeChar, ModTime: e.ModTime, Offset: e.Offset}
		}
		if hasOverlayXattr(e.Xattrs) {
			e.Xattrs = slices.DeleteFunc(slices.Clone(e.Xattrs), func(a index.Xattr) bool {
				return strings.HasPrefix(a.Name, overlayXattrPrefix)
			})
		}
		cp.Entries = append(cp.Entries, e)
	}
	if _, ok := opaque[""]; ok {
		lostRootOpaque = true
		delete(opaque, "")
	}
	if len(opaque) == 0 {
		return &cp, lostRootOpaque
	}
	for i := range cp.Entries {
		e := &cp.Entries[i]
		if _, ok := opaque[e.Path]; ok && e.Type == index.TypeDir {
			e.Xattrs = withXattr(e.Xattrs, overlayOpaque, "y")
			delete(opaque, e.Path)
		}
	}
	// Directories the layer makes opaque without listing them: an entry
	// after the layer's own adds the xattr and keeps what is below.
	for _, dir := range slices.Sorted(maps.Keys(opaque)) {
		cp.Entries = append(cp.Entries, index.Entry{
			Path: dir, Type: index.TypeDir, Mode: 0o755, ModTime: opaque[dir].ModTime,
			Xattrs: []index.Xattr{{Name: overlayOpaque, Value: "y"}},
		})
	}
	return &cp, lostRootOpaque
}

func hasOverlayXattr(xs []index.Xattr) bool {
	for _, a := range xs {
		if strings.HasPrefix(a.Name, overlayXattrPrefix) {
			return true
		}
	}
	return false
}

// withXattr returns xs (copied) with name set to value, kept sorted by name.
func withXattr(xs []index.Xattr, name, value string) []index.Xattr {
	out := slices.Clone(xs)
	i, found := slices.BinarySearchFunc(out, name, func(a index.Xattr, n string) int { return strings.Compare(a.Name, n) })
	if found {
		out[i].Value = value
		return out
	}
	return slices.Insert(out, i, index.Xattr{Name: name, Value: value})
}
