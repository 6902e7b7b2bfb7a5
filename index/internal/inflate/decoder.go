package inflate

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	windowSize = 1 << 15 // the farthest a deflate back-reference reaches
	maxMatch   = 258     // the longest deflate back-reference
	maxLit     = 286     // literal/length symbols a dynamic block may give lengths for
	maxDist    = 30      // distance symbols a dynamic block may give lengths for

	// histSize holds a window for back-references and two windows of room to
	// decode into, so sliding copies one byte per two decoded.
	histSize = 3 * windowSize
	inSize   = 1 << 15 // input buffer
)

// gzip header flags (RFC 1952 section 2.3.1).
const (
	flagHCRC    = 1 << 1
	flagExtra   = 1 << 2
	flagName    = 1 << 3
	flagComment = 1 << 4
)

type state uint8

const (
	stateHeader  state = iota // at a member header
	stateSkip                 // resuming: drop the bits of the block before
	stateBlock                // at a block header
	stateStored               // inside a stored block
	stateHuffman              // inside a Huffman-coded block
	stateTrailer              // after a member's last block
	stateNext                 // after a trailer: a member, zero padding, or the end
	stateZeros                // in the zero padding after the last member
	stateDone
)

// status says why run returned without an error.
type status uint8

const (
	statusFull  status = iota // no room for more output until hist[rpos:wpos] is handed out
	statusBlock               // at a block start; run again to decode it
	statusEnd                 // the stream ended cleanly
)

// decoder is the inflater's state between calls. Output goes into hist,
// which always keeps the current member's last windowSize bytes (or all of
// them) before wpos for back-references; hist[rpos:wpos] is output not yet
// handed to the caller.
//
// Input goes through in and then the bit buffer b, which holds nb valid bits
// (first bit lowest). Bits of b above nb are zero or copies of the bytes at
// in[ip:], so they may be peeked at past the end of the input: a code decoded
// from them is only used if it is no longer than nb.
type decoder struct {
	r        io.Reader
	in       []byte
	ip, iend int   // in[ip:iend] is input not yet in b
	inOff    int64 // compressed stream offset of in[0]
	eof      bool  // r has nothing more; rerr says why if not io.EOF
	rerr     error
	b        uint64
	nb       uint
	resumed  bool // started at a checkpoint: truncation is io.ErrUnexpectedEOF, not ErrCorrupt
	skipBits uint

	hist    []byte
	wpos    int
	rpos    int
	base    int   // hist index where the current member's output starts (0 if earlier)
	histOff int64 // uncompressed stream offset of hist[0]

	// Member checks.
	checkSums   bool   // false for the member a resumed reader starts in
	crc         uint32 // CRC-32 of the member's output before hist[crcPos]
	crcPos      int
	memberStart int64 // uncompressed stream offset where the member starts

	state        state
	final        bool // the current block is the member's last
	stored       int  // bytes left in the current stored block
	memberFirst  bool // the next block header is the member's first
	stopAtBlocks bool // return statusBlock at every block start
	blockSeen    bool // statusBlock was returned for the block start at hand

	lit, dist       *table
	dynLit, dynDist table
	fixLit, fixDist table
	codeLen         table
	lens            [maxLit + maxDist]uint8
}

func newDecoder(r io.Reader, inOff int64) *decoder {
	return &decoder{
		r:     r,
		in:    make([]byte, inSize),
		inOff: inOff,
		hist:  make([]byte, histSize),
	}
}

// run decodes until it needs to hand out output, reaches a block start (if
// stopAtBlocks), the stream ends, or an error occurs. Output decoded before
// an error is in hist[rpos:wpos].
func (d *decoder) run() (status, error) {
	for {
		switch d.state {
		case stateHeader:
			if err := d.header(); err != nil {
				return 0, err
			}
			d.state, d.memberFirst = stateBlock, true
		case stateSkip:
			if err := d.need(d.skipBits); err != nil {
				return 0, err
			}
			d.consume(d.skipBits)
			d.state = stateBlock
		case stateBlock:
			if d.stopAtBlocks && !d.blockSeen {
				d.blockSeen = true
				return statusBlock, nil
			}
			d.blockSeen = false
			if err := d.blockHeader(); err != nil {
				return 0, err
			}
			d.memberFirst = false
		case stateStored:
			if d.wpos == len(d.hist) && !d.makeRoom() {
				return statusFull, nil
			}
			if err := d.storedData(); err != nil {
				return 0, err
			}
		case stateHuffman:
			if d.wpos > len(d.hist)-maxMatch && !d.makeRoom() {
				return statusFull, nil
			}
			if err := d.huffman(); err != nil {
				return 0, err
			}
		case stateTrailer:
			if err := d.trailer(); err != nil {
				return 0, err
			}
			d.state = stateNext
		case stateNext:
			c, ok, err := d.peekByte()
			switch {
			case err != nil:
				return 0, err
			case !ok:
				d.state = stateDone
			case c == 0:
				d.state = stateZeros
			default:
				d.state = stateHeader
			}
		case stateZeros:
			if err := d.zeros(); err != nil {
				return 0, err
			}
			d.state = stateDone
		case stateDone:
			return statusEnd, nil
		}
	}
}

