package cache

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index"
)

func TestFramesPresent(t *testing.T) {
	s, _ := openStore(t, Config{})
	stored, storedD := testFrame(1, 1000)
	if err := s.Put(t.Context(), storedD, stored); err != nil {
		t.Fatal(err)
	}
	_, missingD := testFrame(2, 700)
	// A file of the wrong size under a frame's name (a crash mid-copy by a
	// foreign tool, say) is not that frame.
	short, shortD := testFrame(3, 500)
	p, _ := FramePath(s.dir, shortD)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, short[:499], 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory under a frame's name is not a frame either.
	_, dirD := testFrame(4, 300)
	p, _ = FramePath(s.dir, dirD)
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		frames []index.Frame
		want   Presence
	}{
		{"none", nil, Presence{}},
		{"stored", []index.Frame{{Digest: storedD, Size: 1000}}, Presence{1, 1, 1000, 1000}},
		{"missing", []index.Frame{{Digest: missingD, Size: 700}}, Presence{0, 1, 0, 700}},
		{"wrong size on disk", []index.Frame{{Digest: shortD, Size: 500}}, Presence{0, 1, 0, 500}},
		{"directory", []index.Frame{{Digest: dirD, Size: 300}}, Presence{0, 1, 0, 300}},
		{"bad digest", []index.Frame{{Digest: digest.Digest("sha256:../../etc"), Size: 9}}, Presence{0, 1, 0, 9}},
		{"mixed, one twice", []index.Frame{
			{Digest: storedD, Size: 1000}, {Digest: missingD, Size: 700}, {Digest: storedD, Size: 1000},
		}, Presence{2, 3, 2000, 2700}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := FramesPresent(s.dir, tc.frames); got != tc.want {
				t.Errorf("FramesPresent(%v) = %+v, want %+v", tc.frames, got, tc.want)
			}
		})
	}
}
