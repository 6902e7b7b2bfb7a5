package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

type tarFile struct {
	hdr  tar.Header
	body []byte
}

func makeTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := f.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.body))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 5)
		}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pseudoText is compressible but not trivially so, from a fixed seed.
func pseudoText(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"lazy", "frame", "layer", "registry", "fuse", "inode", "gzip", "window", "\n"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(7) == 0 {
			b.WriteByte(byte(r.Uint32()))
		}
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

func TestWalkTar(t *testing.T) {
	long := strings.Repeat("d/", 80) + "file"
	data := makeTar(t, []tarFile{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "./etc/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "etc/hosts", Typeflag: tar.TypeReg, Mode: 0o100644, Uid: 1, Gid: 2}, body: []byte("127.0.0.1 localhost\n")},
		{hdr: tar.Header{Name: long, Typeflag: tar.TypeReg, Mode: 0o600}, body: []byte("deep")},
		{hdr: tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644}, body: []byte("x")},
		{hdr: tar.Header{Name: "/abs/path", Typeflag: tar.TypeReg, Mode: 0o644}},
		{hdr: tar.Header{Name: "link", Typeflag: tar.TypeLink, Linkname: "../etc/hosts"}},
		{hdr: tar.Header{Name: "sym", Typeflag: tar.TypeSymlink, Linkname: "/etc/hosts"}},
		{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}},
		{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0}},
		{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o4644}},
		{hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, PAXRecords: map[string]string{
			"SCHILY.xattr.user.b": "2", "SCHILY.xattr.security.capability": "\x01\x00", "SCHILY.xattr.user.a": "1"}}},
		{hdr: tar.Header{Name: "etc/.wh.gone", Typeflag: tar.TypeReg}},
	})
	entries, size, err := WalkTar(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("WalkTar: %v", err)
	}
	if size != int64(len(data)) {
		t.Errorf("WalkTar size = %d, want %d", size, len(data))
	}
	type want struct {
		path string
		typ  Type
		mode uint32
		link string
	}
	wants := []want{
		{"etc", TypeDir, 0o755, ""},
		{"etc/hosts", TypeReg, 0o644, ""},
		{long, TypeReg, 0o600, ""},
		{"escape", TypeReg, 0o644, ""},
		{"abs/path", TypeReg, 0o644, ""},
		{"link", TypeHardlink, 0, "etc/hosts"},
		{"sym", TypeSymlink, 0, "/etc/hosts"},
		{"null", TypeChar, 0o666, ""},
		{"sda", TypeBlock, 0, ""},
		{"fifo", TypeFIFO, 0o4644, ""},
		{"x", TypeReg, 0, ""},
		{"etc/.wh.gone", TypeReg, 0, ""},
	}
	if len(entries) != len(wants) {
		t.Fatalf("WalkTar returned %d entries, want %d", len(entries), len(wants))
	}
	for i, w := range wants {
		e := entries[i]
		if e.Path != w.path || e.Type != w.typ || e.Mode != w.mode || e.Linkname != w.link {
			t.Errorf("entry %d = %q %s %o %q, want %q %s %o %q", i, e.Path, e.Type, e.Mode, e.Linkname, w.path, w.typ, w.mode, w.link)
		}
	}
	hosts := entries[1]
	if got := string(data[hosts.Offset : hosts.Offset+hosts.Size]); got != "127.0.0.1 localhost\n" || hosts.UID != 1 || hosts.GID != 2 {
		t.Errorf("etc/hosts content at offset = %q, owner %d:%d", got, hosts.UID, hosts.GID)
	}
	if !hosts.ModTime.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("etc/hosts mtime = %v, want nanoseconds kept", hosts.ModTime)
	}
	if e := entries[7]; e.Devmajor != 1 || e.Devminor != 3 {
		t.Errorf("null device = %d,%d", e.Devmajor, e.Devminor)
	}
	x := entries[10].Xattrs
	if len(x) != 3 || x[0].Name != "security.capability" || x[1] != (Xattr{"user.a", "1"}) || x[2] != (Xattr{"user.b", "2"}) {
		t.Errorf("xattrs = %q, want sorted security.capability, user.a, user.b", x)
	}
}

func TestWalkTarRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated header", makeTar(t, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg}, body: []byte("abc")}})[:300]},
		{"truncated body", makeTar(t, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg}, body: bytes.Repeat([]byte("a"), 2000)}})[:1500]},
		{"hard link to the root", makeTar(t, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeLink, Linkname: "/"}}})},
		{"garbage", bytes.Repeat([]byte{0xab}, 1024)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := WalkTar(bytes.NewReader(tc.data)); err == nil {
				t.Errorf("WalkTar(%s) succeeded, want an error", tc.name)
			}
		})
	}
}

// checkFrames decodes every frame from the blob and compares it with the
// uncompressed stream, as a reader of the mount would see it.
func checkFrames(t *testing.T, x *Index, blob, tarData []byte) {
	t.Helper()
	if x.TarSize != int64(len(tarData)) || x.BlobSize != int64(len(blob)) {
		t.Fatalf("TarSize %d BlobSize %d, want %d %d", x.TarSize, x.BlobSize, len(tarData), len(blob))
	}
	for i, f := range x.Frames {
		comp := blob[f.CompressedOffset : f.CompressedOffset+f.CompressedSize]
		if x.NeedsFrameBefore(i) {
			if _, err := x.DecodeFrame(i, comp); !errors.Is(err, ErrNeedsFrameBefore) {
				t.Fatalf("DecodeFrame(%d) of a frame without a window = %v, want ErrNeedsFrameBefore", i, err)
			}
		}
		got, err := x.DecodeFrameIn(blob, i)
		if err != nil {
			t.Fatalf("DecodeFrame(%d): %v", i, err)
		}
		if want := tarData[f.Offset : f.Offset+f.Size]; !bytes.Equal(got, want) {
			t.Fatalf("DecodeFrame(%d) [%d,+%d) differs from the stream", i, f.Offset, f.Size)
		}
		if digest.FromBytes(got) != f.Digest {
			t.Fatalf("frame %d digest %s, bytes hash to %s", i, f.Digest, digest.FromBytes(got))
		}
	}
}

func testLayer(t testing.TB) []byte {
	var files []tarFile
	for i := range 40 {
		files = append(files, tarFile{
			hdr:  tar.Header{Name: "data/file" + string(rune('a'+i%26)) + strings.Repeat("x", i), Typeflag: tar.TypeReg, Mode: 0o644},
			body: pseudoText(1000+i*7919, uint64(i)),
		})
	}
	return makeTar(t, files)
}

func gzipLevel(t testing.TB, data []byte, level int) []byte {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return buf.Bytes()
}

