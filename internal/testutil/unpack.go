package testutil

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// ImplicitDirModTime is the mtime Unpack gives a directory that no layer has
// an entry for (mode 0755, owner 0:0).
var ImplicitDirModTime = time.Unix(0, 0)

// Unpack applies uncompressed tar layers, bottom first, to dst (created if
// missing, normally empty) with OCI layer semantics, as the reference for
// differential tests:
//
//   - Per layer, its whiteouts are applied first, to what the lower layers
//     left: DIR/.wh.NAME removes DIR/NAME, DIR/.wh..wh..opq removes everything
//     in DIR. Then its other entries are extracted. Whiteout files never
//     appear in the result; other .wh..wh.* names are ignored. The directory
//     holding a whiteout exists afterwards (as containerd's applier does it).
//   - An entry replaces what lower layers had at its path (a new inode, even
//     for the same type); an entry for a directory that exists as a directory
//     only changes its metadata.
//   - A directory's metadata is the one of the last layer with an entry for
//     it; a directory that no layer has an entry for gets 0755, 0:0 and
//     ImplicitDirModTime. This includes dst itself ("./" entries set it).
//   - Paths are taken literally: a parent that exists as a non-directory is
//     replaced by an implicit directory (containerd would follow a symlinked
//     parent instead; differential tests should not depend on that). A path or
//     hard-link target that leaves dst fails the test.
//   - Hard links are real hard links; devices and fifos are made with mknod;
//     owners, modes (setuid/setgid/sticky too), xattrs and nanosecond times
//     are set after all content, lchown and lutimes for symlinks, so
//     directory mtimes are the layers' ones. Atime is set to mtime.
func Unpack(t testing.TB, dst string, layers [][]byte) {
	t.Helper()
	opens := make([]func() (io.ReadCloser, error), len(layers))
	for i, l := range layers {
		opens[i] = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil }
	}
	if err := unpack(dst, opens); err != nil {
		t.Fatalf("Unpack(%s): %v", dst, err)
	}
}

// UnpackLayers is Unpack for layer blobs (in memory or files, compressed as
// their MediaType says, detected from the bytes when empty).
func UnpackLayers(t testing.TB, dst string, layers []Layer) {
	t.Helper()
	opens := make([]func() (io.ReadCloser, error), len(layers))
	for i, l := range layers {
		li, err := openLayer(l, false)
		if err != nil {
			t.Fatalf("UnpackLayers: layer %d: %v", i, err)
		}
		comp, err := compressionOf(li.MediaType)
		if err != nil {
			t.Fatalf("UnpackLayers: layer %d: %v", i, err)
		}
		opens[i] = func() (io.ReadCloser, error) { return decompressed(li.open, comp) }
	}
	if err := unpack(dst, opens); err != nil {
		t.Fatalf("UnpackLayers(%s): %v", dst, err)
	}
}

func decompressed(open func() (io.ReadCloser, error), comp compression) (io.ReadCloser, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	switch comp {
	case compGzip:
		zr, err := kgzip.NewReader(r)
		if err != nil {
			r.Close()
			return nil, err
		}
		return readCloser{zr, r.Close}, nil
	case compZstd:
		zr, err := zstd.NewReader(r)
		if err != nil {
			r.Close()
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return r.Close() }}, nil
	}
	return r, nil
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// entryMeta is what Unpack sets on a path once all content is in place.
type entryMeta struct {
	typ      byte
	mode     int64
	uid, gid int
	mtime    time.Time
	xattrs   map[string]string
}

var implicitDir = entryMeta{typ: tar.TypeDir, mode: 0o755}

type unpacker struct {
	dst  string
	meta map[string]*entryMeta // "." is dst; hard links share their target's pointer
}

func unpack(dst string, layers []func() (io.ReadCloser, error)) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	u := &unpacker{dst: dst, meta: map[string]*entryMeta{}}
	root := implicitDir
	root.mtime = ImplicitDirModTime
	u.meta["."] = &root
	for i, open := range layers {
		if err := u.whiteouts(open); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if err := u.extract(open); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return u.applyMeta()
}

// cleanName turns a tar name into a clean path relative to dst ("." for
// dst), refusing names that leave it.
func cleanName(name string) (string, error) {
	p := path.Clean(strings.TrimLeft(name, "/"))
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%q leaves the root", name)
	}
	return p, nil
}

