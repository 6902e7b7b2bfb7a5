package snapshotter

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lazyfs/lazyfs/cache"
)

// logRecorder keeps every message logged; any Warn or worse fails the
// test at cleanup.
type logRecorder struct {
	mu     sync.Mutex
	msgs   []string // message and attributes of each record
	warns  []string
	expect bool // warnings are part of the test
}

type recHandler struct {
	rec   *logRecorder
	inner slog.Handler
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recHandler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.rec.mu.Lock()
	h.rec.msgs = append(h.rec.msgs, b.String())
	if r.Level >= slog.LevelWarn {
		h.rec.warns = append(h.rec.warns, b.String())
	}
	h.rec.mu.Unlock()
	return h.inner.Handle(ctx, r)
}

func (h recHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return recHandler{h.rec, h.inner.WithAttrs(as)}
}

func (h recHandler) WithGroup(name string) slog.Handler {
	return recHandler{h.rec, h.inner.WithGroup(name)}
}

// newLog returns a logger to the test's output. Create it before what
// logs to it, so that its check runs after their cleanups.
func newLog(t *testing.T) (*slog.Logger, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	t.Cleanup(func() {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !rec.expect && len(rec.warns) > 0 {
			t.Errorf("unexpected warnings: %q", rec.warns)
		}
	})
	inner := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})
	return slog.New(recHandler{rec, inner}), rec
}

// expectWarnings lets the test log warnings and errors.
func (r *logRecorder) expectWarnings() {
	r.mu.Lock()
	r.expect = true
	r.mu.Unlock()
}

// count returns how many records so far contain every one of parts.
func (r *logRecorder) count(parts ...string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(m, p) }) {
			n++
		}
	}
	return n
}

func openStore(t *testing.T, root string) *cache.Store {
	t.Helper()
	s, err := cache.Open(cache.Config{Dir: filepath.Join(root, "cache")})
	if err != nil {
		t.Fatalf("cache.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// mounted reports whether dir is a mount point.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	m, err := isMountPoint(dir)
	if err != nil {
		t.Fatalf("isMountPoint(%s): %v", dir, err)
	}
	return m
}