// makeRoom makes room in hist for at least maxMatch more bytes by dropping
// all but the last windowSize bytes. It reports false if output that has not
// been handed out is in the way.
func (d *decoder) makeRoom() bool {
	if d.rpos < d.wpos {
		return false
	}
	d.sum()
	shift := d.wpos - windowSize
	if shift <= 0 {
		return true
	}
	copy(d.hist, d.hist[shift:d.wpos])
	d.wpos -= shift
	d.rpos -= shift
	d.crcPos -= shift
	d.base = max(d.base-shift, 0)
	d.histOff += int64(shift)
	return true
}

// sum brings the member's CRC-32 up to wpos.
func (d *decoder) sum() {
	if d.checkSums {
		d.crc = crc32.Update(d.crc, crc32.IEEETable, d.hist[d.crcPos:d.wpos])
	}
	d.crcPos = d.wpos
}

// outPos returns the uncompressed stream offset of the next output byte.
func (d *decoder) outPos() int64 { return d.histOff + int64(d.wpos) }

// inPos returns the compressed stream offset, in bits, of the next unread bit.
func (d *decoder) inPos() int64 { return (d.inOff+int64(d.ip))*8 - int64(d.nb) }

// window returns a copy of the member's last windowSize bytes of output.
func (d *decoder) window() []byte {
	lo := max(d.base, d.wpos-windowSize)
	if lo == d.wpos {
		return nil
	}
	return append([]byte(nil), d.hist[lo:d.wpos]...)
}

// corrupt returns an ErrCorrupt error saying what is wrong and where.
func (d *decoder) corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s at compressed byte %d", ErrCorrupt, fmt.Sprintf(format, args...), d.inPos()/8)
}

