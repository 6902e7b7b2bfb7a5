package testutil

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

func TestTarKeepsEverything(t *testing.T) {
	long := strings.Repeat("d/", 60) + "file-with-a-long-name"
	files := []File{
		{Path: "dir", Type: tar.TypeDir, Mode: 0o2755, UID: 1, GID: 2, ModTime: time.Unix(1, 999999999)},
		{Path: long, Data: []byte("long")},
		{Path: "big", Size: 1<<20 + 3, Seed: 42},
		{Path: "sym", Type: tar.TypeSymlink, Linkname: strings.Repeat("t/", 70)},
		{Path: "hl", Type: tar.TypeLink, Linkname: "big"},
		{Path: "null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Path: "sda", Type: tar.TypeBlock, Devmajor: 8, Devminor: 0},
		{Path: "fifo", Type: tar.TypeFifo},
		{Path: "xa", Data: []byte{}, Xattrs: map[string]string{"user.k": "v", "security.capability": "\x01\x00"}},
	}
	tr := tar.NewReader(bytes.NewReader(Tar(t, files)))
	for i, f := range files {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		wantName := f.Path
		if f.Type == tar.TypeDir {
			wantName += "/"
		}
		if hdr.Name != wantName || hdr.Linkname != f.Linkname || hdr.Devmajor != f.Devmajor || hdr.Devminor != f.Devminor {
			t.Errorf("entry %d = %q → %q %d:%d, want %q → %q %d:%d", i, hdr.Name, hdr.Linkname, hdr.Devmajor, hdr.Devminor,
				wantName, f.Linkname, f.Devmajor, f.Devminor)
		}
		if f.Type != 0 && hdr.Typeflag != f.Type {
			t.Errorf("%s: type %q, want %q", f.Path, hdr.Typeflag, f.Type)
		}
		wantTime := f.ModTime
		if wantTime.IsZero() {
			wantTime = DefaultModTime
		}
		if !hdr.ModTime.Equal(wantTime) {
			t.Errorf("%s: mtime %v, want %v", f.Path, hdr.ModTime, wantTime)
		}
		if f.Mode != 0 && hdr.Mode != f.Mode || hdr.Uid != f.UID || hdr.Gid != f.GID {
			t.Errorf("%s: mode %o %d:%d, want %o %d:%d", f.Path, hdr.Mode, hdr.Uid, hdr.Gid, f.Mode, f.UID, f.GID)
		}
		for k, v := range f.Xattrs {
			if got := hdr.PAXRecords["SCHILY.xattr."+k]; got != v {
				t.Errorf("%s: xattr %s = %q, want %q", f.Path, k, got, v)
			}
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.Data != nil && !bytes.Equal(body, f.Data):
			t.Errorf("%s: content %q, want %q", f.Path, body, f.Data)
		case f.Size > 0:
			want := make([]byte, f.Size)
			PatternAt(f.Seed, 0, want)
			if !bytes.Equal(body, want) {
				t.Errorf("%s: content differs from PatternAt", f.Path)
			}
		}
	}
	if _, err := tr.Next(); err != io.EOF {
		t.Errorf("after last entry: %v, want EOF", err)
	}
}

func TestPatternAtIsRandomAccess(t *testing.T) {
	const size = 1<<16 + 13
	all, err := io.ReadAll(bufio.NewReaderSize(PatternReader(3, size), 1000))
	if err != nil || len(all) != size {
		t.Fatalf("PatternReader(3, %d) = %d bytes, %v", size, len(all), err)
	}
	for _, c := range []struct{ off, n int }{{0, 1}, {1, 7}, {5, 8}, {8, 8}, {7, 100}, {size - 3, 3}, {4093, 9000}} {
		p := make([]byte, c.n)
		PatternAt(3, int64(c.off), p)
		if !bytes.Equal(p, all[c.off:c.off+c.n]) {
			t.Errorf("PatternAt(3, %d, [%d]) differs from the stream", c.off, c.n)
		}
	}
	for _, b := range all {
		if b < 'a' || b > 'p' {
			t.Fatalf("pattern byte %q outside a–p", b)
		}
	}
	other := make([]byte, 64)
	PatternAt(4, 0, other)
	if bytes.Equal(other, all[:64]) {
		t.Errorf("seeds 3 and 4 give the same pattern")
	}
	if z := Gzip(t, all, gzip.DefaultCompression); len(z) > size*4/10 || len(z) < size*2/10 {
		t.Errorf("pattern gzips to %d of %d bytes, want about a third", len(z), size)
	}
}

func TestGzipMembers(t *testing.T) {
	data := make([]byte, 100_001)
	PatternAt(1, 0, data)
	for _, n := range []int{1, 2, 7} {
		z := GzipMembers(t, data, n)
		zr, err := gzip.NewReader(bytes.NewReader(z))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("GzipMembers(%d) decompresses to %d bytes (%v), want the input", n, len(got), err)
		}
		// Count the members one by one.
		br := bufio.NewReader(bytes.NewReader(z))
		members := 0
		for {
			zr, err := gzip.NewReader(br)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			zr.Multistream(false)
			if _, err := io.Copy(io.Discard, zr); err != nil {
				t.Fatal(err)
			}
			members++
		}
		if members != n {
			t.Errorf("GzipMembers(%d) has %d members", n, members)
		}
	}
}

