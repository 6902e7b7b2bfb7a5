package fusefs

import (
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/lazyfs/lazyfs/index"
)

// layer builds an index from compact specs: "d:path", "f:path", "l:path>target"
// (symlink), "h:path>target" (hard link).
func layer(specs ...string) *index.Index {
	x := &index.Index{}
	for _, s := range specs {
		kind, rest, _ := strings.Cut(s, ":")
		p, target, _ := strings.Cut(rest, ">")
		e := index.Entry{Path: p, Mode: 0o644, Linkname: target}
		switch kind {
		case "d":
			e.Type, e.Mode = index.TypeDir, 0o755
		case "f":
			e.Type = index.TypeReg
		case "l":
			e.Type = index.TypeSymlink
		case "h":
			e.Type = index.TypeHardlink
		}
		x.Entries = append(x.Entries, e)
	}
	return x
}

// listing renders a tree as sorted "path type layer" lines.
func listing(t *tree) []string {
	var out []string
	var walk func(prefix string, n *node)
	walk = func(prefix string, n *node) {
		for name, c := range n.children {
			p := prefix + name
			kind := "implicit"
			if c.entry != nil {
				kind = c.entry.Type.String()
			}
			out = append(out, p+" "+kind)
			if c.isDir() {
				walk(p+"/", c)
			}
		}
	}
	walk("", t.root)
	sort.Strings(out)
	return out
}

func TestMergeLayers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layers []*index.Index
		want   []string
	}{
		{"one layer", []*index.Index{layer("d:etc", "f:etc/passwd")},
			[]string{"etc dir", "etc/passwd file"}},
		{"implicit parents", []*index.Index{layer("f:a/b/c")},
			[]string{"a implicit", "a/b implicit", "a/b/c file"}},
		{"whiteout removes a lower file", []*index.Index{
			layer("d:etc", "f:etc/a", "f:etc/b"), layer("f:etc/.wh.a")},
			[]string{"etc dir", "etc/b file"}},
		{"whiteout removes a lower directory tree", []*index.Index{
			layer("d:usr", "d:usr/lib", "f:usr/lib/x"), layer("f:usr/.wh.lib")},
			[]string{"usr dir"}},
		{"opaque hides lower children, keeps its own layer's", []*index.Index{
			layer("d:var", "f:var/old"), layer("d:var", "f:var/.wh..wh..opq", "f:var/new")},
			[]string{"var dir", "var/new file"}},
		{"whiteout then recreate in the same layer", []*index.Index{
			layer("f:x"), layer("f:.wh.x", "d:x", "f:x/y")},
			[]string{"x dir", "x/y file"}},
		{"file replaces directory", []*index.Index{
			layer("d:x", "f:x/y"), layer("f:x")},
			[]string{"x file"}},
		{"directory replaces file", []*index.Index{
			layer("f:x"), layer("d:x", "f:x/y")},
			[]string{"x dir", "x/y file"}},
		{"later directory entry keeps lower children", []*index.Index{
			layer("d:x", "f:x/a"), layer("d:x", "f:x/b")},
			[]string{"x dir", "x/a file", "x/b file"}},
		{"whiteout of something absent is harmless", []*index.Index{
			layer("f:a"), layer("f:.wh.b", "f:nodir/.wh.c")},
			[]string{"a file"}},
		{"whiteout in the bottom layer hides nothing", []*index.Index{
			layer("f:.wh.a", "f:a")},
			[]string{"a file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := mergeLayers(tc.layers, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatalf("mergeLayers: %v", err)
			}
			if got := listing(tr); !slices.Equal(got, tc.want) {
				t.Errorf("mergeLayers() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestMergeLayersHardLinks(t *testing.T) {
	tr, err := mergeLayers([]*index.Index{
		layer("d:bin", "f:bin/busybox", "h:bin/sh>bin/busybox", "h:bin/ls>bin/busybox", "h:bin/gone>bin/nothing"),
		layer("f:bin/ls"),
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	bb, sh, ls := tr.lookup("bin/busybox"), tr.lookup("bin/sh"), tr.lookup("bin/ls")
	if bb == nil || bb != sh {
		t.Fatalf("bin/sh is not the same node as bin/busybox")
	}
	if bb.nlink != 2 {
		t.Errorf("busybox nlink = %d, want 2 (busybox, sh; ls was replaced)", bb.nlink)
	}
	if ls == bb || ls.nlink != 1 {
		t.Errorf("replaced bin/ls still linked to busybox (nlink %d)", ls.nlink)
	}
	if tr.lookup("bin/gone") != nil {
		t.Errorf("hard link to a missing target was served")
	}
	if got := tr.lookup("bin").nlink; got != 2 {
		t.Errorf("bin nlink = %d, want 2", got)
	}
	if got := tr.root.nlink; got != 3 {
		t.Errorf("root nlink = %d, want 3", got)
	}
}
