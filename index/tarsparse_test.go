package index

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

// rawTar writes tar blocks by hand: archive/tar cannot write sparse entries.
type rawTar struct{ b bytes.Buffer }

// header appends a header block; fill may set more fields before the
// checksum is computed. gnu selects the old GNU magic instead of ustar's.
func (w *rawTar) header(name string, typ byte, size int64, gnu bool, fill func(blk []byte)) {
	var blk [blockSize]byte
	copy(blk[hdrName:hdrName+100], name)
	copy(blk[100:108], "0000644\x00")
	copy(blk[108:116], "0000000\x00")
	copy(blk[116:124], "0000000\x00")
	putOctal(blk[hdrSize:hdrSize+12], size)
	putOctal(blk[136:148], 1700000000)
	blk[hdrTypeflag] = typ
	if gnu {
		copy(blk[hdrMagic:], "ustar  \x00")
	} else {
		copy(blk[hdrMagic:], "ustar\x0000")
	}
	if fill != nil {
		fill(blk[:])
	}
	copy(blk[hdrChksum:hdrChksum+8], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[hdrChksum:hdrChksum+8], fmt.Sprintf("%06o\x00 ", sum))
	w.b.Write(blk[:])
}

func putOctal(b []byte, v int64) {
	copy(b, fmt.Sprintf("%0*o\x00", len(b)-1, v))
}

// data appends b and pads it to a whole block.
func (w *rawTar) data(b []byte) {
	w.b.Write(b)
	w.b.Write(make([]byte, -len(b)&(blockSize-1)))
}

// pax appends a PAX extended header with records "key=value".
func (w *rawTar) pax(recs ...string) {
	var body []byte
	for _, r := range recs {
		n := len(r) + 3 // space, newline and at least one digit
		for len(fmt.Sprint(n))+len(r)+2 != n {
			n++
		}
		body = fmt.Appendf(body, "%d %s\n", n, r)
	}
	w.header("PaxHeaders/x", tar.TypeXHeader, int64(len(body)), false, nil)
	w.data(body)
}

func (w *rawTar) file(name string, body []byte) {
	w.header(name, tar.TypeReg, int64(len(body)), false, nil)
	w.data(body)
}

func (w *rawTar) bytes() []byte {
	w.b.Write(make([]byte, 2*blockSize))
	return w.b.Bytes()
}

// sparseFile is a sparse file to write: its fragments as the map lists
// them (empty ones included) and its logical content.
type sparseFile struct {
	name    string
	size    int64
	frags   []Extent
	content []byte // size bytes, zero outside the fragments
}

func newSparseFile(name string, size int64, frags []Extent, seed uint64) sparseFile {
	content := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 3))
	for _, f := range frags {
		for i := f.Offset; i < f.Offset+f.Length; i++ {
			content[i] = byte(r.IntN(255) + 1)
		}
	}
	return sparseFile{name: name, size: size, frags: frags, content: content}
}

// stored is the fragments' bytes back to back, as a sparse entry stores them.
func (f sparseFile) stored() []byte {
	var b []byte
	for _, x := range f.frags {
		b = append(b, f.content[x.Offset:x.Offset+x.Length]...)
	}
	return b
}

// oldGNU appends the file as an old GNU sparse entry (type 'S'), with
// extension blocks past four fragments.
func (w *rawTar) oldGNU(f sparseFile) {
	w.oldGNURaw(f.name, f.size, f.frags, f.stored())
}

func (w *rawTar) oldGNURaw(name string, size int64, frags []Extent, data []byte) {
	putFrags := func(s []byte, frags []Extent) {
		for i, x := range frags {
			putOctal(s[i*24:i*24+12], x.Offset)
			putOctal(s[i*24+12:i*24+24], x.Length)
		}
	}
	first := frags[:min(4, len(frags))]
	rest := frags[len(first):]
	w.header(name, tar.TypeGNUSparse, int64(len(data)), true, func(blk []byte) {
		putFrags(blk[gnuSparse:], first)
		if len(rest) > 0 {
			blk[gnuExtended] = 1
		}
		putOctal(blk[483:495], size)
	})
	for len(rest) > 0 {
		var ext [blockSize]byte
		n := min(extSparse, len(rest))
		putFrags(ext[:], rest[:n])
		rest = rest[n:]
		if len(rest) > 0 {
			ext[extSparse*24] = 1
		}
		w.b.Write(ext[:])
	}
	w.data(data)
}

