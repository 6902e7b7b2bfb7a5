package cache

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// A file copy is kept like a frame (counted on disk, not in memory),
// found by its key, and a damaged one (written to since) is removed and
// reported as missing, never opened.
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
	wantCopy(t, s, key, data)
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

// A big copy is written piece by piece; a short or long one, or one
// dropped, leaves nothing behind.
func TestCreateCopy(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, Config{Dir: dir})
	layer := digest.FromString("layer")
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	key := CopyKey(layer, 0, int64(len(data)))
	w, err := s.CreateCopy(key, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for p := data; len(p) > 0; p = p[min(len(p), 100_000):] {
		if _, err := w.Write(p[:min(len(p), 100_000)]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write past the copy's size succeeded")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	wantCopy(t, s, key, data)

	short := CopyKey(layer, 1, int64(len(data)))
	w, err = s.CreateCopy(short, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:10]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil {
		t.Error("Commit of a copy 10 bytes long, want 1 MiB, succeeded")
	}
	dropped := CopyKey(layer, 2, 5)
	w, err = s.CreateCopy(dropped, 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if s.HasCopy(short, int64(len(data))) || s.HasCopy(dropped, 5) {
		t.Error("a copy not committed is there")
	}
	u, err := Usage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u.Frames != 1 || u.TempFiles != 0 {
		t.Errorf("Usage = %+v, want the one copy committed and no temp file", u)
	}
}

// A new Store trusts a copy as written, without reading it; it hashes one
// whose file changed since (its change time), or whose record is an older
// build's, the digest alone.
func TestCopyCheckedOnlyWhenChanged(t *testing.T) {
	dir := t.TempDir()
	s, _ := openStore(t, Config{Dir: dir})
	data := bytes.Repeat([]byte("copy"), 10_000)
	key := CopyKey(digest.FromString("layer"), 0, int64(len(data)))
	if err := s.PutCopy(key, data); err != nil {
		t.Fatal(err)
	}
	h := digest.FromBytes(data).Encoded()
	hashed := func(name string, change func()) {
		t.Helper()
		change()
		s, _ := openStore(t, Config{Dir: dir})
		f, err := s.OpenCopy(key, int64(len(data)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		f.Close()
		_, checked := s.checked.Load(h)
		if want := name != "as written"; checked != want {
			t.Errorf("%s: copy hashed = %v, want %v", name, checked, want)
		}
	}
	hashed("as written", func() {})
	hashed("mtime set", func() {
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(framePath(dir, h), old, old); err != nil {
			t.Fatal(err)
		}
	})
	hashed("older record", func() {
		if err := s.PutIndex(key, []byte("sha256:"+h)); err != nil {
			t.Fatal(err)
		}
	})
}

// wantCopy fails t unless the copy key names opens and holds data.
func wantCopy(t *testing.T, s *Store, key digest.Digest, data []byte) {
	t.Helper()
	f, err := s.OpenCopy(key, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copy holds %d bytes, %v; want %d", len(got), err, len(data))
	}
}
