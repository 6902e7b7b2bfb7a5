package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Hostile layers at the index level: what WalkTar and Build make of names,
// links and sizes chosen to escape or exhaust, and the bounds on what a
// frame's decode allocates. RELIABILITY.md lists these with their figures.

func TestHostileNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  byte
		link string
		want string // cleaned path; "" = the root's own entry, dropped
	}{
		{"../etc/x", tar.TypeReg, "", "etc/x"},
		{"../../../../../../etc/cron.d/evil", tar.TypeReg, "", "etc/cron.d/evil"},
		{"/etc/abs", tar.TypeReg, "", "etc/abs"},
		{"a/../../../b", tar.TypeReg, "", "b"},
		{"./././c", tar.TypeReg, "", "c"},
		{"d//e", tar.TypeReg, "", "d/e"},
		{"f/./g/", tar.TypeDir, "", "f/g"},
		{"..", tar.TypeDir, "", ""},
		{"../", tar.TypeDir, "", ""},
		{"/", tar.TypeDir, "", ""},
		{"new\nline", tar.TypeReg, "", "new\nline"},
		{"\x01ctl\x7f", tar.TypeReg, "", "\x01ctl\x7f"},
		{"bad-utf8-\xff\xfe", tar.TypeReg, "", "bad-utf8-\xff\xfe"},
		{`back\..\slash`, tar.TypeReg, "", `back\..\slash`},
		{"...", tar.TypeReg, "", "..."},
		{"hl", tar.TypeLink, "../../../etc/shadow", "hl"},
		{"sl-abs", tar.TypeSymlink, "/etc/shadow", "sl-abs"},
		{"sl-up", tar.TypeSymlink, "../../..", "sl-up"},
	} {
		t.Run(fmt.Sprintf("%q", tc.name), func(t *testing.T) {
			data := makeTar(t, []tarFile{{hdr: tar.Header{Name: tc.name, Typeflag: tc.typ, Linkname: tc.link, Mode: 0o644}}})
			entries, _, err := WalkTar(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("WalkTar(%q) error %v", tc.name, err)
			}
			if tc.want == "" {
				if len(entries) != 0 {
					t.Errorf("WalkTar(%q) = %q, want the root's entry dropped", tc.name, entries[0].Path)
				}
				return
			}
			if len(entries) != 1 || entries[0].Path != tc.want {
				t.Fatalf("WalkTar(%q) = %v, want one entry %q", tc.name, entries, tc.want)
			}
			e := entries[0]
			switch tc.typ {
			case tar.TypeLink:
				// Cleaned like a path: it can only name something inside.
				if e.Linkname != "etc/shadow" {
					t.Errorf("hard link target = %q, want %q", e.Linkname, "etc/shadow")
				}
			case tar.TypeSymlink:
				// Kept as written: the kernel resolves it inside whatever
				// root the reader has; lazyfs never follows it.
				if e.Linkname != tc.link {
					t.Errorf("symlink target = %q, want %q as written", e.Linkname, tc.link)
				}
			}
		})
	}
}

func TestHostileNUL(t *testing.T) {
	// A NUL in a PAX path or linkpath: archive/tar refuses the header.
	for _, rec := range []string{"path=ok\x00../../etc/passwd", "linkpath=ok\x00/etc/shadow"} {
		var w rawTar
		w.pax(rec)
		w.header("placeholder", tar.TypeSymlink, 0, false, nil)
		_, _, err := WalkTar(bytes.NewReader(w.bytes()))
		if err == nil || !strings.Contains(err.Error(), "tar entry 0") {
			t.Errorf("WalkTar(PAX %q) error %v, want one naming entry 0", rec, err)
		}
	}
	// In a ustar name field a NUL ends the name: what follows is ignored.
	var w rawTar
	w.header("ok\x00../../etc/passwd", tar.TypeReg, 0, false, nil)
	entries, _, err := WalkTar(bytes.NewReader(w.bytes()))
	if err != nil || len(entries) != 1 || entries[0].Path != "ok" {
		t.Errorf("WalkTar(ustar name with a NUL) = %v, %v, want one entry \"ok\"", entries, err)
	}
}

