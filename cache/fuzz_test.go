package cache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// fuzzFrame is the frame FuzzFrameFile asks for.
func fuzzFrame() ([]byte, digest.Digest) { return testFrame(77, 1000) }

// FuzzFrameFile puts arbitrary bytes where a frame's file belongs: the Store
// serves the frame's own bytes whatever the file holds, reads it from disk
// only when the file is exactly the frame, and otherwise counts it corrupt
// (a wrong size or a wrong digest), deletes it and loads the frame again.
func FuzzFrameFile(f *testing.F) {
	want, _ := fuzzFrame()
	f.Add(want)
	f.Add([]byte{})
	f.Add(want[:500])
	f.Add(append(bytes.Clone(want), 0))
	flipped := bytes.Clone(want)
	flipped[999] ^= 0x80
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, file []byte) {
		want, d := fuzzFrame()
		dir := t.TempDir()
		p := framePath(dir, d.Encoded())
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		s, logs := openStore(t, Config{Dir: dir, MemoryBytes: -1})
		logs.expectWarns()
		l := &loader{b: want}
		got, err := s.Frame(t.Context(), d, int64(len(want)), l.load)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Frame over a file of %d bytes = %d bytes, %v; want the frame", len(file), len(got), err)
		}
		same := bytes.Equal(file, want)
		st := s.Stats()
		if same != (l.calls.Load() == 0) || same != (st.DiskHits == 1) || st.Corrupt != map[bool]int64{true: 0, false: 1}[same] {
			t.Errorf("file of %d bytes (the frame: %v): %d loads, Stats %+v", len(file), same, l.calls.Load(), st)
		}
		if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, want) {
			t.Errorf("frame file after Frame: %d bytes, %v; want the frame", len(b), err)
		}
	})
}

// FuzzRootNames puts a file with an arbitrary name in an arbitrarily named
// subdirectory of frames/: a scan takes it for a frame only when the names
// are a frame's (frames/ab/ab…, 64 lower-case hex digits), for a temp file
// only when it starts with the temp prefix, and the digest a name stands for
// maps back to the same path and no other.
func FuzzRootNames(f *testing.F) {
	f.Add("ab", hexA)
	f.Add("cd", hexA)
	f.Add("AB", strings.ToUpper(hexA))
	f.Add("ab", tempPrefix+"123")
	f.Add("ab", hexA+".tmp")
	f.Add("ab", hexA[:63])
	f.Add("..", "x")
	f.Add("ab", " "+hexA[1:])
	f.Fuzz(func(t *testing.T, sub, name string) {
		if !validName(sub) || !validName(name) {
			return // not a file name
		}
		dir := t.TempDir()
		p := filepath.Join(dir, framesDir, sub, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Skipf("mkdir %q: %v", sub, err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Skipf("create %q: %v", name, err)
		}
		r, err := scan(dir, time.Time{})
		if err != nil {
			t.Fatalf("scan = %v", err)
		}
		isFrame := isHexPrefix(sub) && isHex64(name) && name[:2] == sub
		isTemp := isHexPrefix(sub) && strings.HasPrefix(name, tempPrefix)
		if got := len(r.frames) == 1; got != isFrame || len(r.frames) > 1 {
			t.Errorf("frames/%q/%q: scan found %d frames, want a frame: %v", sub, name, len(r.frames), isFrame)
		}
		if got := r.temps == 1; got != isTemp || r.temps > 1 {
			t.Errorf("frames/%q/%q: scan found %d temp files, want a temp file: %v", sub, name, r.temps, isTemp)
		}
		d := digest.Digest("sha256:" + name)
		fp, err := FramePath(dir, d)
		if (err == nil) != isHex64(name) || err != nil && !errors.Is(err, ErrBadDigest) {
			t.Errorf("FramePath(%q) error = %v", d, err)
		}
		if err == nil && (fp == p) != isFrame {
			t.Errorf("FramePath(%q) = %q; the file is %q, a frame: %v", d, fp, p, isFrame)
		}
		if rel, err := filepath.Rel(filepath.Join(dir, framesDir), fp); err == nil && fp != "" && strings.HasPrefix(rel, "..") {
			t.Errorf("FramePath(%q) = %q, outside the frames directory", d, fp)
		}
	})
}

// validName reports whether s can be one element of a path.
func validName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\x00")
}
