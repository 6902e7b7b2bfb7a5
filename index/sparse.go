package index

// Piece is a run of a file's content: Len bytes that are either stored in
// the uncompressed tar stream from Stream, or, when Stream is -1, a hole
// that reads as zeros.
type Piece struct {
	Stream int64 // offset in the uncompressed tar stream; -1 for a hole
	Len    int64 // > 0
}

// Hole reports whether the piece is a hole (zeros, nothing to read).
func (p Piece) Hole() bool { return p.Stream < 0 }

// Pieces returns, in order, what the bytes [off, off+n) of a regular file's
// content are made of, clipped to the file's Size: one stream range for an
// ordinary file; stream ranges and holes for a sparse one. Their lengths add
// up to the bytes left to read; nil means nothing is (n ≤ 0, off < 0, or
// off at or past Size). The entry must be valid (see Index.Validate).
func (e *Entry) Pieces(off, n int64) []Piece {
	if n <= 0 || off < 0 || off >= e.Size {
		return nil
	}
	end := off + min(n, e.Size-off)
	if e.Sparse == nil {
		return []Piece{{Stream: e.Offset + off, Len: end - off}}
	}
	var out []Piece
	pos, stream := off, e.Offset // stream: where extent x's bytes start
	for _, x := range e.Sparse {
		xEnd := x.Offset + x.Length
		if xEnd <= pos {
			stream += x.Length
			continue
		}
		if x.Offset >= end {
			break
		}
		if pos < x.Offset {
			out = append(out, Piece{Stream: -1, Len: x.Offset - pos})
			pos = x.Offset
		}
		to := min(xEnd, end)
		out = append(out, Piece{Stream: stream + pos - x.Offset, Len: to - pos})
		pos = to
		stream += x.Length
	}
	if pos < end {
		out = append(out, Piece{Stream: -1, Len: end - pos})
	}
	return out
}

// Within tells where an ordinary regular file's content meets the
// uncompressed stream range [off, off+n), a frame's say: the file's bytes
// [fileOff, fileOff+size) are the range's bytes [at, at+size). size is 0
// when they do not meet, and for a sparse file, whose content is not one
// run of the stream.
func (e *Entry) Within(off, n int64) (fileOff, at, size int64) {
	if e.Sparse != nil || n <= 0 {
		return 0, 0, 0
	}
	lo, hi := max(off, e.Offset), min(off+n, e.Offset+e.Size)
	if hi <= lo {
		return 0, 0, 0
	}
	return lo - e.Offset, lo - off, hi - lo
}

// StoredSize returns how many bytes of the tar stream, from Offset, hold
// the entry's content: Size for an ordinary file, the sum of the fragments
// for a sparse one.
func (e *Entry) StoredSize() int64 {
	if e.Sparse == nil {
		return e.Size
	}
	var n int64
	for _, x := range e.Sparse {
		n += x.Length
	}
	return n
}

// Blocks returns the 512-byte blocks a regular file's content occupies, as
// stat(2) reports st_blocks: every block Size reaches for an ordinary file;
// for a sparse one only the blocks its fragments touch (each counted once),
// so holes take no space.
func (e *Entry) Blocks() int64 {
	if e.Sparse == nil {
		return ceilDiv(e.Size, 512)
	}
	var n int64
	next := int64(0) // the first block not counted yet
	for _, x := range e.Sparse {
		first := max(x.Offset/512, next)
		end := ceilDiv(x.Offset+x.Length, 512)
		if end > first {
			n += end - first
			next = end
		}
	}
	return n
}

// ceilDiv returns ⌈a/b⌉ for a ≥ 0, b > 0, without overflowing.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 {
		q++
	}
	return q
}
