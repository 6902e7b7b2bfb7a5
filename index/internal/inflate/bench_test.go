package inflate

import (
	"bytes"
	"compress/gzip"
	"io"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// benchLayer returns a 16 MiB tar-like layer and its gzip (level 6) stream.
func benchLayer(b *testing.B) (data, gz []byte) {
	b.Helper()
	data = tarLike(b, 16<<20, 42)
	return data, stdGzip(gzip.DefaultCompression)(b, data)
}

func BenchmarkScan(b *testing.B) {
	data, gz := benchLayer(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n := 0
		err := Scan(bytes.NewReader(gz), io.Discard, 1<<20, func(Checkpoint) error { n++; return nil })
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResume decodes the whole layer frame by frame, each frame from its
// own checkpoint and exactly its compressed bytes, as lazyfs reads frames.
func BenchmarkResume(b *testing.B) {
	data, gz := benchLayer(b)
	_, cps, err := scanAll(gz, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 2<<20)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ReportMetric(float64(len(cps)), "frames")
	for b.Loop() {
		for i, cp := range cps {
			end, outEnd := int64(len(gz)), int64(len(data))
			if i+1 < len(cps) {
				end, outEnd = cps[i+1].In+1, cps[i+1].Out
			}
			p := buf[:outEnd-cp.Out]
			if _, err := io.ReadFull(NewReader(bytes.NewReader(gz[cp.In:end]), cp), p); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkStdlibGzip is compress/gzip on the same stream, for comparison.
func BenchmarkStdlibGzip(b *testing.B) {
	data, gz := benchLayer(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKlauspostGzip is github.com/klauspost/compress/gzip on the same
// stream, for comparison.
func BenchmarkKlauspostGzip(b *testing.B) {
	data, gz := benchLayer(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		zr, err := kgzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}
