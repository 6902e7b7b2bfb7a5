package index

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index/internal/inflate"
)

// DefaultSpan is the uncompressed distance between frame starts when
// BuildOptions leaves it unset. Chosen by the bench (docs/architecture.md,
// "Choosing the span"): with windows fetched on demand (encoding version
// 2) the toc a start fetches stays ~0.1–0.2 % of a layer at any span, and
// 256 KiB fetched 42–66 % fewer bytes than version 1 at 1 MiB and started
// python3 and gcc 12–47 % sooner; 128 KiB was slower again (more round trips).
const DefaultSpan = 256 << 10

// DefaultBlockSpan is the uncompressed distance between frame starts
// inside a span when BuildOptions leaves it unset: frames that keep no
// window (Frame.PrevWindow) start at the first deflate block at least
// this far past the frame before. See docs/architecture.md, "Choosing the
// span".
const DefaultBlockSpan = 32 << 10

// MaxSpan is the largest BuildOptions.Span.
const MaxSpan = 32 << 20

// MaxFrameSize bounds a frame's uncompressed size, and so what decoding one
// frame allocates. A tar or zstd frame is at most a span long; a gzip frame
// is a span plus the rest of the deflate block the span ends in. The
// encoders in use (zlib and so gzip and pigz, Go's compress/flate,
// klauspost/compress) end a block after at most 32 768 symbols, 8.4 MB of
// output; a block that yields more than MaxFrameSize-MaxSpan bytes is a
// gzip bomb made by hand (one block of gigabytes of zeros), and Build
// refuses the layer as soon as a frame grows past MaxFrameSize. An index
// that records a longer frame is corrupt (Validate).
const MaxFrameSize = 64 << 20

// BuildOptions tune index building. The zero value is usable.
type BuildOptions struct {
	Span int64 // uncompressed bytes between frame starts with a window; 0 = DefaultSpan
	// BlockSpan is the uncompressed bytes between frame starts inside a
	// span, at deflate blocks, for frames that keep no window (gzip only:
	// Frame.PrevWindow); 0 = DefaultBlockSpan, negative or not below Span
	// = none. At least 32 KiB, a window's length, so that the frame before
	// always holds the window.
	BlockSpan int64
	// MaxEntries bounds the entries of a layer (a tar bomb of empty files
	// costs ~700 bytes of memory per entry here and again in a mount);
	// 0 = DefaultMaxEntries.
	MaxEntries int
	// MaxWindowBytes bounds the deflate windows a gzip index keeps, 32 KiB
	// per frame (a gzip bomb of zeros has a frame per ~4 MiB); 0 = 2 GiB,
	// the most an index encoding may decode to.
	MaxWindowBytes int64
}