// truncated returns the error for input that ends inside a structure.
func (d *decoder) truncated() error {
	if d.rerr != nil {
		return fmt.Errorf("inflate: read compressed stream at byte %d: %w", d.inOff+int64(d.iend), d.rerr)
	}
	if d.resumed {
		return fmt.Errorf("inflate: compressed stream ends early at byte %d: %w", d.inOff+int64(d.iend), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%w: stream ends early at byte %d: %w", ErrCorrupt, d.inOff+int64(d.iend), io.ErrUnexpectedEOF)
}

// fill reads more input into in, keeping in[ip:iend].
func (d *decoder) fill() {
	if d.eof {
		return
	}
	if d.ip > 0 {
		n := copy(d.in, d.in[d.ip:d.iend])
		d.inOff += int64(d.ip)
		d.ip, d.iend = 0, n
	}
	if d.iend == len(d.in) {
		return // full; only called when it is not
	}
	for range 100 {
		n, err := d.r.Read(d.in[d.iend:])
		if n < 0 || n > len(d.in)-d.iend {
			d.eof, d.rerr = true, fmt.Errorf("reader returned count %d for a %d-byte buffer", n, len(d.in)-d.iend)
			return
		}
		d.iend += n
		if err != nil {
			d.eof = true
			if err != io.EOF {
				d.rerr = err
			}
			return
		}
		if n > 0 {
			return
		}
	}
	d.eof, d.rerr = true, io.ErrNoProgress
}

// refill tops b up to at least 56 bits, or as many as the input has left.
// It reads ahead rather than stop short, so that fewer bits than asked for
// always means the end of the input.
func (d *decoder) refill() {
	for d.iend-d.ip < 8 && !d.eof {
		d.fill()
	}
	if d.iend-d.ip >= 8 {
		d.b |= binary.LittleEndian.Uint64(d.in[d.ip:]) << d.nb
		d.ip += int(63-d.nb) >> 3
		d.nb |= 56
		return
	}
	for d.nb <= 56 && d.ip < d.iend {
		d.b |= uint64(d.in[d.ip]) << d.nb
		d.ip++
		d.nb += 8
	}
}

// need makes sure b holds at least n bits.
func (d *decoder) need(n uint) error {
	if d.nb < n {
		d.refill()
		if d.nb < n {
			return d.truncated()
		}
	}
	return nil
}

// bits returns the next n bits, which must be in b.
func (d *decoder) bits(n uint) uint32 {
	v := uint32(d.b & (1<<n - 1))
	d.consume(n)
	return v
}

func (d *decoder) consume(n uint) {
	d.b >>= n
	d.nb -= n
}

// exhausted reports whether every input bit is in b.
func (d *decoder) exhausted() bool { return d.eof && d.ip == d.iend }

// alignByte drops the bits up to the next byte boundary.
func (d *decoder) alignByte() { d.consume(d.nb & 7) }

// readFull copies the next len(p) bytes of (byte aligned) input into p. It
// returns how many it copied, fewer than len(p) only with an error.
func (d *decoder) readFull(p []byte) (int, error) {
	n := 0
	for n < len(p) && d.nb >= 8 {
		p[n] = byte(d.b)
		d.consume(8)
		n++
	}
	if n == len(p) {
		return n, nil
	}
	// b is empty now; bits above nb are copies of in[ip:], which are about
	// to be consumed directly.
	d.b = 0
	for n < len(p) {
		if d.ip == d.iend {
			if d.eof {
				return n, d.truncated()
			}
			d.fill()
			continue
		}
		k := copy(p[n:], d.in[d.ip:d.iend])
		d.ip += k
		n += k
	}
	return n, nil
}

// peekByte returns the next (byte aligned) input byte without consuming it;
// ok is false at the end of the input.
func (d *decoder) peekByte() (c byte, ok bool, err error) {
	if d.nb >= 8 {
		return byte(d.b), true, nil
	}
	d.b = 0
	for d.ip == d.iend {
		if d.eof {
			if d.rerr != nil {
				return 0, false, d.truncated()
			}
			return 0, false, nil
		}
		d.fill()
	}
	return d.in[d.ip], true, nil
}

// header reads a gzip member header (RFC 1952 section 2.3) and starts the
// member's output and checks.
func (d *decoder) header() error {
	var h [10]byte
	if _, err := d.readFull(h[:]); err != nil {
		return err
	}
	if h[0] != 0x1f || h[1] != 0x8b {
		return d.corrupt("member starts with %#02x %#02x, not the gzip magic", h[0], h[1])
	}
	if h[2] != 8 {
		return d.corrupt("compression method %d, want 8 (deflate)", h[2])
	}
	// Reserved flag bits are ignored, as compress/gzip does.
	flags := h[3]
	crc := crc32.ChecksumIEEE(h[:])
	var buf [256]byte
	if flags&flagExtra != 0 {
		if _, err := d.readFull(buf[:2]); err != nil {
			return err
		}
		crc = crc32.Update(crc, crc32.IEEETable, buf[:2])
		for n := int(binary.LittleEndian.Uint16(buf[:2])); n > 0; {
			k, err := d.readFull(buf[:min(n, len(buf))])
			if err != nil {
				return err
			}
			crc = crc32.Update(crc, crc32.IEEETable, buf[:k])
			n -= k
		}
	}
	for _, f := range []byte{flagName, flagComment} {
		if flags&f == 0 {
			continue
		}
		for {
			if _, err := d.readFull(buf[:1]); err != nil {
				return err
			}
			crc = crc32.Update(crc, crc32.IEEETable, buf[:1])
			if buf[0] == 0 {
				break
			}
		}
	}
	if flags&flagHCRC != 0 {
		if _, err := d.readFull(buf[:2]); err != nil {
			return err
		}
		if got := binary.LittleEndian.Uint16(buf[:2]); got != uint16(crc) {
			return d.corrupt("header CRC %#04x, want %#04x", got, uint16(crc))
		}
	}
	d.sum()
	d.base = d.wpos
	d.checkSums, d.crc, d.crcPos = true, 0, d.wpos
	d.memberStart = d.outPos()
	return nil
}

// trailer reads and (unless resumed inside this member) checks a member's
// CRC-32 and ISIZE.
func (d *decoder) trailer() error {
	d.alignByte()
	var t [8]byte
	if _, err := d.readFull(t[:]); err != nil {
		return err
	}
	if !d.checkSums {
		return nil
	}
	d.sum()
	if got := binary.LittleEndian.Uint32(t[:4]); got != d.crc {
		return d.corrupt("member CRC-32 %#08x, want %#08x", got, d.crc)
	}
	size := uint32(d.outPos() - d.memberStart)
	if got := binary.LittleEndian.Uint32(t[4:]); got != size {
		return d.corrupt("member ISIZE %d, want %d", got, size)
	}
	return nil
}

// zeros consumes the zero padding after the last member up to the end.
func (d *decoder) zeros() error {
	for d.nb >= 8 {
		if byte(d.b) != 0 {
			return d.corrupt("trailing garbage after the last member")
		}
		d.consume(8)
	}
	d.b = 0
	for {
		for i, c := range d.in[d.ip:d.iend] {
			if c != 0 {
				d.ip += i
				return d.corrupt("trailing garbage after the last member")
			}
		}
		d.ip = d.iend
		if d.eof {
			if d.rerr != nil {
				return d.truncated()
			}
			return nil
		}
		d.fill()
	}
}

// blockHeader reads a block header (RFC 1951 section 3.2.3) and what
// follows up to the block's data.
func (d *decoder) blockHeader() error {
	if err := d.need(3); err != nil {
		return err
	}
	d.final = d.bits(1) == 1
	switch d.bits(2) {
	case 0:
		d.alignByte()
		var h [4]byte
		if _, err := d.readFull(h[:]); err != nil {
			return err
		}
		n, nn := binary.LittleEndian.Uint16(h[:2]), binary.LittleEndian.Uint16(h[2:])
		if n != ^nn {
			return d.corrupt("stored block length %#04x does not match its complement %#04x", n, nn)
		}
		d.stored = int(n)
		d.state = stateStored
		if n == 0 {
			d.endBlock()
		}
	case 1:
		if d.fixLit.e == nil {
			d.buildFixed()
		}
		d.lit, d.dist = &d.fixLit, &d.fixDist
		d.state = stateHuffman
	case 2:
		if err := d.dynamic(); err != nil {
			return err
		}
		d.lit, d.dist = &d.dynLit, &d.dynDist
		d.state = stateHuffman
	default:
		return d.corrupt("reserved block type 3")
	}
	return nil
}

func (d *decoder) endBlock() {
	if d.final {
		d.state = stateTrailer
	} else {
		d.state = stateBlock
	}
}

// buildFixed builds the tables of RFC 1951 section 3.2.6.
func (d *decoder) buildFixed() {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	d.fixLit.build(l[:], litBits, kindLitLen, 1<<litBits)
	for i := range 30 {
		l[i] = 5
	}
	l[30], l[31] = 5, 5
	d.fixDist.build(l[:32], distBits, kindDist, 1<<distBits)
}

// storedData copies stored block bytes into hist while there is room.
func (d *decoder) storedData() error {
	n := min(d.stored, len(d.hist)-d.wpos)
	k, err := d.readFull(d.hist[d.wpos : d.wpos+n])
	d.wpos += k
	d.stored -= k
	if err != nil {
		return err
	}
	if d.stored == 0 {
		d.endBlock()
	}
	return nil
}

// codeLenOrder is the order of code length code lengths (RFC 1951 section 3.2.7).
var codeLenOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

// dynamic reads the code descriptions of a dynamic block (RFC 1951 section
// 3.2.7) and builds its tables.
func (d *decoder) dynamic() error {
	if err := d.need(14); err != nil {
		return err
	}
	nlit := int(d.bits(5)) + 257
	ndist := int(d.bits(5)) + 1
	nclen := int(d.bits(4)) + 4
	if nlit > maxLit {
		return d.corrupt("dynamic block with %d literal/length codes, at most %d allowed", nlit, maxLit)
	}
	if ndist > maxDist {
		return d.corrupt("dynamic block with %d distance codes, at most %d allowed", ndist, maxDist)
	}
	var cl [19]uint8
	for _, sym := range codeLenOrder[:nclen] {
		if err := d.need(3); err != nil {
			return err
		}
		cl[sym] = uint8(d.bits(3))
	}
	if !d.codeLen.build(cl[:], clBits, kindCodeLen, clEntries) {
		return d.corrupt("invalid code length code")
	}

	lens := d.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		if d.nb < 7 {
			d.refill()
		}
		e := d.codeLen.e[d.b&d.codeLen.mask]
		n := uint(e & 15)
		if e&flagInvalid != 0 || n > d.nb {
			if d.exhausted() && d.nb < clBits {
				return d.truncated()
			}
			return d.corrupt("invalid code length code")
		}
		d.consume(n)
		sym := e >> 16
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return d.corrupt("code length repeat with nothing to repeat")
			}
			if err := d.need(2); err != nil {
				return err
			}
			rep, val = 3+int(d.bits(2)), lens[i-1]
		case 17:
			if err := d.need(3); err != nil {
				return err
			}
			rep = 3 + int(d.bits(3))
		default:
			if err := d.need(7); err != nil {
				return err
			}
			rep = 11 + int(d.bits(7))
		}
		if i+rep > len(lens) {
			return d.corrupt("code length repeat runs past %d lengths", len(lens))
		}
		for ; rep > 0; rep-- {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return d.corrupt("dynamic block without an end-of-block code")
	}
	if !d.dynLit.build(lens[:nlit], litBits, kindLitLen, maxLitEntries) {
		return d.corrupt("invalid literal/length code")
	}
	if !d.dynDist.build(lens[nlit:], distBits, kindDist, maxDistEntries) {
		return d.corrupt("invalid distance code")
	}
	return nil
}

