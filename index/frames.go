package index

import "sort"

// FramesFor returns the half-open range [first, end) of frame numbers that
// hold the uncompressed bytes [off, off+n) of the tar stream, clipped to the
// stream's end. It returns an empty range when nothing is left to read.
func (x *Index) FramesFor(off, n int64) (first, end int) {
	if n <= 0 || off < 0 || off >= x.TarSize {
		return 0, 0
	}
	last := min(off+n, x.TarSize) - 1
	first = x.frameAt(off)
	end = x.frameAt(last) + 1
	return first, end
}

// frameAt returns the number of the frame holding uncompressed byte off,
// which must lie inside the stream.
func (x *Index) frameAt(off int64) int {
	return sort.Search(len(x.Frames), func(i int) bool {
		f := &x.Frames[i]
		return f.Offset+f.Size > off
	})
}
