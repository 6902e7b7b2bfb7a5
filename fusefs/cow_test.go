package fusefs

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// upperSpec builds an upper directory from compact specs: "d:path" a
// directory, "o:path" an opaque directory, "f:path" a file, "w:path" a
// whiteout.
func upperSpec(t *testing.T, specs ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("whiteouts and trusted xattrs need root")
	}
	dir := t.TempDir()
	for _, s := range specs {
		kind, p, _ := strings.Cut(s, ":")
		full := filepath.Join(dir, p)
		switch kind {
		case "d", "o":
			must(t, os.Mkdir(full, 0o755))
			if kind == "o" {
				must(t, unix.Lsetxattr(full, OpaqueXattr, []byte("y"), 0))
			}
		case "f":
			must(t, os.WriteFile(full, []byte(p), 0o644))
		case "w":
			must(t, unix.Mknod(full, unix.S_IFCHR, 0))
		default:
			t.Fatalf("upperSpec: bad spec %q", s)
		}
	}
	return dir
}

// testCow returns a cowFS over the lower layers and an upper directory,
// without mounting anything.
func testCow(t *testing.T, upper string, layers ...*index.Index) *cowFS {
	t.Helper()
	tr, err := mergeLayers(layers, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &cowFS{fileSystem: &fileSystem{tree: tr}, upper: upper}
}

// view lists the merged view below the directory at rel as sorted
// "path type" lines, walking it as lookups and readdir do.
func view(t *testing.T, f *cowFS) []string {
	t.Helper()
	var out []string
	var walk func(up bool, lower *node, rel string)
	walk = func(up bool, lower *node, rel string) {
		ents, errno := f.list(up, lower, rel)
		if errno != 0 {
			t.Fatalf("list(%q) = %v", rel, errno)
		}
		for _, e := range ents {
			d, errno := f.entryAt(up, lower, rel, e.Name)
			if errno != 0 || !d.exists() {
				t.Fatalf("entryAt(%q, %q) = %+v, %v; readdir listed it", rel, e.Name, d, errno)
			}
			p := filepath.Join(rel, e.Name)
			kind := "lower"
			switch {
			case d.up && d.lowerDir() != nil:
				kind = "merged"
			case d.up:
				kind = "upper"
			}
			if d.isDir() {
				kind += "-dir"
			}
			out = append(out, p+" "+kind)
			if d.isDir() {
				walk(d.up, d.lowerDir(), p)
			}
		}
	}
	walk(true, f.tree.root, "")
	slices.Sort(out)
	return out
}

func TestCowMergedView(t *testing.T) {
	lower := []*index.Index{
		layer("d:etc", "f:etc/passwd", "f:etc/group", "d:usr", "d:usr/lib", "f:usr/lib/a", "d:var", "f:var/log", "f:x"),
		layer("d:usr", "f:usr/top"),
	}
	for _, tc := range []struct {
		name  string
		upper []string
		want  []string
	}{
		{"no upper entries", nil, []string{
			"etc lower-dir", "etc/group lower", "etc/passwd lower",
			"usr lower-dir", "usr/lib lower-dir", "usr/lib/a lower", "usr/top lower",
			"var lower-dir", "var/log lower", "x lower"}},
		{"upper file replaces, whiteout hides", []string{"d:etc", "f:etc/passwd", "w:etc/group", "w:x"}, []string{
			"etc merged-dir", "etc/passwd upper",
			"usr lower-dir", "usr/lib lower-dir", "usr/lib/a lower", "usr/top lower",
			"var lower-dir", "var/log lower"}},
		{"opaque directory hides the lower one", []string{"o:usr", "f:usr/new"}, []string{
			"etc lower-dir", "etc/group lower", "etc/passwd lower",
			"usr upper-dir", "usr/new upper",
			"var lower-dir", "var/log lower", "x lower"}},
		{"directory over a lower file, file over a lower directory", []string{"d:x", "f:x/in", "f:var"}, []string{
			"etc lower-dir", "etc/group lower", "etc/passwd lower",
			"usr lower-dir", "usr/lib lower-dir", "usr/lib/a lower", "usr/top lower",
			"var upper", "x upper-dir", "x/in upper"}},
		{"merged directory below a merged one", []string{"d:usr", "d:usr/lib", "f:usr/lib/b", "w:usr/top"}, []string{
			"etc lower-dir", "etc/group lower", "etc/passwd lower",
			"usr merged-dir", "usr/lib merged-dir", "usr/lib/a lower", "usr/lib/b upper",
			"var lower-dir", "var/log lower", "x lower"}},
		{"a whiteout in an opaque directory hides nothing more", []string{"o:etc", "w:etc/passwd", "f:etc/group"}, []string{
			"etc upper-dir", "etc/group upper",
			"usr lower-dir", "usr/lib lower-dir", "usr/lib/a lower", "usr/top lower",
			"var lower-dir", "var/log lower", "x lower"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := testCow(t, upperSpec(t, tc.upper...), lower...)
			if got := view(t, f); !slices.Equal(got, tc.want) {
				t.Errorf("merged view =\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(tc.want, "\n\t"))
			}
		})
	}
}

func TestCowEntryAt(t *testing.T) {
	lower := layer("d:d", "f:d/f", "d:e", "f:g", "h:g2>g")
	f := testCow(t, upperSpec(t, "w:d", "o:e", "d:g", "f:new"), lower)
	root := f.tree.root
	for _, tc := range []struct {
		name                            string
		exists, isDir, mergeOrLower, lp bool
	}{
		{"d", false, false, false, true}, // whited out
		{"e", true, true, false, true},   // opaque over a lower directory: renamable
		{"g", true, true, false, true},   // upper directory over a lower file
		{"g2", true, false, false, true}, // lower hard link
		{"new", true, false, false, false},
		{"none", false, false, false, false},
	} {
		d, errno := f.entryAt(true, root, "", tc.name)
		if errno != 0 {
			t.Fatalf("entryAt(%q) = %v", tc.name, errno)
		}
		if d.exists() != tc.exists || d.isDir() != tc.isDir || d.mergeOrLower() != tc.mergeOrLower || (d.lower != nil) != tc.lp {
			t.Errorf("entryAt(%q): exists %v dir %v mergeOrLower %v lowerPositive %v, want %v %v %v %v", tc.name,
				d.exists(), d.isDir(), d.mergeOrLower(), d.lower != nil, tc.exists, tc.isDir, tc.mergeOrLower, tc.lp)
		}
	}
	if d, _ := f.entryAt(false, root, "", "d"); !d.mergeOrLower() {
		t.Errorf("a lower directory with no upper part is not mergeOrLower")
	}
	if _, errno := f.entryAt(false, root, "", strings.Repeat("n", 256)); errno != syscall.ENAMETOOLONG {
		t.Errorf("entryAt(256-byte name) = %v, want ENAMETOOLONG", errno)
	}
	// Identities: lower hard links share an inode number but not a node;
	// upper entries never collide with lower numbers.
	g2, _ := f.entryAt(false, root, "", "g2")
	gl := dentry{lower: root.children["g"]}
	a, b := f.identity(&gl, "g"), f.identity(&g2, "g2")
	if a.Ino != b.Ino || a.Gen == b.Gen {
		t.Errorf("identities of lower links g, g2 = %+v, %+v; want one inode number, two generations", a, b)
	}
	nw, _ := f.entryAt(true, root, "", "new")
	if id := f.identity(&nw, "new"); id.Ino&upperIno == 0 {
		t.Errorf("identity of an upper file = %+v, want the upper bit", id)
	}
}

func TestCowEmptyDir(t *testing.T) {
	lower := layer("d:a", "f:a/x", "d:b", "f:b/x", "d:c")
	f := testCow(t, upperSpec(t, "d:a", "w:a/x", "d:b", "w:b/y", "o:o", "w:o/z", "d:u", "f:u/f"), lower)
	root := f.tree.root
	for _, tc := range []struct {
		name             string
		empty, whiteouts bool
	}{
		{"a", true, true},   // its only lower entry whited out
		{"b", false, true},  // b/x still shows
		{"c", true, false},  // empty lower directory
		{"o", true, true},   // opaque, whiteouts only
		{"u", false, false}, // upper file
	} {
		d, errno := f.entryAt(true, root, "", tc.name)
		if errno != 0 {
			t.Fatal(errno)
		}
		empty, wh, errno := f.emptyDir(&d, tc.name)
		if errno != 0 || empty != tc.empty || (empty && wh != tc.whiteouts) {
			t.Errorf("emptyDir(%s) = %v, %v, %v; want %v, %v", tc.name, empty, wh, errno, tc.empty, tc.whiteouts)
		}
	}
}

func TestXattrNames(t *testing.T) {
	for _, tc := range []struct {
		stored, visible string
		shown           bool
	}{
		{"user.a", "user.a", true},
		{"trusted.overlay.opaque", "", false},
		{"trusted.overlay.overlay.opaque", "trusted.overlay.opaque", true},
		{"security.capability", "security.capability", true},
	} {
		v, ok := visibleXattr(tc.stored)
		if v != tc.visible || ok != tc.shown {
			t.Errorf("visibleXattr(%q) = %q, %v; want %q, %v", tc.stored, v, ok, tc.visible, tc.shown)
		}
		if ok && storedXattr(v) != tc.stored {
			t.Errorf("storedXattr(%q) = %q, want %q", v, storedXattr(v), tc.stored)
		}
	}
}
