package index

import (
	"context"
	"fmt"
	"io"
	"math"

	"github.com/klauspost/compress/zstd"

	"github.com/lazyfs/lazyfs/index/internal/inflate"
)

// DecodeAll reads the whole layer blob from r once, decompressing it as the
// index's format says, and calls fn with the number and the uncompressed
// bytes of every frame, in order. It is how a layer is decoded in full: for
// zstd, whose frames can only be decoded from the blob's start, calling
// DecodeFrame for each frame would decode the blob once per frame.
//
// Like DecodeFrame it checks lengths, not digests: the cache verifies
// those. fn owns b. An error from fn stops DecodeAll and is returned
// wrapped, as is an error reading r; a blob that yields fewer or more bytes
// than the index's TarSize, or that does not decode, gives an error wrapping
// ErrCorrupt. If ctx ends, the next read from r fails with ctx.Err().
func (x *Index) DecodeAll(ctx context.Context, r io.Reader, fn func(i int, b []byte) error) error {
	c := &frameCutter{x: x, fn: fn}
	src := &errReader{r: &ctxReader{ctx: ctx, r: r}}
	var err error
	switch x.Format {
	case FormatTar:
		_, err = io.Copy(c, src)
	case FormatGzip:
		// The decoder that built the index: it splits members the same way.
		err = inflate.Scan(src, c, math.MaxInt64, nil)
	case FormatZstd:
		var zr *zstd.Decoder
		zr, err = zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return fmt.Errorf("decode layer %s: %w", x.Layer, err)
		}
		_, err = io.Copy(c, zr)
		zr.Close()
	default:
		return fmt.Errorf("decode layer %s: %w: format %d", x.Layer, ErrCorrupt, x.Format)
	}
	switch {
	case c.fnErr != nil:
		return fmt.Errorf("decode %s layer %s: frame %d: %w", x.Format, x.Layer, c.i-1, c.fnErr)
	case src.err != nil:
		// The blob could not be read: not a sign of bad data.
		return fmt.Errorf("decode %s layer %s at uncompressed offset %d: %w", x.Format, x.Layer, c.off, src.err)
	case err != nil:
		return fmt.Errorf("decode %s layer %s at uncompressed offset %d: %w: %w", x.Format, x.Layer, c.off, ErrCorrupt, err)
	case c.i < len(x.Frames):
		return fmt.Errorf("decode %s layer %s: %w: the stream ends at %d, the index says %d", x.Format, x.Layer, ErrCorrupt, c.off, x.TarSize)
	}
	return nil
}

// errReader remembers the first error of r other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// frameCutter is the writer DecodeAll decompresses into: it cuts the
// stream into the index's frames and hands each to fn.
type frameCutter struct {
	x     *Index
	fn    func(int, []byte) error
	i     int    // the frame being filled
	buf   []byte // its bytes so far
	off   int64  // stream bytes written so far
	fnErr error  // what fn returned, if it failed
}

func (c *frameCutter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if c.i >= len(c.x.Frames) {
			return n, fmt.Errorf("%w: the stream goes on past the index's %d bytes", ErrCorrupt, c.x.TarSize)
		}
		size := c.x.Frames[c.i].Size
		if c.buf == nil {
			c.buf = make([]byte, 0, size)
		}
		k := min(int64(len(p)), size-int64(len(c.buf)))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		n += int(k)
		c.off += k
		if int64(len(c.buf)) == size {
			b, i := c.buf, c.i
			c.buf = nil
			c.i++
			if err := c.fn(i, b); err != nil {
				c.fnErr = err
				return n, err
			}
		}
	}
	return n, nil
}
