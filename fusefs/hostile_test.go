package fusefs

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/lazyfs/lazyfs/index"
)

// TestHostileEntryUnderSymlink: a layer entry whose parent is a symlink
// (a lower layer's "bin -> usr/bin", as merged-/usr images have, then
// "bin/tool") lands where docker (which unpacks in a chroot) and
// containerd (fs.RootPath) put it: through the link, resolved inside the
// root, so the image's other /bin programs stay; a link that climbs with
// ".." or is absolute still resolves inside the root.
func TestHostileEntryUnderSymlink(t *testing.T) {
	lower := layer("d:usr", "d:usr/bin", "f:usr/bin/ls", "l:bin>usr/bin", "l:abs>/usr/bin", "l:up>../../usr/bin")
	upper := layer("f:bin/tool", "f:abs/tool2", "f:up/tool3")
	tr, err := mergeLayers([]*index.Index{lower, upper}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got := listing(tr)
	for _, want := range []string{"bin symlink", "abs symlink", "up symlink", "usr/bin/ls file", "usr/bin/tool file", "usr/bin/tool2 file", "usr/bin/tool3 file"} {
		if !slices.Contains(got, want) {
			t.Errorf("merged tree lacks %q:\n%q", want, got)
		}
	}
}

// Whiteouts and hard links under a symlinked parent resolve the same way;
// a symlink loop ends at the kernel's limit without hanging.
func TestWhiteoutAndLinkUnderSymlink(t *testing.T) {
	lower := layer("d:usr", "d:usr/bin", "f:usr/bin/ls", "f:usr/bin/cat", "l:bin>usr/bin", "l:loop>loop")
	upper := layer("f:bin/.wh.cat", "h:bin/ls2>bin/ls", "f:loop/x")
	tr, err := mergeLayers([]*index.Index{lower, upper}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	got := listing(tr)
	for _, want := range []string{"bin symlink", "usr/bin/ls file", "usr/bin/ls2 file"} {
		if !slices.Contains(got, want) {
			t.Errorf("merged tree lacks %q:\n%q", want, got)
		}
	}
	if slices.Contains(got, "usr/bin/cat file") {
		t.Errorf("bin/.wh.cat did not remove usr/bin/cat:\n%q", got)
	}
	if n := tr.lookup("usr/bin/ls"); n == nil || n != tr.lookup("usr/bin/ls2") {
		t.Errorf("usr/bin/ls2 is not a hard link of usr/bin/ls")
	}
}
