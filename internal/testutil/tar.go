package testutil

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// DefaultModTime is the mtime of a File whose ModTime is zero. It is not the
// Unix epoch so that a lost mtime shows up in comparisons.
var DefaultModTime = time.Unix(1700000000, 0)

// File is one tar entry for Tar and WriteLayer.
type File struct {
	// Path is written as given (tests may want "./x", "/x" or "../x"),
	// except that a directory gets a trailing slash.
	Path string
	// Type is a tar type flag (tar.TypeReg, tar.TypeDir, tar.TypeSymlink,
	// tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo). Zero means
	// tar.TypeDir if Path ends in "/" and tar.TypeReg otherwise.
	Type byte
	// Mode holds the permission bits plus setuid (04000), setgid (02000)
	// and sticky (01000). Zero means 0644 for files, 0755 for directories,
	// 0777 for symlinks, 0666 for devices and fifos.
	Mode     int64
	UID, GID int
	// Data is the content of a regular file. If Data is nil and Size > 0
	// the content is Size bytes of the pattern for Seed (see PatternAt),
	// generated while writing, so big files cost no memory.
	Data []byte
	Size int64
	Seed int64
	// Linkname is the target of a symlink or hard link.
	Linkname           string
	Devmajor, Devminor int64
	// Xattrs are written as PAX SCHILY.xattr records.
	Xattrs map[string]string
	// ModTime zero means DefaultModTime; nanoseconds are kept (PAX).
	ModTime time.Time
}

func (f *File) header() (*tar.Header, io.Reader, error) {
	typ := f.Type
	if typ == 0 {
		typ = tar.TypeReg
		if strings.HasSuffix(f.Path, "/") {
			typ = tar.TypeDir
		}
	}
	name := f.Path
	if typ == tar.TypeDir && !strings.HasSuffix(name, "/") {
		name += "/"
	}
	mode := f.Mode
	if mode == 0 {
		switch typ {
		case tar.TypeDir:
			mode = 0o755
		case tar.TypeSymlink:
			mode = 0o777
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			mode = 0o666
		default:
			mode = 0o644
		}
	}
	mtime := f.ModTime
	if mtime.IsZero() {
		mtime = DefaultModTime
	}
	hdr := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Uid:      f.UID,
		Gid:      f.GID,
		ModTime:  mtime,
		Linkname: f.Linkname,
		Format:   tar.FormatPAX,
	}
	if typ == tar.TypeChar || typ == tar.TypeBlock {
		hdr.Devmajor, hdr.Devminor = f.Devmajor, f.Devminor
	}
	if len(f.Xattrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range f.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	var body io.Reader
	if typ == tar.TypeReg {
		switch {
		case f.Data != nil:
			if f.Size != 0 && f.Size != int64(len(f.Data)) {
				return nil, nil, fmt.Errorf("%s: Size %d but %d bytes of Data", f.Path, f.Size, len(f.Data))
			}
			hdr.Size = int64(len(f.Data))
			body = bytes.NewReader(f.Data)
		case f.Size > 0:
			hdr.Size = f.Size
			body = PatternReader(f.Seed, f.Size)
		}
	}
	return hdr, body, nil
}

// writeTar writes files as a PAX tar stream to w.
func writeTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for i := range files {
		hdr, body, err := files[i].header()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", files[i].Path, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				return fmt.Errorf("%s: %w", files[i].Path, err)
			}
		}
	}
	return tw.Close()
}

// Tar returns files as an uncompressed PAX tar archive, in the given order.
// For big content use WriteLayer, which streams to a file.
func Tar(t testing.TB, files []File) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeTar(&buf, files); err != nil {
		t.Fatalf("Tar: %v", err)
	}
	return buf.Bytes()
}

// TarDir returns the tree under dir as a layer tarball would hold it:
// relative paths in lexical order (directories before their contents, with a
// trailing slash; dir itself is not included), uid/gid/mode incl. setuid,
// setgid and sticky bits, nanosecond mtimes, symlinks, hard links (the first
// path of an inode in walk order is the file, the others TypeLink to it),
// devices, fifos and xattrs (all namespaces except security.selinux).
// Sockets are left out.
func TarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := writeTarDir(&buf, dir); err != nil {
		t.Fatalf("TarDir(%s): %v", dir, err)
	}
	return buf.Bytes()
}

func writeTarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	seen := map[inode]string{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		hdr := &tar.Header{
			Name:    rel,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			Format:  tar.FormatPAX,
		}
		var body string // path to copy content from
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case unix.S_IFREG:
			key := inode{st.Dev, st.Ino}
			if first, ok := seen[key]; ok && st.Nlink > 1 {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
			} else {
				seen[key] = rel
				hdr.Typeflag = tar.TypeReg
				hdr.Size = st.Size
				body = p
			}
		case unix.S_IFLNK:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor = int64(unix.Major(st.Rdev))
			hdr.Devminor = int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return nil // socket
		}
		xa, err := lxattrs(p)
		if err != nil {
			return err
		}
		if len(xa) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range xa {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if body != "" {
			f, err := os.Open(body)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, struct{ io.Reader }{f})
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: changed while archiving (%d of %d bytes)", rel, n, hdr.Size)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// lxattrs returns the extended attributes of path without following a
// symlink, leaving out security.selinux. A file system without xattr support
// yields none.
func lxattrs(path string) (map[string]string, error) {
	var names []byte
	for {
		size, err := unix.Llistxattr(path, nil)
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOSYS) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		if size == 0 {
			return nil, nil
		}
		names = make([]byte, size)
		n, err := unix.Llistxattr(path, names)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		names = names[:n]
		break
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(names), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		v, err := lgetxattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		out[name] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

func lgetxattr(path, name string) (string, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return "", err
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

// Gzip compresses data as one gzip member with the standard library's
// compress/gzip at level (gzip.DefaultCompression, gzip.BestSpeed, …) and a
// zero header (no name, no mtime), so equal input gives equal output.
func Gzip(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatalf("Gzip(level %d): %v", level, err)
	}
	if _, err := zw.Write(data); err != nil {
		t.Fatalf("Gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("Gzip: %v", err)
	}
	return buf.Bytes()
}

// GzipMembers splits data into n pieces of nearly equal size and returns
// them as n concatenated gzip members (default level). Decompressed as a
// multistream, the result is data again.
func GzipMembers(t testing.TB, data []byte, n int) []byte {
	t.Helper()
	if n < 1 {
		t.Fatalf("GzipMembers(n = %d): n must be at least 1", n)
	}
	var out []byte
	for i := range n {
		lo, hi := i*len(data)/n, (i+1)*len(data)/n
		out = append(out, Gzip(t, data[lo:hi], gzip.DefaultCompression)...)
	}
	return out
}

// Zstd compresses data as one zstd frame with klauspost/compress at its
// default level.
func Zstd(t testing.TB, data []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatalf("Zstd: %v", err)
	}
	defer zw.Close()
	return zw.EncodeAll(data, nil)
}

// Pigz compresses data with the pigz program (its output has many stored
// and byte-aligned blocks, unlike Go's encoders). args are extra pigz flags,
// e.g. "-9" or "--blocksize", "64". Skips without pigz unless
// LAZYFS_REQUIRE_REGISTRY=1.
func Pigz(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("pigz")
	if err != nil {
		skipOrFail(t, "Pigz: pigz not installed (apt-get install pigz)")
	}
	cmd := exec.Command(bin, append(append([]string{"-c", "-n"}, args...), "-")...)
	cmd.Stdin = bytes.NewReader(data)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("Pigz(%q): %v: %s", args, err, stderr.Bytes())
	}
	return out
}

// PatternAt fills p with the bytes at offset off of the deterministic pattern
// for seed, the content of Files that have Size but no Data. Any byte can be
// computed on its own, so a test can check a read at any offset without
// generating what comes before.
//
// The pattern is made of 64-byte lines of the letters 'a'–'p'. Half of the
// lines are fresh (4 bits of entropy a byte); the other half repeat one of
// the 512 lines before them, i.e. within deflate's 32 KiB window. So gzip
// output is full of back-references, as with real files, and shrinks the
// pattern about 3:1 instead of storing it.
func PatternAt(seed, off int64, p []byte) {
	s := splitmix64(uint64(seed))
	var line [patternLine]byte
	for len(p) > 0 {
		l := uint64(off) / patternLine
		src := l
		for {
			r := splitmix64(s ^ 0x5bd1e995 ^ src*0x9e3779b97f4a7c15)
			back := 1 + (r>>8)%512
			if r&1 == 0 || back > src {
				break // a fresh line
			}
			src -= back
		}
		for j := range uint64(patternLine / 8) {
			w := splitmix64(s^(src*8+j))&0x0f0f0f0f0f0f0f0f + 0x6161616161616161
			binary.LittleEndian.PutUint64(line[8*j:], w)
		}
		n := copy(p, line[uint64(off)%patternLine:])
		p = p[n:]
		off += int64(n)
	}
}

const patternLine = 64

func splitmix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// PatternReader returns a reader of the first size bytes of the pattern for
// seed (see PatternAt).
func PatternReader(seed, size int64) io.Reader {
	return &patternReader{seed: seed, size: size}
}

type patternReader struct {
	seed, off, size int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rem := r.size - r.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	PatternAt(r.seed, r.off, p)
	r.off += int64(len(p))
	return len(p), nil
}

// WriteLayer streams files as a tar, compressed as mt says, into a file under
// t.TempDir, and returns the Layer with Path, MediaType, Digest, Size and
// DiffID filled in. Nothing is held in memory: a 1 GiB pattern file is
// generated, tarred, hashed and compressed in one pass (about 5 s and 300 MB
// of blob for a 1 GiB pattern file with gzip). Compression is
// klauspost/compress: gzip at level 3 (one member, dynamic Huffman blocks with
// back-references; faster and smaller on the pattern than its default level)
// and zstd at its default level (one frame). Use Gzip, GzipMembers or Pigz
// for a particular encoder, and Layer{Blob: …} to push their output.
func WriteLayer(t testing.TB, files []File, mt types.MediaType) Layer {
	t.Helper()
	l, err := writeLayer(t.TempDir(), mt, func(w io.Writer) error { return writeTar(w, files) })
	if err != nil {
		t.Fatalf("WriteLayer(%s): %v", mt, err)
	}
	return l
}

// WriteLayerDir is WriteLayer for the tree under dir, archived as TarDir does.
func WriteLayerDir(t testing.TB, dir string, mt types.MediaType) Layer {
	t.Helper()
	l, err := writeLayer(t.TempDir(), mt, func(w io.Writer) error { return writeTarDir(w, dir) })
	if err != nil {
		t.Fatalf("WriteLayerDir(%s, %s): %v", dir, mt, err)
	}
	return l
}

// layerGzipLevel is WriteLayer's gzip level: 219 MB/s and 0.28 of the size
// on the pattern, against 108 MB/s and 0.30 at klauspost's default.
const layerGzipLevel = 3

func writeLayer(tmp string, mt types.MediaType, tarTo func(io.Writer) error) (Layer, error) {
	comp, err := compressionOf(mt)
	if err != nil {
		return Layer{}, err
	}
	f, err := os.CreateTemp(tmp, "layer-*")
	if err != nil {
		return Layer{}, err
	}
	defer f.Close()
	blobHash := sha256.New()
	blob := &countWriter{w: io.MultiWriter(f, blobHash)}
	var zw io.WriteCloser
	switch comp {
	case compGzip:
		if zw, err = kgzip.NewWriterLevel(blob, layerGzipLevel); err != nil {
			return Layer{}, err
		}
	case compZstd:
		if zw, err = zstd.NewWriter(blob); err != nil {
			return Layer{}, err
		}
	default:
		zw = nopWriteCloser{blob}
	}
	diffHash := sha256.New()
	if err := tarTo(io.MultiWriter(zw, diffHash)); err != nil {
		zw.Close()
		return Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return Layer{}, err
	}
	if err := f.Close(); err != nil {
		return Layer{}, err
	}
	return Layer{
		Path:      f.Name(),
		MediaType: mt,
		Digest:    digestOf(blobHash),
		Size:      blob.n,
		DiffID:    digestOf(diffHash),
	}, nil
}

func digestOf(h hash.Hash) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