// huffman decodes symbols of a Huffman-coded block until the block ends or
// hist has no room for a longest match.
func (d *decoder) huffman() error {
	var (
		b     = d.b
		nb    = d.nb
		hist  = d.hist
		w     = d.wpos
		limit = len(hist) - maxMatch
		lt    = d.lit.e
		lmask = d.lit.mask
		lbits = d.lit.bits
		dt    = d.dist.e
		dmask = d.dist.mask
		dbits = d.dist.bits
		err   error
	)
	for w <= limit {
		if nb < 48 {
			d.b, d.nb = b, nb
			d.refill()
			b, nb = d.b, d.nb
		}
		e := lt[b&lmask]
		if e&flagLink != 0 {
			e = lt[e>>16+uint32(b>>lbits)&(1<<(e&15)-1)]
		}
		n := uint(e & 15)
		if e&flagLiteral != 0 {
			if n > nb {
				err = d.truncatedAt(b, nb, w)
				break
			}
			b >>= n
			nb -= n
			hist[w] = byte(e >> 16)
			w++
			continue
		}
		if e&(flagEOB|flagInvalid) != 0 {
			if e&flagInvalid != 0 || n > nb {
				if d.exhausted() && nb < maxCodeLen {
					err = d.truncatedAt(b, nb, w)
				} else {
					d.b, d.nb, d.wpos = b, nb, w
					err = d.corrupt("invalid literal/length code")
				}
				break
			}
			b >>= n
			nb -= n
			d.endBlock()
			break
		}

		// A length, then a distance.
		x := uint(e>>4) & 15
		if n+x > nb {
			err = d.truncatedAt(b, nb, w)
			break
		}
		length := int(e>>16) + int((b>>n)&(1<<x-1))
		b >>= n + x
		nb -= n + x

		e = dt[b&dmask]
		if e&flagLink != 0 {
			e = dt[e>>16+uint32(b>>dbits)&(1<<(e&15)-1)]
		}
		n, x = uint(e&15), uint(e>>4)&15
		if e&flagInvalid != 0 || n+x > nb {
			if d.exhausted() && nb < maxCodeLen+13 {
				err = d.truncatedAt(b, nb, w)
			} else {
				d.b, d.nb, d.wpos = b, nb, w
				err = d.corrupt("invalid distance code")
			}
			break
		}
		dist := int(e>>16) + int((b>>n)&(1<<x-1))
		b >>= n + x
		nb -= n + x

		if dist > w-d.base {
			d.b, d.nb, d.wpos = b, nb, w
			err = d.corrupt("distance %d reaches past the %d bytes of history", dist, w-d.base)
			break
		}
		if dist >= length {
			copy(hist[w:w+length], hist[w-dist:])
			w += length
			continue
		}
		// The match overlaps its own output: copy the period once, then
		// ever longer runs of what has been copied.
		src, end := w-dist, w+length
		for w < end {
			w += copy(hist[w:end], hist[src:w])
		}
	}
	d.b, d.nb, d.wpos = b, nb, w
	return err
}

// truncatedAt saves the loop's state and returns the truncation error.
func (d *decoder) truncatedAt(b uint64, nb uint, w int) error {
	d.b, d.nb, d.wpos = b, nb, w
	return d.truncated()
}