func fragList(frags []Extent) string {
	var b strings.Builder
	for i, x := range frags {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d,%d", x.Offset, x.Length)
	}
	return b.String()
}

// pax01 appends the file in the PAX 0.1 form: the map in a PAX record.
func (w *rawTar) pax01(f sparseFile) {
	w.pax("GNU.sparse.size="+fmt.Sprint(f.size), "GNU.sparse.numblocks="+fmt.Sprint(len(f.frags)),
		"GNU.sparse.name="+f.name, "GNU.sparse.map="+fragList(f.frags))
	w.file("GNUSparseFile.0/"+f.name, f.stored())
}

// pax00 appends the file in the PAX 0.0 form: an offset and a numbytes
// record per fragment.
func (w *rawTar) pax00(f sparseFile) {
	recs := []string{"GNU.sparse.size=" + fmt.Sprint(f.size), "GNU.sparse.numblocks=" + fmt.Sprint(len(f.frags))}
	for _, x := range f.frags {
		recs = append(recs, fmt.Sprintf("GNU.sparse.offset=%d", x.Offset), fmt.Sprintf("GNU.sparse.numbytes=%d", x.Length))
	}
	w.pax(recs...)
	w.file(f.name, f.stored())
}

// pax10 appends the file in the PAX 1.0 form: the map opens the data.
func (w *rawTar) pax10(f sparseFile) {
	w.pax10Raw(f.name, f.size, pax10Map(f.frags), f.stored())
}

func pax10Map(frags []Extent) []byte {
	m := fmt.Appendf(nil, "%d\n", len(frags))
	for _, x := range frags {
		m = fmt.Appendf(m, "%d\n%d\n", x.Offset, x.Length)
	}
	return m
}

func (w *rawTar) pax10Raw(name string, size int64, m, data []byte) {
	w.pax("GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name="+name, "GNU.sparse.realsize="+fmt.Sprint(size))
	m = append(m, make([]byte, -len(m)&(blockSize-1))...)
	w.file("GNUSparseFile.0/"+name, append(m, data...))
}

// readTarFiles returns the content archive/tar gives each regular file.
func readTarFiles(t testing.TB, data []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("archive/tar Next: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse {
			continue
		}
		b := make([]byte, hdr.Size)
		if _, err := io.ReadFull(tr, b); err != nil {
			t.Fatalf("archive/tar read %s: %v", hdr.Name, err)
		}
		if n, err := tr.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("archive/tar read %s: %d bytes and %v past its size", hdr.Name, n, err)
		}
		out[cleanPath(hdr.Name)] = b
	}
}

// contentVia assembles an entry's content from the raw tar stream through
// Pieces, chunk bytes at a time.
func contentVia(t testing.TB, e *Entry, stream []byte, chunk int64) []byte {
	t.Helper()
	out := make([]byte, e.Size) // holes stay zero
	for off := int64(0); off < e.Size; off += chunk {
		var got int64
		for _, p := range e.Pieces(off, chunk) {
			if p.Len <= 0 || p.Len > e.Size-off-got {
				t.Fatalf("%s: Pieces(%d, %d) has a piece %v of a bad length", e.Path, off, chunk, p)
			}
			if !p.Hole() {
				if p.Stream < e.Offset || p.Stream+p.Len > e.Offset+e.StoredSize() {
					t.Fatalf("%s: Pieces(%d, %d) reads [%d,+%d) outside the stored content [%d,+%d)",
						e.Path, off, chunk, p.Stream, p.Len, e.Offset, e.StoredSize())
				}
				copy(out[off+got:], stream[p.Stream:p.Stream+p.Len])
			}
			got += p.Len
		}
		if want := min(chunk, e.Size-off); got != want {
			t.Fatalf("%s: Pieces(%d, %d) cover %d bytes, want %d", e.Path, off, chunk, got, want)
		}
	}
	return out
}