func TestHostileNameLengths(t *testing.T) {
	long := strings.Repeat("n", NameMax)
	deep := strings.Repeat("d/", 2600) + "f" // 5201 bytes, past PATH_MAX
	for _, tc := range []struct {
		name    string
		hdr     tar.Header
		wantErr string
	}{
		{"element of NAME_MAX", tar.Header{Name: "dir/" + long, Typeflag: tar.TypeReg}, ""},
		{"whiteout of a NAME_MAX name", tar.Header{Name: "dir/.wh." + long, Typeflag: tar.TypeReg}, ""},
		{"element past NAME_MAX", tar.Header{Name: "dir/" + long + "x", Typeflag: tar.TypeReg}, "path element of 256 bytes"},
		{"directory element past NAME_MAX", tar.Header{Name: long + "x/f", Typeflag: tar.TypeReg}, "path element of 256 bytes"},
		// The kernel resolves a deep path element by element: nothing to refuse.
		{"path past PATH_MAX", tar.Header{Name: deep, Typeflag: tar.TypeReg}, ""},
		{"symlink target of PATH_MAX-1", tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("t/", SymlinkMax/2) + "t"}, ""},
		{"symlink target of PATH_MAX", tar.Header{Name: "s", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("t", SymlinkMax+1)}, "symlink target of 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := makeTar(t, []tarFile{{hdr: tc.hdr}})
			entries, _, err := WalkTar(bytes.NewReader(data))
			if tc.wantErr == "" {
				if err != nil || len(entries) != 1 {
					t.Fatalf("WalkTar(%s) = %d entries, %v, want 1", tc.name, len(entries), err)
				}
				x := &Index{Format: FormatTar, TarSize: int64(len(data)), Entries: entries}
				x.Frames = []Frame{{CompressedSize: x.TarSize, Size: x.TarSize, Digest: digest.FromBytes(data)}}
				x.BlobSize = x.TarSize
				if err := x.Validate(); err != nil {
					t.Errorf("Validate(%s) = %v", tc.name, err)
				}
				return
			}
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "tar entry") {
				t.Errorf("WalkTar(%s) error %v, want %v naming the entry and saying %q", tc.name, err, ErrUnsupported, tc.wantErr)
			}
		})
	}
	// An index from elsewhere (a registry) with such a name is refused too.
	x := &Index{Format: FormatTar, Entries: []Entry{{Path: long + "x", Type: TypeReg}}}
	if err := x.Validate(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "256 bytes") {
		t.Errorf("Validate(element of 256 bytes) = %v, want %v", err, ErrCorrupt)
	}
	x = &Index{Format: FormatTar, Entries: []Entry{{Path: "s", Type: TypeSymlink, Linkname: strings.Repeat("t", SymlinkMax+1)}}}
	if err := x.Validate(); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Validate(symlink target of 4096 bytes) = %v, want %v", err, ErrCorrupt)
	}
}

