package spec

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/user"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestResolveUser(t *testing.T) {
	root := debianRoot(t)
	for _, tc := range []struct {
		name     string
		image    string // the image's USER
		opt      string // -u
		groupAdd []string
		want     Identity
	}{
		{"default root", "", "", nil, Identity{0, 0, []uint32{0, 10}, "/root"}},
		{"image user", "daemon", "", nil, Identity{1, 1, []uint32{1, 44}, "/usr/sbin"}},
		{"flag wins over image", "daemon", "alice", nil, Identity{1000, 1000, []uint32{1000, 29, 44}, "/home/alice"}},
		{"uid in passwd", "", "1000", nil, Identity{1000, 1000, []uint32{1000, 29, 44}, "/home/alice"}},
		{"uid not in passwd", "", "4242", nil, Identity{4242, 0, []uint32{0}, "/"}},
		{"uid:gid not in files", "", "4242:4343", nil, Identity{4242, 4343, []uint32{4343}, "/"}},
		{"name:group drops supplementary", "", "alice:staff", nil, Identity{1000, 50, []uint32{50}, "/home/alice"}},
		{"name:gid", "", "alice:7", nil, Identity{1000, 7, []uint32{7}, "/home/alice"}},
		{"uid:group", "", "4242:video", nil, Identity{4242, 44, []uint32{44}, "/"}},
		{"group-add names and numbers, sorted", "", "alice", []string{"staff", "9999", "audio"},
			Identity{1000, 1000, []uint32{1000, 29, 44, 29, 50, 9999}, "/home/alice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(t.Context(), root, v1.ImageConfig{User: tc.image, Cmd: []string{"id"}}, Options{User: tc.opt, GroupAdd: tc.groupAdd}, nil)
			if err != nil {
				t.Fatalf("Resolve() error %v", err)
			}
			if p.UID != tc.want.UID || p.GID != tc.want.GID || !slices.Equal(p.AdditionalGIDs, tc.want.AdditionalGIDs) || p.Home != tc.want.Home {
				t.Errorf("Resolve().Identity = %+v, want %+v", p.Identity, tc.want)
			}
		})
	}
}

func TestResolveUserErrors(t *testing.T) {
	root := debianRoot(t)
	for _, tc := range []struct {
		name     string
		opt      string
		groupAdd []string
		want     string
		is       error
	}{
		{"unknown name", "nobody", nil, "unable to find user nobody: no matching entries in passwd file", ErrNoPasswdEntries},
		{"unknown group", "alice:nogroup", nil, "unable to find group nogroup: no matching entries in group file", ErrNoGroupEntries},
		{"unknown group-add", "alice", []string{"games"}, "unable to find group games", ErrNoGroupEntries},
		{"uid out of range", "4294967296", nil, "uids and gids must be in range", user.ErrRange},
		{"negative uid", "-1", nil, "uids and gids must be in range", user.ErrRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"id"}}, Options{User: tc.opt, GroupAdd: tc.groupAdd}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Errorf("Resolve() error %v, want %q wrapping %v", err, tc.want, tc.is)
			}
		})
	}
}

func TestResolveUserWithoutFiles(t *testing.T) {
	root := makeRoot(t, file{path: "bin/sh", content: ""})
	p, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "1000:1000"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Identity{1000, 1000, []uint32{1000}, "/"}); p.UID != want.UID || p.GID != want.GID || !slices.Equal(p.AdditionalGIDs, want.AdditionalGIDs) || p.Home != want.Home {
		t.Errorf("Resolve().Identity = %+v, want %+v", p.Identity, want)
	}
	p, err = Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil)
	if err != nil || p.UID != 0 || p.Home != "/" {
		t.Errorf("Resolve(no user, no passwd) = %+v, %v, want root with HOME /", p, err)
	}
	_, err = Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "alice"}, nil)
	if want := "unable to find user alice: no matching entries in passwd file"; err == nil || err.Error() != want {
		t.Errorf("Resolve(-u alice, no passwd) error %v, want %q", err, want)
	}
}

// TestHostileUserFiles checks that the image's /etc/passwd and /etc/group
// are read inside its root whatever they are made of.
func TestHostileUserFiles(t *testing.T) {
	const containerShadow = "evil:x:666:666::/evil:/bin/sh\n"
	t.Run("absolute symlink to /etc/shadow reads the container's", func(t *testing.T) {
		root := makeRoot(t,
			file{path: "etc/passwd", link: "/etc/shadow"},
			file{path: "etc/shadow", content: containerShadow},
		)
		p, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "evil"}, nil)
		if err != nil || p.UID != 666 || p.Home != "/evil" {
			t.Errorf("Resolve(-u evil) = %+v, %v, want uid 666 from the container's /etc/shadow", p, err)
		}
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "root"}, nil); !errors.Is(err, ErrNoPasswdEntries) {
			t.Errorf("Resolve(-u root) error %v, want %v: the host's files must not be read", err, ErrNoPasswdEntries)
		}
	})
	t.Run("symlinks climbing out stay inside", func(t *testing.T) {
		root := makeRoot(t,
			file{path: "etc/passwd", link: "../../../../../../../../etc/passwd2"},
			file{path: "etc/passwd2", content: containerShadow},
			file{path: "etc/group", link: "/../../../etc/group2"},
		)
		p, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "evil"}, nil)
		if err != nil || p.UID != 666 {
			t.Errorf("Resolve(-u evil) = %+v, %v, want uid 666", p, err)
		}
	})
	t.Run("dangling symlink is absent", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc/passwd", link: "/nowhere"})
		p, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "7"}, nil)
		if err != nil || p.UID != 7 {
			t.Errorf("Resolve(-u 7) = %+v, %v, want uid 7", p, err)
		}
	})
	t.Run("symlink loop", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc/passwd", link: "/etc/passwd"})
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); !errors.Is(err, syscall.ELOOP) {
			t.Errorf("Resolve() error %v, want %v", err, syscall.ELOOP)
		}
	})
	t.Run("fifo does not block", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc", dir: true})
		if err := syscall.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Resolve() error %v, want %v", err, ErrNotRegular)
		}
	})
	t.Run("directory", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc/group", dir: true})
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); !errors.Is(err, ErrNotRegular) {
			t.Errorf("Resolve() error %v, want %v", err, ErrNotRegular)
		}
	})
	t.Run("huge file is bounded", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc/passwd", content: passwd})
		// Sparse: costs no disk, and must not be read.
		if err := os.Truncate(filepath.Join(root, "etc/passwd"), 1<<40); err != nil {
			t.Fatal(err)
		}
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Resolve() error %v, want %v", err, ErrTooLarge)
		}
	})
	t.Run("line too long", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc/passwd", content: "root:x:0:0:" + strings.Repeat("g", 70000) + ":/root:/bin/sh\n"})
		if _, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil); err == nil {
			t.Error("Resolve() succeeded with a 70 kB passwd line")
		}
	})
	t.Run("parent is a file", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc", content: "not a directory"})
		p, err := Resolve(t.Context(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{}, nil)
		if err != nil || p.UID != 0 {
			t.Errorf("Resolve() = %+v, %v, want root: /etc/passwd is absent", p, err)
		}
	})
}
