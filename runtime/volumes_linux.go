package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

var validVolumeName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// volumeDir is where volume name keeps its files, as docker's
// /var/lib/docker/volumes/NAME/_data.
func volumeDir(volumes, name string) string { return filepath.Join(volumes, name, "_data") }

// containerMounts turns the process's -v mounts and anonymous volumes into
// bind mounts, creating what is missing as docker does: a bind's host
// directory, a named volume, a new anonymous volume (or, on a restart, the
// one p.Anonymous names). A volume that is new gets a copy of what the
// image has at its path. It returns the names of the anonymous volumes.
func containerMounts(p *rootfsPlan, proc *spec.Process) (binds []bindMount, anonymous []string, err error) {
	newVolume := func(name, target string, noCopy bool) (string, error) {
		dir := volumeDir(p.Volumes, name)
		_, statErr := os.Stat(dir)
		// A volume holds copies of the image's setuid files and devices:
		// only root may reach it from the host (the container reaches it
		// through its bind mount). Docker relies on its root being 0710.
		for _, d := range []string{p.Volumes, filepath.Dir(dir)} {
			if err := os.MkdirAll(d, 0o700); err != nil {
				return "", fmt.Errorf("volume %s: %w", name, err)
			}
			if err := os.Chmod(d, 0o700); err != nil {
				return "", fmt.Errorf("volume %s: %w", name, err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("volume %s: %w", name, err)
		}
		if errors.Is(statErr, fs.ErrNotExist) && !noCopy {
			if err := copyImageFiles(p.Rootfs, target, dir); err != nil {
				return "", fmt.Errorf("volume %s: copy the image's %s: %w", name, target, err)
			}
		}
		return dir, nil
	}
	for _, m := range proc.Mounts {
		switch m.Type {
		case spec.Bind:
			if err := os.MkdirAll(m.Source, 0o755); err != nil && !errors.Is(err, unix.ENOTDIR) {
				return nil, nil, fmt.Errorf("bind source %s: %w", m.Source, err)
			}
			fi, err := os.Stat(m.Source)
			if err != nil {
				return nil, nil, fmt.Errorf("bind source %s: %w", m.Source, err)
			}
			binds = append(binds, bindMount{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly, File: !fi.IsDir()})
		case spec.Volume:
			if !validVolumeName.MatchString(m.Source) {
				return nil, nil, fmt.Errorf("invalid volume name %q: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", m.Source)
			}
			dir, err := newVolume(m.Source, m.Target, m.NoCopy)
			if err != nil {
				return nil, nil, err
			}
			binds = append(binds, bindMount{Source: dir, Target: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	for i, target := range proc.Volumes {
		var name string
		if i < len(p.Anonymous) && validVolumeName.MatchString(p.Anonymous[i]) {
			name = p.Anonymous[i]
		} else {
			var id [32]byte
			if _, err := rand.Read(id[:]); err != nil {
				return nil, nil, err
			}
			name = hex.EncodeToString(id[:])
		}
		dir, err := newVolume(name, target, false)
		if err != nil {
			return nil, nil, err
		}
		anonymous = append(anonymous, name)
		binds = append(binds, bindMount{Source: dir, Target: target})
	}
	return binds, anonymous, nil
}

// copyImageFiles copies the tree at target inside rootfs into dir, keeping
// modes, owners and times; symlinks are copied as links, never followed.
func copyImageFiles(rootfs, target, dir string) error {
	src, err := securejoin.SecureJoin(rootfs, target)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !fi.IsDir()) {
		return nil // nothing to copy
	}
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(path, dst); err != nil {
				return err
			}
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, dst); err != nil {
				return err
			}
		default:
			if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil { //nolint:gosec // a device number fits
				return err
			}
		}
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			if err := os.Chmod(dst, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
		}
		ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
