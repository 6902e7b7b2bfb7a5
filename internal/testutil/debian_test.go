package testutil

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

func TestAptMirrors(t *testing.T) {
	etc := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(etc, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sources.list", `# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [ arch=amd64 signed-by=/k.gpg ] http://opts.example/debian bookworm contrib
deb [arch=amd64] http://one.example/debian/ bookworm main contrib # trailing comment
deb http://other.example/debian trixie main
`)
	write("sources.list.d/a.sources", `Types: deb deb-src
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

# a comment
types: deb
uris: http://first.example/debian
  http://second.example/debian
suites: bookworm bookworm-updates
components: main
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 -----END PGP PUBLIC KEY BLOCK-----
`)
	write("sources.list.d/b.list", "deb http://one.example/debian/ bookworm main\n")
	write("sources.list.d/c.list.disabled", "deb http://off.example/debian bookworm main\n")
	write("sources.list.d/d.sources", "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n")

	got, err := aptMirrors(etc, "bookworm")
	want := []string{"http://one.example/debian/", "http://first.example/debian", "http://second.example/debian"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("aptMirrors(bookworm) = %q, %v; want %q", got, err, want)
	}
	if got, err := aptMirrors(etc, "bookworm-security"); err != nil || !slices.Equal(got, []string{"http://security.example/debian-security"}) {
		t.Errorf("aptMirrors(bookworm-security) = %q, %v", got, err)
	}
	if got, err := aptMirrors(t.TempDir(), "bookworm"); err != nil || len(got) != 0 {
		t.Errorf("aptMirrors(empty dir) = %q, %v; want none", got, err)
	}
}

func TestCacheEntryBuildsOnce(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "entry")
	// What a killed build left.
	if err := os.MkdirAll(final+".tmp-1/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	var builds atomic.Int32
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = cacheEntry(t.Logf, final, func(tmp string) error {
				builds.Add(1)
				if _, err := os.Stat(final + ".tmp-1"); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("the killed build's directory is still there: %v", err)
				}
				if err := os.Mkdir(tmp, 0o755); err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(tmp, "done"), []byte("ok"), 0o644)
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("cacheEntry #%d: %v", i, err)
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("%d builds, want 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(final, "done")); err != nil || string(b) != "ok" {
		t.Errorf("entry/done = %q, %v", b, err)
	}
	// A failed build leaves no entry, and the next call builds again.
	other := filepath.Join(dir, "other")
	if built, err := cacheEntry(t.Logf, other, func(tmp string) error { return errors.New("boom") }); !built || err == nil {
		t.Errorf("failing build: built %v, err %v", built, err)
	}
	if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed build created the entry: %v", err)
	}
}

// layerNames lists the entry names of a gzip layer.
func layerNames(t *testing.T, l Layer) []string {
	t.Helper()
	li, err := openLayer(l, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decompressed(li.open, compGzip)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

func TestWriteLayerDiff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod)")
	}
	base := filepath.Join(t.TempDir(), "base")
	old := time.Unix(1600000000, 123456789)
	tsOld := unix.NsecToTimespec(old.UnixNano())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(root, p, content string) {
		t.Helper()
		must(os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755))
		must(os.WriteFile(filepath.Join(root, p), []byte(content), 0o644))
	}
	touchOld := func(p string) {
		t.Helper()
		must(unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{tsOld, tsOld}, unix.AT_SYMLINK_NOFOLLOW))
	}
	file(base, "etc/same", "0123456789")
	file(base, "etc/passwd", "root\n")
	file(base, "usr/bin/tool", "#!/bin/sh\n")
	must(os.Link(filepath.Join(base, "usr/bin/tool"), filepath.Join(base, "usr/bin/alias")))
	must(os.MkdirAll(filepath.Join(base, "lib"), 0o755))
	must(os.Symlink("../usr/bin/tool", filepath.Join(base, "lib/link")))
	file(base, "var/old/a", "a")
	file(base, "var/old/sub/b", "b")
	file(base, "var/gone", "gone")
	file(base, "opt/dir2file/child", "c")
	file(base, "opt/file2dir", "f")
	must(os.MkdirAll(filepath.Join(base, "dev"), 0o755))
	must(unix.Mkfifo(filepath.Join(base, "dev/fifo"), 0o644))
	file(base, "data/x", "x")
	xattrs := unix.Lsetxattr(filepath.Join(base, "data/x"), "user.k", []byte("v"), 0) == nil
	file(base, "unchanged/deep/file", "same")
	// Old times everywhere, children first, so that cp -a keeps them and
	// a rewrite with the old time shows only in the content.
	var all []string
	must(filepath.Walk(base, func(p string, _ os.FileInfo, err error) error {
		all = append(all, p)
		return err
	}))
	for _, p := range slices.Backward(all) {
		touchOld(p)
	}

	extra := filepath.Join(filepath.Dir(base), "extra")
	if out, err := exec.Command("cp", "-a", base, extra).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	at := func(p string) string { return filepath.Join(extra, p) }
	must(os.WriteFile(at("etc/same"), []byte("9876543210"), 0o644))
	touchOld(at("etc/same"))
	must(os.Chmod(at("etc/passwd"), 0o600))
	must(os.Lchown(at("usr/bin/tool"), 1000, 1000))
	must(os.Remove(at("lib/link")))
	must(os.Symlink("tool2", at("lib/link")))
	touchOld(at("lib/link"))
	touchOld(at("lib"))
	file(extra, "usr/share/new/file", "new")
	must(os.Link(at("usr/share/new/file"), at("usr/share/new/link")))
	must(os.RemoveAll(at("var/old")))
	must(os.Remove(at("var/gone")))
	must(os.RemoveAll(at("opt/dir2file")))
	file(extra, "opt/dir2file", "now a file")
	must(os.Remove(at("opt/file2dir")))
	file(extra, "opt/file2dir/child", "now a dir")
	if xattrs {
		must(unix.Lsetxattr(at("data/x"), "user.k", []byte("w"), 0))
	}

	l0 := WriteLayerDir(t, base, types.OCILayer)
	l1 := WriteLayerDiff(t, base, extra, types.OCILayer)
	names := layerNames(t, l1)
	for _, want := range []string{"etc/", "etc/same", "etc/passwd", "usr/bin/tool", "usr/bin/alias", "lib/link",
		"usr/share/new/file", "usr/share/new/link", "var/.wh.old", "var/.wh.gone", "opt/dir2file", "opt/file2dir/child"} {
		if !slices.Contains(names, want) {
			t.Errorf("diff layer lacks %s: %q", want, names)
		}
	}
	for _, unwanted := range []string{"unchanged/", "unchanged/deep/file", "var/old/a", "var/old/sub/", "dev/fifo", "opt/file2dir/.wh.child"} {
		if slices.Contains(names, unwanted) {
			t.Errorf("diff layer has %s: %q", unwanted, names)
		}
	}
	if xattrs && !slices.Contains(names, "data/x") {
		t.Errorf("diff layer lacks data/x (xattr changed): %q", names)
	}
	dst := filepath.Join(t.TempDir(), "unpacked")
	UnpackLayers(t, dst, []Layer{l0, l1})
	CompareTreesWith(t, extra, dst, CompareOptions{IgnoreRootMeta: true})

	// No change, no entries.
	if names := layerNames(t, WriteLayerDiff(t, extra, extra, types.OCILayer)); len(names) != 0 {
		t.Errorf("diff of a tree with itself has %q", names)
	}
}

// timed runs fn and returns how long it took.
func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}

// cachedCallLimit is how long a call that finds its result cached may take.
const cachedCallLimit = time.Second

func TestDebianRoot(t *testing.T) {
	var root string
	took := timed(func() { root = DebianRoot(t) })
	t.Logf("DebianRoot() took %v", took)
	if again := timed(func() {
		if r := DebianRoot(t); r != root {
			t.Errorf("DebianRoot() = %s, then %s", root, r)
		}
	}); again > cachedCallLimit {
		t.Errorf("cached DebianRoot() took %v, want < %v", again, cachedCallLimit)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/debian_version")); err != nil || !strings.HasPrefix(string(b), "12.") {
		t.Errorf("etc/debian_version = %q, %v; want bookworm's 12.x", b, err)
	}
	status, err := os.ReadFile(filepath.Join(root, "var/lib/dpkg/status"))
	if err != nil || !strings.Contains(string(status), "Package: apt\n") {
		t.Errorf("dpkg status of the base lists no apt (%v)", err)
	}
	for _, p := range []string{"usr/bin/python3", "etc/hostname", "etc/resolv.conf", "usr/sbin/policy-rc.d"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("the base root has %s", p)
		}
	}
	for _, d := range []string{"dev", "var/lib/apt/lists/partial", "var/cache/apt/archives/partial"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil || len(ents) != 0 {
			t.Errorf("%s holds %d entries (%v), want none", d, len(ents), err)
		}
	}

	var py string
	took = timed(func() { py = DebianRoot(t, "python3", "python3") })
	t.Logf("DebianRoot(python3) took %v", took)
	if py == root {
		t.Fatalf("DebianRoot(python3) = the base root")
	}
	if again := timed(func() { DebianRoot(t, "python3") }); again > cachedCallLimit {
		t.Errorf("cached DebianRoot(python3) took %v", again)
	}
	status, err = os.ReadFile(filepath.Join(py, "var/lib/dpkg/status"))
	if err != nil || !strings.Contains(string(status), "Package: python3\nStatus: install ok installed\n") {
		t.Errorf("dpkg status of the python3 root does not list python3 installed (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(py, "usr/bin/python3")); err != nil {
		t.Errorf("python3 root: %v", err)
	}
	for _, p := range []string{"etc/resolv.conf", "usr/sbin/policy-rc.d"} {
		if _, err := os.Lstat(filepath.Join(py, p)); err == nil {
			t.Errorf("the python3 root has %s", p)
		}
	}
}

func TestDebianLayers(t *testing.T) {
	var ls []Layer
	took := timed(func() { ls = DebianLayers(t, "python3") })
	t.Logf("DebianLayers(python3) took %v", took)
	if len(ls) != 2 {
		t.Fatalf("DebianLayers(python3) = %d layers, want 2", len(ls))
	}
	var again, base []Layer
	if d := timed(func() { again = DebianLayers(t, "python3"); base = DebianLayers(t) }); d > cachedCallLimit {
		t.Errorf("cached DebianLayers took %v, want < %v", d, cachedCallLimit)
	}
	if !slices.EqualFunc(ls, again, func(a, b Layer) bool { return a.Path == b.Path && a.Digest == b.Digest && a.DiffID == b.DiffID }) {
		t.Errorf("DebianLayers(python3) changed between calls: %+v, then %+v", ls, again)
	}
	if len(base) != 1 || base[0].Digest != ls[0].Digest || base[0].Path != ls[0].Path {
		t.Errorf("DebianLayers() = %+v; want python3's layer 0 %s", base, ls[0].Digest)
	}
	for i, l := range ls {
		if l.MediaType != types.OCILayer || l.Size == 0 || l.DiffID == "" {
			t.Errorf("layer %d = %+v", i, l)
		}
	}
	// The layer's bytes are what its record says.
	if li, err := resolveLayer(Layer{Path: ls[1].Path}, false); err != nil || li.Digest != ls[1].Digest || li.DiffID != ls[1].DiffID || li.Size != ls[1].Size {
		t.Errorf("diff layer file = %s %s %d, %v; record says %s %s %d", li.Digest, li.DiffID, li.Size, err, ls[1].Digest, ls[1].DiffID, ls[1].Size)
	}
	t.Logf("base layer %s: %.1f MB; python3 diff %s: %.1f MB", ls[0].Digest, float64(ls[0].Size)/1e6, ls[1].Digest, float64(ls[1].Size)/1e6)
	if ls[1].Size >= ls[0].Size {
		t.Errorf("python3's diff layer (%d bytes) is not smaller than the base (%d)", ls[1].Size, ls[0].Size)
	}
	names := layerNames(t, ls[1])
	for _, want := range []string{"usr/bin/python3", "var/lib/dpkg/status"} {
		if !slices.Contains(names, want) {
			t.Errorf("the python3 diff layer lacks %s", want)
		}
	}
	if slices.Contains(names, "usr/bin/apt") || slices.Contains(names, "usr/lib/x86_64-linux-gnu/libc.so.6") {
		t.Errorf("the python3 diff layer has files of the base")
	}

	// The two layers unpack to the python3 root.
	dst := filepath.Join(t.TempDir(), "unpacked")
	UnpackLayers(t, dst, ls)
	CompareTreesWith(t, DebianRoot(t, "python3"), dst, CompareOptions{IgnoreRootMeta: true})
}