// DefaultMaxEntries is BuildOptions.MaxEntries' default: four times the
// largest layers seen in the wild (a few hundred thousand files).
const DefaultMaxEntries = 1 << 22

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Build streams a whole layer blob once and returns its index. The format
// is recognised from the blob's first bytes (gzip, zstd, else tar), so a
// registry's media type is a hint the caller may check, never a trust.
// layer is the blob's digest, recorded in the index; Build does not verify it
// (the fetcher does, as the blob streams).
func Build(ctx context.Context, layer digest.Digest, r io.Reader, opt BuildOptions) (*Index, error) {
	span := opt.Span
	if span <= 0 {
		span = DefaultSpan
	}
	if span > MaxSpan {
		return nil, fmt.Errorf("index %s: span of %d bytes: %w (at most %d)", layer, span, ErrUnsupported, int64(MaxSpan))
	}
	blob := &countingReader{r: &ctxReader{ctx: ctx, r: r}}
	br := bufio.NewReaderSize(blob, 1<<16)
	head, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("index %s: %w", layer, err)
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = DefaultMaxEntries
	}
	if opt.MaxWindowBytes <= 0 {
		opt.MaxWindowBytes = encMaxDecoded
	}
	opt.Span = span
	switch {
	case opt.BlockSpan == 0:
		opt.BlockSpan = DefaultBlockSpan
	case opt.BlockSpan > 0 && opt.BlockSpan < maxWindowLen:
		return nil, fmt.Errorf("index %s: block span of %d bytes: %w (at least %d)", layer, opt.BlockSpan, ErrUnsupported, maxWindowLen)
	}
	if opt.BlockSpan < 0 || opt.BlockSpan >= span {
		opt.BlockSpan = span
	}
	x := &Index{Layer: layer}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		x.Format = FormatGzip
		err = buildGzip(x, br, opt)
	case bytes.HasPrefix(head, zstdMagic):
		x.Format = FormatZstd
		err = buildZstd(x, br, opt)
	default:
		x.Format = FormatTar
		err = buildTar(x, br, opt)
	}
	if err != nil {
		return nil, fmt.Errorf("index %s layer %s: %w", x.Format, layer, err)
	}
	x.BlobSize = blob.n
	for i := range x.Frames {
		// Frames whose compressed end is only known now run to the blob's end.
		if f := &x.Frames[i]; f.CompressedSize < 0 {
			f.CompressedSize = x.BlobSize - f.CompressedOffset
		}
	}
	if err := x.Validate(); err != nil {
		return nil, fmt.Errorf("index layer %s: built an invalid index: %w", layer, err)
	}
	return x, nil
}

// buildTar cuts an uncompressed tar into fixed spans: a frame is a plain
// byte range of the blob.
func buildTar(x *Index, r io.Reader, opt BuildOptions) error {
	fw := newFrameWriter(opt.Span, func(f *Frame) {
		f.CompressedOffset, f.CompressedSize = f.Offset, f.Size
	})
	entries, size, err := walkTar(io.TeeReader(r, fw), opt.MaxEntries)
	if err != nil {
		return err
	}
	x.Entries, x.TarSize, x.Frames = entries, size, fw.finish()
	return nil
}

// buildGzip decompresses the blob once with an inflater that reports deflate
// block starts, and starts a frame at the first block start past each
// block span; of those, the first past each span (and every gzip member's
// first block) keeps its window, and the others keep only its length.
func buildGzip(x *Index, r io.Reader, opt BuildOptions) error {
	pr, pw := io.Pipe()
	fw := newFrameWriter(0, nil)
	var starts []inflate.Checkpoint // a nil Window with a length in prevWindow: a frame that keeps none
	var prevWindow []uint32
	var windows int64 // bytes of the windows kept
	var kept int64    // Out of the last start that kept its window
	scanErr := make(chan error, 1)
	go func() {
		err := inflate.Scan(r, io.MultiWriter(fw, pw), opt.BlockSpan, func(cp inflate.Checkpoint) error {
			fw.cut(cp.Out)
			var pwin uint32
			if len(cp.Window) > 0 && cp.Out-kept < opt.Span {
				pwin, cp.Window = uint32(len(cp.Window)), nil
			} else {
				kept = cp.Out
				if windows += int64(len(cp.Window)); windows > opt.MaxWindowBytes {
					return fmt.Errorf("%w: more than %d bytes of deflate windows for %d frames (a gzip bomb, or a layer too large for frames every %d bytes)",
						ErrUnsupported, opt.MaxWindowBytes, len(starts)+1, opt.Span)
				}
			}
			// An empty gzip member yields two checkpoints at one offset:
			// resume from the later one, past the empty member.
			if n := len(starts); n > 0 && starts[n-1].Out == cp.Out {
				starts[n-1], prevWindow[n-1] = cp, pwin
			} else {
				starts, prevWindow = append(starts, cp), append(prevWindow, pwin)
			}
			return nil
		})
		pw.CloseWithError(err)
		scanErr <- err
	}()
	entries, size, walkErr := walkTar(pr, opt.MaxEntries)
	pr.CloseWithError(errors.New("tar walk ended"))
	if err := <-scanErr; err != nil {
		return err
	}
	if walkErr != nil {
		return walkErr
	}
	frames := fw.finish()
	// A block that starts at the very end (an empty final block) opens no frame.
	for n := len(starts); n > 0 && starts[n-1].Out == size; n-- {
		starts = starts[:n-1]
	}
	if len(frames) != len(starts) {
		return fmt.Errorf("%w: %d frames for %d checkpoints", ErrCorrupt, len(frames), len(starts))
	}
	for i, cp := range starts {
		f := &frames[i]
		if cp.Out != f.Offset {
			return fmt.Errorf("%w: checkpoint %d at %d, frame at %d", ErrCorrupt, i, cp.Out, f.Offset)
		}
		f.CompressedOffset, f.Bits, f.Window, f.PrevWindow = cp.In, cp.Bits, cp.Window, prevWindow[i]
		// The last frame runs to the blob's end; the others stop after the
		// byte that holds the next block's first bit.
		f.CompressedSize = -1
		if i+1 < len(starts) {
			f.CompressedSize = starts[i+1].In + 1 - cp.In
		}
	}
	x.Entries, x.TarSize, x.Frames = entries, size, frames
	return nil
}

