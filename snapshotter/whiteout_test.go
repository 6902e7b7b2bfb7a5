package snapshotter

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/index"
)

// show renders entries one per line: path, type, device numbers, xattrs.
func show(es []index.Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "%s %s", e.Path, e.Type)
		if e.Type == index.TypeChar {
			fmt.Fprintf(&b, " %d:%d mode=%o", e.Devmajor, e.Devminor, e.Mode)
		}
		for _, x := range e.Xattrs {
			fmt.Fprintf(&b, " %s=%s", x.Name, x.Value)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestOverlayLower(t *testing.T) {
	mt := time.Unix(1700000000, 0)
	dir := func(p string, xs ...index.Xattr) index.Entry {
		return index.Entry{Path: p, Type: index.TypeDir, Mode: 0o755, ModTime: mt, Xattrs: xs}
	}
	reg := func(p string) index.Entry { return index.Entry{Path: p, Type: index.TypeReg, Mode: 0o644, ModTime: mt} }
	for _, tc := range []struct {
		name     string
		in       []index.Entry
		want     string
		lostRoot bool
	}{
		{"plain layer unchanged",
			[]index.Entry{dir("a"), reg("a/f")},
			"a dir\na/f file\n", false},
		{"whiteout becomes a 0/0 char device",
			[]index.Entry{dir("a"), reg("a/.wh.gone"), reg(".wh.top")},
			"a dir\na/gone char 0:0 mode=0\ntop char 0:0 mode=0\n", false},
		{"opaque marker sets the xattr on its listed directory",
			[]index.Entry{dir("a", index.Xattr{Name: "user.x", Value: "1"}), reg("a/.wh..wh..opq"), reg("a/new")},
			"a dir trusted.overlay.opaque=y user.x=1\na/new file\n", false},
		{"opaque directory the layer does not list gets an entry",
			[]index.Entry{reg("b/c/.wh..wh..opq"), reg("b/c/new")},
			"b/c/new file\nb/c dir trusted.overlay.opaque=y\n", false},
		{"overlay xattrs from the image are dropped",
			[]index.Entry{dir("a", index.Xattr{Name: "trusted.overlay.redirect", Value: "/etc"}, index.Xattr{Name: "user.k", Value: "v"})},
			"a dir user.k=v\n", false},
		{"opaque root is reported",
			[]index.Entry{reg(".wh..wh..opq"), reg("f")},
			"f file\n", true},
		{"bare whiteout prefix is dropped",
			[]index.Entry{reg("a/.wh.")},
			"", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := &index.Index{Entries: slices.Clone(tc.in)}
			before := show(x.Entries)
			got, lost := overlayLower(x)
			if s := show(got.Entries); s != tc.want || lost != tc.lostRoot {
				t.Errorf("overlayLower() = %q, lostRootOpaque %v; want %q, %v", s, lost, tc.want, tc.lostRoot)
			}
			if after := show(x.Entries); after != before {
				t.Errorf("overlayLower changed its input: %q, was %q", after, before)
			}
		})
	}
}

func TestRepoOf(t *testing.T) {
	for _, tc := range []struct {
		ref, want string
		ok        bool
	}{
		{"127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox", true},
		{"127.0.0.1:5000/a/b", "127.0.0.1:5000/a/b", true},
		{"localhost:5000/a/b@sha256:0123", "localhost:5000/a/b", true},
		{"docker.io/library/busybox:1.36@sha256:0123", "docker.io/library/busybox", true},
		{"busybox", "busybox", true},
		{"busybox:1", "busybox", true},
		{"", "", false},
		{"host:5000/", "", false},
		{"@sha256:0123", "", false},
	} {
		got, err := repoOf(tc.ref)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("repoOf(%q) = %q, %v; want %q, ok %v", tc.ref, got, err, tc.want, tc.ok)
		}
	}
}

func TestRemoteRequest(t *testing.T) {
	const (
		layer = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
		man   = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	)
	full := map[string]string{labelImageRef: "127.0.0.1:5000/x:latest", labelDigest: layer, labelManifest: man}
	r, why := remoteRequest(full)
	if why != "" || r.repo != "127.0.0.1:5000/x" || r.layer.String() != layer || r.image() != "127.0.0.1:5000/x@"+man {
		t.Errorf("remoteRequest(full) = %+v, %q", r, why)
	}
	for _, drop := range []string{labelImageRef, labelDigest, labelManifest} {
		m := map[string]string{}
		for k, v := range full {
			if k != drop {
				m[k] = v
			}
		}
		if _, why := remoteRequest(m); !strings.Contains(why, "no remote-snapshot labels") {
			t.Errorf("remoteRequest(without %s) why = %q, want no labels", drop, why)
		}
	}
	bad := map[string]string{labelImageRef: "x", labelDigest: "sha256:zz", labelManifest: man}
	if _, why := remoteRequest(bad); !strings.Contains(why, labelDigest) {
		t.Errorf("remoteRequest(bad digest) why = %q, want it to name %s", why, labelDigest)
	}
	if r, err := splitImage(r.image()); err != nil || r.repo != "127.0.0.1:5000/x" || r.manifest.String() != man {
		t.Errorf("splitImage(%q) = %+v, %v", r.image(), r, err)
	}
	if _, err := splitImage("no-digest"); err == nil {
		t.Error("splitImage(no-digest) = nil error, want one")
	}
}