// checkWalk walks a tar and checks every regular file's content, assembled
// through Pieces from the raw stream, against want and archive/tar. It also
// builds, encodes and decodes an index of it.
func checkWalk(t *testing.T, data []byte, want map[string][]byte) []Entry {
	t.Helper()
	entries, size, err := WalkTar(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("WalkTar: %v", err)
	}
	if size != int64(len(data)) {
		t.Errorf("WalkTar size = %d, want %d", size, len(data))
	}
	fromTar := readTarFiles(t, data)
	seen := 0
	for i := range entries {
		e := &entries[i]
		if e.Type != TypeReg {
			continue
		}
		w, ok := want[e.Path]
		if !ok {
			continue
		}
		seen++
		for _, chunk := range []int64{e.Size + 1, 1<<20 + 7, 4093} {
			if e.Size > 1<<20 && chunk != 1<<20+7 {
				continue // one pass over a large file is enough
			}
			got := contentVia(t, e, data, chunk)
			if !bytes.Equal(got, w) {
				t.Errorf("%s (%d bytes) read via Pieces in chunks of %d differs from its content (first difference at %d)",
					e.Path, len(w), chunk, firstDiff(got, w))
			}
		}
		if !bytes.Equal(fromTar[e.Path], w) {
			t.Errorf("%s: archive/tar returns %d bytes differing from the content at %d", e.Path, len(fromTar[e.Path]), firstDiff(fromTar[e.Path], w))
		}
	}
	if seen != len(want) {
		t.Errorf("WalkTar found %d of the %d files", seen, len(want))
	}
	x, err := Build(t.Context(), digest.FromBytes(data), bytes.NewReader(data), BuildOptions{Span: 64 << 10})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	enc, err := x.MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary: %v", err)
	}
	y, err := Decode(enc)
	if err != nil {
		t.Fatalf("Decode(MarshalBinary()): %v", err)
	}
	if d := indexDiff(y, x); d != "" {
		t.Fatalf("Decode(MarshalBinary()): %s", d)
	}
	return entries
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func findEntry(entries []Entry, p string) *Entry {
	for i := range entries {
		if entries[i].Path == p {
			return &entries[i]
		}
	}
	return nil
}

// sparseSamples are files of every shape: data at both ends, many
// fragments (old GNU extension blocks, a PAX 1.0 map over one block), a
// trailing hole (listed as an empty last fragment, as GNU tar does), all
// hole, and unaligned fragments.
func sparseSamples() []sparseFile {
	var many []Extent
	for i := range 60 {
		many = append(many, Extent{Offset: int64(i) * 1000, Length: int64(1 + i%7)})
	}
	return []sparseFile{
		newSparseFile("ends", 10000, []Extent{{0, 100}, {5000, 512}, {9999, 1}}, 1),
		newSparseFile("many", 60000, many, 2),
		newSparseFile("trailing-hole", 8000, []Extent{{1024, 10}, {8000, 0}}, 3),
		newSparseFile("all-hole", 7000, []Extent{{7000, 0}}, 4),
		newSparseFile("unaligned", 3000, []Extent{{1, 2}, {3, 5}, {700, 300}}, 5),
	}
}

func TestWalkTarSparseForms(t *testing.T) {
	for _, form := range []struct {
		name  string
		write func(w *rawTar, f sparseFile)
	}{
		{"old GNU", (*rawTar).oldGNU},
		{"PAX 0.0", (*rawTar).pax00},
		{"PAX 0.1", (*rawTar).pax01},
		{"PAX 1.0", (*rawTar).pax10},
	} {
		t.Run(form.name, func(t *testing.T) {
			var w rawTar
			want := map[string][]byte{}
			for i, f := range sparseSamples() {
				before := fmt.Sprintf("plain%d", i)
				want[before] = pseudoText(100+i*300, uint64(i))
				w.file(before, want[before])
				form.write(&w, f)
				want[f.name] = f.content
			}
			want["last"] = []byte("after all the sparse files")
			w.file("last", want["last"])
			entries := checkWalk(t, w.bytes(), want)
			for _, f := range sparseSamples() {
				e := findEntry(entries, f.name)
				var frags []Extent
				for _, x := range f.frags {
					if x.Length > 0 {
						frags = append(frags, x)
					}
				}
				if e.Sparse == nil || len(e.Sparse) != len(frags) || (len(frags) > 0 && !reflect.DeepEqual(e.Sparse, frags)) {
					t.Errorf("%s: Sparse = %v, want %v (non-nil)", f.name, e.Sparse, frags)
				}
				if e.Size != f.size {
					t.Errorf("%s: Size = %d, want %d", f.name, e.Size, f.size)
				}
			}
			if e := findEntry(entries, "plain0"); e.Sparse != nil {
				t.Errorf("plain0: Sparse = %v, want nil", e.Sparse)
			}
		})
	}
}

