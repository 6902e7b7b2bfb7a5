package inflate

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"slices"
	"testing"
)

// Bounds that keep each fuzz run quick: how much output an input may expand
// to, and how many checkpoints (each with a window of up to 32 KiB) to check.
const (
	maxFuzzOut         = 4 << 20
	maxFuzzCheckpoints = 200
)

// limitedWriter fails once more than n bytes have been written.
type limitedWriter struct {
	buf bytes.Buffer
	n   int
}

var errTooBig = errors.New("output too big")

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.buf.Len()+len(p) > w.n {
		return 0, errTooBig
	}
	return w.buf.Write(p)
}

func FuzzScan(f *testing.F) {
	text := textLike(5000, 20)
	for _, level := range []int{-2, 0, 1, 6, 9} {
		f.Add(stdGzip(level)(f, text))
	}
	f.Add(flushingGzip(f, textLike(20000, 21)))
	f.Add(klauspostGzip(1)(f, text))
	f.Add(slices.Concat(stdGzip(6)(f, []byte("a")), stdGzip(6)(f, nil), stdGzip(1)(f, text[:100]), make([]byte, 8)))
	var hdr bytes.Buffer
	zw := gzip.NewWriter(&hdr)
	zw.Name, zw.Comment, zw.Extra = "name", "comment", []byte("extra")
	zw.Write(text[:300])
	zw.Close()
	f.Add(hdr.Bytes())
	var w bitWriter
	w.stored(false, []byte("abc"))
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLit(258)
	w.code(2, 5)
	w.fixedLit(256)
	f.Add(member(w.bytes(), []byte("abcabcab")))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b, 8, 0})

	f.Fuzz(func(t *testing.T, gz []byte) {
		out := &limitedWriter{n: maxFuzzOut}
		var cps []Checkpoint
		err := Scan(bytes.NewReader(gz), out, 0, func(cp Checkpoint) error {
			if int64(out.buf.Len()) != cp.Out {
				t.Fatalf("checkpoint at Out %d after %d bytes were written", cp.Out, out.buf.Len())
			}
			// Any subset of the checkpoints is a valid set: keep the first few.
			if len(cps) < maxFuzzCheckpoints {
				cps = append(cps, cp)
			}
			return nil
		})
		if errors.Is(err, errTooBig) {
			return
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Scan() = %v, want nil or ErrCorrupt", err)
		}

		zr, refErr := gzip.NewReader(bytes.NewReader(gz))
		var ref []byte
		if refErr == nil {
			ref, refErr = io.ReadAll(io.LimitReader(zr, maxFuzzOut+1))
		}
		if refErr == nil && len(ref) <= maxFuzzOut {
			if err != nil {
				t.Fatalf("Scan() = %v, but compress/gzip decodes the input", err)
			}
			if !bytes.Equal(out.buf.Bytes(), ref) {
				t.Fatalf("Scan() wrote %d bytes that differ from the %d of compress/gzip", out.buf.Len(), len(ref))
			}
		}
		if err == nil {
			checkResume(t, gz, out.buf.Bytes(), cps, true)
		}
	})
}

// FuzzResume makes a valid gzip stream from the fuzz input (see genStream),
// checks Scan and compress/gzip against what it should decode to, and resumes
// at a fuzzed checkpoint, with all bytes up to the next one and with fewer.
//
// It does not run a real compressor: the fuzz engine instruments that too and
// would spend its time exploring and minimizing the compressor's paths.
// TestRoundTrip covers real compressors.
func FuzzResume(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint32(0))
	f.Add(randomBytes(300, 22), uint16(1), uint32(5))
	f.Add(randomBytes(3000, 23), uint16(4), uint32(100))
	f.Add([]byte{1, 0, 0, 2, 200, 3, 'a', 4, 0, 0, 1, 0}, uint16(3), uint32(7))
	// One member: a long stored block, then a dynamic block of matches
	// reaching back to the start.
	prog := []byte{0, 0, 0, 0, 255}
	prog = append(prog, bytes.Repeat([]byte{0xff, 'q', 0xfb, 'r'}, 128)...)
	prog = append(prog, 1, 2, 40)
	for range 40 {
		prog = append(prog, 6, 0)
	}
	f.Add(prog, uint16(2), uint32(1000))

	f.Fuzz(func(t *testing.T, prog []byte, pick uint16, cut uint32) {
		gz, data, pad := genStream(prog)
		if ref, err := stdlibGunzip(gz[:len(gz)-pad]); err != nil || !bytes.Equal(ref, data) {
			t.Fatalf("compress/gzip on the generated stream: %d bytes, %v; want %d bytes", len(ref), err, len(data))
		}
		out, cps, err := scanAll(gz, int64(pick%4)*1000)
		if err != nil {
			t.Fatalf("Scan() = %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("Scan() output differs from the input")
		}
		i := int(pick>>2) % len(cps)
		cp := cps[i]
		end, outEnd := int64(len(gz)), int64(len(data))
		if i+1 < len(cps) {
			end, outEnd = cps[i+1].In+1, cps[i+1].Out
		}
		got := make([]byte, outEnd-cp.Out)
		if _, err := io.ReadFull(NewReader(bytes.NewReader(gz[cp.In:end]), cp), got); err != nil {
			t.Fatalf("checkpoint %d of %d {In %d Bits %d Out %d}: read [%d,%d): %v", i, len(cps), cp.In, cp.Bits, cp.Out, cp.Out, outEnd, err)
		}
		if !bytes.Equal(got, data[cp.Out:outEnd]) {
			t.Fatalf("checkpoint %d of %d: output differs", i, len(cps))
		}
		rest, err := io.ReadAll(NewReader(bytes.NewReader(gz[cp.In:]), cp))
		if err != nil || !bytes.Equal(rest, data[cp.Out:]) {
			t.Fatalf("checkpoint %d of %d: read to the end: %d bytes, %v; want %d bytes", i, len(cps), len(rest), err, len(data)-int(cp.Out))
		}
		// With fewer bytes: a prefix of the output, then io.ErrUnexpectedEOF
		// (or a clean end if the cut falls on a member end).
		k := cp.In + int64(cut)%(end-cp.In)
		part, err := io.ReadAll(NewReader(bytes.NewReader(gz[cp.In:k]), cp))
		if err != nil && (!errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCorrupt)) {
			t.Fatalf("checkpoint %d: read from %d bytes = %v, want io.ErrUnexpectedEOF", i, k-cp.In, err)
		}
		if !bytes.HasPrefix(data[cp.Out:], part) {
			t.Fatalf("checkpoint %d: read from %d bytes gave output that is not a prefix", i, k-cp.In)
		}
	})
}

// FuzzNewReader resumes at a made-up checkpoint in arbitrary bytes: it must
// not panic, hang or use unbounded memory.
func FuzzNewReader(f *testing.F) {
	gz := stdGzip(6)(f, textLike(5000, 26))
	f.Add(gz[10:], uint8(0), []byte(nil))
	f.Add(gz[200:], uint8(3), []byte("window"))
	f.Add(stdGzip(0)(f, textLike(500, 27))[10:], uint8(0), []byte(nil))
	f.Add([]byte{0xff, 0xff, 0xff}, uint8(7), []byte{})
	f.Fuzz(func(t *testing.T, in []byte, bits uint8, window []byte) {
		const limit = 1 << 20
		n, err := io.Copy(io.Discard, io.LimitReader(NewReader(bytes.NewReader(in), Checkpoint{In: 10, Bits: bits, Window: window}), limit))
		if n < limit && err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("read = %v, want ErrCorrupt or io.ErrUnexpectedEOF", err)
		}
	})
}
