package inflate

import (
	"errors"
	"fmt"
	"io"
)

// ErrCorrupt is wrapped by every error about malformed input.
var ErrCorrupt = errors.New("inflate: corrupt gzip stream")

// Checkpoint is a place in a gzip stream where decoding can resume: the
// start of a deflate block inside a member's body.
type Checkpoint struct {
	In     int64  // offset in the compressed stream of the byte that holds the block's first bit
	Bits   uint8  // how many low bits of that byte belong to the previous block (0..7)
	Out    int64  // offset in the uncompressed stream (all members concatenated) where the block's output starts
	Window []byte // the last min(32768, bytes of this member so far) uncompressed bytes before Out; empty at a member's first block. Caller owns it (a fresh copy).
}

// Scan decompresses the whole gzip stream read from r (one or more
// concatenated members, as `cat a.gz b.gz` makes), writes every uncompressed
// byte to w in order, verifies each member's CRC-32 and ISIZE, and calls
// checkpoint at block starts: always at the first block of the stream (Out 0)
// and of every later member, and otherwise at the first block start whose Out
// is at least spacing bytes past the previous checkpoint's Out (so at every
// block start if spacing <= 0). checkpoint is called after every byte before
// Out has been written to w and before any byte at or after Out is written; a
// nil checkpoint is not called.
//
// An error from r, w or checkpoint stops Scan and is returned wrapped.
// Trailing zero bytes after the last member are allowed (some tools pad); any
// other trailing garbage is an error. Malformed input, including input that
// ends early, returns an error wrapping ErrCorrupt (and io.ErrUnexpectedEOF
// for the latter). Reserved gzip header flags are ignored, as compress/gzip
// does.
//
// Scan reads r in chunks of up to 32 KiB and needs about 150 KiB of memory.
func Scan(r io.Reader, w io.Writer, spacing int64, checkpoint func(Checkpoint) error) error {
	d := newDecoder(r, 0)
	d.state = stateHeader
	d.stopAtBlocks = true
	last := int64(0)
	for {
		st, err := d.run()
		if err != nil {
			return err
		}
		switch st {
		case statusFull:
			if err := flush(d, w); err != nil {
				return err
			}
		case statusBlock:
			out := d.outPos()
			if checkpoint == nil || !(d.memberFirst || out-last >= spacing) {
				continue
			}
			if err := flush(d, w); err != nil {
				return err
			}
			pos := d.inPos()
			cp := Checkpoint{In: pos >> 3, Bits: uint8(pos & 7), Out: out, Window: d.window()}
			if err := checkpoint(cp); err != nil {
				return fmt.Errorf("inflate: checkpoint at uncompressed offset %d: %w", out, err)
			}
			last = out
		case statusEnd:
			return flush(d, w)
		}
	}
}

// flush writes the output that has not been written yet.
func flush(d *decoder, w io.Writer) error {
	p := d.hist[d.rpos:d.wpos]
	if len(p) == 0 {
		return nil
	}
	off := d.histOff + int64(d.rpos)
	n, err := w.Write(p)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("inflate: write uncompressed bytes [%d,+%d): %w", off, len(p), err)
	}
	d.rpos = d.wpos
	return nil
}

// NewReader returns a reader of the uncompressed stream from cp.Out on. r
// must yield the compressed stream starting at byte cp.In. The reader
// continues across member ends (trailer, next member's header) until the
// stream or r ends.
//
// It produces any prefix of the output using only the compressed bytes that
// prefix needs: when r ends early, the reader first returns all output it
// could fully decode and only then an error wrapping io.ErrUnexpectedEOF. So a
// caller may fetch exactly the bytes [cp.In, next.In+1) of the next
// checkpoint and read exactly next.Out-cp.Out bytes. (The reader does read
// ahead in r, up to 32 KiB at a time, and waits for those reads; the end of r
// only matters once the output needs bytes past it.)
//
// The CRC-32 and ISIZE of the member it starts in cannot be checked and are
// not; those of later members are. Malformed input returns an error wrapping
// ErrCorrupt, as does a checkpoint with Bits above 7. A Window longer than
// 32 KiB is fine: only its last 32 KiB are used.
//
// The reader holds about 150 KiB of memory until it returns an error or
// io.EOF.
func NewReader(r io.Reader, cp Checkpoint) io.Reader {
	if cp.Bits > 7 {
		return &reader{err: fmt.Errorf("%w: checkpoint at compressed byte %d has bit offset %d, want 0..7", ErrCorrupt, cp.In, cp.Bits)}
	}
	d := newDecoder(r, cp.In)
	d.resumed = true
	win := cp.Window[max(len(cp.Window)-windowSize, 0):]
	d.wpos = copy(d.hist, win)
	d.rpos, d.crcPos = d.wpos, d.wpos
	d.histOff = cp.Out - int64(d.wpos)
	d.memberStart = cp.Out
	d.state, d.skipBits = stateSkip, uint(cp.Bits)
	return &reader{d: d}
}

// reader resumes decoding at a checkpoint.
type reader struct {
	d   *decoder // nil once err is set and all output is handed out
	err error    // sticky: returned once all output before it is read
}

func (z *reader) Read(p []byte) (int, error) {
	for {
		if d := z.d; d != nil && d.rpos < d.wpos {
			n := copy(p, d.hist[d.rpos:d.wpos])
			d.rpos += n
			return n, nil
		}
		if z.err != nil {
			z.d = nil // release the buffers
			return 0, z.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		st, err := z.d.run()
		switch {
		case err != nil:
			z.err = err
		case st == statusEnd:
			z.err = io.EOF
		}
	}
}