func TestBuildFormats(t *testing.T) {
	tarData := testLayer(t)
	multi := append(gzipLevel(t, tarData[:len(tarData)/3], 6), gzipLevel(t, tarData[len(tarData)/3:], 1)...)
	var zbuf bytes.Buffer
	zw, _ := zstd.NewWriter(&zbuf)
	zw.Write(tarData)
	zw.Close()
	for _, tc := range []struct {
		name   string
		blob   []byte
		format Format
	}{
		{"tar", tarData, FormatTar},
		{"gzip default", gzipLevel(t, tarData, gzip.DefaultCompression), FormatGzip},
		{"gzip stored", gzipLevel(t, tarData, gzip.NoCompression), FormatGzip},
		{"gzip huffman only", gzipLevel(t, tarData, gzip.HuffmanOnly), FormatGzip},
		{"gzip best", gzipLevel(t, tarData, gzip.BestCompression), FormatGzip},
		{"gzip two members", multi, FormatGzip},
		{"zstd", zbuf.Bytes(), FormatZstd},
	} {
		for _, opt := range []BuildOptions{{Span: 32 << 10}, {Span: 160 << 10, BlockSpan: 32 << 10}} {
			t.Run(fmt.Sprintf("%s/span %d block %d", tc.name, opt.Span, opt.BlockSpan), func(t *testing.T) {
				d := digest.FromBytes(tc.blob)
				x, err := Build(t.Context(), d, bytes.NewReader(tc.blob), opt)
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				chained := 0
				for i := range x.Frames {
					if x.NeedsFrameBefore(i) {
						chained++
					}
				}
				if chained > 0 && (opt.BlockSpan == 0 || tc.format != FormatGzip) {
					t.Errorf("%d of %d frames keep no window in a %s layer with %+v", chained, len(x.Frames), tc.format, opt)
				}
				if x.Format != tc.format || x.Layer != d {
					t.Errorf("Build format %s layer %s, want %s %s", x.Format, x.Layer, tc.format, d)
				}
				if len(x.Entries) != 40 {
					t.Errorf("Build found %d entries, want 40", len(x.Entries))
				}
				if len(x.Frames) < 5 {
					t.Errorf("Build made %d frames over %d bytes with 32 KiB spans", len(x.Frames), len(tarData))
				}
				checkFrames(t, x, tc.blob, tarData)
			})
		}
	}
}

