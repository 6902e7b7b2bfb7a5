package index

import (
	"errors"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// validateBase is a small valid gzip index; each case breaks one rule of a
// fresh copy.
func validateBase() *Index {
	t0 := time.Unix(1700000000, 0)
	return &Index{
		Layer: digest.FromString("layer"), Format: FormatGzip, BlobSize: 1000, TarSize: 4096,
		Frames: []Frame{
			{CompressedOffset: 0, CompressedSize: 501, Offset: 0, Size: 2048, Digest: frameDigest(0)},
			{CompressedOffset: 500, CompressedSize: 500, Offset: 2048, Size: 2048, Bits: 7,
				Window: make([]byte, 32<<10), Digest: frameDigest(1)},
		},
		Entries: []Entry{
			{Path: "etc", Type: TypeDir, Mode: 0o755, ModTime: t0},
			{Path: "etc/f", Type: TypeReg, Mode: 0o7777, Size: 1024, Offset: 1024, ModTime: t0,
				Xattrs: []Xattr{{"a", ""}, {"b", "\x00"}}},
			{Path: "etc/h", Type: TypeHardlink, Linkname: "etc/f", ModTime: t0},
			{Path: "etc/s", Type: TypeSymlink, Linkname: "/../anything/./at/all/", ModTime: t0},
			{Path: "end", Type: TypeReg, Size: 0, Offset: 4096, ModTime: t0},
		},
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(x *Index)
		want   string // in the error; "" means valid
	}{
		{"valid", func(x *Index) {}, ""},
		{"no layer digest", func(x *Index) { x.Layer = "" }, ""},
		{"empty layer", func(x *Index) { *x = Index{Format: FormatTar} }, ""},
		{"unknown format", func(x *Index) { x.Format = 0 }, "Format 0 unknown"},
		{"bad layer digest", func(x *Index) { x.Layer = "sha256:abc" }, "Layer"},
		{"negative blob size", func(x *Index) { x.BlobSize = -1 }, "BlobSize -1"},

		{"no frames", func(x *Index) { x.Frames = nil }, "0 frames cover [0, 0), want [0, TarSize 4096)"},
		{"frames short of tar end", func(x *Index) { x.TarSize = 5000 }, "want [0, TarSize 5000)"},
		{"first frame not at 0", func(x *Index) { x.Frames[0].Offset = 1 }, "frame 0: Offset 1, want 0"},
		{"frames not contiguous", func(x *Index) { x.Frames[1].Offset = 2047 }, "frame 1: Offset 2047, want 2048"},
		{"frames unsorted", func(x *Index) { x.Frames[0], x.Frames[1] = x.Frames[1], x.Frames[0] }, "frame 0: Offset 2048, want 0"},
		{"empty frame", func(x *Index) { x.Frames[1].Size = 0 }, "frame 1: Size 0, want > 0"},
		{"frame past tar end", func(x *Index) { x.Frames[1].Size = 2049 }, "frame 1: Offset+Size 2048+2049 past TarSize 4096"},
		{"frame with a tar of 0 bytes", func(x *Index) { x.TarSize, x.Entries = 0, nil }, "frame 0: Offset+Size 0+2048 past TarSize 0"},
		{"negative compressed offset", func(x *Index) { x.Frames[0].CompressedOffset = -1 }, "frame 0: CompressedOffset -1"},
		{"empty compressed range", func(x *Index) { x.Frames[1].CompressedSize = 0 }, "frame 1: CompressedSize 0"},
		{"compressed range past blob", func(x *Index) { x.Frames[1].CompressedSize = 501 }, "frame 1: CompressedOffset+CompressedSize 500+501 past BlobSize 1000"},
		{"bits", func(x *Index) { x.Frames[1].Bits = 8 }, "frame 1: Bits 8"},
		{"window too long", func(x *Index) { x.Frames[1].Window = make([]byte, 32<<10+1) }, "frame 1: Window of 32769 bytes"},
		{"no digest", func(x *Index) { x.Frames[0].Digest = "" }, "frame 0: Digest \"\" is not a sha256"},
		{"sha512 digest", func(x *Index) { x.Frames[0].Digest = digest.Digest("sha512:" + strings.Repeat("0", 128)) }, "frame 0: Digest"},
		{"uppercase digest", func(x *Index) { x.Frames[0].Digest = digest.Digest(strings.ToUpper(string(x.Frames[0].Digest))) }, "frame 0: Digest"},
		{"short digest", func(x *Index) { x.Frames[0].Digest = x.Frames[0].Digest[:70] }, "frame 0: Digest"},
		{"tar frame compressed elsewhere", func(x *Index) {
			x.Format = FormatTar
			for i := range x.Frames {
				f := &x.Frames[i]
				f.Bits, f.Window, f.CompressedOffset, f.CompressedSize = 0, nil, f.Offset+1, f.Size-1
			}
			x.BlobSize = x.TarSize
		}, "frame 0: compressed range [1,+2047) differs"},
		{"tar frame", func(x *Index) {
			x.Format = FormatTar
			for i := range x.Frames {
				f := &x.Frames[i]
				f.Bits, f.Window, f.CompressedOffset, f.CompressedSize = 0, nil, f.Offset, f.Size
			}
			x.BlobSize = x.TarSize
		}, ""},
		{"window in a zstd layer", func(x *Index) { x.Format = FormatZstd }, "frame 1: Bits 7 and a 32768-byte Window in a zstd layer"},
		{"window from the frame before", func(x *Index) { x.Frames[1].Window, x.Frames[1].PrevWindow = nil, 2048 }, ""},
		{"window from the frame before in a tar layer", func(x *Index) {
			x.Format, x.BlobSize, x.Frames[1].Window, x.Frames[1].Bits, x.Frames[1].PrevWindow = FormatTar, 4096, nil, 0, 100
			for i := range x.Frames {
				x.Frames[i].CompressedOffset, x.Frames[i].CompressedSize = x.Frames[i].Offset, x.Frames[i].Size
			}
		}, "frame 1: Bits 0 and a 100-byte Window in a tar layer"},
		{"window from before the first frame", func(x *Index) { x.Frames[0].PrevWindow = 1 }, "frame 0: PrevWindow 1, but the frame before holds 0 bytes"},
		{"window longer than the frame before", func(x *Index) { x.Frames[1].Window, x.Frames[1].PrevWindow = nil, 2049 }, "frame 1: PrevWindow 2049, but the frame before holds 2048 bytes"},
		{"window from the frame before too long", func(x *Index) { x.Frames[1].Window, x.Frames[1].PrevWindow = nil, 32<<10+1 }, "frame 1: PrevWindow 32769, want ≤ 32768"},
		{"window and window from the frame before", func(x *Index) { x.Frames[1].PrevWindow = 10 }, "frame 1: a 32768-byte Window and PrevWindow 10"},

		{"unknown type", func(x *Index) { x.Entries[0].Type = 0 }, "entry 0 \"etc\": Type 0 unknown"},
		{"type past the last", func(x *Index) { x.Entries[0].Type = TypeFIFO + 1 }, "Type 8 unknown"},
		{"empty path", func(x *Index) { x.Entries[0].Path = "" }, "entry 0 \"\": Path is empty"},
		{"dot path", func(x *Index) { x.Entries[0].Path = "." }, "entry 0 \".\": Path is not clean"},
		{"dot dot path", func(x *Index) { x.Entries[0].Path = ".." }, "entry 0 \"..\": Path leaves the root"},
		{"escaping path", func(x *Index) { x.Entries[0].Path = "../etc" }, "leaves the root"},
		{"absolute path", func(x *Index) { x.Entries[0].Path = "/etc" }, "absolute or not clean"},
		{"trailing slash", func(x *Index) { x.Entries[0].Path = "etc/" }, "not clean"},
		{"double slash", func(x *Index) { x.Entries[1].Path = "etc//f" }, "entry 1 \"etc//f\": Path"},
		{"dot element", func(x *Index) { x.Entries[1].Path = "etc/./f" }, "not clean"},
		{"inner dot dot", func(x *Index) { x.Entries[1].Path = "etc/../f" }, "leaves the root"},
		{"NUL in path", func(x *Index) { x.Entries[1].Path = "etc/f\x00" }, "NUL"},
		{"dotfile path", func(x *Index) { x.Entries[1].Path = "etc/.f..." }, ""},
		{"mode bits", func(x *Index) { x.Entries[1].Mode = 0o10644 }, "Mode 010644"},
		{"negative size", func(x *Index) { x.Entries[1].Size = -1 }, "entry 1 \"etc/f\": Size -1 negative"},
		{"size on a dir", func(x *Index) { x.Entries[0].Size = 1 }, "Size 1 for a dir, want 0"},
		{"size on a hard link", func(x *Index) { x.Entries[2].Size = 1 }, "Size 1 for a hardlink"},
		{"negative offset", func(x *Index) { x.Entries[1].Offset = -1 }, "Offset -1 negative"},
		{"file past tar end", func(x *Index) { x.Entries[1].Offset = 3073 }, "entry 1 \"etc/f\": Offset+Size 3073+1024 past TarSize 4096"},
		{"huge size", func(x *Index) { x.Entries[1].Size = 1<<63 - 1 }, "past TarSize"},
		{"offset past tar on a dir", func(x *Index) { x.Entries[0].Offset = 4097 }, "Offset+Size 4097+0"},
		{"sparse file", func(x *Index) {
			x.Entries[1].Size, x.Entries[1].Sparse = 1<<40, []Extent{{0, 10}, {10, 5}, {1 << 39, 1000}, {1<<40 - 1, 1}}
		}, ""},
		{"all hole", func(x *Index) { x.Entries[1].Size, x.Entries[1].Sparse = 1<<40, []Extent{} }, ""},
		{"sparse dir", func(x *Index) { x.Entries[0].Sparse = []Extent{} }, "entry 0 \"etc\": Sparse map for a dir"},
		{"empty fragment", func(x *Index) { x.Entries[1].Sparse = []Extent{{0, 0}} }, "Sparse[0] length 0, want > 0"},
		{"negative fragment", func(x *Index) { x.Entries[1].Sparse = []Extent{{0, -1}} }, "Sparse[0] length -1"},
		{"negative fragment offset", func(x *Index) { x.Entries[1].Sparse = []Extent{{-1, 5}} }, "Sparse[0] at -1 starts before"},
		{"overlapping fragments", func(x *Index) { x.Entries[1].Sparse = []Extent{{0, 10}, {5, 10}} },
			"Sparse[1] at 5 starts before the previous fragment's end 10"},
		{"unsorted fragments", func(x *Index) { x.Entries[1].Sparse = []Extent{{100, 10}, {0, 10}} }, "Sparse[1] at 0"},
		{"fragment past size", func(x *Index) { x.Entries[1].Sparse = []Extent{{1020, 10}} }, "Sparse[0] [1020,+10) past Size 1024"},
		{"huge fragment", func(x *Index) { x.Entries[1].Sparse = []Extent{{1, 1<<63 - 1}} }, "past Size 1024"},
		{"fragments past tar end", func(x *Index) {
			x.Entries[1].Size, x.Entries[1].Sparse = 1<<40, []Extent{{0, 3000}, {5000, 73}}
		}, "entry 1 \"etc/f\": Offset+StoredSize 1024+3073 past TarSize 4096"},
		{"hard link without target", func(x *Index) { x.Entries[2].Linkname = "" }, "entry 2 \"etc/h\": Linkname \"\" is empty"},
		{"hard link leaving root", func(x *Index) { x.Entries[2].Linkname = "../etc/f" }, "Linkname \"../etc/f\" leaves the root"},
		{"hard link absolute", func(x *Index) { x.Entries[2].Linkname = "/etc/f" }, "Linkname \"/etc/f\" is absolute"},
		{"NUL in symlink target", func(x *Index) { x.Entries[3].Linkname = "a\x00b" }, "Linkname holds a NUL"},
		{"xattrs unsorted", func(x *Index) { x.Entries[1].Xattrs = []Xattr{{"b", ""}, {"a", ""}} }, "Xattrs[1] name \"a\" after \"b\""},
		{"xattrs repeated", func(x *Index) { x.Entries[1].Xattrs = []Xattr{{"a", "1"}, {"a", "2"}} }, "want sorted and unique"},
		{"xattr without name", func(x *Index) { x.Entries[1].Xattrs = []Xattr{{"", "v"}} }, "Xattrs[0] has an empty name"},
		{"NUL in xattr name", func(x *Index) { x.Entries[1].Xattrs = []Xattr{{"a\x00", "v"}} }, "holds a NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := validateBase()
			tc.mutate(x)
			err := x.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error wrapping ErrCorrupt containing %q", err, tc.want)
			}
		})
	}
}

func TestValidateQuotesLongPaths(t *testing.T) {
	x := validateBase()
	x.Entries[0].Path = strings.Repeat("a/", 5000) + "."
	err := x.Validate()
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("Validate() = %v, want a short error", err)
	}
}

// TestCheckRelPath compares checkRelPath with the rule as the path package
// states it, over every string of up to 7 characters from "a./".
func TestCheckRelPath(t *testing.T) {
	want := func(p string) bool {
		return p != "" && path.Clean(p) == p && !path.IsAbs(p) && p != "." && p != ".." && !strings.HasPrefix(p, "../")
	}
	var walk func(p string)
	n := 0
	walk = func(p string) {
		n++
		if got := checkRelPath(p) == ""; got != want(p) {
			t.Errorf("checkRelPath(%q) = %q, want valid=%v", p, checkRelPath(p), want(p))
		}
		if len(p) < 7 {
			for _, c := range []string{"a", ".", "/"} {
				walk(p + c)
			}
		}
	}
	walk("")
	if n < 3000 {
		t.Fatalf("checked only %d paths", n)
	}
}
