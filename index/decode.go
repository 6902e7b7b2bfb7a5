package index

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/lazyfs/lazyfs/index/internal/inflate"
)

// ErrNeedsFrameBefore is wrapped when a frame that keeps no window
// (Frame.PrevWindow) is decoded without the end of the frame before.
var ErrNeedsFrameBefore = errors.New("index: frame decodes only after the frame before it")

// DecodeFrame turns the compressed bytes of frame i (the blob's bytes
// [CompressedOffset, CompressedOffset+CompressedSize)) into the frame's
// uncompressed bytes. It checks the length, not the digest: the cache
// verifies digests before anyone sees the bytes. A frame whose window is
// not loaded (NeedsWindow) is an error wrapping ErrWindowsNotLoaded: see
// DecodeFrameWith.
func (x *Index) DecodeFrame(i int, compressed []byte) ([]byte, error) {
	return x.DecodeFrameWith(i, compressed, nil)
}

// DecodeFrameIn decodes frame i from blob, the whole layer blob in
// memory (tests, tools): a frame that keeps no window is decoded after
// the frames before it, from the last that keeps one. Like DecodeFrame it
// checks lengths, not digests.
func (x *Index) DecodeFrameIn(blob []byte, i int) ([]byte, error) {
	if i < 0 || i >= len(x.Frames) {
		return nil, fmt.Errorf("decode frame %d of %d: no such frame", i, len(x.Frames))
	}
	from := i
	for x.NeedsFrameBefore(from) {
		from--
	}
	var data []byte
	for k := from; k <= i; k++ {
		f := &x.Frames[k]
		if f.CompressedOffset+f.CompressedSize > int64(len(blob)) {
			return nil, fmt.Errorf("decode frame %d: %w: blob of %d bytes, frame ends at %d", k, ErrCorrupt, len(blob), f.CompressedOffset+f.CompressedSize)
		}
		var err error
		if data, err = x.DecodeFrameWith(k, blob[f.CompressedOffset:f.CompressedOffset+f.CompressedSize], x.WindowFrom(k, data)); err != nil {
			return nil, err
		}
	}
	return data, nil
}

// DecodeFrameWith is DecodeFrame for a frame whose window is not loaded,
// or that keeps none (NeedsFrameBefore): window is the frame's window as
// Windows or WindowFrom returns it (ignored, and may be nil, when the
// frame needs none). A wrong window decodes to wrong bytes, which the
// frame's digest catches. A frame that needs the frame before and gets no
// window is an error wrapping ErrNeedsFrameBefore.
func (x *Index) DecodeFrameWith(i int, compressed, window []byte) ([]byte, error) {
	if i < 0 || i >= len(x.Frames) {
		return nil, fmt.Errorf("decode frame %d of %d: no such frame", i, len(x.Frames))
	}
	f := &x.Frames[i]
	win, err := x.window(i)
	if err != nil {
		return nil, fmt.Errorf("decode frame %d of layer %s: %w", i, x.Layer, err)
	}
	if f.PrevWindow > 0 {
		switch {
		case window == nil:
			return nil, fmt.Errorf("decode frame %d of layer %s: %w", i, x.Layer, ErrNeedsFrameBefore)
		case len(window) != int(f.PrevWindow):
			return nil, fmt.Errorf("decode frame %d: %w: window of %d bytes, want %d", i, ErrCorrupt, len(window), f.PrevWindow)
		}
		win = window
	}
	if x.NeedsWindow(i) {
		if want := int(x.win.refs[i].raw); len(window) != want {
			if window == nil {
				return nil, fmt.Errorf("decode frame %d of layer %s: %w", i, x.Layer, ErrWindowsNotLoaded)
			}
			return nil, fmt.Errorf("decode frame %d: %w: window of %d bytes, want %d", i, ErrCorrupt, len(window), want)
		}
		win = window
	}
	if int64(len(compressed)) != f.CompressedSize {
		return nil, fmt.Errorf("decode frame %d: %w: got %d compressed bytes, want %d", i, ErrCorrupt, len(compressed), f.CompressedSize)
	}
	var r io.Reader
	switch x.Format {
	case FormatTar:
		return compressed, nil
	case FormatGzip:
		r = inflate.NewReader(bytes.NewReader(compressed), inflate.Checkpoint{
			In: f.CompressedOffset, Bits: f.Bits, Out: f.Offset, Window: win,
		})
	case FormatZstd:
		zr, err := zstd.NewReader(bytes.NewReader(compressed), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, fmt.Errorf("decode frame %d: %w", i, err)
		}
		defer zr.Close()
		if _, err := io.CopyN(io.Discard, zr, f.Offset); err != nil {
			return nil, fmt.Errorf("decode frame %d: skip to %d: %w", i, f.Offset, err)
		}
		r = zr
	default:
		return nil, fmt.Errorf("decode frame %d: %w: format %d", i, ErrCorrupt, x.Format)
	}
	out := make([]byte, f.Size)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, fmt.Errorf("decode %s frame %d [%d,+%d): %w: %w", x.Format, i, f.Offset, f.Size, ErrCorrupt, err)
	}
	return out, nil
}
