package spec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Hostile images against the runtime's path rules: an image's symlinks
// may point anywhere on the host, and nothing the runtime resolves for it
// (user files, -w, volume targets) may leave the container's root.
// RELIABILITY.md lists these cases.

// hostSecret makes a file outside any container root, whose content must
// never be read or written through one.
func hostSecret(t *testing.T) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("evil:x:0:0:host secret:/evil:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func TestHostileHostPath(t *testing.T) {
	outside, _ := hostSecret(t)
	root := makeRoot(t,
		file{path: "etc", link: "/"},
		file{path: "up", link: "../../../../../../.."},
		file{path: "chain1", link: "chain2"},
		file{path: "chain2", link: "../../chain3"},
		file{path: "chain3", link: outside},
		file{path: "proc", link: "/proc/self/root"}, // a loop: /proc is this link
		file{path: "loop1", link: "loop2"},
		file{path: "loop2", link: "loop1"},
	)
	for _, tc := range []struct{ in, want string }{
		{"/etc/passwd", "/passwd"},    // /etc -> / stays at the root
		{"/up/etc/shadow", "/shadow"}, // and /etc is /
		{"/chain1/secret", outside + "/secret"},
		{"/../../..", ""},
	} {
		got, err := HostPath(root, tc.in)
		if want := filepath.Join(root, tc.want); err != nil || got != want {
			t.Errorf("HostPath(root, %q) = %q, %v, want %q", tc.in, got, err, want)
		}
		if err == nil && got != root && !strings.HasPrefix(got, root+"/") {
			t.Errorf("HostPath(root, %q) = %q, outside the root", tc.in, got)
		}
	}
	for _, p := range []string{"/loop1/x", "/proc/1/root/etc/shadow"} {
		if got, err := HostPath(root, p); !errors.Is(err, unix.ELOOP) {
			t.Errorf("HostPath(root, %s) = %q, %v, want %v", p, got, err, unix.ELOOP)
		}
	}
	if b, err := ReadFile(root, "/chain1/secret", 1<<20); err == nil {
		t.Errorf("ReadFile(/chain1/secret) = %q, read the host's file", b)
	}
}

func TestHostileUserFileLinks(t *testing.T) {
	_, secret := hostSecret(t)
	for _, tc := range []struct {
		name  string
		files []file
	}{
		{"passwd is an absolute link to a host file", []file{{path: "etc/passwd", link: secret}}},
		{"passwd is a relative link out of the root", []file{{path: "etc/passwd", link: "../../../../../../.." + secret}}},
		{"passwd is a link to /etc/shadow", []file{{path: "etc/passwd", link: "/etc/shadow"}}},
		{"passwd through a chain of links", []file{{path: "etc/passwd", link: "a"}, {path: "etc/a", link: "../b"}, {path: "b", link: secret}}},
		{"/etc is a link to /", []file{{path: "etc", link: "/"}}},
		{"/etc is a link to the host's directory", []file{{path: "etc", link: filepath.Dir(secret)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := makeRoot(t, tc.files...)
			// "evil" is only in the host's file, "nobody" and "daemon" in
			// the host's /etc/passwd: none may be found.
			for _, u := range []string{"evil", "nobody", "daemon"} {
				_, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: u}, nil)
				if !errors.Is(err, ErrNoPasswdEntries) {
					t.Errorf("Resolve(-u %s) error %v, want %v: the image has no /etc/passwd", u, err, ErrNoPasswdEntries)
				}
			}
			// Numeric users need no entry and get HOME=/.
			p, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "0"}, nil)
			if err != nil || p.Home != "/" {
				t.Errorf("Resolve(-u 0) = %+v, %v, want HOME /", p, err)
			}
		})
	}
	t.Run("/etc is a link to / and the image's passwd is at /passwd", func(t *testing.T) {
		root := makeRoot(t, file{path: "etc", link: "/"}, file{path: "passwd", content: "img:x:7:7::/img:/bin/sh\n"})
		p, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "img"}, nil)
		if err != nil || p.UID != 7 || p.Home != "/img" {
			t.Errorf("Resolve(-u img) = %+v, %v, want uid 7 from the image's own /passwd", p, err)
		}
	})
}