func TestHostileSizeClaims(t *testing.T) {
	const terabyte = 1 << 40
	t.Run("regular file claims 1 TiB", func(t *testing.T) {
		var w rawTar
		w.header("claims-a-terabyte", tar.TypeReg, 0, false, func(blk []byte) {
			// base-256: the octal field holds at most 8 GiB.
			clear(blk[hdrSize : hdrSize+12])
			blk[hdrSize] = 0x80
			binary.BigEndian.PutUint64(blk[hdrSize+4:], terabyte)
		})
		w.data([]byte("only this"))
		blob := w.bytes()
		_, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
		if err == nil || !strings.Contains(err.Error(), `"claims-a-terabyte"`) || !strings.Contains(err.Error(), "content of 1099511627776 bytes") ||
			!errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Build(1 TiB claim, 10 bytes) error %v, want unexpected EOF naming the entry", err)
		}
	})
	t.Run("sparse file of 1 TiB", func(t *testing.T) {
		var w rawTar
		data := []byte("the only data, at 512 GiB\n")
		w.pax10Raw("huge", terabyte, pax10Map([]Extent{{Offset: terabyte / 2, Length: int64(len(data))}}), data)
		blob := w.bytes()
		x, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
		if err != nil {
			t.Fatalf("Build(1 TiB sparse) error %v", err)
		}
		e := x.Entries[0]
		if e.Path != "huge" || e.Size != terabyte || len(e.Sparse) != 1 || e.StoredSize() != int64(len(data)) {
			t.Errorf("entry = %q size %d, %d fragments, %d stored, want huge of 1 TiB with one fragment of %d bytes",
				e.Path, e.Size, len(e.Sparse), e.StoredSize(), len(data))
		}
		if x.TarSize != int64(len(blob)) || len(x.Frames) != 1 {
			t.Errorf("TarSize %d in %d frames, want the %d-byte stream in one", x.TarSize, len(x.Frames), len(blob))
		}
	})
	t.Run("sparse fragment past the claimed size", func(t *testing.T) {
		var w rawTar
		w.pax10Raw("lies", 100, pax10Map([]Extent{{Offset: terabyte, Length: 5}}), []byte("12345"))
		blob := w.bytes()
		_, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
		// archive/tar refuses the map itself.
		if err == nil || !strings.Contains(err.Error(), `"lies"`) {
			t.Errorf("Build(fragment past size) error %v, want one naming the entry", err)
		}
	})
}

// deflateBomb returns a gzip member holding prefix followed by n zero bytes
// in a single fixed-Huffman deflate block, as no real encoder writes it: 13
// bits per 258 zeros, so 100 MiB of zeros is 660 KB. prefix must end in a
// zero byte (a tar header does).
func deflateBomb(prefix []byte, n int64) []byte {
	var out bytes.Buffer
	out.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	var acc uint64
	var nb uint
	put := func(v uint64, bits uint) { // LSB first
		acc |= v << nb
		nb += bits
		for nb >= 8 {
			out.WriteByte(byte(acc))
			acc >>= 8
			nb -= 8
		}
	}
	code := func(c uint64, bits uint) { // Huffman codes go MSB first
		var r uint64
		for i := range bits {
			r |= (c >> i & 1) << (bits - 1 - i)
		}
		put(r, bits)
	}
	literal := func(b byte) {
		if b < 144 {
			code(0x30+uint64(b), 8)
		} else {
			code(0x190+uint64(b-144), 9)
		}
	}
	put(1, 1) // BFINAL
	put(1, 2) // fixed Huffman
	for _, b := range prefix {
		literal(b)
	}
	for left := n; left > 0; {
		if left >= 258 {
			code(0xc5, 8) // length 258 (symbol 285)
			code(0, 5)    // distance 1
			left -= 258
			continue
		}
		literal(0)
		left--
	}
	code(0, 7) // end of block
	if nb > 0 {
		put(0, 8-nb)
	}
	crc := crc32.ChecksumIEEE(prefix)
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; left -= int64(len(zeros)) {
		crc = crc32.Update(crc, crc32.IEEETable, zeros[:min(left, int64(len(zeros)))])
	}
	binary.Write(&out, binary.LittleEndian, crc)
	binary.Write(&out, binary.LittleEndian, uint32(int64(len(prefix))+n))
	return out.Bytes()
}

// zeroFileHeader returns the header block of a regular file of size bytes.
func zeroFileHeader(t testing.TB, name string, size int64) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Size: size, Mode: 0o644, ModTime: time.Unix(1700000000, 0), Format: tar.FormatGNU}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	return b.Bytes() // the content and the end-of-archive blocks are zeros too
}

// peakHeap runs f and returns the largest heap in use seen while it ran,
// sampled every 10 ms.
func peakHeap(f func()) uint64 {
	runtime.GC()
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var m runtime.MemStats
		var most uint64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&m)
			most = max(most, m.HeapInuse)
			select {
			case <-done:
				peak <- most
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	return <-peak
}

