package fetch

import (
	"io"
	"sync/atomic"
	"testing"
	"time"
)

type testMeter struct{ requests, bytes atomic.Int64 }

func (m *testMeter) Request()          { m.requests.Add(1) }
func (m *testMeter) BodyBytes(n int64) { m.bytes.Add(n) }

func TestMeterCountsOnlyItsCalls(t *testing.T) {
	fx := newBlobFixture(t)
	c := testClient(t, Config{RequestTimeout: 300 * time.Millisecond, Transport: noKeepAlive()})
	// The handshake and a call without a meter are the Client's alone.
	if _, err := c.ReadRange(t.Context(), fx.repo, fx.dgst, 0, 10); err != nil {
		t.Fatalf("ReadRange = %v", err)
	}
	var m testMeter
	ctx := WithMeter(t.Context(), &m)
	fx.reg.setFaults(fault{kind: faultStatus, status: 503}, fault{kind: faultShort})
	if _, err := c.ReadRange(ctx, fx.repo, fx.dgst, 1000, 50_000); err != nil {
		t.Fatalf("ReadRange with two faults = %v", err)
	}
	if got := m.requests.Load(); got != 3 {
		t.Errorf("meter requests after a range read with 2 failed attempts = %d, want 3", got)
	}
	// The short body's bytes arrived too: more than the range, less than twice.
	if got := m.bytes.Load(); got < 50_000 || got >= 100_000 {
		t.Errorf("meter bytes after a range read of 50000 with a short body = %d, want [50000, 100000)", got)
	}

	var o testMeter
	rc, err := c.OpenBlob(WithMeter(t.Context(), &o), fx.repo, fx.dgst)
	if err != nil {
		t.Fatalf("OpenBlob = %v", err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("reading OpenBlob = %v", err)
	}
	rc.Close()
	if o.requests.Load() != 1 || o.bytes.Load() != int64(len(fx.data)) {
		t.Errorf("meter of OpenBlob = %d requests, %d bytes; want 1, %d", o.requests.Load(), o.bytes.Load(), len(fx.data))
	}
	if m.requests.Load() != 3 {
		t.Errorf("first meter changed by a later call: %d requests, want 3", m.requests.Load())
	}
}