func TestWalkTarSparseRejects(t *testing.T) {
	f := newSparseFile("sparse.bin", 4096, []Extent{{0, 10}, {2048, 10}}, 9)
	for _, tc := range []struct {
		name    string
		write   func(w *rawTar)
		corrupt bool // the error must wrap ErrCorrupt (a map archive/tar accepts)
		unsupp  bool // the error must wrap ErrUnsupported
		cut     int  // bytes to drop from the end of the stream
	}{
		{"old GNU overlapping", func(w *rawTar) {
			w.oldGNURaw(f.name, f.size, []Extent{{0, 10}, {5, 10}}, make([]byte, 20))
		}, false, false, 0},
		{"old GNU out of order", func(w *rawTar) {
			w.oldGNURaw(f.name, f.size, []Extent{{100, 10}, {0, 10}}, make([]byte, 20))
		}, false, false, 0},
		{"old GNU fragment past size", func(w *rawTar) {
			w.oldGNURaw(f.name, f.size, []Extent{{0, 10}, {4090, 10}}, make([]byte, 20))
		}, false, false, 0},
		{"old GNU fragments hold less than stored", func(w *rawTar) {
			w.oldGNURaw(f.name, f.size, f.frags, make([]byte, 30))
		}, true, false, 0},
		{"old GNU fragments hold more than stored", func(w *rawTar) {
			w.oldGNURaw(f.name, f.size, f.frags, make([]byte, 10))
		}, true, false, 0},
		{"old GNU extension block missing", func(w *rawTar) {
			frags := make([]Extent, 5)
			for i := range frags {
				frags[i] = Extent{int64(i) * 100, 1}
			}
			w.oldGNURaw(f.name, f.size, frags, nil)
		}, false, false, 2*blockSize + blockSize}, // end blocks, extension block
		{"PAX 1.0 map truncated", func(w *rawTar) {
			w.pax10(f)
		}, false, false, 2*blockSize + blockSize + 200}, // end blocks, data, part of the map
		{"PAX 1.0 map claims more fragments", func(w *rawTar) {
			m := pax10Map(f.frags)
			m[0] = '5'
			w.pax10Raw(f.name, f.size, m, f.stored())
		}, false, false, 0},
		{"PAX 1.0 map with a bad number", func(w *rawTar) {
			w.pax10Raw(f.name, f.size, []byte("2\n0\n10\n2048\nten\n"), f.stored())
		}, false, false, 0},
		{"PAX 1.0 overlapping", func(w *rawTar) {
			w.pax10Raw(f.name, f.size, pax10Map([]Extent{{0, 10}, {5, 10}}), f.stored())
		}, false, false, 0},
		{"PAX 1.0 map larger than size", func(w *rawTar) {
			w.pax10Raw(f.name, 100, pax10Map(f.frags), f.stored())
		}, false, false, 0},
		{"PAX 1.0 fragments hold less than stored", func(w *rawTar) {
			w.pax10Raw(f.name, f.size, pax10Map(f.frags), append(f.stored(), make([]byte, 600)...))
		}, true, false, 0},
		{"PAX 0.1 overlapping", func(w *rawTar) {
			w.pax01(sparseFile{name: f.name, size: f.size, frags: []Extent{{0, 10}, {5, 10}}, content: make([]byte, 4096)})
		}, false, false, 0},
		{"PAX 0.1 map larger than size", func(w *rawTar) {
			w.pax01(sparseFile{name: f.name, size: 100, frags: f.frags, content: f.content})
		}, false, false, 0},
		{"PAX 0.1 odd map", func(w *rawTar) {
			w.pax("GNU.sparse.size=4096", "GNU.sparse.numblocks=1", "GNU.sparse.name="+f.name, "GNU.sparse.map=0,10,20")
			w.file("GNUSparseFile.0/"+f.name, make([]byte, 10))
		}, false, false, 0},
		{"PAX 0.1 fragments hold more than stored", func(w *rawTar) {
			w.pax("GNU.sparse.size=4096", "GNU.sparse.numblocks=1", "GNU.sparse.name="+f.name, "GNU.sparse.map=0,10")
			w.file("GNUSparseFile.0/"+f.name, make([]byte, 5))
		}, true, false, 0},
		{"unknown sparse version", func(w *rawTar) {
			w.pax("GNU.sparse.major=2", "GNU.sparse.minor=0", "GNU.sparse.name="+f.name)
			w.file(f.name, make([]byte, 10))
		}, false, true, 0},
		{"sparse records without a map", func(w *rawTar) {
			w.pax("GNU.sparse.size=4096", "GNU.sparse.name="+f.name)
			w.file(f.name, make([]byte, 10))
		}, false, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w rawTar
			w.file("before", []byte("fine"))
			tc.write(&w)
			data := w.bytes()
			data = data[:len(data)-tc.cut]
			_, _, err := WalkTar(bytes.NewReader(data))
			switch {
			case err == nil:
				t.Fatalf("WalkTar succeeded, want an error")
			case !strings.Contains(err.Error(), f.name):
				t.Errorf("WalkTar error %q does not name the entry %q", err, f.name)
			case tc.corrupt && !errors.Is(err, ErrCorrupt):
				t.Errorf("WalkTar error %q does not wrap ErrCorrupt", err)
			case tc.unsupp && !errors.Is(err, ErrUnsupported):
				t.Errorf("WalkTar error %q does not wrap ErrUnsupported", err)
			}
		})
	}
}

