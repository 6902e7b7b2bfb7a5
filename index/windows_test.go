package index

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const goldenV2IndexFile = "testdata/index-v2.golden"

// encGoldenV2Index is the content of testdata/index-v2.golden: version 2,
// windows outside the toc (one compressible, one stored raw, a frame at a
// member start without one). Never change it.
func encGoldenV2Index() *Index {
	x := encGoldenIndex()
	x.Layer = "sha256:5b2d4e0f6a8c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a"
	noise := make([]byte, 300)
	r := rand.New(rand.NewPCG(2, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	x.Frames = []Frame{
		{CompressedOffset: 10, CompressedSize: 600, Offset: 0, Size: 2048,
			Digest: "sha256:0000000000000000000000000000000000000000000000000000000000000002"},
		{CompressedOffset: 610, CompressedSize: 700, Offset: 2048, Size: 2048, Bits: 5,
			Window: bytes.Repeat([]byte("a window that compresses well. "), 40),
			Digest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543211"},
		{CompressedOffset: 1310, CompressedSize: 790, Offset: 4096, Size: 2048, Bits: 1, Window: noise,
			Digest: "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543212"},
	}
	return x
}

func TestGoldenV2(t *testing.T) {
	want := encGoldenV2Index()
	if *updateGolden {
		if err := os.WriteFile(goldenV2IndexFile, mustMarshal(t, want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(goldenV2IndexFile)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode(%s) error: %v", goldenV2IndexFile, err)
	}
	if d := indexDiff(got, want); d != "" {
		t.Fatalf("Decode(%s): %s", goldenV2IndexFile, d)
	}
	toc, wins, err := TOCLen(data[:TOCHeadLen])
	if err != nil || toc+wins != int64(len(data)) || wins == 0 {
		t.Fatalf("TOCLen(%s) = %d, %d, %v, want toc+windows = %d bytes", goldenV2IndexFile, toc, wins, err, len(data))
	}
	// One window compresses, the other is stored raw.
	if wins >= int64(len(want.Frames[1].Window)+len(want.Frames[2].Window)) || wins < int64(len(want.Frames[2].Window)) {
		t.Errorf("windows section of %d bytes, want the first window compressed and the second raw", wins)
	}
	head := data[:len(encMagic)+1]
	if head[len(encMagic)] != encVersion2 {
		t.Errorf("golden file version %d, want 2", head[len(encMagic)])
	}
}

// TestTOCAlone decodes the toc of a version 2 encoding and reads the
// windows as a reader of the mount does: per frame and per run.
func TestTOCAlone(t *testing.T) {
	for name, want := range encSamples() {
		t.Run(name, func(t *testing.T) {
			data := mustMarshal(t, want)
			tocLen, winLen, err := TOCLen(data)
			if err != nil || tocLen+winLen != int64(len(data)) {
				t.Fatalf("TOCLen() = %d, %d, %v, want the encoding's %d bytes", tocLen, winLen, err, len(data))
			}
			x, err := Decode(data[:tocLen])
			if err != nil {
				t.Fatalf("Decode(toc) error: %v", err)
			}
			if x.WindowsLoaded() && x.TOCDigest() != "" || !x.WindowsLoaded() && x.TOCDigest() != digest.FromBytes(data[:tocLen]) {
				t.Errorf("TOCDigest() = %q, want the toc's digest when windows are not loaded", x.TOCDigest())
			}
			hasWindows := false
			for _, f := range want.Frames {
				hasWindows = hasWindows || len(f.Window) > 0
			}
			if x.WindowsLoaded() == hasWindows {
				t.Errorf("WindowsLoaded() = %v for an index with windows %v", x.WindowsLoaded(), hasWindows)
			}
			for i := range x.Frames {
				if x.Frames[i].Window != nil {
					t.Fatalf("frame %d: Window loaded from the toc alone", i)
				}
				if got := x.NeedsWindow(i); got != (len(want.Frames[i].Window) > 0) {
					t.Errorf("NeedsWindow(%d) = %v", i, got)
				}
				off, n := x.WindowRange(i, i)
				ws, err := x.Windows(i, i, data[off:off+n])
				if err != nil {
					t.Fatalf("Windows(%d, %d) error: %v", i, i, err)
				}
				if !bytes.Equal(ws[0], want.Frames[i].Window) {
					t.Errorf("Windows(%d, %d) = %d bytes, want %d", i, i, len(ws[0]), len(want.Frames[i].Window))
				}
			}
			if len(x.Frames) > 0 {
				off, n := x.WindowRange(0, len(x.Frames)-1)
				if n != winLen || (n > 0 && off != tocLen) {
					t.Errorf("WindowRange(all) = %d, %d, want %d, %d", off, n, tocLen, winLen)
				}
				y, err := x.WithWindows(data[tocLen:])
				if err != nil {
					t.Fatalf("WithWindows() error: %v", err)
				}
				if d := indexDiff(y, want); d != "" {
					t.Fatalf("WithWindows(): %s", d)
				}
				if !bytes.Equal(mustMarshal(t, y), data) {
					t.Error("MarshalBinary(WithWindows()) differs from the encoding")
				}
			}
			if _, err := x.MarshalBinary(); hasWindows && !errors.Is(err, ErrWindowsNotLoaded) {
				t.Errorf("MarshalBinary() of a toc = %v, want ErrWindowsNotLoaded", err)
			}
		})
	}
}

// TestTOCAloneDecodesFrames builds a real multi-member gzip layer with small
// spans and decodes every frame with windows read separately.
func TestTOCAloneDecodesFrames(t *testing.T) {
	tarData := testLayer(t)
	blob := append(gzipLevel(t, tarData[:len(tarData)/3], 6), gzipLevel(t, tarData[len(tarData)/3:], 1)...)
	full, err := Build(context.Background(), "", bytes.NewReader(blob), BuildOptions{Span: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	data := mustMarshal(t, full)
	tocLen, _, _ := TOCLen(data)
	x, err := Decode(data[:tocLen])
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Frames) < 4 {
		t.Fatalf("%d frames, want several", len(x.Frames))
	}
	// Windows of a run, as prefetch and pull read them.
	off, n := x.WindowRange(1, len(x.Frames)-1)
	ws, err := x.Windows(1, len(x.Frames)-1, data[off:off+n])
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range x.Frames {
		comp := blob[f.CompressedOffset : f.CompressedOffset+f.CompressedSize]
		var w []byte
		if i > 0 {
			w = ws[i-1]
		}
		if x.NeedsWindow(i) {
			if _, err := x.DecodeFrame(i, comp); !errors.Is(err, ErrWindowsNotLoaded) {
				t.Fatalf("DecodeFrame(%d) without its window = %v, want ErrWindowsNotLoaded", i, err)
			}
			if _, err := x.DecodeFrameWith(i, comp, w[1:]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeFrameWith(%d, short window) = %v, want ErrCorrupt", i, err)
			}
		}
		got, err := x.DecodeFrameWith(i, comp, w)
		if err != nil {
			t.Fatalf("DecodeFrameWith(%d) error: %v", i, err)
		}
		if !bytes.Equal(got, tarData[f.Offset:f.Offset+f.Size]) {
			t.Fatalf("DecodeFrameWith(%d) differs from the stream", i)
		}
		// The same window is the end of the frame before, decoded.
		if i > 0 {
			prev := tarData[x.Frames[i-1].Offset : x.Frames[i-1].Offset+x.Frames[i-1].Size]
			if from := x.WindowFrom(i, prev); !bytes.Equal(from, w) || (from == nil) != !x.NeedsWindow(i) {
				t.Errorf("WindowFrom(%d) = %d bytes, want the stored window's %d", i, len(from), len(w))
			}
			if x.NeedsWindow(i) && x.WindowFrom(i, prev[1:]) != nil {
				t.Errorf("WindowFrom(%d) of a frame of the wrong length gave a window", i)
			}
		}
	}
	// Frames after a member's start need no window, and get none.
	members := 0
	for i := range x.Frames {
		if !x.NeedsWindow(i) {
			members++
		}
	}
	if members < 2 {
		t.Errorf("%d frames without a window, want the two members' first", members)
	}
}

func TestWindowsCorrupt(t *testing.T) {
	data := mustMarshal(t, encGoldenV2Index())
	tocLen, _, _ := TOCLen(data)
	x, err := Decode(data[:tocLen])
	if err != nil {
		t.Fatal(err)
	}
	off, n := x.WindowRange(1, 2)
	for i := range n {
		bad := bytes.Clone(data)
		bad[off+i] ^= 0x20
		if _, err := x.Windows(1, 2, bad[off:off+n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Windows(byte %d flipped) = %v, want ErrCorrupt", i, err)
		}
		if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode(window byte %d flipped) = %v, want ErrCorrupt", i, err)
		}
	}
	if _, err := x.Windows(1, 2, data[off:off+n-1]); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Windows(short) = %v, want ErrCorrupt", err)
	}
	for _, cut := range []int64{1, n - 1} { // (cutting n leaves the toc alone, which is valid)
		if _, err := Decode(data[:int64(len(data))-cut]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(all but %d bytes) = %v, want ErrCorrupt", cut, err)
		}
	}
	if _, err := x.Windows(2, 1, nil); err == nil {
		t.Error("Windows(2, 1) succeeded")
	}
}

// envelopeV2 builds a version 2 toc around raw body bytes with a correct
// checksum, followed by wins.
func envelopeV2(t testing.TB, body, wins []byte) []byte {
	t.Helper()
	enc, err := zstdEncoder()
	if err != nil {
		t.Fatal(err)
	}
	return append(wrapBody(encVersion2, body, enc.EncodeAll(body, nil), int64(len(wins))), wins...)
}

func TestDecodeV2CorruptWindows(t *testing.T) {
	crc := func(b []byte) []byte { return binary.LittleEndian.AppendUint32(nil, crc32.Checksum(b, crc32c)) }
	win := []byte("0123456789")
	// gzipOne is a gzip body with one frame of 100 bytes whose window
	// field is w.
	gzipOne := func(w func(*bodyWriter)) []byte {
		b := (&bodyWriter{}).raw(byte(FormatGzip)).str("").u(100, 100, 1, 0, 0, uint64(sha256TextLen))
		b.u(100).s(0).u(100).raw(0)
		w(b)
		return b.raw(make([]byte, 32)...).b
	}
	for _, tc := range []struct {
		name string
		body []byte
		wins []byte
		want string
	}{
		{"good", gzipOne(func(b *bodyWriter) { b.u(10, 10).raw(crc(win)...) }), win, ""},
		{"window past 32 KiB", gzipOne(func(b *bodyWriter) { b.u(32<<10+1, 10).raw(crc(win)...) }), win, "want ≤ 32768"},
		{"stored larger than raw", gzipOne(func(b *bodyWriter) { b.u(5, 10).raw(crc(win)...) }), win, "stored in 10 bytes"},
		{"stored empty", gzipOne(func(b *bodyWriter) { b.u(10, 0).raw(crc(win)...) }), win, "stored in 0 bytes"},
		{"past the section", gzipOne(func(b *bodyWriter) { b.u(10, 10).raw(crc(win)...) }), win[:5], "runs past"},
		{"section longer", gzipOne(func(b *bodyWriter) { b.u(10, 10).raw(crc(win)...) }), append(win, 'x'), "the header says 11"},
		{"no windows, a section", gzipOne(func(b *bodyWriter) { b.u(0) }), win, "the header says 10"},
		{"checksum", gzipOne(func(b *bodyWriter) { b.u(10, 10).raw(0, 0, 0, 0) }), win, "checksum"},
		{"tar layer", func() []byte {
			b := tarHeader(100, 100, 1, 0, 0, uint64(sha256TextLen)).u(100).raw(0).u(10, 10).raw(crc(win)...)
			return b.raw(make([]byte, 32)...).b
		}(), win, "gzip only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := envelopeV2(t, tc.body, tc.wins)
			_, err := Decode(data)
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

func TestTOCLenShortHead(t *testing.T) {
	data := mustMarshal(t, encSampleIndex())
	tocLen, _, err := TOCLen(data)
	if err != nil {
		t.Fatal(err)
	}
	for n := range 10 {
		if _, _, err := TOCLen(data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("TOCLen(first %d bytes) = %v, want ErrCorrupt", n, err)
		}
	}
	v1, err := encSampleIndex().marshal(encVersion1)
	if err != nil {
		t.Fatal(err)
	}
	if toc, wins, err := TOCLen(v1); toc != int64(len(v1)) || wins != 0 || err != nil {
		t.Errorf("TOCLen(version 1) = %d, %d, %v, want %d, 0", toc, wins, err, len(v1))
	}
	if tocLen >= int64(len(data))/2 {
		t.Errorf("toc of %d bytes of %d: the windows should be most of it", tocLen, len(data))
	}
}

// FuzzDecodeTOC feeds arbitrary bytes as a version 2 toc's windows and as
// an encoding: nothing may panic, and what decodes must read its windows
// consistently.
func FuzzDecodeTOC(f *testing.F) {
	for _, x := range []*Index{encGoldenV2Index(), encSampleIndex()} {
		data, err := x.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, uint16(0), uint16(2))
	}
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16) {
		toc, _, err := TOCLen(data)
		if err != nil || toc > int64(len(data)) {
			return
		}
		x, err := Decode(data[:toc])
		if err != nil {
			return
		}
		if len(x.Frames) == 0 {
			return
		}
		first, last := int(a)%len(x.Frames), int(b)%len(x.Frames)
		if first > last {
			first, last = last, first
		}
		off, n := x.WindowRange(first, last)
		if off+n > int64(len(data)) || off < 0 || n < 0 {
			return
		}
		ws, err := x.Windows(first, last, data[off:off+n])
		if err != nil {
			return
		}
		for k, w := range ws {
			if x.NeedsWindow(first+k) != (w != nil) || len(w) > maxWindowLen {
				t.Fatalf("frame %d: window of %d bytes, NeedsWindow %v", first+k, len(w), x.NeedsWindow(first+k))
			}
		}
		if y, err := x.WithWindows(data[toc:]); err == nil {
			checkReencode(t, y)
		}
	})
}

// A whole version 2 encoding keeps its windows compressed: none is
// unpacked until its frame is decoded, each frame decodes alone, and the
// index encodes again to the same bytes.
func TestWholeEncodingWindowsOnDemand(t *testing.T) {
	tarData := testLayer(t)
	blob := gzipLevel(t, tarData, 6)
	full, err := Build(context.Background(), "", bytes.NewReader(blob), BuildOptions{Span: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	data := mustMarshal(t, full)
	x, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Frames) < 4 || !x.WindowsLoaded() {
		t.Fatalf("%d frames, WindowsLoaded %v; want several, true", len(x.Frames), x.WindowsLoaded())
	}
	for i, f := range x.Frames {
		if f.Window != nil || x.NeedsWindow(i) {
			t.Fatalf("frame %d: %d-byte Window, NeedsWindow %v; want its window kept compressed", i, len(f.Window), x.NeedsWindow(i))
		}
		if off, n := x.WindowRange(i, i); off != 0 || n != 0 {
			t.Fatalf("WindowRange(%d) = %d, %d; want nothing to read", i, off, n)
		}
	}
	for _, i := range []int{len(x.Frames) - 1, 2, 0} { // any order, each alone
		f := x.Frames[i]
		got, err := x.DecodeFrame(i, blob[f.CompressedOffset:f.CompressedOffset+f.CompressedSize])
		if err != nil || !bytes.Equal(got, tarData[f.Offset:f.Offset+f.Size]) {
			t.Fatalf("DecodeFrame(%d) = %d bytes, %v; want the stream's [%d,+%d)", i, len(got), err, f.Offset, f.Size)
		}
	}
	if again := mustMarshal(t, x); !bytes.Equal(again, data) {
		t.Error("the decoded index encodes to other bytes")
	}
	// A window damaged on disk is refused when the index is decoded, not
	// when its frame is read.
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 1
	if _, err := Decode(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Decode with a damaged window = %v, want ErrCorrupt", err)
	}
}

func BenchmarkDecodeWhole(b *testing.B) {
	tarData := testLayer(b)
	full, err := Build(context.Background(), "", bytes.NewReader(gzipLevel(b, tarData, 6)), BuildOptions{Span: 32 << 10})
	if err != nil {
		b.Fatal(err)
	}
	data, err := full.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