func TestWriteLayer(t *testing.T) {
	files := []File{
		{Path: "a/", Mode: 0o755},
		{Path: "a/big", Size: 5<<20 + 1, Seed: 9},
		{Path: "a/small", Data: []byte("small")},
	}
	tarball := Tar(t, files)
	diffID := digest.FromBytes(tarball)
	for _, tc := range []struct {
		mt         types.MediaType
		decompress func(io.Reader) (io.Reader, error)
	}{
		{types.OCILayer, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
		{types.DockerLayer, func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }},
		{types.OCILayerZStd, func(r io.Reader) (io.Reader, error) { return zstd.NewReader(r) }},
		{types.OCIUncompressedLayer, func(r io.Reader) (io.Reader, error) { return r, nil }},
	} {
		l := WriteLayer(t, files, tc.mt)
		blob, err := os.ReadFile(l.Path)
		if err != nil {
			t.Fatal(err)
		}
		if l.MediaType != tc.mt || l.Digest != digest.FromBytes(blob) || l.Size != int64(len(blob)) || l.DiffID != diffID {
			t.Errorf("WriteLayer(%s) = %s %s %d diff %s, want blob digest %s, %d bytes, diff %s",
				tc.mt, l.MediaType, l.Digest, l.Size, l.DiffID, digest.FromBytes(blob), len(blob), diffID)
		}
		r, err := tc.decompress(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, tarball) {
			t.Errorf("WriteLayer(%s) decompresses to %d bytes (%v), want Tar's %d", tc.mt, len(got), err, len(tarball))
		}
		// resolveLayer computes the same from the file.
		li, err := resolveLayer(Layer{Path: l.Path, MediaType: tc.mt}, false)
		if err != nil || li.Digest != l.Digest || li.DiffID != l.DiffID || li.Size != l.Size {
			t.Errorf("resolveLayer(%s) = %s %s %d, %v; want %s %s %d", tc.mt, li.Digest, li.DiffID, li.Size, err, l.Digest, l.DiffID, l.Size)
		}
	}
	if _, err := writeLayer(t.TempDir(), "application/x-unknown", func(io.Writer) error { return nil }); err == nil {
		t.Errorf("writeLayer(unknown media type) succeeded")
	}
}

func TestPigz(t *testing.T) {
	data := make([]byte, 1<<20)
	PatternAt(5, 0, data)
	z := Pigz(t, data, "--blocksize", "64")
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("Pigz output decompresses to %d bytes (%v), want the input", len(got), err)
	}
	if sha256.Sum256(Pigz(t, data, "--blocksize", "64")) != sha256.Sum256(z) {
		t.Errorf("Pigz is not deterministic")
	}
}

func TestBusyboxRoot(t *testing.T) {
	root := BusyboxRoot(t)
	var syms, hards int
	ents, err := os.ReadDir(root + "/bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := os.Lstat(root + "/bin/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			syms++
		case e.Name() != "busybox":
			hards++
		}
	}
	if syms < 5 || hards < 5 {
		t.Errorf("BusyboxRoot has %d symlinked and %d hard-linked applets, want some of each", syms, hards)
	}
	fi, err := os.Lstat(root + "/tmp")
	if err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp = %v, %v; want drwxrwxrwt", fi.Mode(), err)
	}
	if fi, err := os.Lstat(root + "/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Errorf("dev/null: %v, %v; want a char device", fi, err)
	}
	if fi, err := os.Lstat(root + "/var/fifo"); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("var/fifo: %v, %v; want a fifo", fi, err)
	}
	// Same busybox, same layer.
	if a, b := digest.FromBytes(TarDir(t, root)), digest.FromBytes(TarDir(t, BusyboxRoot(t))); a != b {
		t.Errorf("two BusyboxRoots tar to %s and %s, want equal", a, b)
	}
	// And it survives a round trip through a layer.
	dst := t.TempDir()
	Unpack(t, dst, [][]byte{TarDir(t, root)})
	CompareTreesWith(t, root, dst, CompareOptions{IgnoreRootMeta: true})
}