func TestHostileGzipOneBlockBomb(t *testing.T) {
	const zeros = 100 << 20
	blob := deflateBomb(zeroFileHeader(t, "bomb", zeros), zeros+1024)
	var err error
	start := time.Now()
	heap := peakHeap(func() {
		_, err = Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
	})
	took := time.Since(start)
	t.Logf("a %d-byte gzip holding %d MiB of zeros in one deflate block: refused after %v, heap in use at most %.1f MiB: %v",
		len(blob), zeros>>20, took.Round(time.Millisecond), float64(heap)/(1<<20), err)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "gzip bomb") {
		t.Errorf("Build(one-block bomb) error %v, want %v saying gzip bomb", err, ErrUnsupported)
	}
	if heap > 64<<20 {
		t.Errorf("Build(one-block bomb) held %d MiB of heap, want under 64", heap>>20)
	}
	// The same block under the limit is a layer like any other.
	small := deflateBomb(zeroFileHeader(t, "fine", 8<<20), 8<<20+1024)
	x, err := Build(t.Context(), digest.FromBytes(small), bytes.NewReader(small), BuildOptions{})
	if err != nil || len(x.Frames) != 1 || x.Frames[0].Size != 8<<20+1536 {
		t.Fatalf("Build(8 MiB in one block) = %v, want one frame of the whole stream", err)
	}
	if _, err := x.DecodeFrame(0, small[x.Frames[0].CompressedOffset:]); err != nil {
		t.Errorf("DecodeFrame(8 MiB block) error %v", err)
	}
}

// zeroReader yields n zero bytes.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	clear(p[:k])
	z.n -= k
	return int(k), nil
}

// gzipBomb returns a gzip layer with one file of size zero bytes, as gzip -6
// compresses it (about 1030:1), made of members of 1 GiB each so that it
// costs one compression of 1 GiB, not of size.
func gzipBomb(t testing.TB, size int64) []byte {
	t.Helper()
	member := func(r io.Reader) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, 6)
		if _, err := io.Copy(zw, r); err != nil {
			t.Fatal(err)
		}
		zw.Close()
		return b.Bytes()
	}
	out := member(bytes.NewReader(zeroFileHeader(t, "zeros", size)))
	var gib []byte
	left := size
	for ; left >= 1<<30; left -= 1 << 30 {
		if gib == nil {
			gib = member(&zeroReader{n: 1 << 30})
		}
		out = append(out, gib...)
	}
	return append(out, member(&zeroReader{n: left + 1024})...)
}

func TestHostileGzipBomb(t *testing.T) {
	size := int64(10 << 30)
	switch {
	case raceEnabled:
		size = 128 << 20 // cmd/lazyfs's hostile test builds the 10 GiB one with the real binary
	case testing.Short():
		size = 1 << 30
	}
	blob := gzipBomb(t, size)
	var x *Index
	var err error
	start := time.Now()
	heap := peakHeap(func() {
		x, err = Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
	})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Build(gzip bomb) error %v", err)
	}
	// Equal windows and digests compress past the decoder's 4096:1 bomb
	// rule: the encoding is padded so that it still decodes.
	enc, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if y, err := Decode(enc); err != nil || len(y.Frames) != len(x.Frames) {
		t.Fatalf("Decode(MarshalBinary()) of the gzip bomb's index: %v", err)
	}
	var biggest int64
	for _, f := range x.Frames {
		biggest = max(biggest, f.Size)
	}
	t.Logf("gzip bomb: %d MiB of zeros in %.1f MB of gzip: indexed in %v (%.0f MB/s), heap in use at most %.1f MiB, %d frames (largest %d bytes), index %d bytes",
		size>>20, float64(len(blob))/1e6, took.Round(time.Millisecond), float64(size)/1e6/took.Seconds(),
		float64(heap)/(1<<20), len(x.Frames), biggest, len(enc))
	if x.Entries[0].Size != size || x.TarSize != size+1536 {
		t.Errorf("entry size %d, stream %d, want %d and %d", x.Entries[0].Size, x.TarSize, size, size+1536)
	}
	// What it keeps is the frames' windows (32 KiB each); the stream
	// passes. Heap in use counts garbage not yet collected: twice that.
	if bound := 2*uint64(len(x.Frames))*32<<10 + 32<<20; heap > bound {
		t.Errorf("Build(gzip bomb) held %d MiB of heap, want under %d (twice the windows, and 32 MiB)", heap>>20, bound>>20)
	}
	// A frame decodes to exactly its recorded size from its own bytes.
	f := x.Frames[len(x.Frames)/2]
	var got []byte
	decodeHeap := peakHeap(func() {
		got, err = x.DecodeFrame(len(x.Frames)/2, blob[f.CompressedOffset:f.CompressedOffset+f.CompressedSize])
	})
	if err != nil || int64(len(got)) != f.Size || digest.FromBytes(got) != f.Digest {
		t.Errorf("DecodeFrame(middle) = %d bytes, %v, want %d matching the digest", len(got), err, f.Size)
	}
	t.Logf("decoding one %d-byte frame from %d compressed bytes: heap in use at most %.1f MiB", f.Size, f.CompressedSize, float64(decodeHeap)/(1<<20))
}

