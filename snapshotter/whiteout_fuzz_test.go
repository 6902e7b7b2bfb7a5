package snapshotter

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/lazyfs/lazyfs/index"
)

// fuzzLayers turns data into well-formed layers, two bytes an entry: the
// first picks the kind (or starts a new layer), the second one of 39
// paths over the names a, b, c. Well-formed as docker and buildkit write
// them: a layer names a path once, lists the directories its whiteouts and
// opaque markers sit in, and puts nothing below a path it whites out or
// below a non-directory. Some directories carry trusted.overlay.* xattrs,
// which must not reach the kernel's overlay.
func fuzzLayers(data []byte) []*index.Index {
	var layers []*index.Index
	var x *index.Index
	var used map[string]string // path → "dir", "file" or "wh" in this layer
	newLayer := func() {
		x = &index.Index{}
		layers = append(layers, x)
		used = map[string]string{}
	}
	newLayer()
	// free reports whether p can be added as kind: not taken by another
	// kind, no ancestor a non-directory or whited out, nothing below it if
	// it is not a directory.
	free := func(p, kind string) bool {
		if k, ok := used[p]; ok && (k != "dir" || kind != "dir") {
			return false
		}
		for q, k := range used {
			if k != "dir" && strings.HasPrefix(p, q+"/") || kind != "dir" && strings.HasPrefix(q, p+"/") {
				return false
			}
		}
		return true
	}
	// parents lists the directories above p that the layer does not yet.
	parents := func(p string) bool {
		var add []string
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if !free(d, "dir") {
				return false
			}
			if used[d] == "" {
				add = append(add, d)
			}
		}
		for _, d := range slices.Backward(add) {
			used[d] = "dir"
			x.Entries = append(x.Entries, index.Entry{Path: d, Type: index.TypeDir, Mode: 0o755})
		}
		return true
	}
	for i := 0; i+1 < len(data); i += 2 {
		b := data[i+1]
		depth, n := 1+int(b)%3, int(b)/3
		var parts []string
		for range depth {
			parts = append(parts, string(rune('a'+n%3)))
			n /= 3
		}
		p := strings.Join(parts, "/")
		switch data[i] % 8 {
		case 0:
			newLayer()
		case 1, 2:
			if free(p, "dir") && parents(p) && used[p] == "" {
				used[p] = "dir"
				e := index.Entry{Path: p, Type: index.TypeDir, Mode: 0o755}
				if data[i] >= 128 {
					e.Xattrs = []index.Xattr{{Name: "trusted.overlay.opaque", Value: "y"}, {Name: "trusted.overlay.redirect", Value: "/b"}}
				}
				x.Entries = append(x.Entries, e)
			}
		case 3, 4:
			if free(p, "file") && parents(p) {
				used[p] = "file"
				x.Entries = append(x.Entries, index.Entry{Path: p, Type: index.TypeReg, Mode: 0o644})
			}
		case 5, 6:
			if free(p, "wh") && parents(p) {
				used[p] = "wh"
				dir, base := path.Split(p)
				x.Entries = append(x.Entries, index.Entry{Path: dir + whiteoutPrefix + base, Type: index.TypeReg})
			}
		case 7:
			if free(p, "dir") && parents(p+"/"+opaqueMarker) {
				x.Entries = append(x.Entries, index.Entry{Path: p + "/" + opaqueMarker, Type: index.TypeReg})
			}
		}
	}
	return layers
}

// ociMerge applies layers with the OCI rules: a layer's whiteouts remove
// a lower path and all below it, its opaque markers empty a lower
// directory, then its entries are added. It returns path → "dir" or
// "file LAYER".
func ociMerge(layers []*index.Index) map[string]string {
	fs := map[string]string{}
	below := func(p string, self bool) {
		for q := range fs {
			if self && q == p || strings.HasPrefix(q, p+"/") {
				delete(fs, q)
			}
		}
	}
	for li, x := range layers {
		for _, e := range x.Entries {
			dir, base := path.Split(e.Path)
			dir = strings.TrimSuffix(dir, "/")
			if dir != "" && fs[dir] != "dir" {
				continue
			}
			if base == opaqueMarker {
				below(dir, false)
			} else if strings.HasPrefix(base, whiteoutPrefix) {
				below(path.Join(dir, strings.TrimPrefix(base, whiteoutPrefix)), true)
			}
		}
		for _, e := range x.Entries {
			if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
				continue
			}
			if e.Type == index.TypeDir {
				if fs[e.Path] != "dir" {
					below(e.Path, true)
					fs[e.Path] = "dir"
				}
				continue
			}
			below(e.Path, true)
			fs[e.Path] = fmt.Sprintf("file %d", li)
		}
	}
	return fs
}

