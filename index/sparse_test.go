package index

import (
	"reflect"
	"testing"
)

func TestPieces(t *testing.T) {
	// A 100-byte file whose content starts at stream offset 1000: data at
	// [10,20) and [50,60), holes elsewhere, ending in a hole.
	sparse := Entry{Type: TypeReg, Size: 100, Offset: 1000, Sparse: []Extent{{10, 10}, {50, 10}}}
	// Data at both ends: [0,5) and [95,100).
	ends := Entry{Type: TypeReg, Size: 100, Offset: 1000, Sparse: []Extent{{0, 5}, {95, 5}}}
	// Adjacent fragments are stored back to back too.
	adjacent := Entry{Type: TypeReg, Size: 30, Offset: 1000, Sparse: []Extent{{0, 10}, {10, 10}}}
	allHole := Entry{Type: TypeReg, Size: 100, Offset: 1000, Sparse: []Extent{}}
	plain := Entry{Type: TypeReg, Size: 100, Offset: 1000}
	empty := Entry{Type: TypeReg, Offset: 1000}
	emptySparse := Entry{Type: TypeReg, Offset: 1000, Sparse: []Extent{}}
	hole := func(n int64) Piece { return Piece{Stream: -1, Len: n} }
	data := func(at, n int64) Piece { return Piece{Stream: at, Len: n} }

	for _, tc := range []struct {
		name   string
		e      *Entry
		off, n int64
		want   []Piece
	}{
		{"plain whole", &plain, 0, 100, []Piece{data(1000, 100)}},
		{"plain first byte", &plain, 0, 1, []Piece{data(1000, 1)}},
		{"plain past EOF", &plain, 90, 100, []Piece{data(1090, 10)}},
		{"plain at EOF", &plain, 100, 1, nil},
		{"plain negative offset", &plain, -1, 10, nil},
		{"plain zero length", &plain, 5, 0, nil},
		{"empty file", &empty, 0, 10, nil},
		{"empty sparse file", &emptySparse, 0, 10, nil},
		{"sparse whole", &sparse, 0, 100, []Piece{hole(10), data(1000, 10), hole(30), data(1010, 10), hole(40)}},
		{"sparse first byte (hole)", &sparse, 0, 1, []Piece{hole(1)}},
		{"inside a hole", &sparse, 25, 10, []Piece{hole(10)}},
		{"first byte of data", &sparse, 10, 1, []Piece{data(1000, 1)}},
		{"inside data", &sparse, 12, 5, []Piece{data(1002, 5)}},
		{"data to hole", &sparse, 15, 10, []Piece{data(1005, 5), hole(5)}},
		{"hole to data", &sparse, 45, 10, []Piece{hole(5), data(1010, 5)}},
		{"straddles a fragment", &sparse, 5, 20, []Piece{hole(5), data(1000, 10), hole(5)}},
		{"second fragment only", &sparse, 50, 10, []Piece{data(1010, 10)}},
		{"trailing hole", &sparse, 70, 30, []Piece{hole(30)}},
		{"runs past EOF", &sparse, 55, 1000, []Piece{data(1015, 5), hole(40)}},
		{"at EOF", &sparse, 100, 1, nil},
		{"past EOF", &sparse, 200, 1, nil},
		{"data at both ends", &ends, 0, 100, []Piece{data(1000, 5), hole(90), data(1005, 5)}},
		{"last byte", &ends, 99, 1, []Piece{data(1009, 1)}},
		{"adjacent fragments", &adjacent, 5, 25, []Piece{data(1005, 5), data(1010, 10), hole(10)}},
		{"all hole", &allHole, 0, 1000, []Piece{hole(100)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.e.Pieces(tc.off, tc.n)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Pieces(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
			}
		})
	}
}

func TestEntryBlocks(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Entry
		want int64
	}{
		{"empty", Entry{Size: 0}, 0},
		{"one byte", Entry{Size: 1}, 1},
		{"one block", Entry{Size: 512}, 1},
		{"just over", Entry{Size: 513}, 2},
		{"all hole", Entry{Size: 1 << 30, Sparse: []Extent{}}, 0},
		{"aligned fragments", Entry{Size: 1 << 30, Sparse: []Extent{{0, 4096}, {1 << 20, 4096}}}, 16},
		{"unaligned fragment touches two blocks", Entry{Size: 4096, Sparse: []Extent{{510, 4}}}, 2},
		{"fragments sharing a block count it once", Entry{Size: 4096, Sparse: []Extent{{0, 10}, {100, 10}, {600, 1}}}, 2},
		{"last byte", Entry{Size: 1 << 20, Sparse: []Extent{{1<<20 - 1, 1}}}, 1},
	} {
		if got := tc.e.Blocks(); got != tc.want {
			t.Errorf("%s: Blocks() = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestStoredSize(t *testing.T) {
	if got := (&Entry{Size: 100}).StoredSize(); got != 100 {
		t.Errorf("StoredSize() of a plain file = %d, want 100", got)
	}
	if got := (&Entry{Size: 100, Sparse: []Extent{{0, 10}, {50, 7}}}).StoredSize(); got != 17 {
		t.Errorf("StoredSize() of a sparse file = %d, want 17", got)
	}
}

func TestWithin(t *testing.T) {
	// A 100-byte file whose content starts at stream offset 1000.
	plain := Entry{Type: TypeReg, Size: 100, Offset: 1000}
	sparse := Entry{Type: TypeReg, Size: 100, Offset: 1000, Sparse: []Extent{{10, 10}}}
	empty := Entry{Type: TypeReg, Offset: 1000}
	for _, tc := range []struct {
		name           string
		e              *Entry
		off, n         int64
		file, at, size int64
	}{
		{"range holds the file", &plain, 900, 400, 0, 100, 100},
		{"file holds the range", &plain, 1010, 20, 10, 0, 20},
		{"range ends inside the file", &plain, 950, 60, 0, 50, 10},
		{"range starts inside the file", &plain, 1090, 50, 90, 0, 10},
		{"exactly the file", &plain, 1000, 100, 0, 0, 100},
		{"range before the file", &plain, 0, 1000, 0, 0, 0},
		{"range after the file", &plain, 1100, 10, 0, 0, 0},
		{"empty range", &plain, 1010, 0, 0, 0, 0},
		{"empty file", &empty, 900, 400, 0, 0, 0},
		{"sparse file", &sparse, 900, 400, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file, at, size := tc.e.Within(tc.off, tc.n)
			if file != tc.file || at != tc.at || size != tc.size {
				t.Errorf("Within(%d, %d) = %d, %d, %d, want %d, %d, %d", tc.off, tc.n, file, at, size, tc.file, tc.at, tc.size)
			}
		})
	}
}
