package layers

import (
	"sync"
	"testing"
	"time"
)

// testMetrics records what a Source reports.
type testMetrics struct {
	mu                          sync.Mutex // guards all
	requests, bytes             int64
	frames                      []time.Duration
	aheadStarted, aheadFetched  int
	aheadDone, aheadMaxInFlight int
}

func (m *testMetrics) Request()          { m.mu.Lock(); m.requests++; m.mu.Unlock() }
func (m *testMetrics) BodyBytes(n int64) { m.mu.Lock(); m.bytes += n; m.mu.Unlock() }
func (m *testMetrics) FrameFetched(d time.Duration) {
	m.mu.Lock()
	m.frames = append(m.frames, d)
	m.mu.Unlock()
}
func (m *testMetrics) ReadaheadStarted() {
	m.mu.Lock()
	m.aheadStarted++
	m.aheadMaxInFlight = max(m.aheadMaxInFlight, m.aheadStarted-m.aheadDone)
	m.mu.Unlock()
}
func (m *testMetrics) ReadaheadDone(fetched bool) {
	m.mu.Lock()
	m.aheadDone++
	if fetched {
		m.aheadFetched++
	}
	m.mu.Unlock()
}

func TestSourceMetricsMatchTheRegistry(t *testing.T) {
	e := newEnv(t)
	ls, err := e.r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	x := ls[0].Index
	if len(x.Frames) < 4 {
		t.Fatalf("layer has %d frames; the test needs 4", len(x.Frames))
	}
	var m testMetrics
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	src.SetMetrics(&m)
	e.proxy.ClearStats()
	e.proxy.Short(1) // a failed attempt and its bytes count too
	for _, i := range []int{0, 1} {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatalf("Frame(%d) = %v", i, err)
		}
	}
	src.wg.Wait() // the read-ahead
	src.Close()
	// Every frame read or read ahead is cached now; a second read fetches nothing.
	if _, err := src.Frame(t.Context(), x, 1); err != nil {
		t.Fatalf("Frame(1) again = %v", err)
	}

	st := e.proxy.Stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.requests != int64(st.BlobRequests+st.OtherRequests) || m.bytes != st.BlobBytes {
		t.Errorf("Source metrics = %d requests, %d bytes; the registry saw %d requests, %d blob bytes",
			m.requests, m.bytes, st.BlobRequests+st.OtherRequests, st.BlobBytes)
	}
	// Frame 1 came with frame 0 when it decodes after it (the rest of a
	// span comes with a cold read).
	if want := 2 - btoi(x.NeedsFrameBefore(1)); len(m.frames) != want {
		t.Errorf("frame loads timed = %d, want the %d read (read-ahead requests are not frame loads)", len(m.frames), want)
	}
	if _, most := framesAhead(x, 1, readaheadRequest); m.aheadStarted != m.aheadDone || m.aheadFetched < 1 || m.aheadFetched > most || m.aheadMaxInFlight < 1 {
		t.Errorf("read-ahead: %d started, %d done, %d fetched, at most %d at once; want all done, 1 to %d fetched, ≥ 1 at once",
			m.aheadStarted, m.aheadDone, m.aheadFetched, m.aheadMaxInFlight, most)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
