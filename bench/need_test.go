package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/registrylog"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

func TestMergeRanges(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in, want [][2]int64
	}{
		{"none", nil, nil},
		{"empty dropped", [][2]int64{{5, 5}}, nil},
		{"sorted", [][2]int64{{10, 20}, {0, 5}}, [][2]int64{{0, 5}, {10, 20}}},
		{"touching merge", [][2]int64{{0, 5}, {5, 9}}, [][2]int64{{0, 9}}},
		{"overlap and inside", [][2]int64{{0, 10}, {2, 3}, {8, 12}}, [][2]int64{{0, 12}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mergeRanges(tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("mergeRanges(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestCompressedFor(t *testing.T) {
	// Three units of 100 uncompressed bytes; the compressed spans of
	// neighbours share their boundary byte (as deflate blocks and gzip
	// frames whose next one starts inside a byte do).
	units := []unit{
		{off: 0, end: 100, coff: 10, cend: 41},
		{off: 100, end: 200, coff: 40, cend: 61},
		{off: 200, end: 300, coff: 60, cend: 100},
	}
	for _, tc := range []struct {
		name   string
		ranges [][2]int64
		want   int64
	}{
		{"nothing", nil, 0},
		{"first byte", [][2]int64{{0, 1}}, 31},
		{"last byte of the first", [][2]int64{{99, 100}}, 31},
		{"straddles a boundary: shared byte once", [][2]int64{{99, 101}}, 51},
		{"two ranges in one unit", [][2]int64{{110, 120}, {150, 160}}, 21},
		{"first and last, not the middle", [][2]int64{{0, 1}, {299, 300}}, 71},
		{"all", [][2]int64{{0, 300}}, 90},
		{"past the end", [][2]int64{{250, 1000}}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := compressedFor(units, tc.ranges); got != tc.want {
				t.Errorf("compressedFor(%v) = %d, want %d", tc.ranges, got, tc.want)
			}
		})
	}
}

func TestProRata(t *testing.T) {
	units := []unit{{off: 0, end: 100, coff: 0, cend: 50}, {off: 100, end: 200, coff: 50, cend: 60}}
	for _, tc := range []struct {
		name   string
		ranges [][2]int64
		want   int64
	}{
		{"half of the first", [][2]int64{{0, 50}}, 25},
		{"a tenth of each", [][2]int64{{90, 110}}, 6},
		{"all", [][2]int64{{0, 200}}, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := proRata(units, tc.ranges); got != tc.want {
				t.Errorf("proRata(%v) = %d, want %d", tc.ranges, got, tc.want)
			}
		})
	}
}

func TestBlockUnits(t *testing.T) {
	bs := []index.Block{{In: 10, Bits: 0, Out: 0}, {In: 40, Bits: 3, Out: 100}, {In: 60, Bits: 0, Out: 250}}
	got := blockUnits(bs, 300, 80)
	want := []unit{
		{off: 0, end: 100, coff: 10, cend: 41}, // ends with the byte holding the next block's first bit
		{off: 100, end: 250, coff: 40, cend: 60},
		{off: 250, end: 300, coff: 60, cend: 80}, // the last runs to the blob's end
	}
	if !slices.Equal(got, want) {
		t.Errorf("blockUnits = %v, want %v", got, want)
	}
}

func TestImageFiles(t *testing.T) {
	lower := &index.Index{Entries: []index.Entry{
		{Path: "a", Type: index.TypeReg, Offset: 512, Size: 10},
		{Path: "b", Type: index.TypeReg, Offset: 1536, Size: 10},
		{Path: "c", Type: index.TypeReg, Offset: 2560, Size: 10},
	}}
	upper := &index.Index{Entries: []index.Entry{
		{Path: "b", Type: index.TypeReg, Offset: 512, Size: 4},
		{Path: "h", Type: index.TypeHardlink, Linkname: "b"},
		{Path: "c", Type: index.TypeSymlink, Linkname: "b"},
	}}
	files := imageFiles([]*index.Index{lower, upper})
	for _, tc := range []struct {
		path      string
		layer     int
		off       int64
		noContent bool
	}{
		{"a", 0, 512, false},
		{"b", 1, 512, false},
		{"h", 1, 512, false},
		{"c", 1, 0, true},
	} {
		ref, ok := files[tc.path]
		switch {
		case !ok:
			t.Errorf("imageFiles[%q] missing", tc.path)
		case tc.noContent:
			if ref.entry != nil {
				t.Errorf("imageFiles[%q] = entry at %d, want none (not a regular file)", tc.path, ref.entry.Offset)
			}
		case ref.layer != tc.layer || ref.entry == nil || ref.entry.Offset != tc.off:
			t.Errorf("imageFiles[%q] = layer %d entry %+v, want layer %d offset %d", tc.path, ref.layer, ref.entry, tc.layer, tc.off)
		}
	}
}

// TestLayerNeed checks the whole computation on a real gzip layer: the
// bytes of every block are needed when everything is read, and reading
// one byte needs one block (fewer bytes than its frame).
func TestLayerNeed(t *testing.T) {
	raw := make([]byte, 4<<20)
	testutil.PatternAt(3, 0, raw)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(raw) //nolint:errcheck // a bytes.Buffer
	zw.Close()    //nolint:errcheck
	// Not a tar, but a frame table is all layerNeed uses: build one by
	// hand from the blocks, a frame every 1 MiB.
	blocks, err := index.GzipBlocks(context.Background(), bytes.NewReader(z.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) < 8 {
		t.Fatalf("GzipBlocks: %d blocks for 4 MiB, want more", len(blocks))
	}
	x := &index.Index{Format: index.FormatGzip, BlobSize: int64(z.Len()), TarSize: int64(len(raw))}
	for i, b := range blocks {
		if i == 0 || b.Out-x.Frames[len(x.Frames)-1].Offset >= 1<<20 {
			x.Frames = append(x.Frames, index.Frame{Offset: b.Out, CompressedOffset: b.In})
		}
	}
	for i := range x.Frames {
		f := &x.Frames[i]
		f.Size, f.CompressedSize = x.TarSize-f.Offset, x.BlobSize-f.CompressedOffset
		if i+1 < len(x.Frames) {
			f.Size, f.CompressedSize = x.Frames[i+1].Offset-f.Offset, x.Frames[i+1].CompressedOffset+1-f.CompressedOffset
		}
	}
	all := layerNeed(x, blocks, [][2]int64{{0, x.TarSize}})
	// Everything but the final empty block and the trailer (a few bytes).
	if whole := x.BlobSize - blocks[0].In; all.Frames != whole || all.Blocks > whole || all.Blocks < whole-16 || all.Read != x.TarSize {
		t.Errorf("layerNeed(everything) = %+v, want frames %d, blocks up to 16 fewer, read %d", all, whole, x.TarSize)
	}
	one := layerNeed(x, blocks, [][2]int64{{2 << 20, 2<<20 + 1}})
	if one.Blocks <= 0 || one.Blocks >= one.Frames || one.Read != 1 {
		t.Errorf("layerNeed(one byte) = %+v, want 0 < blocks < frames", one)
	}
}

func TestSplit(t *testing.T) {
	const layer, idx, cfg = "sha256:1111111111111111111111111111111111111111111111111111111111111111",
		"sha256:2222222222222222222222222222222222222222222222222222222222222222",
		"sha256:3333333333333333333333333333333333333333333333333333333333333333"
	n := Need{Layers: []NeedLayer{{frameSpans: [][2]int64{{100, 200}, {500, 600}}}}}
	get := func(d string, off, written int64) registrylog.Request {
		return registrylog.Request{Method: "GET", Digest: digest.Digest(d), Offset: off, Written: written}
	}
	tr := Traffic{Log: []registrylog.Request{
		{Method: "GET", URI: "/v2/", Written: 2, Offset: -1},
		get(cfg, -1, 500),
		get(idx, 0, 1000),    // toc
		get(idx, 5000, 300),  // a window
		get(layer, 150, 400), // 50 in a frame read, 300 not, 50 in the next read one
		get(layer, 0, 100),   // before any frame read
	}}
	got := split(tr, n, []string{layer}, map[string]string{idx: "index of base layer"})
	want := Split{NeededFrames: 100, OtherFrames: 400, TOCs: 1000, Windows: 300, Other: 502}
	if got == nil || *got != want {
		t.Errorf("split = %+v, want %+v", got, want)
	}
	if got := split(tr, Need{Err: "x"}, []string{layer}, nil); got != nil {
		t.Errorf("split without a need = %+v, want nil", got)
	}
}
