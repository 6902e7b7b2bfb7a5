package index

import (
	"fmt"
	"hash/crc32"
	"unsafe"

	"github.com/opencontainers/go-digest"
)

// windowTable says where the windows of an index decoded from its version 2
// toc alone lie in its encoding's windows section. It is never changed
// once decoded, so an Index stays safe to read from many goroutines.
type windowTable struct {
	toc  digest.Digest // SHA-256 of the toc it was decoded from
	base int64         // where the windows section starts in the encoding: the toc's length
	size int64         // the windows section's length
	raw  int64         // bytes of every window, decompressed
	refs []winRef      // one per frame; raw 0 for a frame without a window
	// data is the windows section itself when it was decoded with the toc
	// (a whole encoding, as the local store keeps it): each window is
	// unpacked from it when its frame is decoded, not all at once, since a
	// start whose frames are cached needs none of them.
	data []byte
}

// inMemory reports whether x's windows section is held (see windowTable.data).
func (x *Index) inMemory() bool { return x.win != nil && x.win.data != nil }

// winRef is where one frame's window lies in the windows section.
type winRef struct {
	off    int64  // from the section's start
	n, raw uint32 // stored bytes (n == raw: stored raw; n < raw: one zstd frame), window bytes
	crc    uint32 // CRC-32C of the stored bytes
}

const sizeofWinRef = int64(unsafe.Sizeof(winRef{}))

// WindowsLoaded reports whether every frame's window is in memory: true for
// an index built here, decoded from version 1 or from a whole version 2
// encoding (whose windows stay compressed until their frames are decoded,
// so Frame.Window is nil there); false for one decoded from its version 2
// toc alone, whose frames need their windows (NeedsWindow) read from the
// encoding's windows section before they decode.
func (x *Index) WindowsLoaded() bool { return x.win == nil || x.inMemory() }

// TOCDigest returns the SHA-256 of the toc an index whose windows are not
// loaded was decoded from, "" for any other index: it names the encoding
// the offsets of WindowRange refer to.
func (x *Index) TOCDigest() digest.Digest {
	if x.win == nil {
		return ""
	}
	return x.win.toc
}

// NeedsWindow reports whether frame i has a window that is not loaded: its
// decoding needs the bytes at WindowRange(i, i), turned into the window by
// Windows, and DecodeFrameWith.
func (x *Index) NeedsWindow(i int) bool {
	return x.win != nil && !x.inMemory() && i >= 0 && i < len(x.win.refs) && x.win.refs[i].raw > 0
}

// NeedsFrameBefore reports whether frame i keeps no window of its own
// (Frame.PrevWindow): it decodes only with the end of frame i-1, decoded,
// as its window (WindowFrom).
func (x *Index) NeedsFrameBefore(i int) bool {
	return i > 0 && i < len(x.Frames) && x.Frames[i].PrevWindow > 0
}

// WindowFrom returns frame i's window cut from prev, frame i-1 decoded:
// a window is the end of the uncompressed stream before its frame, as
// long as the window says. It returns nil when frame i needs no window
// from outside the index (it has none, or it is loaded) or prev is not
// frame i-1's length or shorter than the window. The caller vouches for
// prev (a verified frame); a wrong one decodes to bytes the frame's digest
// refuses.
func (x *Index) WindowFrom(i int, prev []byte) []byte {
	if i <= 0 || i >= len(x.Frames) || int64(len(prev)) != x.Frames[i-1].Size {
		return nil
	}
	var raw int
	switch {
	case x.Frames[i].PrevWindow > 0:
		raw = int(x.Frames[i].PrevWindow)
	case x.NeedsWindow(i):
		raw = int(x.win.refs[i].raw)
	default:
		return nil
	}
	if len(prev) < raw {
		return nil
	}
	return prev[len(prev)-raw:]
}

// WindowRange returns where the windows of frames first to last (inclusive)
// lie in the index's encoding: its bytes [off, off+n), one contiguous range
// (windows are stored in frame order). n is 0 when none of those frames
// needs a window.
func (x *Index) WindowRange(first, last int) (off, n int64) {
	if x.win == nil || x.inMemory() {
		return 0, 0
	}
	first, last = max(first, 0), min(last, len(x.win.refs)-1)
	for first <= last && x.win.refs[first].raw == 0 {
		first++
	}
	for last >= first && x.win.refs[last].raw == 0 {
		last--
	}
	if first > last {
		return 0, 0
	}
	a, b := &x.win.refs[first], &x.win.refs[last]
	return x.win.base + a.off, b.off + int64(b.n) - a.off
}

// Windows turns data, the encoding's bytes at WindowRange(first, last),
// into the windows of frames first to last: out[k-first] is frame k's
// window, nil for a frame without one (or whose window is loaded). Each
// stored window is checked against its CRC-32C and decompressed to exactly
// its length; anything wrong wraps ErrCorrupt. The windows do not point
// into data.
func (x *Index) Windows(first, last int, data []byte) ([][]byte, error) {
	if first < 0 || last >= len(x.Frames) || first > last {
		return nil, fmt.Errorf("windows of frames %d to %d of %d: no such frames", first, last, len(x.Frames))
	}
	out := make([][]byte, last-first+1)
	off, n := x.WindowRange(first, last)
	if int64(len(data)) != n {
		return nil, fmt.Errorf("windows of frames %d to %d: %w: got %d bytes, want %d", first, last, ErrCorrupt, len(data), n)
	}
	if n == 0 {
		return out, nil
	}
	start := off - x.win.base
	for k := first; k <= last; k++ {
		r := &x.win.refs[k]
		if r.raw == 0 {
			continue
		}
		w, err := unpackWindow(r, data[r.off-start:r.off-start+int64(r.n)])
		if err != nil {
			return nil, fmt.Errorf("window of frame %d: %w", k, err)
		}
		out[k-first] = w
	}
	return out, nil
}

