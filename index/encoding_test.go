package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

var updateGolden = flag.Bool("update", false, "rewrite golden files under testdata/")

const (
	goldenIndexFile       = "testdata/index-v1.golden"
	goldenSparseIndexFile = "testdata/index-v1-sparse.golden"
)

// frameDigest is a deterministic, valid sha256 digest for test frames.
func frameDigest(i int) digest.Digest {
	return digest.FromString(fmt.Sprintf("frame %d", i))
}

// encText returns n bytes of compressible, word-like text from a fixed seed.
func encText(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	words := []string{"usr", "lib", "share", "doc", "copyright", "the", "and", "GNU", "license", "\n", "\t", "{", "}", "return"}
	b := make([]byte, 0, n+16)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
		b = append(b, ' ')
	}
	return b[:n]
}

// encSampleIndex is a gzip layer's index with every entry type, xattrs,
// long and unicode paths, times before 1970 and with nanoseconds, and
// frames with and without windows.
func encSampleIndex() *Index {
	const mib = 1 << 20
	longDir := strings.Repeat("d/", 60)                  // a path past tar's 100-byte name field
	veryLong := strings.Repeat("abcdefgh/", 500) + "end" // past PATH_MAX
	t0 := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	x := &Index{
		Layer:    digest.FromString("layer"),
		Format:   FormatGzip,
		TarSize:  3 * mib,
		BlobSize: 900_000,
		Frames: []Frame{
			{CompressedOffset: 0, CompressedSize: 300_001, Offset: 0, Size: mib, Digest: frameDigest(0)},
			{CompressedOffset: 300_000, CompressedSize: 300_001, Offset: mib, Size: mib, Digest: frameDigest(1),
				Bits: 3, Window: encText(32<<10, 1)},
			{CompressedOffset: 600_000, CompressedSize: 300_000, Offset: 2 * mib, Size: mib, Digest: frameDigest(2),
				Bits: 7, Window: encText(100, 2)},
		},
		Entries: []Entry{
			{Path: "etc", Type: TypeDir, Mode: 0o755, ModTime: time.Date(1969, 7, 20, 20, 17, 40, 123456789, time.UTC)},
			{Path: "etc/passwd", Type: TypeReg, Mode: 0o644, Size: 1000, Offset: 1024, ModTime: t0,
				Xattrs: []Xattr{{"security.selinux", "system_u:object_r:etc_t:s0\x00"}, {"user.empty", ""}, {"user.z", "\x00\xff"}}},
			{Path: "etc/passwd-", Type: TypeHardlink, Linkname: "etc/passwd", ModTime: t0},
			{Path: "etc/ünïcødé/日本語.txt", Type: TypeReg, Mode: 0o600, UID: 1000, GID: 1000, Size: 5, Offset: 3072,
				ModTime: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC)},
			{Path: "bin", Type: TypeSymlink, Mode: 0o777, Linkname: "usr/bin", ModTime: t0},
			{Path: "lib64", Type: TypeSymlink, Mode: 0o777, Linkname: "/usr/lib/../lib64/./", ModTime: t0},
			{Path: "dev/null", Type: TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: t0},
			{Path: "dev/sda", Type: TypeBlock, Mode: 0o660, GID: 6, Devmajor: 8, ModTime: t0},
			{Path: "dev/zero-dev", Type: TypeChar, ModTime: t0}, // device 0, 0: an overlay whiteout
			{Path: "run/initctl", Type: TypeFIFO, Mode: 0o600, ModTime: t0},
			{Path: "usr/bin/sudo", Type: TypeReg, Mode: 0o7755, UID: math.MaxUint32, GID: math.MaxUint32,
				Size: 2*mib + 100, Offset: 4096, ModTime: time.Unix(1<<40, 999_999_999)},
			{Path: "var/.wh.cache", Type: TypeReg, Offset: 2*mib + 5000, ModTime: t0},
			{Path: "var/empty", Type: TypeReg, Mode: 0o644, Offset: 3*mib - 512}, // zero ModTime
			{Path: longDir + "file", Type: TypeReg, Size: 1, Offset: 3*mib - 1, ModTime: t0},
			{Path: longDir + "link", Type: TypeSymlink, Linkname: longDir + "file", ModTime: t0},
			{Path: veryLong, Type: TypeDir, Mode: 0o700, ModTime: t0},
			{Path: veryLong + "/x", Type: TypeReg, Offset: 512, ModTime: t0},
			{Path: "z", Type: TypeDir, Offset: 77, ModTime: t0}, // a non-file entry with an offset
			{Path: "z/sparse", Type: TypeReg, Mode: 0o644, Size: 1 << 40, Offset: 2*mib + 6000, ModTime: t0,
				Sparse: []Extent{{0, 100}, {100, 4096}, {1 << 30, 512}, {1<<40 - 1, 1}}},
			{Path: "z/all-hole", Type: TypeReg, Mode: 0o644, Size: 5000, Offset: 2*mib + 6000, ModTime: t0,
				Sparse: []Extent{}},
			{Path: "z/after", Type: TypeReg, Size: 10, Offset: 3*mib - 100, ModTime: t0},
		},
	}
	return x
}

