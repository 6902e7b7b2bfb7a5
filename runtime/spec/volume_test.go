package spec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVolume(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec string
		want *Mount
		anon string
	}{
		{"/data", nil, "/data"},
		{"/data/../srv/", nil, "/srv"},
		{"/host:/ctr", &Mount{Type: Bind, Source: "/host", Target: "/ctr", Propagation: "rprivate"}, ""},
		{"/host/:/ctr/./x/", &Mount{Type: Bind, Source: "/host", Target: "/ctr/x", Propagation: "rprivate"}, ""},
		{"/host:/ctr:ro", &Mount{Type: Bind, Source: "/host", Target: "/ctr", ReadOnly: true, Propagation: "rprivate", Options: "ro"}, ""},
		{"/host:/ctr:rw", &Mount{Type: Bind, Source: "/host", Target: "/ctr", Propagation: "rprivate", Options: "rw"}, ""},
		{"/host:/ctr:ro,rshared,z", &Mount{Type: Bind, Source: "/host", Target: "/ctr", ReadOnly: true, Propagation: "rshared", Options: "ro,rshared,z"}, ""},
		{"/host:/ctr:cached", &Mount{Type: Bind, Source: "/host", Target: "/ctr", Propagation: "rprivate", Options: "cached"}, ""},
		{"./rel:/ctr", &Mount{Type: Bind, Source: filepath.Join(wd, "rel"), Target: "/ctr", Propagation: "rprivate"}, ""},
		{"..:/ctr", &Mount{Type: Bind, Source: filepath.Dir(wd), Target: "/ctr", Propagation: "rprivate"}, ""},
		{"myvol:/ctr", &Mount{Type: Volume, Source: "myvol", Target: "/ctr"}, ""},
		{"my_vol.2-x:/ctr:ro,nocopy", &Mount{Type: Volume, Source: "my_vol.2-x", Target: "/ctr", ReadOnly: true, NoCopy: true, Options: "ro,nocopy"}, ""},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			m, anon, err := ParseVolume(tc.spec)
			if err != nil || anon != tc.anon || (m == nil) != (tc.want == nil) || (m != nil && *m != *tc.want) {
				t.Errorf("ParseVolume(%q) = %+v, %q, %v, want %+v, %q", tc.spec, m, anon, err, tc.want, tc.anon)
			}
		})
	}
}

func TestParseVolumeErrors(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"", "invalid volume specification: empty"},
		{"data", "invalid mount path: 'data' mount path must be absolute"},
		{"/host:ctr", "invalid mount path: 'ctr' mount path must be absolute"},
		{"/host:../ctr", "mount path must be absolute"},
		{"/", "destination can't be '/'"},
		{"/host:/", "destination can't be '/'"},
		{"/host:/..", "destination can't be '/'"},
		{"/host:/ctr:rx", "invalid mode: rx"},
		{"/host:/ctr:ro,rw", "invalid mode: ro,rw"},
		{"/host:/ctr:ro,", "invalid mode: ro,"},
		{"/host:/ctr:shared,slave", "invalid mode: shared,slave"},
		{"/data:ro", `options "ro" need a source`},
		{"/a:/b:ro:x", "too many colons"},
		{"/a::/b", "empty section between colons"},
		{":/b", "empty section between colons"},
		{"/a:/b:", "empty section between colons"},
		{"/host:/ctr:nocopy", "nocopy is for volumes"},
		{"vol:/ctr:rshared", "propagation mode rshared is for bind mounts"},
		{"v:/ctr", "volume name is too short"},
		{"~/x:/ctr", `"~/x" includes invalid characters for a local volume name`},
		{"my vol:/ctr", "includes invalid characters"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			m, anon, err := ParseVolume(tc.spec)
			if !errors.Is(err, ErrInvalidVolume) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ParseVolume(%q) = %+v, %q, %v, want error %q", tc.spec, m, anon, err, tc.want)
			}
		})
	}
}

// FuzzParseVolume checks that a parsed -v has a clean absolute target other
// than "/", and that Mount.String reads back to the same Mount.
func FuzzParseVolume(f *testing.F) {
	for _, s := range []string{"/data", "/h:/c", "/h:/c:ro,rshared", "vol:/c:nocopy", "./x:/y", "/a::b", "a:b:c:d", "/h:/c:z,Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		m, anon, err := ParseVolume(spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidVolume) {
				t.Fatalf("ParseVolume(%q) error %v does not wrap ErrInvalidVolume", spec, err)
			}
			return
		}
		target := anon
		if m != nil {
			target = m.Target
			if anon != "" {
				t.Fatalf("ParseVolume(%q) gave a mount and an anonymous volume", spec)
			}
		}
		if target == "/" || !filepath.IsAbs(target) || filepath.Clean(target) != target {
			t.Fatalf("ParseVolume(%q) target %q", spec, target)
		}
		if m == nil {
			if m2, anon2, err := ParseVolume(anon); err != nil || m2 != nil || anon2 != anon {
				t.Fatalf("ParseVolume(%q) = %+v, %q, %v, want %q", anon, m2, anon2, err, anon)
			}
			return
		}
		m2, _, err := ParseVolume(m.String())
		if err != nil || *m2 != *m {
			t.Fatalf("ParseVolume(%q) = %+v, %v, want %+v", m.String(), m2, err, *m)
		}
	})
}
