package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// A file's copy is made only from frames the cache holds, fetching
// nothing, and read back whole through another Source on the same cache.
func TestSourceFileCopies(t *testing.T) {
	e := newEnv(t)
	ls, err := e.r.Layers(t.Context(), e.img)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(e.client, e.img.Repo, e.store, nil)
	defer src.Close()
	x := ls[0].Index
	file := entryOf(t, x, "bin/data")
	first, end := x.FramesFor(file.Offset, file.Size)
	e.proxy.ClearStats()
	if made, err := src.CopyFile(t.Context(), x, file.Offset, file.Size); made || err != nil {
		t.Fatalf("CopyFile before any frame was fetched = %v, %v; want false", made, err)
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Fatalf("CopyFile made %d blob requests, want none", n)
	}
	src.readahead = 0
	src.setProfiled(x, []int{first}) // a read then fetches no more than its frame
	for i := first; i < end-1; i++ {
		if _, err := src.Frame(t.Context(), x, i); err != nil {
			t.Fatal(err)
		}
	}
	if made, err := src.CopyFile(t.Context(), x, file.Offset, file.Size); made || err != nil {
		t.Errorf("CopyFile with frame %d of %d..%d missing = %v, %v; want false", end-1, first, end-1, made, err)
	}
	if src.OpenCopy(x, file.Offset, file.Size) != nil {
		t.Fatal("a copy before CopyFile made one")
	}
	if _, err := src.Frame(t.Context(), x, end-1); err != nil {
		t.Fatal(err)
	}
	stopped, stop := context.WithCancel(t.Context())
	stop()
	if made, err := src.CopyFile(stopped, x, file.Offset, file.Size); made || !errors.Is(err, context.Canceled) {
		t.Errorf("CopyFile with its context ended = %v, %v; want false, context.Canceled", made, err)
	}
	if src.OpenCopy(x, file.Offset, file.Size) != nil {
		t.Fatal("a copy stopped half way was kept")
	}
	e.proxy.ClearStats()
	if made, err := src.CopyFile(t.Context(), x, file.Offset, file.Size); !made || err != nil {
		t.Fatalf("CopyFile with every frame cached = %v, %v; want true", made, err)
	}
	if made, _ := src.CopyFile(t.Context(), x, file.Offset, file.Size); made {
		t.Error("CopyFile made the copy twice")
	}
	if n := e.proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("CopyFile made %d blob requests, want none", n)
	}

	want := make([]byte, file.Size)
	testutil.PatternAt(1, 0, want)
	other := NewSource(e.client, e.img.Repo, e.store, nil)
	defer other.Close()
	f := other.OpenCopy(x, file.Offset, file.Size)
	if f == nil {
		t.Fatal("no copy after CopyFile")
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("copy read back: %d bytes, %v; want the file's %d", len(got), err, len(want))
	}
}