// encSamples are indexes of each format and shape the round trip covers.
func encSamples() map[string]*Index {
	tarIdx := &Index{Layer: digest.FromString("tar"), Format: FormatTar, BlobSize: 3000, TarSize: 3000,
		Frames: []Frame{
			{CompressedOffset: 0, CompressedSize: 2048, Offset: 0, Size: 2048, Digest: frameDigest(0)},
			{CompressedOffset: 2048, CompressedSize: 952, Offset: 2048, Size: 952, Digest: frameDigest(1)},
		},
		Entries: []Entry{
			{Path: "a", Type: TypeReg, Mode: 0o644, Size: 100, Offset: 512, ModTime: time.Unix(0, 0)},
			{Path: "a.wh", Type: TypeReg, Mode: 0o644, Size: 0, Offset: 1536, ModTime: time.Unix(-1, 5)},
		},
	}
	// A zstd layer's frames all span the whole blob (one zstd frame).
	zstdIdx := &Index{Format: FormatZstd, BlobSize: 500, TarSize: 4096,
		Frames: []Frame{
			{CompressedOffset: 0, CompressedSize: 500, Offset: 0, Size: 1024, Digest: frameDigest(0)},
			{CompressedOffset: 0, CompressedSize: 500, Offset: 1024, Size: 3072, Digest: frameDigest(1)},
		},
		Entries: []Entry{{Path: "only", Type: TypeReg, Size: 2000, Offset: 512, ModTime: time.Unix(1700000000, 1)}},
	}
	// Frames 1 and 2 keep no window: theirs is the end of the frame before.
	chained := encSampleIndex()
	chained.Frames[1].Window, chained.Frames[1].PrevWindow = nil, 32<<10
	chained.Frames[2].Window, chained.Frames[2].PrevWindow = nil, 100
	return map[string]*Index{
		"gzip sample":                         encSampleIndex(),
		"gzip, windows from the frame before": chained,
		"tar":                                 tarIdx,
		"zstd":                                zstdIdx,
		"empty":                               {Format: FormatTar},
		"golden":                              encGoldenIndex(),
		"sparse":                              encGoldenSparseIndex(),
	}
}

// indexDiff describes the first difference between two indexes, or "".
// Times compare as instants, and empty slices equal nil ones.
func indexDiff(got, want *Index) string {
	g, w := normalizedIndex(got), normalizedIndex(want)
	if reflect.DeepEqual(g, w) {
		return ""
	}
	if len(g.Entries) != len(w.Entries) || len(g.Frames) != len(w.Frames) {
		return fmt.Sprintf("%d entries, %d frames; want %d, %d", len(g.Entries), len(g.Frames), len(w.Entries), len(w.Frames))
	}
	for i := range g.Entries {
		if !reflect.DeepEqual(g.Entries[i], w.Entries[i]) {
			return fmt.Sprintf("entry %d = %+v\nwant %+v", i, g.Entries[i], w.Entries[i])
		}
	}
	for i := range g.Frames {
		gf, wf := g.Frames[i], w.Frames[i]
		if !reflect.DeepEqual(gf, wf) {
			gf.Window, wf.Window = nil, nil
			return fmt.Sprintf("frame %d = %+v (window %d bytes)\nwant %+v (window %d bytes)",
				i, gf, len(g.Frames[i].Window), wf, len(w.Frames[i].Window))
		}
	}
	g.Entries, g.Frames, w.Entries, w.Frames = nil, nil, nil, nil
	return fmt.Sprintf("index = %+v\nwant %+v", g, w)
}

