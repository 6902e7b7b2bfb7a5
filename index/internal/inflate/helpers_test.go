package inflate

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"math/rand/v2"
	"os/exec"
	"slices"
	"testing"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
)

// textLike returns n bytes of compressible, word-based text from seed.
func textLike(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"lazy", "frame", "layer", "registry", "fuse", "inode", "gzip",
		"window", "checkpoint", "block", "the", "of", "and", "container", "image",
		"snapshot", "overlay", "mount", "digest", "sha256", "manifest", "config"}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		switch r.IntN(16) {
		case 0:
			b.WriteByte('\n')
		case 1:
			fmt.Fprintf(&b, " %d", r.IntN(100000))
		case 2:
			b.WriteByte(byte(r.Uint32()))
		}
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// tarLike returns a tar archive of about n bytes with files like a layer's:
// text, binary-ish code, runs of zeros and incompressible bytes, from seed.
func tarLike(tb testing.TB, n int, seed uint64) []byte {
	tb.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; buf.Len() < n; i++ {
		size := r.IntN(256 << 10)
		var body []byte
		switch r.IntN(8) {
		case 0:
			body = make([]byte, size) // sparse-ish file
		case 1:
			body = make([]byte, size/8)
			for j := range body {
				body[j] = byte(r.Uint32())
			}
		case 2, 3:
			// Machine code-like: small repeated instruction patterns.
			body = make([]byte, size)
			ops := [][]byte{{0x48, 0x89, 0xe5}, {0xe8, 0, 0, 0, 0}, {0x0f, 0x1f, 0x44, 0, 0}, {0xc3}, {0x55}}
			for j := 0; j < size; {
				op := ops[r.IntN(len(ops))]
				j += copy(body[j:], op)
				if j < size && r.IntN(4) == 0 {
					body[j] = byte(r.Uint32())
					j++
				}
			}
		default:
			body = textLike(size, r.Uint64())
		}
		hdr := &tar.Header{
			Name:     fmt.Sprintf("usr/lib/pkg%d/file%d.dat", i%13, i),
			Mode:     0o644,
			Size:     int64(len(body)),
			ModTime:  time.Unix(1700000000+int64(i), 0),
			Typeflag: tar.TypeReg,
			Uname:    "root",
			Gname:    "root",
		}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// skewed returns data whose byte frequencies follow the Fibonacci numbers,
// which drives Huffman code lengths to deflate's 15-bit limit.
func skewed(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	var cum []uint64
	a, b := uint64(1), uint64(1)
	for range 24 {
		cum = append(cum, a)
		a, b = b, a+b
	}
	for i := 1; i < len(cum); i++ {
		cum[i] += cum[i-1]
	}
	out := make([]byte, n)
	for i := range out {
		v := r.Uint64N(cum[len(cum)-1])
		j, _ := slices.BinarySearch(cum, v+1)
		out[i] = byte('A' + j)
	}
	return out
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 4))
	out := make([]byte, n)
	for i := range out {
		out[i] = byte(r.Uint32())
	}
	return out
}

// compressor makes a gzip stream of data.
type compressor struct {
	name string
	gz   func(tb testing.TB, data []byte) []byte
}

func stdGzip(level int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		tb.Helper()
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, level)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			tb.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	}
}

// flushingGzip writes data in pieces with a sync flush after each, which
// puts empty stored blocks (LEN 0) into the stream the way pigz does.
func flushingGzip(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for len(data) > 0 {
		n := min(len(data), 10000)
		if _, err := zw.Write(data[:n]); err != nil {
			tb.Fatal(err)
		}
		if err := zw.Flush(); err != nil {
			tb.Fatal(err)
		}
		data = data[n:]
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func klauspostGzip(level int) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		tb.Helper()
		var buf bytes.Buffer
		zw, err := kgzip.NewWriterLevel(&buf, level)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			tb.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		return buf.Bytes()
	}
}

// tool compresses with a command-line program, skipping if it is missing.
func tool(name string, args ...string) func(testing.TB, []byte) []byte {
	return func(tb testing.TB, data []byte) []byte {
		tb.Helper()
		path, err := exec.LookPath(name)
		if err != nil {
			tb.Skipf("%s not installed", name)
		}
		cmd := exec.Command(path, args...)
		cmd.Stdin = bytes.NewReader(data)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			tb.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
		}
		return out
	}
}

