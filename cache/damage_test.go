package cache

import (
	"bytes"
	"os"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestDamagedFramesAcrossOpen simulates what a power cut can leave of frame
// files written without fsync (a file renamed into place whose data never
// reached the disk: empty, cut short, zeros) and bit rot, on a root that a
// new process then opens: every damaged frame is detected by its digest,
// counted, deleted, refetched and stored again; no damaged byte is served.
func TestDamagedFramesAcrossOpen(t *testing.T) {
	const n, size = 64, 32 << 10
	dir := t.TempDir()
	s1, _ := openStore(t, Config{Dir: dir})
	frames := make([][]byte, n)
	ds := make([]digest.Digest, n)
	for i := range n {
		frames[i], ds[i] = testFrame(uint64(40_000+i), size)
		if err := s1.Put(t.Context(), ds[i], frames[i]); err != nil {
			t.Fatal(err)
		}
	}
	s1.Close()

	spoil := []struct {
		name string
		f    func(p string) error
	}{
		{"emptied", func(p string) error { return os.Truncate(p, 0) }},
		{"cut in half", func(p string) error { return os.Truncate(p, size/2) }},
		{"zeros", func(p string) error { return os.WriteFile(p, make([]byte, size), 0o600) }},
		{"one bit flipped", func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[len(b)/3] ^= 0x10
			return os.WriteFile(p, b, 0o600)
		}},
		{"garbage appended", func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("garbage"))
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			return err
		}},
	}
	damaged := map[int]string{}
	for i := 0; i < n; i += 3 { // every third frame, the kinds of damage in turn
		sp := spoil[len(damaged)%len(spoil)]
		if err := sp.f(framePath(dir, ds[i].Encoded())); err != nil {
			t.Fatal(err)
		}
		damaged[i] = sp.name
	}

	s2, logs := openStore(t, Config{Dir: dir})
	var refetched int
	for i := range n {
		l := &loader{b: frames[i]}
		got, err := s2.Frame(t.Context(), ds[i], size, l.load)
		if err != nil || !bytes.Equal(got, frames[i]) {
			t.Fatalf("Frame(%d, %s) = %d bytes, %v; want the frame", i, damaged[i], len(got), err)
		}
		_, bad := damaged[i]
		if calls := l.calls.Load(); calls != map[bool]int64{false: 0, true: 1}[bad] {
			t.Errorf("Frame(%d) damage %q: %d loads", i, damaged[i], calls)
		}
		refetched += int(l.calls.Load())
		if b, err := os.ReadFile(framePath(dir, ds[i].Encoded())); err != nil || !bytes.Equal(b, frames[i]) {
			t.Errorf("frame file %d after the read: %d bytes, %v; want the frame", i, len(b), err)
		}
	}
	if w := logs.expectWarns(); len(w) != len(damaged) {
		t.Errorf("%d warnings, want one per damaged frame (%d)", len(w), len(damaged))
	}
	st := s2.Stats()
	if st.Corrupt != int64(len(damaged)) || st.DiskHits != int64(n-len(damaged)) || st.Misses != int64(len(damaged)) ||
		st.DiskFrames != n || st.DiskBytes != n*size {
		t.Errorf("Stats = %+v; want %d corrupt, %d disk hits, %d misses, %d frames of %d bytes on disk",
			st, len(damaged), n-len(damaged), len(damaged), n, size)
	}
	t.Logf("%d frames, %d damaged (%d kinds): %d detected (Stats.Corrupt), %d refetched, 0 bad bytes served, all files good after",
		n, len(damaged), len(spoil), st.Corrupt, refetched)
}
