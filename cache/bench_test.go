package cache

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"
)

const benchFrame = 1 << 20

func openBench(b *testing.B, cfg Config) *Store {
	b.Helper()
	cfg.Dir = b.TempDir()
	s, err := Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkFrameMemoryHit(b *testing.B) {
	s := openBench(b, Config{})
	data, d := testFrame(1, benchFrame)
	l := &loader{b: data}
	if _, err := s.Frame(b.Context(), d, benchFrame, l.load); err != nil {
		b.Fatal(err)
	}
	s.mem.Wait()
	ctx := b.Context()
	b.SetBytes(benchFrame)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Frame(ctx, d, benchFrame, l.load); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.MemoryHits == 0 || l.calls.Load() != 1 {
		b.Fatalf("Stats = %+v, want memory hits", st)
	}
}

func BenchmarkFrameMemoryHitParallel(b *testing.B) {
	s := openBench(b, Config{})
	data, d := testFrame(1, benchFrame)
	l := &loader{b: data}
	if _, err := s.Frame(b.Context(), d, benchFrame, l.load); err != nil {
		b.Fatal(err)
	}
	s.mem.Wait()
	ctx := b.Context()
	b.SetBytes(benchFrame)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Frame(ctx, d, benchFrame, l.load); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkFrameDiskHit(b *testing.B) {
	s := openBench(b, Config{MemoryBytes: -1})
	data, d := testFrame(1, benchFrame)
	l := &loader{b: data}
	if _, err := s.Frame(b.Context(), d, benchFrame, l.load); err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.SetBytes(benchFrame)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Frame(ctx, d, benchFrame, l.load); err != nil {
			b.Fatal(err)
		}
	}
	if st := s.Stats(); st.DiskHits == 0 || l.calls.Load() != 1 {
		b.Fatalf("Stats = %+v, want disk hits", st)
	}
}

// BenchmarkFrameColdLoad cycles through 64 frames with room on disk for 8,
// so every call misses: load (prepared bytes), verify, write, evict.
func BenchmarkFrameColdLoad(b *testing.B) {
	const n = 64
	s := openBench(b, Config{MemoryBytes: -1, MaxDiskBytes: 8 * benchFrame})
	type frame struct {
		d    digest.Digest
		load func(context.Context) ([]byte, error)
	}
	frames := make([]frame, n)
	for i := range frames {
		data, d := testFrame(uint64(i), benchFrame)
		frames[i] = frame{d, func(context.Context) ([]byte, error) { return data, nil }}
	}
	ctx := b.Context()
	b.SetBytes(benchFrame)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f := frames[i%n]
		i++
		if _, err := s.Frame(ctx, f.d, benchFrame, f.load); err != nil {
			b.Fatal(err)
		}
	}
	st := s.Stats()
	if st.Loads != int64(i) {
		b.Fatalf("Stats = %+v, want %d loads", st, i)
	}
	b.ReportMetric(float64(st.Loads)/float64(i), "loads/op")
}