// overlayMerge stacks layers as kernel overlayfs stacks lower directories:
// each layer alone (later entries replace earlier ones, parents implied),
// then from the bottom up a 0/0 character device removes what is below, a
// directory with trusted.overlay.opaque=y hides the lower directory's
// children, a directory merges with a lower one and replaces anything else.
func overlayMerge(t *testing.T, layers []*index.Index) map[string]string {
	fs := map[string]string{}
	below := func(p string, self bool) {
		for q := range fs {
			if self && q == p || strings.HasPrefix(q, p+"/") {
				delete(fs, q)
			}
		}
	}
	for li, x := range layers {
		type item struct {
			kind   string
			opaque bool
		}
		view := map[string]item{}
		for _, e := range x.Entries {
			for d := path.Dir(e.Path); d != "."; d = path.Dir(d) {
				if view[d].kind != "dir" {
					view[d] = item{kind: "dir"}
				}
			}
			var it item
			switch e.Type {
			case index.TypeDir:
				it.kind = "dir"
				for _, a := range e.Xattrs {
					if strings.HasPrefix(a.Name, overlayXattrPrefix) && (a.Name != overlayOpaque || a.Value != "y") {
						t.Errorf("layer %d: %s carries %s=%s", li, e.Path, a.Name, a.Value)
					}
					it.opaque = it.opaque || a.Name == overlayOpaque && a.Value == "y"
				}
			case index.TypeChar:
				it.kind = "wh"
				if e.Devmajor != 0 || e.Devminor != 0 {
					t.Errorf("layer %d: %s is a device %d:%d", li, e.Path, e.Devmajor, e.Devminor)
				}
			default:
				it.kind = fmt.Sprintf("file %d", li)
			}
			if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
				t.Errorf("layer %d: whiteout name %s left", li, e.Path)
			}
			if it.kind != "dir" || view[e.Path].kind != "dir" {
				for q := range view {
					if strings.HasPrefix(q, e.Path+"/") {
						delete(view, q)
					}
				}
			}
			view[e.Path] = it
		}
		paths := slices.Collect(maps.Keys(view))
		slices.SortFunc(paths, func(a, b string) int { return strings.Count(a, "/") - strings.Count(b, "/") })
		for _, p := range paths {
			it := view[p]
			switch {
			case it.kind == "wh":
				below(p, true)
			case it.kind == "dir" && fs[p] == "dir":
				if it.opaque {
					below(p, false)
				}
			default:
				below(p, true)
				fs[p] = it.kind
			}
		}
	}
	return fs
}

// FuzzOverlayLower checks that layers rewritten by overlayLower and
// stacked as overlayfs stacks them give the same tree as the original
// layers under the OCI rules, that no whiteout name and no overlay xattr
// from the image is left, and that the input is not changed.
func FuzzOverlayLower(f *testing.F) {
	f.Add([]byte{1, 0, 3, 3, 0, 0, 5, 0, 3, 9})
	f.Add([]byte{1, 0, 3, 3, 3, 4, 0, 0, 7, 0, 3, 12})
	f.Add([]byte{3, 4, 1, 1, 0, 0, 7, 4, 0, 0, 6, 1})
	f.Add([]byte{129, 0, 3, 3, 0, 0, 1, 0, 0, 0, 3, 9, 130, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 200 {
			return
		}
		layers := fuzzLayers(data)
		var lowers []*index.Index
		for _, x := range layers {
			before := show(x.Entries)
			lo, lost := overlayLower(x)
			if lost {
				t.Fatalf("lostRootOpaque for a layer without a root marker")
			}
			if show(x.Entries) != before {
				t.Fatalf("overlayLower changed its input")
			}
			lowers = append(lowers, lo)
		}
		want, got := ociMerge(layers), overlayMerge(t, lowers)
		if !maps.Equal(got, want) {
			var b strings.Builder
			for i, x := range layers {
				fmt.Fprintf(&b, "layer %d:\n%s", i, show(x.Entries))
			}
			t.Fatalf("%soverlay:\n%s\nOCI rules:\n%s", b.String(), showMap(got), showMap(want))
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
