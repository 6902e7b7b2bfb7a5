package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scratch is a fresh ext4 file system on a loop device, mounted at Dir: the
// storage of one cold run, so that every run creates its files on a new
// file system (the root ext4 gets slower at creating files as it churns).
type scratch struct {
	Dir string
	img string
}

// newScratch makes an image file of size bytes (sparse) under parent,
// formats and mounts it. With size 0 it only makes a directory.
func newScratch(ctx context.Context, parent, name string, size int64) (*scratch, error) {
	s := &scratch{Dir: filepath.Join(parent, name)}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	if size == 0 {
		return s, nil
	}
	s.img = s.Dir + ".img"
	f, err := os.Create(s.img)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		_, err = run(ctx, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", s.img)
	}
	if err == nil {
		_, err = run(ctx, "mount", "-o", "loop", s.img, s.Dir)
	}
	if err != nil {
		os.Remove(s.img)
		os.Remove(s.Dir)
		return nil, fmt.Errorf("scratch file system: %w", err)
	}
	return s, nil
}

// Close unmounts everything under Dir (see unmountUnder), then Dir, and
// removes the image and the directory.
func (s *scratch) Close() error {
	killUsing(s.Dir)
	err := unmountUnder(s.Dir, s.img != "")
	if err == nil {
		err = os.RemoveAll(s.Dir)
	}
	if s.img != "" {
		if rerr := os.Remove(s.img); err == nil {
			err = rerr
		}
	}
	return err
}

// unmountUnder unmounts the mounts below dir, deepest first (and dir itself
// when self): a FUSE mount's connection is aborted first, so that a mount
// whose server was killed does not hang the unmount; each is detached
// (umount -l) if a plain unmount fails.
func unmountUnder(dir string, self bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	type mnt struct{ point, fstype, dev string }
	var errs []error
	for range 3 { // mounts can be stacked on one point
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		var ms []mnt
		for line := range strings.Lines(string(mi)) {
			pre, post, ok := strings.Cut(line, " - ")
			f, g := strings.Fields(pre), strings.Fields(post)
			if !ok || len(f) < 5 || len(g) < 1 {
				continue
			}
			p := unescapeMount(f[4])
			if strings.HasPrefix(p, abs+"/") || (self && p == abs) {
				ms = append(ms, mnt{point: p, fstype: g[0], dev: f[2]})
			}
		}
		if len(ms) == 0 {
			return errors.Join(errs...)
		}
		slices.SortFunc(ms, func(a, b mnt) int { return len(b.point) - len(a.point) })
		for _, m := range ms {
			if strings.HasPrefix(m.fstype, "fuse") {
				if _, minor, ok := strings.Cut(m.dev, ":"); ok {
					if _, err := strconv.Atoi(minor); err == nil {
						_ = os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := run(ctx, "umount", m.point); err != nil {
				if _, err := run(ctx, "umount", "-l", m.point); err != nil {
					errs = append(errs, err)
				}
			}
			cancel()
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, …).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// killUsing kills the processes whose command line names a path under dir
// (a lazyrun supervisor left by a command that was killed at its time
// limit: it runs in a session of its own) and waits up to 5 s for them to
// go. dir is unique to one measurement, so these are ours.
func killUsing(dir string) {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for a := range strings.SplitSeq(string(cl), "\x00") {
			if a == dir || strings.HasPrefix(a, dir+"/") {
				pids = append(pids, pid)
				break
			}
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	end := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(end) && syscall.Kill(pid, 0) == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
