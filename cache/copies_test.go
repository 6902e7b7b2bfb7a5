package cache

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A file copy is kept like a frame (counted on disk, not in memory),
// found by its key, checked once per Store, and a damaged one is removed
// and reported as missing, never opened.
func TestFileCopies(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, Config{Dir: dir})
	layer := digest.FromString("layer")
	data := bytes.Repeat([]byte("copy"), 10_000)
	key := CopyKey(layer, 4096, int64(len(data)))
	if key == CopyKey(layer, 4096, int64(len(data))+1) || key == CopyKey(layer, 4097, int64(len(data))) {
		t.Fatal("CopyKey does not tell files apart")
	}
	if s.HasCopy(key, int64(len(data))) {
		t.Fatal("HasCopy before PutCopy")
	}
	if _, err := s.OpenCopy(key, int64(len(data))); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenCopy before PutCopy = %v, want ErrNotExist", err)
	}
	if err := s.PutCopy(key, data); err != nil {
		t.Fatal(err)
	}
	if !s.HasCopy(key, int64(len(data))) || s.HasCopy(key, 1) {
		t.Error("HasCopy after PutCopy: want it for the right size only")
	}
	f, err := s.OpenCopy(key, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copy holds %d bytes, %v; want the %d put", len(got), err, len(data))
	}
	if st := s.Stats(); st.DiskFrames != 1 || st.DiskBytes != int64(len(data)) {
		t.Errorf("Stats = %+v, want the copy counted on disk", st)
	}
	if _, err := s.OpenCopy(key, int64(len(data))-1); err == nil {
		t.Error("OpenCopy of another size succeeded")
	}

	// Damaged on disk: a new Store (which has not checked it) removes it.
	s.Close()
	p := framePath(dir, digest.FromBytes(data).Encoded())
	bad := bytes.Clone(data)
	bad[100] ^= 1
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, logs := openStore(t, Config{Dir: dir})
	if _, err := s2.OpenCopy(key, int64(len(data))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenCopy of a damaged copy = %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("damaged copy still on disk: %v", err)
	}
	if s2.Stats().Corrupt != 1 {
		t.Errorf("Stats.Corrupt = %d, want 1", s2.Stats().Corrupt)
	}
	if warns := logs.expectWarns(); len(warns) != 1 || !strings.Contains(warns[0], "file copy damaged") {
		t.Errorf("warnings %q, want one: file copy damaged", warns)
	}
}
