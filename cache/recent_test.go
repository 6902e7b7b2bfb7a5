package cache

import (
	"context"
	"testing"
)

// A frame read again right after it was loaded is served from memory, even
// when ristretto turned it away or has not admitted it yet.
func TestRecentFramesServeRereads(t *testing.T) {
	// A memory tier so small that ristretto can hold about one frame.
	s, _ := openStore(t, Config{MemoryBytes: 1 << 20})
	for i := range 8 {
		b, d := testFrame(uint64(i), 512<<10)
		load := func(context.Context) ([]byte, error) { return b, nil }
		for range 4 {
			if _, err := s.Frame(t.Context(), d, int64(len(b)), load); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := s.Stats()
	if st.Misses != 8 || st.MemoryHits != 24 || st.DiskHits != 0 {
		t.Errorf("Stats() = %d misses, %d memory hits, %d disk hits; want 8, 24, 0", st.Misses, st.MemoryHits, st.DiskHits)
	}
}

func TestRecentFramesBudget(t *testing.T) {
	r := newRecentFrames(10)
	r.put("a", make([]byte, 4))
	r.put("b", make([]byte, 4))
	r.get("a") // a is now the most recent
	r.put("c", make([]byte, 4))
	if _, ok := r.get("b"); ok {
		t.Error("b kept past the budget; want the least recent evicted")
	}
	for _, h := range []string{"a", "c"} {
		if _, ok := r.get(h); !ok {
			t.Errorf("%s evicted; want kept", h)
		}
	}
	r.put("big", make([]byte, 11))
	if _, ok := r.get("big"); ok || r.used != 8 {
		t.Errorf("a frame over the whole budget was kept (used %d)", r.used)
	}
}
