package cache

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const hexA = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

func TestHexOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    digest.Digest
		want string // "" = refused
	}{
		{"canonical", "sha256:" + hexA, hexA},
		{"all zero", digest.Digest("sha256:" + strings.Repeat("0", 64)), strings.Repeat("0", 64)},
		{"empty", "", ""},
		{"no algorithm", hexA, ""},
		{"sha512", digest.Digest("sha512:" + strings.Repeat("a", 128)), ""},
		{"sha384", digest.Digest("sha384:" + strings.Repeat("a", 96)), ""},
		{"upper-case hex", digest.Digest("sha256:" + strings.ToUpper(hexA)), ""},
		{"upper-case algorithm", "SHA256:" + hexA, ""},
		{"short", digest.Digest("sha256:" + hexA[:63]), ""},
		{"long", "sha256:" + hexA + "0", ""},
		{"not hex", digest.Digest("sha256:" + hexA[:63] + "g"), ""},
		{"traversal", digest.Digest("sha256:../../../../etc/passwd" + strings.Repeat("0", 38)), ""},
		{"slash", digest.Digest("sha256:ab/" + hexA[3:]), ""},
		{"nul", digest.Digest("sha256:" + hexA[:63] + "\x00"), ""},
		{"space", digest.Digest(" sha256:" + hexA), ""},
		{"newline", digest.Digest("sha256:" + hexA + "\n"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := hexOf(tc.d)
			if tc.want == "" {
				if !errors.Is(err, ErrBadDigest) {
					t.Fatalf("hexOf(%q) = %q, %v, want ErrBadDigest", tc.d, got, err)
				}
				if got != "" {
					t.Fatalf("hexOf(%q) = %q with an error, want \"\"", tc.d, got)
				}
				if _, err := FramePath("/c", tc.d); !errors.Is(err, ErrBadDigest) {
					t.Errorf("FramePath(%q) error = %v, want ErrBadDigest", tc.d, err)
				}
				if _, err := IndexPath("/c", tc.d); !errors.Is(err, ErrBadDigest) {
					t.Errorf("IndexPath(%q) error = %v, want ErrBadDigest", tc.d, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("hexOf(%q) = %q, %v, want %q", tc.d, got, err, tc.want)
			}
		})
	}
}

func TestPathLayout(t *testing.T) {
	for _, tc := range []struct {
		dir        string
		d          digest.Digest
		frame, idx string
	}{
		{"/var/lib/lazyfs/cache", "sha256:" + hexA,
			"/var/lib/lazyfs/cache/frames/ab/" + hexA,
			"/var/lib/lazyfs/cache/index/sha256/" + hexA},
		{"rel/", digest.Digest("sha256:" + strings.Repeat("0", 64)),
			"rel/frames/00/" + strings.Repeat("0", 64),
			"rel/index/sha256/" + strings.Repeat("0", 64)},
	} {
		f, err := FramePath(tc.dir, tc.d)
		if err != nil || f != tc.frame {
			t.Errorf("FramePath(%q, %q) = %q, %v, want %q", tc.dir, tc.d, f, err, tc.frame)
		}
		i, err := IndexPath(tc.dir, tc.d)
		if err != nil || i != tc.idx {
			t.Errorf("IndexPath(%q, %q) = %q, %v, want %q", tc.dir, tc.d, i, err, tc.idx)
		}
	}
}

// TestBadDigestNeverAPath checks that every entry point refuses a malformed
// digest before touching the file system.
func TestBadDigestNeverAPath(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "cache")
	s, _ := openStore(t, Config{Dir: dir})
	victim := filepath.Join(parent, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := digest.Digest("sha256:../../victim")
	l := &loader{b: []byte("x")}
	if _, err := s.Frame(t.Context(), bad, 1, l.load); !errors.Is(err, ErrBadDigest) {
		t.Errorf("Frame(%q) error = %v, want ErrBadDigest", bad, err)
	}
	if l.calls.Load() != 0 {
		t.Errorf("Frame(%q) called load %d times, want 0", bad, l.calls.Load())
	}
	if s.Has(bad) {
		t.Errorf("Has(%q) = true, want false", bad)
	}
	if err := s.PutIndex(bad, []byte("evil")); !errors.Is(err, ErrBadDigest) {
		t.Errorf("PutIndex(%q) error = %v, want ErrBadDigest", bad, err)
	}
	if _, err := s.GetIndex(bad); !errors.Is(err, ErrBadDigest) {
		t.Errorf("GetIndex(%q) error = %v, want ErrBadDigest", bad, err)
	}
	if err := s.Put(t.Context(), bad, []byte("x")); !errors.Is(err, ErrBadDigest) {
		t.Errorf("Put(%q) error = %v, want ErrBadDigest", bad, err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("victim file = %q, %v, want \"keep\"", b, err)
	}
	if u, err := Usage(dir); err != nil || u != (DiskUsage{}) {
		t.Errorf("Usage = %+v, %v, want empty", u, err)
	}
}

func TestUsageMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	if _, err := Usage(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Usage(%q) error = %v, want fs.ErrNotExist", dir, err)
	}
}

func TestIndexBlobs(t *testing.T) {
	s, _ := openStore(t, Config{})
	d := digest.Digest("sha256:" + hexA)
	if _, err := s.GetIndex(d); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("GetIndex(absent) error = %v, want fs.ErrNotExist", err)
	}
	for _, data := range []string{"first", "second, longer"} {
		if err := s.PutIndex(d, []byte(data)); err != nil {
			t.Fatalf("PutIndex = %v", err)
		}
		got, err := s.GetIndex(d)
		if err != nil || string(got) != data {
			t.Fatalf("GetIndex = %q, %v, want %q", got, err, data)
		}
	}
	u, err := Usage(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (DiskUsage{Indexes: 1, IndexBytes: int64(len("second, longer"))}); u != want {
		t.Errorf("Usage = %+v, want %+v", u, want)
	}
}

// TestWriteAtomic checks both ways of writing a file: unnamed (O_TMPFILE,
// then a link) and the named temp file fallback, for a new name, a name that
// exists (replaced), and a directory that another process removed.
func TestWriteAtomic(t *testing.T) {
	for _, named := range []bool{false, true} {
		t.Run(map[bool]string{false: "unnamed", true: "named"}[named], func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sub")
			final := filepath.Join(dir, "f")
			write := writeAtomic
			if named {
				write = writeNamed
			} else {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := writeUnnamed(dir, final, []byte("probe")); errors.Is(err, errNoUnnamed) {
					t.Skipf("this file system has no O_TMPFILE: %v", err)
				} else if err != nil {
					t.Fatalf("writeUnnamed = %v", err)
				}
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
			}
			for _, data := range []string{"first", "second, longer", ""} {
				if err := write(dir, final, []byte(data)); err != nil {
					t.Fatalf("write(%q) = %v", data, err)
				}
				if b, err := os.ReadFile(final); err != nil || string(b) != data {
					t.Fatalf("after write(%q): file holds %q, %v", data, b, err)
				}
			}
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(ents) != 1 {
				t.Errorf("directory holds %d files, want only the final one", len(ents))
			}
		})
	}
}