// TestBuildBlockSpan checks where frames without a window start: at
// deflate blocks at least BlockSpan apart, with a frame keeping its
// window at least every Span, and at every member's start.
func TestBuildBlockSpan(t *testing.T) {
	tarData := testLayer(t)
	// klauspost's fast levels end a block every 64 KiB; Go's own encoder
	// makes blocks longer than these spans.
	kgz := func(data []byte, level int) []byte {
		var buf bytes.Buffer
		zw, err := kgzip.NewWriterLevel(&buf, level)
		if err != nil {
			t.Fatal(err)
		}
		zw.Write(data)
		zw.Close()
		return buf.Bytes()
	}
	blob := kgz(tarData, 3)
	for _, opt := range []BuildOptions{
		{Span: 256 << 10},
		{Span: 256 << 10, BlockSpan: 32 << 10},
		{Span: 256 << 10, BlockSpan: 100 << 10},
		{Span: 128 << 10, BlockSpan: -1},
		{Span: 64 << 10, BlockSpan: 64 << 10},
	} {
		t.Run(fmt.Sprintf("span %d block %d", opt.Span, opt.BlockSpan), func(t *testing.T) {
			x, err := Build(t.Context(), "", bytes.NewReader(blob), opt)
			if err != nil {
				t.Fatal(err)
			}
			checkFrames(t, x, blob, tarData)
			block := opt.BlockSpan
			if block == 0 {
				block = DefaultBlockSpan
			}
			var chained int
			var kept int64 // Offset of the last frame with its own window
			for i, f := range x.Frames {
				if !x.NeedsFrameBefore(i) {
					if i > 0 && f.Offset-kept < opt.Span {
						t.Errorf("frame %d keeps a window %d bytes after the last, want ≥ %d", i, f.Offset-kept, opt.Span)
					}
					kept = f.Offset
					continue
				}
				chained++
				if block < 0 || block >= opt.Span {
					t.Fatalf("frame %d keeps no window with %+v", i, opt)
				}
				if prev := x.Frames[i-1].Size; prev < block || int64(f.PrevWindow) != min(prev, maxWindowLen) {
					t.Errorf("frame %d: PrevWindow %d after a %d-byte frame, want frames ≥ %d", i, f.PrevWindow, prev, block)
				}
				if f.Offset-kept >= opt.Span+MaxFrameSize {
					t.Errorf("frame %d is %d bytes past a window", i, f.Offset-kept)
				}
			}
			if want := block > 0 && block < opt.Span; (chained > 0) != want {
				t.Errorf("%d of %d frames keep no window, want some: %v", chained, len(x.Frames), want)
			}
			// Round trips through both encodings, whole and as a toc.
			data := mustMarshal(t, x)
			y, err := Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			checkFrames(t, y, blob, tarData)
			tocLen, _, _ := TOCLen(data)
			toc, err := Decode(data[:tocLen])
			if err != nil {
				t.Fatal(err)
			}
			for i := range x.Frames {
				if toc.Frames[i].PrevWindow != x.Frames[i].PrevWindow || y.Frames[i].PrevWindow != x.Frames[i].PrevWindow {
					t.Fatalf("frame %d: PrevWindow %d, decoded %d (whole) and %d (toc)", i, x.Frames[i].PrevWindow, y.Frames[i].PrevWindow, toc.Frames[i].PrevWindow)
				}
				if toc.NeedsFrameBefore(i) && toc.NeedsWindow(i) {
					t.Fatalf("frame %d needs the frame before and a window", i)
				}
			}
		})
	}
	// Members start frames that keep their window (an empty one).
	cut := len(tarData) / 3
	multi := append(kgz(tarData[:cut], 3), kgz(tarData[cut:], 1)...)
	x, err := Build(t.Context(), "", bytes.NewReader(multi), BuildOptions{Span: 256 << 10, BlockSpan: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	want := tarData
	var prev []byte
	memberStart := false
	for i, f := range x.Frames {
		got, err := x.DecodeFrameWith(i, multi[f.CompressedOffset:f.CompressedOffset+f.CompressedSize], x.WindowFrom(i, prev))
		if err != nil || !bytes.Equal(got, want[f.Offset:f.Offset+f.Size]) {
			t.Fatalf("frame %d of two members: %v", i, err)
		}
		prev = got
		if f.Offset == int64(cut) {
			memberStart = true
			if x.NeedsFrameBefore(i) || len(f.Window) != 0 {
				t.Errorf("frame %d starts the second member with a window", i)
			}
		}
	}
	if !memberStart {
		t.Errorf("no frame starts at the second member")
	}
}

func TestBuildRejectsCorruptLayers(t *testing.T) {
	gz := gzipLevel(t, testLayer(t), 6)
	flipped := bytes.Clone(gz)
	flipped[len(flipped)/2] ^= 0x40
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"truncated gzip", gz[:len(gz)/2]},
		{"flipped gzip bit", flipped},
		{"gzip trailer missing", gz[:len(gz)-8]},
		{"not a tar", bytes.Repeat([]byte("not a tar layer "), 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(t.Context(), digest.FromBytes(tc.blob), bytes.NewReader(tc.blob), BuildOptions{})
			if err == nil {
				t.Fatalf("Build(%s) succeeded", tc.name)
			}
		})
	}
}

func TestBuildStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Build(ctx, "sha256:00", bytes.NewReader(testLayer(t)), BuildOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Build with a cancelled context = %v, want context.Canceled", err)
	}
}