// unpackWindow checks and decompresses one stored window.
func unpackWindow(r *winRef, stored []byte) ([]byte, error) {
	if got := crc32.Checksum(stored, crc32c); got != r.crc {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x", ErrCorrupt, got, r.crc)
	}
	if r.n == r.raw {
		return append([]byte(nil), stored...), nil
	}
	dec, err := zstdDecoder()
	if err != nil {
		return nil, fmt.Errorf("index: decode window: %w", err)
	}
	w, err := dec.DecodeAll(stored, make([]byte, 0, r.raw)) // never past cap: WithDecodeAllCapLimit
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(w) != int(r.raw) {
		return nil, fmt.Errorf("%w: decompressed to %d bytes, want %d", ErrCorrupt, len(w), r.raw)
	}
	return w, nil
}

// WithWindows returns a copy of x with every window loaded from data, the
// whole windows section of x's encoding (the bytes at WindowRange(0,
// len(Frames)-1)). x is unchanged. An index whose windows are loaded is
// returned as is.
func (x *Index) WithWindows(data []byte) (*Index, error) {
	if x.win == nil {
		return x, nil
	}
	if x.inMemory() {
		data = x.win.data
	}
	y := *x
	y.Frames = append([]Frame(nil), x.Frames...)
	if err := x.loadWindows(y.Frames, data); err != nil {
		return nil, err
	}
	y.win = nil
	return &y, nil
}

// window returns frame i's window: its Window, or unpacked from the
// windows section held in memory; nil when it has none.
func (x *Index) window(i int) ([]byte, error) {
	if !x.inMemory() || x.win.refs[i].raw == 0 {
		return x.Frames[i].Window, nil
	}
	r := &x.win.refs[i]
	w, err := unpackWindow(r, x.win.data[r.off:r.off+int64(r.n)])
	if err != nil {
		return nil, fmt.Errorf("window of frame %d: %w", i, err)
	}
	return w, nil
}

// checkWindows checks every stored window of data, a whole windows
// section, against its CRC-32C, without unpacking any.
func (x *Index) checkWindows(data []byte) error {
	if int64(len(data)) != x.win.size {
		return fmt.Errorf("%w: windows section of %d bytes, want %d", ErrCorrupt, len(data), x.win.size)
	}
	for k := range x.win.refs {
		r := &x.win.refs[k]
		if r.raw == 0 {
			continue
		}
		if got := crc32.Checksum(data[r.off:r.off+int64(r.n)], crc32c); got != r.crc {
			return fmt.Errorf("window of frame %d: %w: checksum %08x, want %08x", k, ErrCorrupt, got, r.crc)
		}
	}
	return nil
}

// loadWindows sets the Window of frames (x's, or a copy) from data, the
// whole windows section, in one allocation. The caller drops x.win when
// the frames are x's own.
func (x *Index) loadWindows(frames []Frame, data []byte) error {
	if int64(len(data)) != x.win.size {
		return fmt.Errorf("%w: windows section of %d bytes, want %d", ErrCorrupt, len(data), x.win.size)
	}
	buf := make([]byte, 0, x.win.raw)
	for k := range x.win.refs {
		r := &x.win.refs[k]
		if r.raw == 0 {
			continue
		}
		w, err := unpackWindow(r, data[r.off:r.off+int64(r.n)])
		if err != nil {
			return fmt.Errorf("window of frame %d: %w", k, err)
		}
		n := len(buf)
		buf = append(buf, w...)
		frames[k].Window = buf[n:len(buf):len(buf)]
	}
	return nil
}

// validateWindows checks a window table against the frames.
func (x *Index) validateWindows() string {
	t := x.win
	if t == nil {
		return ""
	}
	if len(t.refs) != len(x.Frames) {
		return fmt.Sprintf("window table of %d frames for %d frames", len(t.refs), len(x.Frames))
	}
	var end int64
	for i := range t.refs {
		r := &t.refs[i]
		switch {
		case r.raw == 0:
			continue
		case x.Format != FormatGzip:
			return fmt.Sprintf("frame %d has a window in a %s layer (gzip only)", i, x.Format)
		case len(x.Frames[i].Window) != 0:
			return fmt.Sprintf("frame %d has a Window and a window to fetch", i)
		case x.Frames[i].PrevWindow != 0:
			return fmt.Sprintf("frame %d has a PrevWindow and a window to fetch", i)
		case r.raw > maxWindowLen || r.n == 0 || r.n > r.raw:
			return fmt.Sprintf("frame %d: window of %d bytes stored in %d", i, r.raw, r.n)
		case r.off != end || r.off+int64(r.n) > t.size:
			return fmt.Sprintf("frame %d: window at [%d,+%d) of the %d-byte windows section, want it at %d", i, r.off, r.n, t.size, end)
		}
		end = r.off + int64(r.n)
	}
	if end != t.size {
		return fmt.Sprintf("windows take %d bytes of a %d-byte section", end, t.size)
	}
	return ""
}
