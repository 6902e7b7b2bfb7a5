package cache

import (
	"bytes"
	"os"
	"testing"
	"time"
)

// Two Stores on one root stand for two processes (an flock belongs to an
// open file, so two opens conflict within one process too).
func TestFrameLockAcrossStores(t *testing.T) {
	dir := t.TempDir()
	a, _ := openStore(t, Config{Dir: dir})
	b, _ := openStore(t, Config{Dir: dir})
	want, d := testFrame(8, 4096)

	if b.WaitFrameUnlocked(t.Context(), d, time.Second) {
		t.Error("WaitFrameUnlocked with no lock reported a wait")
	}
	unlock, ok := a.TryLockFrame(d)
	if !ok {
		t.Fatal("TryLockFrame on a fresh root failed")
	}
	if _, ok := b.TryLockFrame(d); ok {
		t.Fatal("a second TryLockFrame of a held frame succeeded")
	}
	start := time.Now()
	if b.WaitFrameUnlocked(t.Context(), d, 50*time.Millisecond) {
		t.Error("WaitFrameUnlocked past its bound reported the lock released")
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > time.Second {
		t.Errorf("WaitFrameUnlocked bounded by 50ms took %v", el)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := a.Put(t.Context(), d, bytes.Clone(want)); err != nil {
			t.Error(err)
		}
		unlock()
	}()
	start = time.Now()
	if !b.WaitFrameUnlocked(t.Context(), d, 5*time.Second) {
		t.Fatal("WaitFrameUnlocked did not see the lock released")
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Errorf("WaitFrameUnlocked returned after %v, before the holder let go", el)
	}
	if got, ok := b.Cached(d, 4096); !ok || !bytes.Equal(got, want) {
		t.Error("the frame the holder stored is not on disk for the waiter")
	}
	if _, err := os.Stat(lockPath(dir, d.Encoded())); !os.IsNotExist(err) {
		t.Errorf("lock file after unlock: %v, want it removed", err)
	}
	again, ok := b.TryLockFrame(d)
	if !ok {
		t.Fatal("TryLockFrame after the holder let go failed")
	}
	again()
}