// TestWalkTarLongHeaders checks the bound on header bytes kept per entry:
// an entry with more than maxHeaderBytes of headers is fine unless it is
// sparse, whose map WalkTar would have to find in them.
func TestWalkTarLongHeaders(t *testing.T) {
	f := newSparseFile("sparse.bin", 4096, []Extent{{0, 10}}, 1)
	longHeaders := func(w *rawTar) {
		// archive/tar takes up to 1 MiB per PAX header, any number in a row.
		for range maxHeaderBytes/(1<<20) + 1 {
			w.pax("comment=" + strings.Repeat("x", 1<<20-100))
		}
	}
	var plain rawTar
	longHeaders(&plain)
	plain.file("plain", []byte("content"))
	plain.file("next", []byte("more"))
	checkWalk(t, plain.bytes(), map[string][]byte{"plain": []byte("content"), "next": []byte("more")})

	var sparse rawTar
	longHeaders(&sparse)
	sparse.pax01(f)
	_, _, err := WalkTar(bytes.NewReader(sparse.bytes()))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), f.name) {
		t.Errorf("WalkTar(sparse entry after %d MiB of headers) = %v, want an error wrapping ErrUnsupported naming it",
			maxHeaderBytes>>20, err)
	}
}

// TestWalkTarGNUSparse checks the index of sparse files as GNU tar writes
// them, in each of its sparse formats, against the files themselves and
// archive/tar.
func TestWalkTarGNUSparse(t *testing.T) {
	gnuTar, err := exec.LookPath("tar")
	if err == nil {
		out, _ := exec.Command(gnuTar, "--version").Output()
		if !bytes.Contains(out, []byte("GNU tar")) {
			err = fmt.Errorf("%s is not GNU tar", gnuTar)
		}
	}
	if err != nil {
		t.Skipf("GNU tar not available: %v", err)
	}
	const mib = 1 << 20
	dir := t.TempDir()
	write := func(name string, size int64, at map[int64][]byte) {
		t.Helper()
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		for off, b := range at {
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	write("big", 64*mib, map[int64][]byte{
		0:             []byte("first bytes"),
		1_000_000:     []byte("hello"),
		5*mib + 100:   pseudoText(200<<10, 1),
		40*mib - 3:    []byte("straddles a MiB boundary"),
		64*mib - 1:    []byte("Z"),
		64*mib - 5000: pseudoText(4000, 2),
	})
	write("trailing-hole", 5*mib, map[int64][]byte{4096: []byte("x"), 2 * mib: pseudoText(70000, 3)})
	write("all-hole", 10*mib, nil)
	many := map[int64][]byte{}
	for i := range int64(40) {
		many[i*256<<10] = pseudoText(int(100+i*37), uint64(10+i))
	}
	write("many", 10*mib+12345, many)
	if err := os.WriteFile(filepath.Join(dir, "plain"), pseudoText(100000, 4), 0o644); err != nil {
		t.Fatal(err)
	}
	names := []string{"big", "trailing-hole", "all-hole", "many", "plain"}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "big"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= st.Size {
		t.Skipf("the file system under %s does not keep holes (%d blocks for %d bytes)", dir, st.Blocks, st.Size)
	}
	want := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = b
	}

	for _, format := range []struct {
		name string
		args []string
	}{
		{"old GNU", []string{"--format=gnu"}},
		{"PAX 0.0", []string{"--format=posix", "--sparse-version=0.0"}},
		{"PAX 0.1", []string{"--format=posix", "--sparse-version=0.1"}},
		{"PAX 1.0", []string{"--format=posix", "--sparse-version=1.0"}},
	} {
		t.Run(format.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "layer.tar")
			args := append([]string{"--sparse", "-cf", out, "-C", dir}, format.args...)
			args = append(args, names...)
			if msg, err := exec.Command(gnuTar, args...).CombinedOutput(); err != nil {
				t.Fatalf("tar %s: %v\n%s", strings.Join(args, " "), err, msg)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			entries := checkWalk(t, data, want)
			for _, n := range names {
				e := findEntry(entries, n)
				if sparse := n != "plain"; (e.Sparse != nil) != sparse {
					t.Errorf("%s: Sparse = %v, want sparse %v", n, e.Sparse, sparse)
				}
			}
			if e := findEntry(entries, "all-hole"); e.Sparse == nil || len(e.Sparse) != 0 || e.Blocks() != 0 {
				t.Errorf("all-hole: Sparse = %#v, Blocks() = %d; want empty and 0", e.Sparse, e.Blocks())
			}
			if e := findEntry(entries, "big"); e.Blocks() > 1024 {
				t.Errorf("big: Blocks() = %d for %d stored bytes", e.Blocks(), e.StoredSize())
			}
		})
	}
}