func normalizedIndex(x *Index) Index {
	if x.inMemory() {
		// Windows kept compressed compare as the windows they hold.
		loaded, err := x.WithWindows(nil)
		if err != nil {
			panic(err)
		}
		x = loaded
	}
	y := *x
	y.Entries = append([]Entry(nil), x.Entries...)
	y.Frames = append([]Frame(nil), x.Frames...)
	for i := range y.Entries {
		e := &y.Entries[i]
		e.ModTime = time.Unix(e.ModTime.Unix(), int64(e.ModTime.Nanosecond())).UTC()
		if len(e.Xattrs) == 0 {
			e.Xattrs = nil
		}
	}
	for i := range y.Frames {
		if len(y.Frames[i].Window) == 0 {
			y.Frames[i].Window = nil
		}
	}
	if len(y.Entries) == 0 {
		y.Entries = nil
	}
	if len(y.Frames) == 0 {
		y.Frames = nil
	}
	return y
}

func mustMarshal(t testing.TB, x *Index) []byte {
	t.Helper()
	data, err := x.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary() error: %v", err)
	}
	return data
}

func TestEncodingRoundTrip(t *testing.T) {
	for name, want := range encSamples() {
		t.Run(name, func(t *testing.T) {
			data := mustMarshal(t, want)
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(MarshalBinary()) error: %v", err)
			}
			if d := indexDiff(got, want); d != "" {
				t.Fatalf("Decode(MarshalBinary()): %s", d)
			}
			for i, e := range got.Entries {
				if e.Xattrs != nil && len(e.Xattrs) == 0 {
					t.Errorf("entry %d: Xattrs empty but not nil", i)
				}
				if !e.ModTime.Equal(want.Entries[i].ModTime) {
					t.Errorf("entry %d: ModTime = %v, want %v", i, e.ModTime, want.Entries[i].ModTime)
				}
			}
			for i, f := range got.Frames {
				if f.Window != nil && len(f.Window) == 0 {
					t.Errorf("frame %d: Window empty but not nil", i)
				}
				if cap(f.Window) != len(f.Window) {
					t.Errorf("frame %d: Window cap %d > len %d: an append would clobber the next window", i, cap(f.Window), len(f.Window))
				}
			}
			var y Index
			if err := y.UnmarshalBinary(data); err != nil {
				t.Fatalf("UnmarshalBinary() error: %v", err)
			}
			if d := indexDiff(&y, want); d != "" {
				t.Fatalf("UnmarshalBinary(): %s", d)
			}
		})
	}
}

