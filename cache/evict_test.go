package cache

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestEviction(t *testing.T) {
	const size, keep = 1024, 10
	const limit = keep * size
	s, _ := openStore(t, Config{MemoryBytes: -1, MaxDiskBytes: limit})
	frames := make([][]byte, 30)
	ds := make([]digest.Digest, 30)
	for i := range frames {
		frames[i], ds[i] = testFrame(uint64(1000+i), size)
	}
	get := func(i int) {
		t.Helper()
		l := &loader{b: frames[i]}
		if _, err := s.Frame(t.Context(), ds[i], size, l.load); err != nil {
			t.Fatalf("Frame(%d) = %v", i, err)
		}
	}
	get(0)
	for i := 1; i < len(frames); i++ {
		get(i)
		get(0) // keeps frame 0 the most recently used
		st := s.Stats()
		u, err := Usage(s.dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.DiskBytes > limit || u.FrameBytes > limit || u.FrameBytes != st.DiskBytes {
			t.Fatalf("after frame %d: Stats.DiskBytes = %d, Usage.FrameBytes = %d, want equal and <= %d", i, st.DiskBytes, u.FrameBytes, limit)
		}
	}
	for i := range frames {
		want := i == 0 || i >= len(frames)-(keep-1)
		if got := s.Has(ds[i]); got != want {
			t.Errorf("Has(frame %d) = %v, want %v", i, got, want)
		}
	}
	if st := s.Stats(); st.Evictions != int64(len(frames)-keep) || st.DiskFrames != keep {
		t.Errorf("Stats = %+v, want %d evictions, %d frames", st, len(frames)-keep, keep)
	}
}

// TestEvictionAtOpen checks that Open orders frames by mtime and evicts the
// oldest when a root holds more than the limit.
func TestEvictionAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, Config{Dir: dir})
	ds := make([]digest.Digest, 5)
	base := time.Now().Add(-time.Hour)
	for i := range ds {
		var b []byte
		b, ds[i] = testFrame(uint64(2000+i), 1000)
		if err := s.Put(t.Context(), ds[i], b); err != nil {
			t.Fatal(err)
		}
		age := base.Add(time.Duration(i) * time.Minute)
		if i == 0 {
			age = base.Add(time.Hour) // frame 0 is the newest
		}
		if err := os.Chtimes(framePath(dir, ds[i].Encoded()), age, age); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s2, _ := openStore(t, Config{Dir: dir, MaxDiskBytes: 3000})
	<-s2.scanned // in the background
	for i, want := range []bool{true, false, false, true, true} {
		if got := s2.Has(ds[i]); got != want {
			t.Errorf("Has(frame %d) = %v, want %v", i, got, want)
		}
	}
	if st := s2.Stats(); st.Evictions != 2 || st.DiskBytes != 3000 {
		t.Errorf("Stats = %+v, want 2 evictions, 3000 bytes", st)
	}
}

func TestFrameLargerThanDiskLimit(t *testing.T) {
	s, logs := openStore(t, Config{MemoryBytes: -1, MaxDiskBytes: 1000})
	small, dsmall := testFrame(3000, 500)
	if err := s.Put(t.Context(), dsmall, small); err != nil {
		t.Fatal(err)
	}
	big, d := testFrame(3001, 2000)
	l := &loader{b: big}
	if _, err := s.Frame(t.Context(), d, 2000, l.load); err != nil {
		t.Fatalf("Frame(big) = %v", err)
	}
	if s.Has(d) || !s.Has(dsmall) {
		t.Errorf("Has(big), Has(small) = %v, %v; want false, true (nothing evicted for a frame that cannot fit)", s.Has(d), s.Has(dsmall))
	}
	if w := logs.expectWarns(); len(w) != 1 {
		t.Errorf("warnings = %q, want 1", w)
	}
}