func (u *unpacker) full(rel string) string { return filepath.Join(u.dst, filepath.FromSlash(rel)) }

// forget drops the metadata of rel and, if it was a directory, of
// everything below it.
func (u *unpacker) forget(rel string, dir bool) {
	delete(u.meta, rel)
	if !dir {
		return
	}
	if rel == "." {
		for k := range u.meta {
			if k != "." {
				delete(u.meta, k)
			}
		}
		return
	}
	prefix := rel + "/"
	for k := range u.meta {
		if strings.HasPrefix(k, prefix) {
			delete(u.meta, k)
		}
	}
}

// realDir reports whether rel and all its parents are directories (not
// symlinks), so that operations on it stay inside dst.
func (u *unpacker) realDir(rel string) bool {
	for p := rel; p != "."; p = path.Dir(p) {
		fi, err := os.Lstat(u.full(p))
		if err != nil || !fi.IsDir() {
			return false
		}
	}
	return true
}

// resolveDir follows the symlinks on the way to directory rel inside dst,
// as containerd's fs.RootPath and docker's chrooted unpack do (a layer's
// "bin/tool" over a lower "bin -> usr/bin" lands in usr/bin), and returns
// the resolved relative path; components that do not exist are kept.
func (u *unpacker) resolveDir(rel string) string {
	if rel == "." {
		return rel
	}
	names := strings.Split(rel, "/")
	at := "."
	for followed := 0; len(names) > 0; {
		name := names[0]
		names = names[1:]
		next := path.Join(at, name)
		fi, err := os.Lstat(u.full(next))
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 && followed < 40 {
			followed++
			target, err := os.Readlink(u.full(next))
			if err != nil {
				return path.Join(append([]string{next}, names...)...)
			}
			if !path.IsAbs(target) {
				target = path.Join("/", at, target)
			}
			resolved := strings.TrimPrefix(path.Clean("/"+target), "/")
			var parts []string
			if resolved != "" {
				parts = strings.Split(resolved, "/")
			}
			names = append(parts, names...)
			at = "."
			continue
		}
		at = next
	}
	return at
}

// ensureDir makes rel a directory, creating implicit ones and replacing
// non-directories on the way.
func (u *unpacker) ensureDir(rel string) error {
	if rel == "." {
		return nil
	}
	if err := u.ensureDir(path.Dir(rel)); err != nil {
		return err
	}
	full := u.full(rel)
	fi, err := os.Lstat(full)
	if err == nil && fi.IsDir() {
		return nil
	}
	if err == nil {
		if err := os.Remove(full); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Mkdir(full, 0o700); err != nil {
		return err
	}
	m := implicitDir
	m.mtime = ImplicitDirModTime
	u.meta[rel] = &m
	return nil
}

// whiteouts applies the whiteout entries of one layer.
func (u *unpacker) whiteouts(open func() (io.ReadCloser, error)) error {
	r, err := open()
	if err != nil {
		return err
	}
	defer r.Close()
	tr := tar.NewReader(r)
	var parents []string
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rel, err := cleanName(hdr.Name)
		if err != nil {
			return err
		}
		dir, base := u.resolveDir(path.Dir(rel)), path.Base(rel)
		switch {
		case base == ".wh..wh..opq":
			parents = append(parents, dir)
			if !u.realDir(dir) {
				continue
			}
			ents, err := os.ReadDir(u.full(dir))
			if err != nil {
				return err
			}
			for _, e := range ents {
				child := path.Join(dir, e.Name())
				if err := os.RemoveAll(u.full(child)); err != nil {
					return err
				}
				u.forget(child, e.IsDir())
			}
		case strings.HasPrefix(base, ".wh..wh."):
			// aufs metadata (.wh..wh.plnk and the like): nothing to do.
		case strings.HasPrefix(base, ".wh."):
			parents = append(parents, dir)
			target := path.Join(dir, strings.TrimPrefix(base, ".wh."))
			if !u.realDir(dir) {
				continue
			}
			if fi, err := os.Lstat(u.full(target)); err == nil {
				if err := os.RemoveAll(u.full(target)); err != nil {
					return err
				}
				u.forget(target, fi.IsDir())
			}
		}
	}
	for _, p := range parents {
		if err := u.ensureDir(p); err != nil {
			return err
		}
	}
	return nil
}

