package spec

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostPath(t *testing.T) {
	outside := t.TempDir()
	root := makeRoot(t,
		file{path: "etc/hosts", content: "x"},
		file{path: "abs", link: "/etc"},
		file{path: "rel", link: "../../../../etc"},
		file{path: "out", link: outside},
		file{path: "srv/up", link: "../etc/hosts"},
	)
	for _, tc := range []struct{ in, want string }{
		{"/", ""},
		{"", ""},
		{"/etc/hosts", "/etc/hosts"},
		{"etc/hosts", "/etc/hosts"},
		{"/../../etc/hosts", "/etc/hosts"},
		{"/abs/hosts", "/etc/hosts"},
		{"/rel/hosts", "/etc/hosts"},
		{"/srv/up", "/etc/hosts"},
		{"/out/file", outside + "/file"}, // an absolute target starts again at the root
		{"/missing/a/../b", "/missing/b"},
	} {
		got, err := HostPath(root, tc.in)
		if want := filepath.Join(root, tc.want); err != nil || got != want {
			t.Errorf("HostPath(root, %q) = %q, %v, want %q", tc.in, got, err, want)
		}
	}
}

func TestReadFile(t *testing.T) {
	root := makeRoot(t,
		file{path: "etc/hostname", content: "box\n"},
		file{path: "link", link: "/etc/hostname"},
		file{path: "etc/big", content: strings.Repeat("x", 100)},
	)
	for _, p := range []string{"/etc/hostname", "etc/hostname", "/link", "/../link"} {
		if b, err := ReadFile(root, p, 10); err != nil || string(b) != "box\n" {
			t.Errorf("ReadFile(root, %q) = %q, %v, want %q", p, b, err, "box\n")
		}
	}
	if _, err := ReadFile(root, "/etc/big", 99); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFile(big, limit 99) error %v, want %v", err, ErrTooLarge)
	}
	if b, err := ReadFile(root, "/etc/big", 100); err != nil || len(b) != 100 {
		t.Errorf("ReadFile(big, limit 100) = %d bytes, %v, want 100", len(b), err)
	}
	if _, err := ReadFile(root, "/etc/nothing", 10); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "/etc/nothing") {
		t.Errorf("ReadFile(missing) error %v, want %v naming the path", err, fs.ErrNotExist)
	}
	if _, err := ReadFile(root, "/etc", 10); !errors.Is(err, ErrNotRegular) {
		t.Errorf("ReadFile(dir) error %v, want %v", err, ErrNotRegular)
	}
}

func TestMkdirAll(t *testing.T) {
	outside := t.TempDir()
	root := makeRoot(t, file{path: "out", link: outside}, file{path: "file", content: "x"})
	if err := MkdirAll(root, "/out/a/../b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, outside, "b/c")); err != nil || !fi.IsDir() {
		t.Errorf("MkdirAll(/out/b/c) did not create it inside the root: %v", err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("MkdirAll(/out/...) wrote outside the root: %v", entries)
	}
	if err := MkdirAll(root, "/out/b/c", 0o755); err != nil {
		t.Errorf("MkdirAll(existing) error %v", err)
	}
	if err := MkdirAll(root, "/file/x", 0o755); err == nil {
		t.Error("MkdirAll(/file/x) succeeded under a regular file")
	}
}