func TestPruneAndUsage(t *testing.T) {
	dir := t.TempDir()
	a, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	b, _ := openStore(t, Config{Dir: dir, MemoryBytes: -1})
	const size = 1000
	var da, db []digest.Digest
	for i := range 10 {
		f, d := testFrame(uint64(4000+i), size)
		if err := a.Put(t.Context(), d, f); err != nil {
			t.Fatal(err)
		}
		da = append(da, d)
	}
	// b's frames are unknown to a and older than all of a's.
	old := time.Now().Add(-time.Hour)
	for i := range 2 {
		f, d := testFrame(uint64(5000+i), size)
		if err := b.Put(t.Context(), d, f); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(framePath(dir, d.Encoded()), old, old); err != nil {
			t.Fatal(err)
		}
		db = append(db, d)
	}
	f0, _ := testFrame(4000, size)
	if _, err := a.Frame(t.Context(), da[0], size, (&loader{b: f0}).load); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{"sha256:" + hexA, digest.FromString("index two")} {
		if err := a.PutIndex(d, []byte("idx")); err != nil {
			t.Fatal(err)
		}
	}
	u, err := Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := (DiskUsage{Frames: 12, FrameBytes: 12 * size, Indexes: 2, IndexBytes: 6}); u != want {
		t.Fatalf("Usage = %+v, want %+v", u, want)
	}

	res, err := a.Prune(t.Context(), PruneOptions{KeepBytes: 5 * size})
	if err != nil {
		t.Fatal(err)
	}
	if want := (PruneResult{Frames: 7, FrameBytes: 7 * size}); res != want {
		t.Errorf("Prune(keep 5) = %+v, want %+v", res, want)
	}
	var kept []int
	for i, d := range da {
		if a.Has(d) {
			kept = append(kept, i)
		}
	}
	if want := []int{0, 6, 7, 8, 9}; !slices.Equal(kept, want) {
		t.Errorf("frames kept = %v, want %v (b's oldest ones gone)", kept, want)
	}
	for _, d := range db {
		if a.Has(d) {
			t.Errorf("Has(%s) = true, want pruned (oldest)", d)
		}
	}
	if st := a.Stats(); st.DiskFrames != 5 || st.DiskBytes != 5*size {
		t.Errorf("Stats after Prune = %+v, want 5 frames", st)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := a.Prune(ctx, PruneOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Prune(cancelled) error = %v, want context.Canceled", err)
	}

	res, err = a.Prune(t.Context(), PruneOptions{Indexes: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := (PruneResult{Frames: 5, FrameBytes: 5 * size, Indexes: 2, IndexBytes: 6}); res != want {
		t.Errorf("Prune(all) = %+v, want %+v", res, want)
	}
	if u, err := Usage(dir); err != nil || u != (DiskUsage{}) {
		t.Errorf("Usage after Prune(all) = %+v, %v, want empty", u, err)
	}
	if _, err := a.Prune(t.Context(), PruneOptions{KeepBytes: -1}); err == nil {
		t.Errorf("Prune(KeepBytes -1) = nil error, want one")
	}
}

func TestRecency(t *testing.T) {
	var r recency
	r.init()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	order := func() []string {
		var out []string
		for e := r.root.next; e != &r.root; e = e.next {
			out = append(out, e.hex)
		}
		return out
	}
	r.use("a", 10, at(0), at(0))
	r.use("b", 20, at(1), at(1))
	r.use("c", 30, at(2), at(2))
	if touch := r.use("a", 10, at(2), time.Time{}); !touch {
		t.Errorf("use(a) two minutes after its mtime = no touch, want touch")
	}
	if touch := r.use("a", 10, at(2).Add(time.Second), time.Time{}); touch {
		t.Errorf("use(a) a second after a touch = touch, want none")
	}
	if touch := r.useIfKnown("zz", at(3)); touch || r.byHex["zz"] != nil {
		t.Errorf("useIfKnown(unknown) added or touched it")
	}
	if got, want := order(), []string{"a", "c", "b"}; !slices.Equal(got, want) {
		t.Errorf("order = %v, want %v", got, want)
	}
	if r.bytes != 60 {
		t.Errorf("bytes = %d, want 60", r.bytes)
	}
	v := r.evict(40, 0)
	if len(v) != 1 || v[0].hex != "b" || r.bytes != 40 {
		t.Errorf("evict(40) = %v, bytes %d; want b, 40", v, r.bytes)
	}
	r.remove("a")
	r.remove("a")
	if got := order(); !slices.Equal(got, []string{"c"}) || r.bytes != 30 {
		t.Errorf("after remove(a): order %v, bytes %d; want [c], 30", got, r.bytes)
	}

	// rebuild: scanned frames by mtime, newer in-process use wins, entries
	// used since the scan began survive, others not found are dropped.
	r.use("d", 5, at(10), at(10)) // stored during the scan
	r.rebuild([]scanned{
		{hex: "c", size: 30, mtime: at(1)},
		{hex: "e", size: 7, mtime: at(5)},
		{hex: "f", size: 8, mtime: at(0)},
	}, at(9))
	if got, want := order(), []string{"d", "e", "c", "f"}; !slices.Equal(got, want) {
		t.Errorf("order after rebuild = %v, want %v", got, want)
	}
	if r.bytes != 50 || len(r.byHex) != 4 {
		t.Errorf("after rebuild: bytes %d, entries %d; want 50, 4", r.bytes, len(r.byHex))
	}
	if v := r.evict(0, 2); len(v) != 2 || v[0].hex != "f" || v[1].hex != "c" {
		t.Errorf("evict(0, 2) = %v, want f, c", v)
	}
}