// FuzzSparseHeaders feeds arbitrary bytes to the parsers WalkTar runs on
// the header blocks archive/tar consumed. archive/tar checks checksums and
// its own reading of a map, not the exact bytes these parsers look at, so
// they must cope with anything without panicking.
func FuzzSparseHeaders(f *testing.F) {
	for _, write := range []func(*rawTar, sparseFile){(*rawTar).oldGNU, (*rawTar).pax01, (*rawTar).pax10} {
		for _, s := range sparseSamples()[:3] {
			var w rawTar
			write(&w, s)
			f.Add(w.b.Bytes())
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		headerName(data)
		main, err := mainHeader(data)
		if err != nil {
			return
		}
		if frags, end, err := oldGNUMap(data, main); err == nil {
			if end > len(data) || end < main+blockSize {
				t.Fatalf("oldGNUMap ends at %d of %d bytes", end, len(data))
			}
			checkSparseMap(frags, 1<<20, 100)
		}
		if frags, err := pax1Map(data[main+blockSize:]); err == nil {
			checkSparseMap(frags, 1<<20, 100)
		}
		if frags, err := pax0Map(string(data[main:])); err == nil {
			checkSparseMap(frags, 1<<20, 100)
		}
	})
}

// A PAX global header, as git archive writes, is no entry and moves no
// offset.
func TestWalkTarGlobalHeader(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header",
		PAXRecords: map[string]string{"comment": strings.Repeat("c", 700)}}))
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "a.txt", Size: 5, Mode: 0o644}))
	_, err := tw.Write([]byte("hello"))
	must(err)
	must(tw.Close())
	raw := buf.Bytes()
	entries, _, err := WalkTar(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("WalkTar = %v", err)
	}
	if len(entries) != 1 || entries[0].Path != "a.txt" {
		t.Fatalf("WalkTar entries = %+v, want only a.txt", entries)
	}
	if got := string(raw[entries[0].Offset : entries[0].Offset+5]); got != "hello" {
		t.Errorf("a.txt offset %d points at %q, want hello", entries[0].Offset, got)
	}
}
