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

	if b.waitUnlocked(t.Context(), d.Encoded(), time.Second) {
		t.Error("waitUnlocked with no lock reported a wait")
	}
	unlock, ok := a.TryLockFrame(d)
	if !ok {
		t.Fatal("TryLockFrame on a fresh root failed")
	}
	if _, ok := b.TryLockFrame(d); ok {
		t.Fatal("a second TryLockFrame of a held frame succeeded")
	}
	start := time.Now()
	if b.waitUnlocked(t.Context(), d.Encoded(), 50*time.Millisecond) {
		t.Error("waitUnlocked past its bound reported the lock released")
	}
	if el := time.Since(start); el < 50*time.Millisecond || el > time.Second {
		t.Errorf("waitUnlocked bounded by 50ms took %v", el)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := a.Put(t.Context(), d, bytes.Clone(want)); err != nil {
			t.Error(err)
		}
		unlock()
	}()
	start = time.Now()
	if !b.waitUnlocked(t.Context(), d.Encoded(), 5*time.Second) {
		t.Fatal("waitUnlocked did not see the lock released")
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Errorf("waitUnlocked returned after %v, before the holder let go", el)
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

// Frame waits for another process's load of the same frame and takes the
// frame from disk instead of loading it again.
func TestFrameWaitsForAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	a, _ := openStore(t, Config{Dir: dir})
	b, _ := openStore(t, Config{Dir: dir})
	want, d := testFrame(9, 4096)
	unlock, ok := b.TryLockFrame(d)
	if !ok {
		t.Fatal("TryLockFrame failed")
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		if err := b.Put(t.Context(), d, bytes.Clone(want)); err != nil {
			t.Error(err)
		}
		unlock()
	}()
	l := &loader{b: want}
	got, err := a.Frame(t.Context(), d, 4096, l.load)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Frame = %d bytes, %v", len(got), err)
	}
	if n := l.calls.Load(); n != 0 {
		t.Errorf("Frame loaded the frame %d times while another store held its lock, want 0", n)
	}
}
