package layers

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/index"
)

// OpenCopy returns the cached copy of the n-byte file at off of x's
// uncompressed stream, as written or checked, or nil when the cache has
// none (see cache.Store.OpenCopy).
func (s *Source) OpenCopy(x *index.Index, off, n int64) *os.File {
	f, err := s.store.OpenCopy(cache.CopyKey(x.Layer, off, n), n)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Debug("file copy unusable", "layer", x.Layer, "off", off, "err", err)
		}
		return nil
	}
	return f
}

// CopyFile keeps a copy of the n-byte file at off of x's uncompressed
// stream, made from the frames the cache holds (verified) and written as
// it is read, so a file of any size costs a frame's memory; it fetches
// nothing and reads nothing ahead. It reports false when a frame is
// missing or the copy exists already, and stops when ctx ends.
func (s *Source) CopyFile(ctx context.Context, x *index.Index, off, n int64) (bool, error) {
	key := cache.CopyKey(x.Layer, off, n)
	first, end := x.FramesFor(off, n)
	if first >= end || s.store.HasCopy(key, n) {
		return false, nil
	}
	for i := first; i < end; i++ { // cheap checks first: no frame is read if one is missing
		if !s.store.Has(x.Frames[i].Digest) {
			return false, nil
		}
	}
	w, err := s.store.CreateCopy(key, n)
	if err != nil {
		return false, err
	}
	defer w.Close()
	for i := first; i < end; i++ {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		f := &x.Frames[i]
		data := s.cachedFrame(x, i)
		if data == nil {
			return false, nil // evicted meanwhile
		}
		lo, hi := max(f.Offset, off), min(f.Offset+f.Size, off+n)
		if _, err := w.Write(data[lo-f.Offset : hi-f.Offset]); err != nil {
			return false, err
		}
	}
	if err := w.Commit(); err != nil {
		return false, err
	}
	return true, nil
}