func TestHostileFrameSize(t *testing.T) {
	// An index (from a registry, say) that records a frame past
	// MaxFrameSize is refused before anything would allocate it.
	size := int64(MaxFrameSize + 1)
	x := &Index{Format: FormatGzip, BlobSize: 100, TarSize: size,
		Frames: []Frame{{CompressedSize: 100, Size: size, Digest: digest.FromString("x")}}}
	if err := x.Validate(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "MaxFrameSize") {
		t.Errorf("Validate(frame of MaxFrameSize+1) = %v, want %v", err, ErrCorrupt)
	}
	if _, err := x.MarshalBinary(); err == nil {
		t.Error("MarshalBinary(frame of MaxFrameSize+1) succeeded")
	}
	if _, err := Build(t.Context(), "", bytes.NewReader(nil), BuildOptions{Span: MaxSpan + 1}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Build(span MaxSpan+1) error %v, want %v", err, ErrUnsupported)
	}
	// A frame whose bytes decode to more than its size yields its size: the
	// decoder stops there, it never allocates by what the stream holds.
	blob := gzipBomb(t, 64<<20)
	x, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lie := *x
	lie.Frames = append([]Frame(nil), x.Frames...)
	lie.Frames[0].CompressedSize = int64(len(blob)) - lie.Frames[0].CompressedOffset // the whole blob
	got, err := lie.DecodeFrame(0, blob[lie.Frames[0].CompressedOffset:])
	if err != nil || int64(len(got)) != x.Frames[0].Size {
		t.Errorf("DecodeFrame(0 with the whole blob) = %d bytes, %v, want its %d", len(got), err, x.Frames[0].Size)
	}
}

func TestHostileBuildLimits(t *testing.T) {
	var files []tarFile
	for i := range 101 {
		files = append(files, tarFile{hdr: tar.Header{Name: fmt.Sprintf("f%03d", i), Typeflag: tar.TypeReg}})
	}
	blob := makeTar(t, files)
	if _, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{MaxEntries: 101}); err != nil {
		t.Errorf("Build(101 entries, at most 101) error %v", err)
	}
	_, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{MaxEntries: 100})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `more than 100 entries (a tar bomb?): entry "f100"`) {
		t.Errorf("Build(101 entries, at most 100) error %v, want %v naming the entry", err, ErrUnsupported)
	}

	bomb := gzipBomb(t, 64<<20) // frames of ~4 MiB, each but the first with a 32 KiB window
	x, err := Build(t.Context(), digest.FromBytes(bomb), bytes.NewReader(bomb), BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var windows int64
	for _, f := range x.Frames {
		windows += int64(len(f.Window))
	}
	// The checkpoints at the members' ends count too, until they are found
	// to open no frame.
	if _, err := Build(t.Context(), digest.FromBytes(bomb), bytes.NewReader(bomb), BuildOptions{MaxWindowBytes: windows + 64<<10}); err != nil {
		t.Errorf("Build(windows of %d bytes, at most %d) error %v", windows, windows+64<<10, err)
	}
	_, err = Build(t.Context(), digest.FromBytes(bomb), bytes.NewReader(bomb), BuildOptions{MaxWindowBytes: windows - 1})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "deflate windows") {
		t.Errorf("Build(windows of %d bytes, at most %d) error %v, want %v", windows, windows-1, err, ErrUnsupported)
	}
}
