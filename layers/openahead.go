package layers

import (
	"slices"

	"github.com/lazyfs/lazyfs/index"
)

// When a file is opened, the frames holding it are fetched in the
// background (the first one excepted: the first read asks for it at once
// and should not wait behind a larger request; it is fetched here alone
// when the next frame decodes only after it). Programs start by opening
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
			if s.busy(x.Frames[k].Digest) == nil {
				missing = append(missing, k)
			}
		}
	}
	s.mu.Unlock()
	missing = slices.DeleteFunc(missing, func(k int) bool { return s.store.Has(x.Frames[k].Digest) })
	if len(missing) == 0 {
		return
	}
	// The first frame is left to the first read, which asks for it at
	// once; but when the next one decodes only after it
	// (index.Frame.PrevWindow), it gets a small request of its own,
	// claimed first, so that the first read waits for that one only and
	// the others, fetched at the same time, decode once it is stored.
	// Each run is claimed only once it has a slot to run in: a claim
	// waiting for a slot would hold readers of its frames, and with them
	// the claims that wait for those readers.
	var runs [][]int
	if missing[0] == first+1 && x.NeedsFrameBefore(first+1) && !s.store.Has(x.Frames[first].Digest) {
		runs = append(runs, []int{first})
	}
	runs = append(runs, coalesce(x, missing, openAheadGap, openAheadRequest)...)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, run := range runs {
			select {
			case s.openSem <- struct{}{}:
			case <-s.stop.Done():
				return
			}
			claims := s.claimRun(x, run)
			if len(claims) == 0 {
				<-s.openSem
				continue
			}
			s.wg.Add(1)
			s.metrics.ReadaheadStarted()
			go func() {
				defer s.wg.Done()
				defer func() { <-s.openSem }()
				fetched, err := s.fetchClaims(s.stop, x, claims)
				s.metrics.ReadaheadDone(fetched > 0 && err == nil)
				if err != nil && s.stop.Err() == nil {
					s.log.Debug("fetch at open failed: its frames are left to readers", "layer", x.Layer, "frame", run[0], "frames", len(run), "err", err)
				}
			}()
		}
	}()
}

// cached reports whether the cache holds frame f, in memory (no stat)
// or on disk.
func (s *Source) cached(f *index.Frame) bool {
	return s.store.InMemory(f.Digest, f.Size) || s.store.Has(f.Digest)
}

// FetchRun is told that a read needs frames [first, end) of x; those not
// cached nor being fetched are fetched with one request (with the frames
// they decode after), which the read's Frame calls then wait for, rather
// than one round trip after another. It returns at once.
func (s *Source) FetchRun(x *index.Index, first, end int) {
	if end-first < 2 || x.Format == index.FormatZstd || s.stop.Err() != nil {
		return
	}
	// On a warm cache every read would stat each of its frames: a read
	// whose first and last frames are cached is left to Frame.
	if s.cached(&x.Frames[first]) && s.cached(&x.Frames[end-1]) {
		return
	}
	run := make([]int, 0, end-first)
	for k := first; k < end; k++ {
		run = append(run, k)
	}
	claims := s.claimRun(x, run)
	if len(claims) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if _, err := s.fetchClaims(s.stop, x, claims); err != nil && s.stop.Err() == nil {
			s.log.Debug("fetch of a read's frames failed: left to the read", "layer", x.Layer, "frame", first, "frames", end-first, "err", err)
		}
	}()
}