// extract creates the non-whiteout entries of one layer.
func (u *unpacker) extract(open func() (io.ReadCloser, error)) error {
	r, err := open()
	if err != nil {
		return err
	}
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := u.entry(tr, hdr); err != nil {
			return fmt.Errorf("%s: %w", hdr.Name, err)
		}
	}
}

func (u *unpacker) entry(tr *tar.Reader, hdr *tar.Header) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if strings.HasPrefix(path.Base(rel), ".wh.") {
		return nil
	}
	if rel != "." {
		rel = path.Join(u.resolveDir(path.Dir(rel)), path.Base(rel))
	}
	typ := hdr.Typeflag // archive/tar already turned the old TypeRegA into TypeReg
	if typ == tar.TypeGNUSparse {
		typ = tar.TypeReg // archive/tar reads it with its holes filled in
	}
	switch typ {
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return fmt.Errorf("tar type %q not supported", typ)
	}
	m := &entryMeta{typ: typ, mode: hdr.Mode & 0o7777, uid: hdr.Uid, gid: hdr.Gid, mtime: hdr.ModTime}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if m.xattrs == nil {
				m.xattrs = map[string]string{}
			}
			m.xattrs[name] = v
		}
	}
	if rel == "." {
		if typ != tar.TypeDir {
			return fmt.Errorf("root entry is not a directory")
		}
		u.meta["."] = m
		return nil
	}
	if err := u.ensureDir(path.Dir(rel)); err != nil {
		return err
	}
	full := u.full(rel)
	if fi, err := os.Lstat(full); err == nil {
		if fi.IsDir() && typ == tar.TypeDir {
			u.meta[rel] = m
			return nil
		}
		if err := os.RemoveAll(full); err != nil {
			return err
		}
		u.forget(rel, fi.IsDir())
	}
	perm := uint32(0o600)
	switch typ {
	case tar.TypeDir:
		err = os.Mkdir(full, 0o700)
	case tar.TypeReg:
		var f *os.File
		f, err = os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err == nil {
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
	case tar.TypeSymlink:
		err = os.Symlink(hdr.Linkname, full)
	case tar.TypeLink:
		target, terr := cleanName(hdr.Linkname)
		if terr != nil {
			return fmt.Errorf("hard link target %w", terr)
		}
		target = path.Join(u.resolveDir(path.Dir(target)), path.Base(target))
		tm, ok := u.meta[target]
		if !ok || tm.typ == tar.TypeDir || !u.realDir(path.Dir(target)) {
			return fmt.Errorf("hard link target %q is not a file extracted before it", hdr.Linkname)
		}
		if err := os.Link(u.full(target), full); err != nil {
			return err
		}
		u.meta[rel] = tm
		return nil
	case tar.TypeChar:
		err = unix.Mknod(full, unix.S_IFCHR|perm, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	case tar.TypeBlock:
		err = unix.Mknod(full, unix.S_IFBLK|perm, int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	case tar.TypeFifo:
		err = unix.Mkfifo(full, perm)
	}
	if err != nil {
		return err
	}
	u.meta[rel] = m
	return nil
}

// applyMeta sets owners, modes, xattrs and times on everything extracted.
func (u *unpacker) applyMeta() error {
	for rel, m := range u.meta {
		full := u.full(rel)
		if err := os.Lchown(full, m.uid, m.gid); err != nil {
			return err
		}
		if m.typ != tar.TypeSymlink {
			// After chown, which clears setuid and setgid.
			if err := unix.Fchmodat(unix.AT_FDCWD, full, uint32(m.mode), 0); err != nil {
				return &os.PathError{Op: "chmod", Path: full, Err: err}
			}
		}
		for k, v := range m.xattrs {
			if err := unix.Lsetxattr(full, k, []byte(v), 0); err != nil {
				return &os.PathError{Op: "lsetxattr " + k, Path: full, Err: err}
			}
		}
		ts := unix.Timespec{Sec: m.mtime.Unix(), Nsec: int64(m.mtime.Nanosecond())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "utimes", Path: full, Err: err}
		}
	}
	return nil
}
