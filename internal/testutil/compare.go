package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CompareOptions tune Diff and CompareTreesWith. The zero value compares
// everything exactly.
type CompareOptions struct {
	// MtimeGranularity truncates mtimes before comparing them: time.Second
	// compares whole seconds. 0 compares nanoseconds.
	MtimeGranularity time.Duration
	// RecentSince, when not zero, makes two mtimes that are both at or after
	// it equal: both were set by the clock while the test ran, so only
	// "changed during the test" is compared, not the instant. Older mtimes
	// are compared as usual.
	RecentSince time.Time
	// IgnoreRootMeta leaves out the metadata of want and got themselves
	// (their contents are still compared).
	IgnoreRootMeta bool
	// IgnoreXattrs names xattrs to leave out besides security.selinux,
	// which is always left out.
	IgnoreXattrs []string
	// IgnorePaths are slash-separated paths relative to the roots that are
	// left out with everything below them.
	IgnorePaths []string
}

// maxReported is how many differences CompareTrees prints.
const maxReported = 50

// CompareTrees fails t if the trees under want and got differ in anything
// Diff compares, listing the first 50 differences.
func CompareTrees(t testing.TB, want, got string) {
	t.Helper()
	CompareTreesWith(t, want, got, CompareOptions{})
}

// CompareTreesWith is CompareTrees with options.
func CompareTreesWith(t testing.TB, want, got string, o CompareOptions) {
	t.Helper()
	diffs, err := Diff(want, got, o)
	if err != nil {
		t.Fatalf("CompareTrees(%s, %s): %v", want, got, err)
	}
	if len(diffs) == 0 {
		return
	}
	shown := diffs
	more := ""
	if len(shown) > maxReported {
		shown = shown[:maxReported]
		more = fmt.Sprintf("\n\t… and %d more", len(diffs)-maxReported)
	}
	t.Errorf("CompareTrees(%s, %s): %d differences (want → got):\n\t%s%s",
		want, got, len(diffs), strings.Join(shown, "\n\t"), more)
}

// node is what Diff knows of one path.
type node struct {
	mode     uint32 // st_mode: type and permission bits
	uid, gid uint32
	size     int64
	mtime    time.Time
	rdev     uint64
	link     string
	xattrs   map[string]string
	dev, ino uint64
	sum      string // sha256 of a regular file's content
	err      string // reading it failed (got side only)
}