func compressors() []compressor {
	return []compressor{
		{"stdlib-0", stdGzip(gzip.NoCompression)},
		{"stdlib-1", stdGzip(gzip.BestSpeed)},
		{"stdlib-6", stdGzip(gzip.DefaultCompression)},
		{"stdlib-9", stdGzip(gzip.BestCompression)},
		{"stdlib-huffman-only", stdGzip(gzip.HuffmanOnly)},
		{"stdlib-sync-flush", flushingGzip},
		{"klauspost-0", klauspostGzip(kgzip.NoCompression)},
		{"klauspost-1", klauspostGzip(kgzip.BestSpeed)},
		{"klauspost-6", klauspostGzip(kgzip.DefaultCompression)},
		{"klauspost-9", klauspostGzip(kgzip.BestCompression)},
		{"klauspost-huffman-only", klauspostGzip(kgzip.HuffmanOnly)},
		{"klauspost-stateless", klauspostGzip(kgzip.StatelessCompression)},
		{"gzip-1", tool("gzip", "-c", "-n", "-1")},
		{"gzip-6", tool("gzip", "-c", "-6")},
		{"gzip-9", tool("gzip", "-c", "-9")},
		{"gzip-rsyncable", tool("gzip", "-c", "--rsyncable")},
		{"pigz-6", tool("pigz", "-c", "-p", "4")},
		{"pigz-11", tool("pigz", "-c", "-11")}, // zopfli
		{"pigz-independent", tool("pigz", "-c", "-i", "-b", "128")},
	}
}

// scanAll runs Scan on gz and returns the output and every checkpoint.
func scanAll(gz []byte, spacing int64) ([]byte, []Checkpoint, error) {
	var out bytes.Buffer
	var cps []Checkpoint
	err := Scan(bytes.NewReader(gz), &out, spacing, func(cp Checkpoint) error {
		if int64(out.Len()) != cp.Out {
			return fmt.Errorf("checkpoint at Out %d after %d bytes were written", cp.Out, out.Len())
		}
		cps = append(cps, cp)
		return nil
	})
	return out.Bytes(), cps, err
}

// checkResume checks every checkpoint: its window matches the output, and
// NewReader fed exactly [cp.In, next.In+1) reproduces [cp.Out, next.Out).
// From some checkpoints (the first only, if quick) it also checks that
// NewReader fed everything from cp.In on reproduces the rest and ends.
func checkResume(t *testing.T, gz, want []byte, cps []Checkpoint, quick bool) {
	t.Helper()
	if len(cps) == 0 {
		t.Fatalf("no checkpoints")
	}
	if cps[0].In == 0 || cps[0].Out != 0 || cps[0].Bits != 0 || len(cps[0].Window) != 0 {
		t.Errorf("first checkpoint = %+v, want one at the first block of the stream", cps[0])
	}
	for i, cp := range cps {
		if cp.Bits > 7 || cp.In < 0 || cp.In >= int64(len(gz)) || cp.Out > int64(len(want)) {
			t.Fatalf("checkpoint %d = {In %d Bits %d Out %d} is out of range", i, cp.In, cp.Bits, cp.Out)
		}
		if len(cp.Window) > 32768 || !bytes.HasSuffix(want[:cp.Out], cp.Window) {
			t.Fatalf("checkpoint %d: window of %d bytes is not the output before Out %d", i, len(cp.Window), cp.Out)
		}
		end, outEnd := int64(len(gz)), int64(len(want))
		if i+1 < len(cps) {
			next := cps[i+1]
			if next.Out < cp.Out || next.In*8+int64(next.Bits) <= cp.In*8+int64(cp.Bits) {
				t.Fatalf("checkpoint %d {In %d Bits %d Out %d} does not follow {In %d Bits %d Out %d}",
					i+1, next.In, next.Bits, next.Out, cp.In, cp.Bits, cp.Out)
			}
			end, outEnd = next.In+1, next.Out
		}
		got := make([]byte, outEnd-cp.Out)
		if _, err := io.ReadFull(NewReader(bytes.NewReader(gz[cp.In:end]), cp), got); err != nil {
			t.Fatalf("checkpoint %d {In %d Bits %d Out %d}: read [%d,%d) from [%d,%d): %v",
				i, cp.In, cp.Bits, cp.Out, cp.Out, outEnd, cp.In, end, err)
		}
		if !bytes.Equal(got, want[cp.Out:outEnd]) {
			t.Fatalf("checkpoint %d {In %d Bits %d Out %d}: output [%d,%d) differs", i, cp.In, cp.Bits, cp.Out, cp.Out, outEnd)
		}
	}
	// From a few checkpoints, read on to the end of the stream.
	ends := []int{0, len(cps) / 2, len(cps) - 1}
	if quick {
		ends = ends[:1]
	}
	for _, i := range ends {
		cp := cps[i]
		got, err := io.ReadAll(NewReader(bytes.NewReader(gz[cp.In:]), cp))
		if err != nil {
			t.Fatalf("checkpoint %d: read to the end: %v", i, err)
		}
		if !bytes.Equal(got, want[cp.Out:]) {
			t.Fatalf("checkpoint %d: read to the end: got %d bytes, want %d", i, len(got), len(want)-int(cp.Out))
		}
	}
}