// TestHostileUserFileDevice: an /etc/passwd that is a device (here
// /dev/zero) is refused, not read without end. TestHostileUserFiles has
// the FIFO, directory, loop and size cases.
func TestHostileUserFileDevice(t *testing.T) {
	root := makeRoot(t, file{path: "etc", dir: true})
	if err := unix.Mknod(filepath.Join(root, "etc/passwd"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 5))); err != nil {
		t.Skipf("mknod: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{User: "alice"}, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "/etc/passwd") {
			t.Errorf("Resolve with /etc/passwd a character device: error %v, want %v naming the file", err, ErrNotRegular)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Resolve with /etc/passwd a character device did not return")
	}
}

func TestHostileWorkingDir(t *testing.T) {
	outside, _ := hostSecret(t)
	root := makeRoot(t,
		file{path: "w-abs", link: outside},
		file{path: "w-up", link: "../../../../../../" + outside},
		file{path: "w-proc", link: "/proc/self/cwd"},
		file{path: "chain", link: "w-abs"},
	)
	for _, w := range []string{"/w-abs/new", "/w-up/new", "/chain/deeper/new", "/w-proc/new", "/../../../../" + outside + "/dotdot"} {
		// Resolve keeps -w as the container sees it: the runtime creates
		// it after pivot_root, inside the container.
		p, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{WorkingDir: w}, nil)
		if err != nil || !strings.HasPrefix(p.Cwd, "/") || strings.Contains(p.Cwd, "..") {
			t.Errorf("Resolve(-w %s) = %q, %v, want a clean absolute path", w, p.Cwd, err)
		}
		// MkdirAll from the host side stays inside the root.
		if err := MkdirAll(root, w, 0o755); err != nil {
			t.Errorf("MkdirAll(root, %q) error %v", w, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("MkdirAll through links wrote outside the root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, outside, "deeper/new")); err != nil {
		t.Errorf("MkdirAll(/chain/deeper/new) did not land inside the root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "proc/self/cwd/new")); err != nil {
		t.Errorf("MkdirAll(/w-proc/new) did not land inside the root: %v", err)
	}
	if _, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}}, Options{WorkingDir: "relative/../x"}, nil); err == nil {
		t.Error("Resolve(-w relative) succeeded")
	}
}

func TestHostileVolumeTargets(t *testing.T) {
	_, secret := hostSecret(t)
	root := makeRoot(t,
		file{path: "data", link: secret},         // a host file
		file{path: "proc-link", link: "/proc/1"}, // the host's init, seen from the host
		file{path: "etc/hostname", content: "x"},
		file{path: "hn", link: "../../../etc/hostname"},
	)
	// Anonymous volumes (the image's VOLUMEs, -v /path) are checked with
	// the image's own files: a link to a host file is missing inside the
	// root, a link to a file of the image is a file.
	for _, tc := range []struct {
		target  string
		wantErr bool
	}{
		{"/data", false},
		{"/proc-link", false},
		{"/hn", true},
		{"/data/../etc/hostname", true},
	} {
		_, err := Resolve(context.Background(), root, v1.ImageConfig{Cmd: []string{"sh"}, Volumes: map[string]struct{}{tc.target: {}}}, Options{}, nil)
		if (err != nil) != tc.wantErr {
			t.Errorf("Resolve(VOLUME %s) error %v, want error %v", tc.target, err, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "cannot mount volume over existing file") {
			t.Errorf("Resolve(VOLUME %s) error %v, want docker's message", tc.target, err)
		}
		hp, err := HostPath(root, tc.target)
		if err != nil || !strings.HasPrefix(hp, root+"/") {
			t.Errorf("HostPath(VOLUME %s) = %q, %v, want inside the root", tc.target, hp, err)
		}
	}
	// -v targets are cleaned; ".." cannot climb above the root.
	for _, v := range []string{"/host:/../../etc", "vol:/a/../../../proc"} {
		m, _, err := ParseVolume(v)
		if err != nil || strings.Contains(m.Target, "..") || !strings.HasPrefix(m.Target, "/") {
			t.Errorf("ParseVolume(%q) = %+v, %v, want a clean absolute target", v, m, err)
		}
	}
	if _, _, err := ParseVolume("/host:/.."); !errors.Is(err, ErrInvalidVolume) {
		t.Errorf("ParseVolume(/host:/..) error %v, want %v (the target is /)", err, ErrInvalidVolume)
	}
	if b, err := os.ReadFile(secret); err != nil || !strings.HasPrefix(string(b), "evil:") {
		t.Errorf("the host's file changed: %q, %v", b, err)
	}
}