// Diff walks both trees without following symlinks and returns every
// difference, one line each, sorted by path: missing and extra paths (not
// repeated for what is below them), type, permission bits with
// setuid/setgid/sticky (not for symlinks), uid, gid, size and content sha256
// of regular files, mtime (of symlinks too), symlink target, device numbers,
// xattrs of every namespace, and hard-link groups (paths sharing an inode in
// want must share one in got and vice versa). Files are read with plain
// open/read/close, never mmap, so got may be a FUSE mount served by the
// calling process. A failure to read got is a difference; a failure to read
// want is the error.
func Diff(want, got string, o CompareOptions) ([]string, error) {
	w, err := scanTree(want, o, false)
	if err != nil {
		return nil, fmt.Errorf("scan want: %w", err)
	}
	g, err := scanTree(got, o, true)
	if err != nil {
		return nil, fmt.Errorf("scan got: %w", err)
	}
	all := map[string]bool{}
	for p := range w {
		all[p] = true
	}
	for p := range g {
		all[p] = true
	}
	paths := make([]string, 0, len(all))
	for p := range all {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	wLinks, gLinks := linkGroups(w), linkGroups(g)
	linkReported := map[string]bool{} // paths whose hard-link group was reported

	var diffs []string
	add := func(p, format string, args ...any) {
		diffs = append(diffs, p+": "+fmt.Sprintf(format, args...))
	}
	reported := map[string]bool{} // paths whose whole subtree was reported
	under := func(p string) bool {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if reported[d] {
				return true
			}
		}
		return false
	}
	for _, p := range paths {
		if p != "." && under(p) {
			continue
		}
		wn, gn := w[p], g[p]
		switch {
		case gn == nil:
			add(p, "missing (want %s)", typeName(wn.mode))
			reported[p] = true
			continue
		case wn == nil:
			add(p, "extra (got %s)", typeName(gn.mode))
			reported[p] = true
			continue
		case wn.mode&unix.S_IFMT != gn.mode&unix.S_IFMT:
			add(p, "type: want %s, got %s", typeName(wn.mode), typeName(gn.mode))
			reported[p] = true
			continue
		}
		if gn.err != "" {
			add(p, "read: %s", gn.err)
		}
		if p == "." && o.IgnoreRootMeta {
			continue
		}
		typ := wn.mode & unix.S_IFMT
		if typ != unix.S_IFLNK && wn.mode&0o7777 != gn.mode&0o7777 {
			add(p, "mode: want %04o, got %04o", wn.mode&0o7777, gn.mode&0o7777)
		}
		if wn.uid != gn.uid {
			add(p, "uid: want %d, got %d", wn.uid, gn.uid)
		}
		if wn.gid != gn.gid {
			add(p, "gid: want %d, got %d", wn.gid, gn.gid)
		}
		if typ == unix.S_IFREG {
			if wn.size != gn.size {
				add(p, "size: want %d, got %d", wn.size, gn.size)
			} else if gn.err == "" && wn.sum != gn.sum {
				add(p, "content: want sha256 %.16s…, got %.16s…", wn.sum, gn.sum)
			}
		}
		wt, gt := wn.mtime, gn.mtime
		if o.MtimeGranularity > 0 {
			wt, gt = wt.Truncate(o.MtimeGranularity), gt.Truncate(o.MtimeGranularity)
		}
		recent := !o.RecentSince.IsZero() && !wn.mtime.Before(o.RecentSince) && !gn.mtime.Before(o.RecentSince)
		if !wt.Equal(gt) && !recent {
			add(p, "mtime: want %s, got %s", wn.mtime.UTC().Format(time.RFC3339Nano), gn.mtime.UTC().Format(time.RFC3339Nano))
		}
		if typ == unix.S_IFLNK && wn.link != gn.link {
			add(p, "symlink target: want %q, got %q", wn.link, gn.link)
		}
		if (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && wn.rdev != gn.rdev {
			add(p, "rdev: want %d:%d, got %d:%d", unix.Major(wn.rdev), unix.Minor(wn.rdev), unix.Major(gn.rdev), unix.Minor(gn.rdev))
		}
		for _, k := range unionKeys(wn.xattrs, gn.xattrs) {
			wv, wok := wn.xattrs[k]
			gv, gok := gn.xattrs[k]
			switch {
			case !gok:
				add(p, "xattr %s: want %q, got none", k, wv)
			case !wok:
				add(p, "xattr %s: want none, got %q", k, gv)
			case wv != gv:
				add(p, "xattr %s: want %q, got %q", k, wv, gv)
			}
		}
		if typ != unix.S_IFDIR {
			wg, gg := wLinks[p], gLinks[p]
			if !slices.Equal(wg, gg) && !linkReported[p] {
				add(p, "hard links: want %s, got %s", fmtGroup(wg, p), fmtGroup(gg, p))
				for _, q := range append(slices.Clone(wg), gg...) {
					linkReported[q] = true
				}
			}
		}
	}
	return diffs, nil
}

func fmtGroup(g []string, self string) string {
	if len(g) <= 1 {
		return "none (" + self + " alone)"
	}
	return "[" + strings.Join(g, " ") + "]"
}

func unionKeys(a, b map[string]string) []string {
	var ks []string
	for k := range a {
		ks = append(ks, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %#o", mode&unix.S_IFMT)
}

// linkGroups maps each non-directory path to the sorted paths sharing its
// inode, itself included.
func linkGroups(tree map[string]*node) map[string][]string {
	type key struct{ dev, ino uint64 }
	byIno := map[key][]string{}
	for p, n := range tree {
		if n.mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		k := key{n.dev, n.ino}
		byIno[k] = append(byIno[k], p)
	}
	out := map[string][]string{}
	for _, ps := range byIno {
		sort.Strings(ps)
		for _, p := range ps {
			out[p] = ps
		}
	}
	return out
}

// scanTree lstats everything under root. With tolerant, errors reading a
// file's content or xattrs are kept in node.err instead of returned.
func scanTree(root string, o CompareOptions, tolerant bool) (map[string]*node, error) {
	ignored := map[string]bool{}
	for _, p := range o.IgnorePaths {
		ignored[path.Clean(p)] = true
	}
	ignoreX := map[string]bool{}
	for _, x := range o.IgnoreXattrs {
		ignoreX[x] = true
	}
	tree := map[string]*node{}
	var walk func(rel string) error
	walk = func(rel string) error {
		if ignored[rel] {
			return nil
		}
		full := filepath.Join(root, filepath.FromSlash(rel))
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: full, Err: err}
		}
		n := &node{
			mode:  st.Mode,
			uid:   st.Uid,
			gid:   st.Gid,
			size:  st.Size,
			mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			rdev:  st.Rdev,
			dev:   st.Dev,
			ino:   st.Ino,
		}
		tree[rel] = n
		fail := func(err error) error {
			if !tolerant {
				return err
			}
			n.err += err.Error() + "; "
			return nil
		}
		xa, err := lxattrs(full)
		if err != nil {
			if err := fail(err); err != nil {
				return err
			}
		}
		for k, v := range xa {
			if !ignoreX[k] {
				if n.xattrs == nil {
					n.xattrs = map[string]string{}
				}
				n.xattrs[k] = v
			}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			if n.link, err = os.Readlink(full); err != nil {
				return fail(err)
			}
		case unix.S_IFREG:
			if n.sum, err = fileSHA256(full); err != nil {
				return fail(err)
			}
		case unix.S_IFDIR:
			ents, err := os.ReadDir(full)
			if err != nil {
				return fail(err)
			}
			for _, e := range ents {
				if err := walk(path.Join(rel, e.Name())); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return nil, err
	}
	return tree, nil
}

// fileSHA256 reads a file with plain read calls (no mmap, no sendfile) and
// closes it before returning.
func fileSHA256(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, struct{ io.Reader }{f}, make([]byte, 256<<10)); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