// TestEncodingBuiltIndex encodes what Build makes of a real tar, plain and
// gzipped: times as archive/tar returns them, real frames and windows.
func TestEncodingBuiltIndex(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	for i := range 200 {
		hdr := &tar.Header{Name: fmt.Sprintf("usr/share/doc/pkg%d/", i/20), Typeflag: tar.TypeDir, Mode: 0o755,
			ModTime: time.Unix(1700000000+int64(i), int64(i)*1000), Format: tar.FormatPAX}
		if i%20 != 0 {
			body := encText(i*100, uint64(i))
			hdr = &tar.Header{Name: fmt.Sprintf("usr/share/doc/pkg%d/f%d", i/20, i), Typeflag: tar.TypeReg, Mode: 0o644,
				Size: int64(len(body)), ModTime: hdr.ModTime, Format: tar.FormatPAX,
				PAXRecords: map[string]string{"SCHILY.xattr.user.i": fmt.Sprint(i)}}
			if err := tw.WriteHeader(hdr); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	var gzBuf bytes.Buffer
	zw := gzip.NewWriter(&gzBuf)
	zw.Write(tarBuf.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	for name, blob := range map[string][]byte{"tar": tarBuf.Bytes(), "gzip": gzBuf.Bytes()} {
		t.Run(name, func(t *testing.T) {
			want, err := Build(t.Context(), digest.FromBytes(blob), bytes.NewReader(blob), BuildOptions{Span: 4096})
			if err != nil {
				t.Fatalf("Build() error: %v", err)
			}
			got, err := Decode(mustMarshal(t, want))
			if err != nil {
				t.Fatalf("Decode(MarshalBinary()) error: %v", err)
			}
			if d := indexDiff(got, want); d != "" {
				t.Fatalf("Decode(MarshalBinary()): %s", d)
			}
			if !reflect.DeepEqual(got.Entries, want.Entries) {
				t.Errorf("decoded entries differ from Build's under reflect.DeepEqual (time zone or nil slices)")
			}
		})
	}
}

// TestDecodeZeroWindows checks the most compressible real index, a gzip
// layer of zeros (every window all zeros), against the decoder's bomb
// limit: it must decode, with room to spare.
func TestDecodeZeroWindows(t *testing.T) {
	const n, span = 256, 1 << 20
	x := &Index{Format: FormatGzip, TarSize: n * span, BlobSize: n * 1100}
	for i := range n {
		f := Frame{Offset: int64(i) * span, Size: span, CompressedOffset: int64(i) * 1100, CompressedSize: 1100,
			Digest: frameDigest(i)}
		if i > 0 {
			f.Window = make([]byte, 32<<10)
		}
		x.Frames = append(x.Frames, f)
	}
	data := mustMarshal(t, x)
	_, need, _ := x.appendBody(nil, encVersion1, nil)
	if ratio := float64(need) / float64(len(data)); ratio > encMaxRatio/2 {
		t.Errorf("decoding needs %.0f times the encoding's size, too close to the limit %d", ratio, encMaxRatio)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode(MarshalBinary()) error: %v", err)
	}
	if d := indexDiff(got, x); d != "" {
		t.Fatal(d)
	}
}

func TestEncodingDeterministic(t *testing.T) {
	x := encSampleIndex()
	a, b := mustMarshal(t, x), mustMarshal(t, x)
	if !bytes.Equal(a, b) {
		t.Fatalf("two MarshalBinary() calls differ: %d and %d bytes", len(a), len(b))
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	x := encSampleIndex()
	x.Frames[1].Digest = digest.Digest("sha512:" + strings.Repeat("ab", 64))
	if _, err := x.MarshalBinary(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "frame 1") {
		t.Fatalf("MarshalBinary() with a sha512 frame digest = %v, want an error wrapping ErrCorrupt naming frame 1", err)
	}
}

func TestDecodeTruncated(t *testing.T) {
	data := mustMarshal(t, encSamples()["tar"])
	for n := range len(data) {
		if _, err := Decode(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode(first %d of %d bytes) = %v, want an error wrapping ErrCorrupt", n, len(data), err)
		}
	}
	if _, err := Decode(append(data[:len(data):len(data)], 0)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Decode(encoding + 1 byte) = %v, want an error wrapping ErrCorrupt", err)
	}
}

func TestDecodeBitFlips(t *testing.T) {
	data := mustMarshal(t, encSamples()["tar"])
	for i := range data {
		for _, mask := range []byte{0x01, 0x10, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= mask
			_, err := Decode(bad)
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("Decode(byte %d ^ %#x) = %v, want an error", i, mask, err)
			}
		}
	}
}

func TestDecodeUnknownVersion(t *testing.T) {
	good := mustMarshal(t, encSamples()["empty"])
	for _, v := range []uint64{0, 3, 7, math.MaxUint64} {
		data := binary.AppendUvarint([]byte(encMagic), v)
		data = append(data, good[len(encMagic)+1:]...)
		_, err := Decode(data)
		want := fmt.Sprintf("index: unsupported encoding version %d (this build reads 1 and 2)", v)
		if !errors.Is(err, ErrUnsupportedVersion) || err.Error() != want {
			t.Errorf("Decode(version %d) = %v, want %q", v, err, want)
		}
	}
}

func TestDecodeNotAnIndex(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("LZFSIDX"), []byte("{\"entries\": []}"), []byte("\x28\xb5\x2f\xfd")} {
		if _, err := Decode(data); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
			t.Errorf("Decode(%q) = %v, want an error about the magic", data, err)
		}
	}
}

// envelope builds an encoding around raw body bytes with a correct
// checksum, letting tests reach the body parser with any content.
func envelope(t testing.TB, rawLen int, body []byte) []byte {
	t.Helper()
	enc, err := zstdEncoder()
	if err != nil {
		t.Fatal(err)
	}
	z := enc.EncodeAll(body, nil)
	out := append([]byte(encMagic), encVersion1)
	out = binary.AppendUvarint(out, uint64(rawLen))
	out = binary.AppendUvarint(out, uint64(len(z)))
	out = append(out, z...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, crc32c))
}

