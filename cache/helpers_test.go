package cache

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// logRecorder collects the Warn (and worse) records a Store logs. Unless a
// test says it expects warnings, any of them fails the test.
type logRecorder struct {
	mu     sync.Mutex
	warns  []string // message and attributes of each Warn+ record
	expect bool
}

type recHandler struct {
	rec   *logRecorder
	inner slog.Handler
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		h.rec.mu.Lock()
		h.rec.warns = append(h.rec.warns, b.String())
		h.rec.mu.Unlock()
	}
	return h.inner.Handle(ctx, r)
}

func (h recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recHandler{h.rec, h.inner.WithAttrs(as)}
}

func (h recHandler) WithGroup(name string) slog.Handler {
	return recHandler{h.rec, h.inner.WithGroup(name)}
}

// newLog returns a logger writing to the test's output and its recorder.
// It must be created before the Store, so that its check runs after the
// Store's Close.
func newLog(t *testing.T) (*slog.Logger, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	inner := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	t.Cleanup(func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !rec.expect && len(rec.warns) > 0 {
			t.Errorf("unexpected warnings: %q", rec.warns)
		}
	})
	return slog.New(recHandler{rec, inner}), rec
}

// expectWarns allows warnings in this test and returns those so far.
func (r *logRecorder) expectWarns() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expect = true
	return append([]string(nil), r.warns...)
}

// openStore opens a Store on cfg (Dir defaults to a temp dir, Logger to a
// recorder) and closes it at cleanup.
func openStore(t *testing.T, cfg Config) (*Store, *logRecorder) {
	t.Helper()
	var rec *logRecorder
	if cfg.Logger == nil {
		cfg.Logger, rec = newLog(t)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%+v) = %v", cfg, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, rec
}

// testFrame returns n deterministic bytes for seed and their digest.
func testFrame(seed uint64, n int) ([]byte, digest.Digest) {
	r := rand.New(rand.NewPCG(seed, 0x1a2f))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := i; j < min(i+8, n); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	return b, digest.FromBytes(b)
}

// loader is a load function that returns fixed bytes and counts its calls.
type loader struct {
	b     []byte
	calls atomic.Int64
}

func (l *loader) load(context.Context) ([]byte, error) {
	l.calls.Add(1)
	return l.b, nil
}