// bitWriter writes deflate bit streams by hand, first bit lowest.
type bitWriter struct {
	out []byte
	acc uint64
	n   uint
}

func (w *bitWriter) bits(v uint64, n uint) {
	w.acc |= v << w.n
	w.n += n
	for w.n >= 8 {
		w.out = append(w.out, byte(w.acc))
		w.acc >>= 8
		w.n -= 8
	}
}

// code writes a Huffman code, whose bits go most significant first.
func (w *bitWriter) code(c uint64, n uint) {
	w.bits(uint64(bits.Reverse16(uint16(c))>>(16-n)), n)
}

func (w *bitWriter) align() {
	if w.n > 0 {
		w.bits(0, 8-w.n)
	}
}

func (w *bitWriter) bytes() []byte {
	w.align()
	return w.out
}

// fixedLit writes literal/length symbol sym with the fixed code.
func (w *bitWriter) fixedLit(sym int) {
	switch {
	case sym < 144:
		w.code(uint64(0x30+sym), 8)
	case sym < 256:
		w.code(uint64(0x190+sym-144), 9)
	case sym < 280:
		w.code(uint64(sym-256), 7)
	default:
		w.code(uint64(0xc0+sym-280), 8)
	}
}

// stored writes a stored block holding p.
func (w *bitWriter) stored(final bool, p []byte) {
	w.bits(b2u(final), 1)
	w.bits(0, 2)
	w.align()
	w.bits(uint64(len(p)), 16)
	w.bits(uint64(^uint16(len(p))), 16)
	for _, c := range p {
		w.bits(uint64(c), 8)
	}
}

// dynamicHeader writes the header of a dynamic block with the given code
// lengths, describing them with a code length code of sixteen 4-bit codes.
// It returns the canonical codes for writing symbols.
func (w *bitWriter) dynamicHeader(final bool, litLens, distLens []uint8) (litCodes, distCodes []uint16) {
	w.bits(b2u(final), 1)
	w.bits(2, 2)
	w.bits(uint64(len(litLens)-257), 5)
	w.bits(uint64(len(distLens)-1), 5)
	w.bits(19-4, 4)
	for _, sym := range codeLenOrder {
		if sym < 16 {
			w.bits(4, 3)
		} else {
			w.bits(0, 3)
		}
	}
	for _, l := range append(slices.Clone(litLens), distLens...) {
		w.code(uint64(l), 4)
	}
	return canonical(litLens), canonical(distLens)
}

// canonical returns the canonical Huffman codes for lens (RFC 1951 3.2.2).
func canonical(lens []uint8) []uint16 {
	var count, next [16]uint16
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	code := uint16(0)
	for l := 1; l < 16; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	codes := make([]uint16, len(lens))
	for i, l := range lens {
		if l > 0 {
			codes[i] = next[l]
			next[l]++
		}
	}
	return codes
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// member wraps a raw deflate stream in a minimal gzip header and a trailer
// for the given uncompressed data.
func member(deflate, data []byte) []byte {
	out := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}
	out = append(out, deflate...)
	out = binary.LittleEndian.AppendUint32(out, crc32.ChecksumIEEE(data))
	return binary.LittleEndian.AppendUint32(out, uint32(len(data)))
}

// rawDeflate compresses data with compress/flate into a raw deflate stream.
func rawDeflate(tb testing.TB, data []byte, level int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, level)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := fw.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// stdlibGunzip decompresses with compress/gzip, the reference.
func stdlibGunzip(gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// errorReader fails with err after giving data.
type errorReader struct {
	data []byte
	err  error
}

func (r *errorReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

// errorWriter fails with err after accepting n bytes.
type errorWriter struct {
	n   int
	err error
}

func (w *errorWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.n = 0
		return k, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

var errTest = errors.New("test error")
