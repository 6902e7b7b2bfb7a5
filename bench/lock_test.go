package bench

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLockRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lazybench.lock")
	var mu sync.Mutex
	var said []string
	logf := func(format string, args ...any) {
		mu.Lock()
		said = append(said, format)
		mu.Unlock()
	}
	unlock, err := lockRun(t.Context(), path, logf)
	if err != nil {
		t.Fatal(err)
	}

	// A second run waits, says so, and gives up when its context ends.
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if _, err := lockRun(ctx, path, logf); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("lockRun while held = %v, want context.DeadlineExceeded", err)
	}
	mu.Lock()
	if len(said) != 1 || !strings.Contains(said[0], "waiting") {
		t.Errorf("lockRun while held said %q, want one message about waiting", said)
	}
	mu.Unlock()

	unlock()
	unlock2, err := lockRun(t.Context(), path, logf)
	if err != nil {
		t.Fatalf("lockRun after unlock: %v", err)
	}
	unlock2()
}