func FuzzWalkTar(f *testing.F) {
	f.Add(makeTar(f, []tarFile{{hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg}, body: []byte("hello")}}))
	f.Add(makeTar(f, []tarFile{
		{hdr: tar.Header{Name: strings.Repeat("long/", 40), Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "a"}},
		{hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"SCHILY.xattr.user.x": "y"}}},
	}))
	// Sparse files in each form, with extension blocks and a two-block map.
	var many []Extent
	for i := range 30 {
		many = append(many, Extent{Offset: int64(i) * 10, Length: 3})
	}
	small := newSparseFile("s", 400, []Extent{{0, 2}, {100, 5}, {399, 1}}, 1)
	long := newSparseFile("m", 300, many, 2)
	for _, write := range []func(*rawTar, sparseFile){(*rawTar).oldGNU, (*rawTar).pax00, (*rawTar).pax01, (*rawTar).pax10} {
		var w rawTar
		write(&w, small)
		write(&w, long)
		w.file("after", []byte("x"))
		f.Add(w.bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, size, err := WalkTar(bytes.NewReader(data))
		if err != nil {
			return
		}
		if size != int64(len(data)) {
			t.Fatalf("size %d of %d input bytes", size, len(data))
		}
		for _, e := range entries {
			if e.Path == "" || strings.HasPrefix(e.Path, "/") || e.Path == ".." || strings.HasPrefix(e.Path, "../") {
				t.Fatalf("unsafe path %q", e.Path)
			}
			if e.Sparse != nil {
				if msg := checkSparse(&e); e.Type != TypeReg || msg != "" {
					t.Fatalf("entry %q (%s): bad sparse map: %s", e.Path, e.Type, msg)
				}
				var n int64
				for _, p := range e.Pieces(0, e.Size) {
					if !p.Hole() && (p.Stream < e.Offset || p.Stream+p.Len > e.Offset+e.StoredSize()) {
						t.Fatalf("entry %q: piece %v outside its stored content [%d,+%d)", e.Path, p, e.Offset, e.StoredSize())
					}
					n += p.Len
				}
				if n != e.Size {
					t.Fatalf("entry %q: pieces cover %d of %d bytes", e.Path, n, e.Size)
				}
			}
			if e.Type == TypeReg && (e.Offset < 0 || e.Offset+e.StoredSize() > size) {
				t.Fatalf("entry %q content [%d,+%d) outside the stream of %d", e.Path, e.Offset, e.StoredSize(), size)
			}
		}
	})
}

// benchLayers is a layer shaped like a distribution's userland, generated
// once from a fixed seed: 4000 files in 200 directories, mostly small text
// files (4 KB on average) plus 20 binaries of 0.5 to 2.5 MiB, about 45 MiB
// of tar; and the
// same layer gzipped at the default level.
var benchLayers = sync.OnceValues(func() ([]byte, []byte) {
	r := rand.New(rand.NewPCG(2024, 5))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	write := func(h *tar.Header, body []byte) {
		h.ModTime, h.Format, h.Size = mtime, tar.FormatPAX, int64(len(body))
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(body); err != nil {
			panic(err)
		}
	}
	binary := func(n int) []byte { // random bytes with repeats, compressing about 2:1
		b := make([]byte, 0, n)
		for len(b) < n {
			if len(b) > 4096 && r.IntN(2) == 0 {
				from := r.IntN(len(b) - 4096)
				b = append(b, b[from:from+64+r.IntN(4000)]...)
				continue
			}
			for range 64 + r.IntN(512) {
				b = append(b, byte(r.Uint32()))
			}
		}
		return b[:n]
	}
	for d := range 200 {
		dir := fmt.Sprintf("usr/share/pkg%03d/", d)
		write(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
		for f := range 20 {
			name := fmt.Sprintf("%sfile%02d", dir, f)
			switch {
			case f == 19:
				write(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: "file00", Mode: 0o777}, nil)
			case d%10 == 0 && f == 0:
				write(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755}, binary(512<<10+r.IntN(2<<20)))
			default:
				write(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644},
					pseudoText(int(r.ExpFloat64()*4000), r.Uint64()))
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes())
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes(), gz.Bytes()
})

// BenchmarkBuild measures building an index by streaming a whole layer.
// Throughput is of the uncompressed tar stream, so the formats compare.
func BenchmarkBuild(b *testing.B) {
	tarData, gz := benchLayers()
	for _, bc := range []struct {
		name string
		blob []byte
	}{
		{"tar", tarData},
		{"gzip", gz},
	} {
		b.Run(bc.name, func(b *testing.B) {
			d := digest.FromBytes(bc.blob)
			var x *Index
			b.SetBytes(int64(len(tarData)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if x, err = Build(b.Context(), d, bytes.NewReader(bc.blob), BuildOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(bc.blob)), "blob-B")
			b.ReportMetric(float64(len(x.Entries)), "entries")
			b.ReportMetric(float64(len(x.Frames)), "frames")
		})
	}
}
