package layers

import (
	"slices"

	"github.com/lazyfs/lazyfs/index"
)

// When a file is opened, the frames holding it are fetched in the
// background (the first one excepted: the first read asks for it at once
// and should not wait behind a larger request). Programs start by opening
// their binary and libraries and then fault their pages in one at a time,
// each fault a round trip when cold; fetched at open, they arrive in a few
// requests at the link's speed instead. Files larger than
// openAheadMaxFile are left to the readers (a database opened for one
// lookup). Requests are at most openAheadRequest compressed bytes, so a
// reader that waits for a frame in flight waits for little more than it.
const (
	openAheadMaxFile = 64 << 20
	openAheadRequest = 512 << 10
	openAheadGap     = 64 << 10
	openAheadLoads   = 4
)

// OpenedFile is told that a file whose content is bytes [off, off+n) of
// x's uncompressed stream was opened for reading; it starts fetching the
// frames after the first that hold it, unless they are cached or being
// fetched. It returns at once. Nothing happens for zstd layers (they are
// read whole), while a prefetch profile runs for the layer, or after
// Close.
//
// When a prefetch profile named frames of the file, only those are
// fetched (they were, by the prefetch, unless it failed): the start-up it
// recorded read no others of the file, and a program that maps a library
// reads little of it. A file the profile named no frame of is fetched
// whole as without a profile: the start has gone where the profile did
// not.
func (s *Source) OpenedFile(x *index.Index, off, n int64) {
	if n <= 0 || n > openAheadMaxFile || x.Format == index.FormatZstd || s.stop.Err() != nil {
		return
	}
	first, end := x.FramesFor(off, n)
	if end-first < 2 {
		return
	}
	var missing []int
	s.mu.Lock()
	if s.prefetching[x.Layer] == 0 {
		named := s.profiled[x.Layer]
		if len(named) != len(x.Frames) || !slices.Contains(named[first:end], true) {
			named = nil // a file the profile never saw read
		}
		for k := first + 1; k < end; k++ {
			if named != nil && !named[k] {
				continue
			}
			if _, ok := s.inflight[x.Frames[k].Digest]; !ok && s.loading[x.Frames[k].Digest] == 0 {
				missing = append(missing, k)
			}
		}
	}
	s.mu.Unlock()
	missing = slices.DeleteFunc(missing, func(k int) bool { return s.store.Has(x.Frames[k].Digest) })
	if len(missing) == 0 {
		return
	}
	for _, run := range coalesce(x, missing, openAheadGap, openAheadRequest) {
		s.wg.Add(1)
		s.metrics.ReadaheadStarted()
		go func() {
			defer s.wg.Done()
			select {
			case s.openSem <- struct{}{}:
			case <-s.stop.Done():
				s.metrics.ReadaheadDone(false)
				return
			}
			defer func() { <-s.openSem }()
			fetched, err := s.prefetchRun(s.stop, x, run)
			s.metrics.ReadaheadDone(fetched > 0 && err == nil)
			if err != nil && s.stop.Err() == nil {
				s.log.Debug("fetch at open failed: its frames are left to readers", "layer", x.Layer, "frame", run[0], "frames", len(run), "err", err)
			}
		}()
	}
}
