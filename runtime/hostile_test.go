package runtime

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

// Hostile images against the runtime's own path handling before
// pivot_root: a volume's first contents (copyImageFiles) and bind mount
// points (bind) are resolved inside the container's root, whatever its
// symlinks say. RELIABILITY.md lists these cases.

// hostDir makes a directory outside any container root with one file in it.
func hostDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustDo(t *testing.T, errs ...error) {
	t.Helper()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestHostileCopyImageFiles(t *testing.T) {
	outside := hostDir(t)
	rootfs := t.TempDir()
	r := func(p string) string { return filepath.Join(rootfs, p) }
	mustDo(t,
		os.MkdirAll(r("etc"), 0o755),
		os.WriteFile(r("etc/inside"), []byte("the image's"), 0o644),
		os.Symlink("/etc", r("vol-abs")),
		os.Symlink("../../../../../../.."+outside, r("vol-up")),
		os.Symlink(outside, r("vol-host")),
		os.MkdirAll(r("data/sub"), 0o755),
		os.WriteFile(r("data/sub/f"), []byte("f"), 0o644),
		os.Symlink("/etc/shadow", r("data/link-out")),
		os.Symlink(outside, r("data/dir-out")),
		os.WriteFile(r("data/suid"), []byte("#!/bin/sh\n"), 0o755),
		os.Chmod(r("data/suid"), fs.ModeSetuid|0o755),
	)
	for _, tc := range []struct {
		target string
		want   []string // names copied, relative to the volume
	}{
		{"/vol-abs", []string{"inside"}}, // the image's /etc, not the host's
		{"/vol-up", nil},                 // resolves inside the root, where nothing is
		{"/vol-host", nil},
		{"/data", []string{"dir-out", "link-out", "sub", "sub/f", "suid"}},
	} {
		t.Run(tc.target, func(t *testing.T) {
			dst := t.TempDir()
			if err := copyImageFiles(rootfs, tc.target, dst); err != nil {
				t.Fatalf("copyImageFiles(%s) error %v", tc.target, err)
			}
			var got []string
			filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
				if err == nil && p != dst {
					rel, _ := filepath.Rel(dst, p)
					got = append(got, rel)
				}
				return err
			})
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("copyImageFiles(%s) copied %q, want %q", tc.target, got, tc.want)
			}
		})
	}
	dst := t.TempDir()
	mustDo(t, copyImageFiles(rootfs, "/data", dst))
	for link, want := range map[string]string{"link-out": "/etc/shadow", "dir-out": outside} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != want {
			t.Errorf("copied %s = %q, %v, want the link itself to %q", link, got, err, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dst, "suid")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("copied suid = %v, %v, want its setuid bit kept (as docker copies it)", fi, err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("the host directory changed: %v", entries)
	}
}

// inMountNamespace runs f on a thread of its own in a new, private mount
// namespace, so that its mounts never reach the host's; the thread ends
// with f.
func inMountNamespace(t *testing.T, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- errSkip{err}
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	err := <-done
	var skip errSkip
	if errors.As(err, &skip) {
		t.Skipf("no mount namespace: %v", skip.error)
	}
	if err != nil {
		t.Fatal(err)
	}
}

type errSkip struct{ error }

// sameInode reports whether a and b are one inode.
func sameInode(a, b string) bool {
	var sa, sb unix.Stat_t
	return unix.Stat(a, &sa) == nil && unix.Stat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func TestHostileBind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("bind mounts need root")
	}
	outside := hostDir(t)
	rootfs := t.TempDir()
	src := t.TempDir()
	srcFile := filepath.Join(t.TempDir(), "hostname")
	r := func(p string) string { return filepath.Join(rootfs, p) }
	mustDo(t,
		os.WriteFile(srcFile, []byte("box\n"), 0o644),
		os.Symlink(outside, r("abs")),
		os.Symlink("../../../../../../.."+outside, r("up")),
		os.Symlink("/", r("etc")),
		os.Symlink("chain2", r("chain1")),
		os.Symlink("../abs", r("chain2")),
	)
	for _, tc := range []struct {
		b    bindMount
		want string // where the mount must land, relative to rootfs
	}{
		{bindMount{Source: src, Target: "/abs/x"}, outside + "/x"},
		{bindMount{Source: src, Target: "/up/x"}, outside + "/x"},
		{bindMount{Source: src, Target: "/chain1/y"}, outside + "/y"},
		{bindMount{Source: src, Target: "/../../../z"}, "/z"},
		{bindMount{Source: srcFile, Target: "/etc/hostname", File: true}, "/hostname"},
		{bindMount{Source: srcFile, Target: "/abs/secret", File: true}, outside + "/secret"},
	} {
		inMountNamespace(t, func() error {
			if err := bind(rootfs, tc.b); err != nil {
				return err
			}
			if !sameInode(r(tc.want), tc.b.Source) {
				t.Errorf("bind(%s) did not land on %s inside the root", tc.b.Target, tc.want)
			}
			if sameInode(filepath.Join(outside, filepath.Base(tc.b.Target)), tc.b.Source) {
				t.Errorf("bind(%s) landed on the host's %s", tc.b.Target, outside)
			}
			return nil
		})
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("bind made mount points in the host's directory: %v", entries)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != "host secret" {
		t.Errorf("the host's file changed: %q, %v", b, err)
	}
}

// TestHostileVolumeDirPermissions: a new volume gets a copy of the image's
// files with their setuid bits, owners and device nodes (as docker's), so
// the directories that hold volumes on the host must not let other host
// users reach them; docker makes /var/lib/docker/volumes 0701 under a 0710
// /var/lib/docker. Ours are 0755: with --root on a directory others can
// search, a host user can run an image's setuid-root program from
// ROOT/volumes/NAME/_data.
func TestHostileVolumeDirPermissions(t *testing.T) {
	rootfs := t.TempDir()
	mustDo(t, os.MkdirAll(filepath.Join(rootfs, "data"), 0o755),
		os.WriteFile(filepath.Join(rootfs, "data/suid"), []byte("#!/bin/sh\n"), 0o755),
		os.Chmod(filepath.Join(rootfs, "data/suid"), fs.ModeSetuid|0o755))
	volumes := filepath.Join(t.TempDir(), "volumes")
	plan := &rootfsPlan{Rootfs: rootfs, Volumes: volumes}
	if _, _, err := containerMounts(plan, &spec.Process{Mounts: []spec.Mount{{Type: spec.Volume, Source: "vol", Target: "/data"}}}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{volumes, filepath.Join(volumes, "vol")} {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o005 == 0o005 {
			t.Errorf("%s has mode %v, %v: every host user can reach the volume's setuid copy", d, fi.Mode(), err)
		}
	}
}