// buildZstd indexes a zstd layer. A single zstd frame cannot be entered in
// the middle, so every frame of the index spans the whole blob: reading any
// of them streams the layer once (and the reader keeps all frames it passes).
func buildZstd(x *Index, r io.Reader, opt BuildOptions) error {
	zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
	if err != nil {
		return err
	}
	defer zr.Close()
	fw := newFrameWriter(opt.Span, func(f *Frame) { f.CompressedSize = -1 })
	entries, size, err := walkTar(io.TeeReader(zr, fw), opt.MaxEntries)
	if err != nil {
		return err
	}
	x.Entries, x.TarSize, x.Frames = entries, size, fw.finish()
	return nil
}

// frameWriter hashes the uncompressed stream into frames. With a span it
// cuts by itself every span bytes; otherwise the caller cuts.
type frameWriter struct {
	span   int64
	adjust func(*Frame)
	off    int64 // bytes written so far
	start  int64 // where the open frame started
	h      hash.Hash
	frames []Frame
}

func newFrameWriter(span int64, adjust func(*Frame)) *frameWriter {
	return &frameWriter{span: span, adjust: adjust, h: sha256.New()}
}

func (w *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		chunk := p
		if w.span > 0 {
			if room := w.start + w.span - w.off; int64(len(chunk)) > room {
				chunk = chunk[:room]
			}
		}
		if w.off-w.start+int64(len(chunk)) > MaxFrameSize {
			return n - len(p), fmt.Errorf("%w: more than %d uncompressed bytes from offset %d without a deflate block start (a block that long is a hand-made gzip bomb)",
				ErrUnsupported, int64(MaxFrameSize), w.start)
		}
		w.h.Write(chunk)
		w.off += int64(len(chunk))
		p = p[len(chunk):]
		if w.span > 0 && w.off == w.start+w.span {
			w.cut(w.off)
		}
	}
	return n, nil
}

// cut closes the open frame at off (which must be where writing stands);
// an empty frame is never recorded.
func (w *frameWriter) cut(off int64) {
	if off != w.off {
		panic(fmt.Sprintf("index: frame cut at %d while the stream is at %d", off, w.off))
	}
	if off == w.start {
		return
	}
	f := Frame{Offset: w.start, Size: off - w.start, Digest: digest.NewDigest(digest.SHA256, w.h)}
	if w.adjust != nil {
		w.adjust(&f)
	}
	w.frames = append(w.frames, f)
	w.h.Reset()
	w.start = off
}

func (w *frameWriter) finish() []Frame {
	w.cut(w.off)
	return w.frames
}

// ctxReader ends a long streaming read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
