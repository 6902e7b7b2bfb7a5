package index

import (
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/lazyfs/lazyfs/index/internal/inflate"
)

// DecodeFrame turns the compressed bytes of frame i (the blob's bytes
// [CompressedOffset, CompressedOffset+CompressedSize)) into the frame's
// uncompressed bytes. It checks the length, not the digest: the cache
// verifies digests before anyone sees the bytes.
func (x *Index) DecodeFrame(i int, compressed []byte) ([]byte, error) {
	if i < 0 || i >= len(x.Frames) {
		return nil, fmt.Errorf("decode frame %d of %d: no such frame", i, len(x.Frames))
	}
	f := &x.Frames[i]
	if int64(len(compressed)) != f.CompressedSize {
		return nil, fmt.Errorf("decode frame %d: %w: got %d compressed bytes, want %d", i, ErrCorrupt, len(compressed), f.CompressedSize)
	}
	var r io.Reader
	switch x.Format {
	case FormatTar:
		return compressed, nil
	case FormatGzip:
		r = inflate.NewReader(bytes.NewReader(compressed), inflate.Checkpoint{
			In: f.CompressedOffset, Bits: f.Bits, Out: f.Offset, Window: f.Window,
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