// bodyWriter writes a body field by field.
type bodyWriter struct{ b []byte }

func (w *bodyWriter) u(vs ...uint64) *bodyWriter {
	for _, v := range vs {
		w.b = binary.AppendUvarint(w.b, v)
	}
	return w
}
func (w *bodyWriter) s(v int64) *bodyWriter     { w.b = binary.AppendVarint(w.b, v); return w }
func (w *bodyWriter) raw(p ...byte) *bodyWriter { w.b = append(w.b, p...); return w }
func (w *bodyWriter) str(s string) *bodyWriter {
	w.b = append(binary.AppendUvarint(w.b, uint64(len(s))), s...)
	return w
}

// tarHeader writes the header of a tar-format body without a layer digest.
func tarHeader(blob, tarSize, frames, entries, xattrs, strBytes uint64) *bodyWriter {
	w := &bodyWriter{}
	return w.raw(byte(FormatTar)).str("").u(blob, tarSize, frames, entries, xattrs, strBytes)
}

// dirEntry writes a directory entry with a fresh path (no shared prefix).
func (w *bodyWriter) dirEntry(p string) *bodyWriter {
	return w.raw(byte(TypeDir)).u(0).str(p).u(0o755, 0, 0).s(0)
}

func TestDecodeCorruptBody(t *testing.T) {
	oneFrame := func(w *bodyWriter) *bodyWriter {
		return w.u(100).raw(0).u(0).raw(make([]byte, 32)...)
	}
	for _, tc := range []struct {
		name string
		body []byte
		want string
	}{
		{"valid", tarHeader(0, 0, 0, 1, 0, 3).dirEntry("etc").b, ""},
		{"left over bytes", tarHeader(0, 0, 0, 1, 0, 3).dirEntry("etc").raw(0).b, "1 bytes left over"},
		{"header truncated", tarHeader(0, 0, 0, 1, 0, 3).b[:5], "header: entry count past end"},
		{"entry count past end", tarHeader(0, 0, 0, 1000, 0, 3).dirEntry("etc").b, "1000 entries cannot fit"},
		{"frame count past end", tarHeader(0, 0, 10, 0, 0, 0).b, "10 frames cannot fit"},
		{"xattr count past end", tarHeader(0, 0, 0, 0, 50, 0).b, "50 xattrs cannot fit"},
		{"string bytes past limit", tarHeader(0, 0, 0, 0, 0, 1<<40).b, "string bytes exceed the decoding limit"},
		{"path length past end", tarHeader(0, 0, 0, 1, 0, 3).raw(byte(TypeDir)).u(0, 9999).raw([]byte("etc")...).b,
			"entry 0: path length 9999 past end"},
		{"shared prefix too long",
			tarHeader(0, 0, 0, 2, 0, 6).dirEntry("etc").raw(byte(TypeDir)).u(4).str("").u(0, 0, 0).s(0).b,
			"entry 1: shares 4 path bytes with a 3-byte path"},
		{"strings overrun", tarHeader(0, 0, 0, 1, 0, 2).dirEntry("etc").b, "path of 3 bytes overruns"},
		{"strings short", tarHeader(0, 0, 0, 1, 0, 4).dirEntry("etc").b, "3 string bytes, header says 4"},
		{"varint overflow", tarHeader(0, 0, 0, 1, 0, 3).raw(byte(TypeDir)).u(0).str("etc").raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f).b,
			"entry 0: mode overflows 64 bits"},
		{"uid too large", tarHeader(0, 0, 0, 1, 0, 3).raw(byte(TypeDir)).u(0).str("etc").u(0o755, 1<<32).b,
			"entry 0: uid 4294967296 too large"},
		{"nanoseconds out of range", tarHeader(0, 0, 0, 1, 0, 3).raw(byte(TypeDir)|headNanos).u(0).str("etc").u(0o755, 0, 0).s(0).u(1e9).b,
			"entry 0: mtime nanoseconds 1000000000 not in"},
		{"file past tar end", tarHeader(100, 100, 1, 1, 0, 71+1).u(100).raw(0).u(0).raw(make([]byte, 32)...).
			raw(byte(TypeReg)).u(0).str("f").u(0o644, 0, 0).s(0).u(50).s(60).b,
			"entry 0: size 50 at offset 60 runs past the tar's 100 bytes"},
		{"sparse file", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(1000).s(0).u(2, 10, 5, 500, 95).b, ""},
		{"sparse fragment count past end", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(5).s(0).b,
			"entry 0: fragment count past end"},
		{"sparse fragments cannot fit", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(5).s(0).u(1000, 1, 1).b,
			"entry 0: 1000 sparse fragments cannot fit"},
		{"sparse fragment past size", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(50).s(0).u(1, 40, 20).b,
			"entry 0: sparse fragment 0 [0+40,+20) not inside size 50"},
		{"sparse fragment empty", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(50).s(0).u(1, 40, 0).b,
			"entry 0: sparse fragment 0 [0+40,+0) not inside size 50"},
		{"sparse stored past tar end", oneFrame(tarHeader(100, 100, 1, 1, 0, 71+1)).
			raw(byte(TypeReg)|headSparse).u(0).str("f").u(0o644, 0, 0).s(0).u(1000).s(60).u(1, 0, 50).b,
			"entry 0: 50 stored bytes at offset 60 run past the tar's 100 bytes"},
		{"frame past tar end", tarHeader(100, 100, 1, 0, 0, 71).u(101).raw(0).u(0).raw(make([]byte, 32)...).b,
			"frame 0: size 101 runs past tar size 100"},
		{"compressed range outside blob",
			(&bodyWriter{}).raw(byte(FormatGzip)).str("").u(100, 100, 1, 0, 0, 71).u(100).s(-1).u(10).raw(0).u(0).raw(make([]byte, 32)...).b,
			"frame 0: compressed offset 0-1 outside"},
		{"empty link name with flag", tarHeader(0, 0, 0, 1, 0, 1).raw(byte(TypeSymlink)|headLinkname).u(0).str("l").u(0o777, 0, 0).s(0).u(0).b,
			"entry 0: empty link name"},
		{"xattrs beyond header count", tarHeader(0, 0, 0, 1, 1, 3).raw(byte(TypeDir)|headXattrs).u(0).str("etc").u(0o755, 0, 0).s(0).u(2).b,
			"entry 0: 2 xattrs, but 1 left"},
		{"unknown type", tarHeader(0, 0, 0, 1, 0, 3).raw(0).u(0).str("etc").u(0o755, 0, 0).s(0).b,
			"entry 0 \"etc\": Type 0 unknown"},
		{"path leaves root", tarHeader(0, 0, 0, 1, 0, 4).dirEntry("../x").b, "leaves the root"},
		{"unknown format", (&bodyWriter{}).raw(9).str("").u(0, 0, 0, 0, 0, 0).b, "Format 9 unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(envelope(t, len(tc.body), tc.body))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Decode() error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode() = %v, want an error wrapping ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeEnvelopeLengths(t *testing.T) {
	body := tarHeader(0, 0, 0, 1, 0, 3).dirEntry("etc").b
	zeros := make([]byte, 4<<20) // compresses ~10000:1
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"raw length short", envelope(t, len(body)-1, body), "body:"},
		{"raw length long", envelope(t, len(body)+1, body), "body decompressed to"},
		{"zstd bomb", envelope(t, len(zeros), zeros), "exceeds the"},
		{"bomb with a lying length", envelope(t, 100, zeros), "body:"},
		{"checksum", func() []byte { d := envelope(t, len(body), body); d[len(d)-1]++; return d }(), "checksum"},
		{"compressed length", func() []byte {
			d := envelope(t, len(body), body)
			d = append(d[:len(d)-4], 0) // one more byte after the zstd frame
			return binary.LittleEndian.AppendUint32(d, crc32.Checksum(d, crc32c))
		}(), "compressed body length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode() = %v, want an error wrapping ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
}

// encGoldenIndex is the content of testdata/index-v1.golden. Never change
// it: the golden file proves that encodings written by earlier builds still
// decode. A new format version gets a new golden file and function.
func encGoldenIndex() *Index {
	t0 := time.Date(2023, 11, 14, 22, 13, 20, 0, time.UTC)
	return &Index{
		Layer:    "sha256:3f1c8a4b52a3e0d2cd2a8f84b7f5f0f2d5dbb2f73f80ed0ad6f66f87ff9a1a7c",
		Format:   FormatGzip,
		BlobSize: 2100,
		TarSize:  6144,
		Frames: []Frame{
			{CompressedOffset: 10, CompressedSize: 1001, Offset: 0, Size: 4096,
				Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000001"},
			{CompressedOffset: 1010, CompressedSize: 1090, Offset: 4096, Size: 2048, Bits: 5,
				Window: []byte("the last bytes before the checkpoint, as a window"),
				Digest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"},
		},
		Entries: []Entry{
			{Path: "bin", Type: TypeSymlink, Mode: 0o777, Linkname: "usr/bin", ModTime: t0},
			{Path: "dev", Type: TypeDir, Mode: 0o755, ModTime: t0},
			{Path: "dev/console", Type: TypeChar, Mode: 0o600, Devmajor: 5, Devminor: 1, ModTime: t0},
			{Path: "dev/loop0", Type: TypeBlock, Mode: 0o660, GID: 6, Devmajor: 7, ModTime: t0},
			{Path: "etc", Type: TypeDir, Mode: 0o755, ModTime: time.Date(1969, 12, 31, 23, 59, 59, 500, time.UTC)},
			{Path: "etc/hosts", Type: TypeReg, Mode: 0o644, Size: 120, Offset: 3072, ModTime: t0.Add(123456789)},
			{Path: "etc/hosts.bak", Type: TypeHardlink, Linkname: "etc/hosts", ModTime: t0},
			{Path: "run/ctl", Type: TypeFIFO, Mode: 0o600, UID: 1000, GID: 1000, ModTime: t0},
			{Path: "usr/bin/ping", Type: TypeReg, Mode: 0o4755, Size: 2000, Offset: 3584, ModTime: t0,
				Xattrs: []Xattr{{"security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00"}, {"user.note", "ünïcødé"}}},
			{Path: "usr/share/日本語", Type: TypeReg, Mode: 0o644, Offset: 5632, ModTime: t0},
		},
	}
}

// encGoldenSparseIndex is the content of testdata/index-v1-sparse.golden:
// version 1 with sparse files (the 0x40 flag on a regular file), added
// after index-v1.golden. Never change it either.
func encGoldenSparseIndex() *Index {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Index{
		Layer:    "sha256:9a0c3e6f5d2b1a4c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d",
		Format:   FormatTar,
		BlobSize: 8192,
		TarSize:  8192,
		Frames: []Frame{
			{CompressedOffset: 0, CompressedSize: 8192, Offset: 0, Size: 8192,
				Digest: "sha256:00000000000000000000000000000000000000000000000000000000000000ff"},
		},
		Entries: []Entry{
			{Path: "plain", Type: TypeReg, Mode: 0o644, Size: 600, Offset: 512, ModTime: t0},
			{Path: "sparse", Type: TypeReg, Mode: 0o600, Size: 64 << 20, Offset: 2048, ModTime: t0,
				Sparse: []Extent{{0, 4096}, {1 << 20, 512}, {64<<20 - 1, 1}}},
			{Path: "all-hole", Type: TypeReg, Mode: 0o644, Size: 1 << 30, Offset: 7680, ModTime: t0,
				Sparse: []Extent{}},
			{Path: "dev", Type: TypeDir, Mode: 0o755, ModTime: t0},
		},
	}
}

func TestGolden(t *testing.T) {
	for _, g := range []struct {
		file string
		want *Index
	}{
		{goldenIndexFile, encGoldenIndex()},
		{goldenSparseIndexFile, encGoldenSparseIndex()},
	} {
		t.Run(filepath.Base(g.file), func(t *testing.T) {
			if *updateGolden {
				data, err := g.want.marshal(encVersion1) // these files are version 1
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(g.file), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(g.file, data, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s (%d bytes)", g.file, len(data))
			}
			data, err := os.ReadFile(g.file)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s) error: %v", g.file, err)
			}
			if d := indexDiff(got, g.want); d != "" {
				t.Fatalf("Decode(%s): %s", g.file, d)
			}
			for i := range got.Entries {
				// indexDiff tells nil from empty too; this says it plainly.
				if a, b := got.Entries[i].Sparse, g.want.Entries[i].Sparse; (a == nil) != (b == nil) {
					t.Errorf("Decode(%s): entry %d Sparse %#v, want %#v", g.file, i, a, b)
				}
			}
		})
	}
}

// synthIndex is a gzip layer's index of n entries shaped like a
// distribution's /usr/share/doc: directories of ~100 small files, a few
// symlinks and xattrs, frames every 1 MiB with 32 KiB windows.
func synthIndex(n int) *Index {
	r := rand.New(rand.NewPCG(42, 42))
	x := &Index{Layer: digest.FromString("synthetic"), Format: FormatGzip, Entries: make([]Entry, 0, n)}
	var pos int64 // tar stream position
	base := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).Unix()
	add := func(e Entry) {
		pos += 512
		if e.Type == TypeReg {
			e.Offset = pos
			pos += (e.Size + 511) &^ 511
		}
		x.Entries = append(x.Entries, e)
	}
	for pkg := 0; len(x.Entries) < n; pkg++ {
		dir := fmt.Sprintf("usr/share/doc/pkg%03d", pkg)
		mt := time.Unix(base+r.Int64N(1e7), 0)
		add(Entry{Path: dir, Type: TypeDir, Mode: 0o755, ModTime: mt})
		for f := 0; f < 99 && len(x.Entries) < n; f++ {
			p := fmt.Sprintf("%s/file%03d", dir, f)
			ft := mt
			if r.IntN(2) == 0 {
				ft = time.Unix(mt.Unix()+r.Int64N(1000), r.Int64N(1e9))
			}
			switch {
			case f%40 == 39:
				add(Entry{Path: p, Type: TypeSymlink, Mode: 0o777, Linkname: "../common/copyright", ModTime: ft})
			default:
				e := Entry{Path: p, Type: TypeReg, Mode: 0o644, Size: int64(r.ExpFloat64() * 500), ModTime: ft}
				if f%97 == 0 {
					e.Xattrs = []Xattr{{"security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"}}
				}
				add(e)
			}
		}
	}
	pos += 1024 // end-of-archive blocks
	x.TarSize = pos
	const span = 1 << 20
	var blob int64 = 10
	for off := int64(0); off < x.TarSize; off += span {
		size := min(span, x.TarSize-off)
		f := Frame{Offset: off, Size: size, CompressedOffset: blob, CompressedSize: size/4 + 1,
			Digest: digest.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256(fmt.Appendf(nil, "%d", off))))}
		if off > 0 {
			f.Bits = uint8(r.IntN(8))
			f.Window = encText(32<<10, uint64(off))
		}
		blob += size / 4
		x.Frames = append(x.Frames, f)
	}
	x.BlobSize = blob + 1 + 8
	return x
}

func TestSynthIndexValid(t *testing.T) {
	x := synthIndex(5000)
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := Decode(mustMarshal(t, x))
	if err != nil {
		t.Fatal(err)
	}
	if d := indexDiff(got, x); d != "" {
		t.Fatal(d)
	}
}

func BenchmarkEncode(b *testing.B) {
	x := synthIndex(100_000)
	var n int
	b.ReportAllocs()
	for b.Loop() {
		data, err := x.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		n = len(data)
	}
	b.ReportMetric(float64(n), "encoded-B")
	b.ReportMetric(float64(n)/float64(len(x.Entries)), "encoded-B/entry")
}

func BenchmarkDecode(b *testing.B) {
	x := synthIndex(100_000)
	data, err := x.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data)), "encoded-B")
	b.ReportMetric(float64(len(x.Frames)), "frames")
}

func BenchmarkValidate(b *testing.B) {
	x := synthIndex(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if err := x.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}
