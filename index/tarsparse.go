package index

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
)

const (
	blockSize = 512

	// maxHeaderBytes bounds the header blocks kept for one entry: its
	// meta headers (PAX records, GNU long names) and own header, plus the
	// old GNU sparse extension blocks or the PAX 1.0 map. archive/tar
	// allows 1 MiB for each of these.
	maxHeaderBytes = 4 << 20

	// GNU header fields (see archive/tar's format.go).
	hdrName     = 0   // [100]
	hdrSize     = 124 // [12]
	hdrChksum   = 148 // [8]
	hdrTypeflag = 156 // [1]
	hdrPrefix   = 345 // [155], ustar only
	hdrMagic    = 257 // [6]
	gnuSparse   = 386 // 4 × (offset [12], length [12]), then isextended [1]
	gnuExtended = 482
	extSparse   = 21 // fragments in an extension block, then isextended [1]
)

// headerRecorder counts the bytes read through it and keeps a copy of those
// from a stream offset on, so that WalkTar can read again the header blocks
// archive/tar consumed for one entry. It keeps at most maxHeaderBytes and
// notes when there were more.
type headerRecorder struct {
	r    io.Reader
	n    int64  // bytes read so far
	from int64  // stream offset of buf[0]; -1 when not recording
	buf  []byte // bytes read from from on
	over bool   // more than maxHeaderBytes were read from from on
}

// record starts keeping the bytes read from stream offset from on (which
// must not be behind n), dropping what was kept; -1 stops recording.
func (h *headerRecorder) record(from int64) {
	h.from, h.buf, h.over = from, h.buf[:0], false
}

func (h *headerRecorder) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.from >= 0 && n > 0 && h.n+int64(n) > h.from {
		got := p[:n]
		if skip := h.from - h.n; skip > 0 {
			got = got[skip:]
		}
		if len(h.buf)+len(got) > maxHeaderBytes {
			h.over, h.from = true, -1
		} else {
			h.buf = append(h.buf, got...)
		}
	}
	h.n += int64(n)
	return n, err
}

// sparse forms, as archive/tar tells them apart.
const (
	notSparse = iota
	sparseOldGNU
	sparsePAX0 // 0.0 and 0.1: the map is a PAX record
	sparsePAX1 // 1.0: the map opens the data area
)

// sparseForm tells which GNU sparse encoding hdr uses, as archive/tar
// decided when it read it. GNU.sparse records that archive/tar ignores (an
// unknown version) are refused: the content it returns would be the
// encoded form, not the file.
func sparseForm(hdr *tar.Header) (int, error) {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return sparseOldGNU, nil
	}
	major, minor := hdr.PAXRecords["GNU.sparse.major"], hdr.PAXRecords["GNU.sparse.minor"]
	switch {
	case major == "0" && (minor == "0" || minor == "1"):
		return sparsePAX0, nil
	case major == "1" && minor == "0":
		return sparsePAX1, nil
	case major != "" || minor != "":
		return 0, fmt.Errorf("%w: GNU sparse format %s.%s", ErrUnsupported, major, minor)
	case hdr.PAXRecords["GNU.sparse.map"] != "":
		return sparsePAX0, nil
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return 0, fmt.Errorf("%w: GNU sparse record %q without a sparse map", ErrUnsupported, k)
		}
	}
	return notSparse, nil
}

// sparseMap returns the data fragments of a sparse entry (nil for any
// other) and how many bytes of them follow in the stream, read from the
// header blocks hr kept. Fragments of length 0 are dropped. A map that does
// not describe exactly the bytes stored is refused with an error wrapping
// ErrCorrupt.
func sparseMap(hdr *tar.Header, hr *headerRecorder) ([]Extent, int64, error) {
	form, err := sparseForm(hdr)
	if err != nil || form == notSparse {
		return nil, 0, err
	}
	if hr.over {
		return nil, 0, fmt.Errorf("%w: sparse entry with more than %d bytes of headers", ErrUnsupported, maxHeaderBytes)
	}
	buf := hr.buf
	main, err := mainHeader(buf)
	if err != nil {
		return nil, 0, err
	}
	physical, ok := tarNumeric(buf[main+hdrSize : main+hdrSize+12])
	if v := hdr.PAXRecords["size"]; v != "" {
		physical, err = strconv.ParseInt(v, 10, 64)
		ok = err == nil
	}
	if !ok || physical < 0 {
		return nil, 0, fmt.Errorf("%w: sparse entry: bad stored size", ErrCorrupt)
	}
	dataStart := main + blockSize // where the header blocks should end
	var frags []Extent
	switch form {
	case sparseOldGNU:
		frags, dataStart, err = oldGNUMap(buf, main)
	case sparsePAX0:
		frags, err = pax0Map(hdr.PAXRecords["GNU.sparse.map"])
	case sparsePAX1:
		// The map's blocks are part of the stored content.
		mapBytes := len(buf) - dataStart
		frags, err = pax1Map(buf[dataStart:])
		if err == nil && (mapBytes <= 0 || int64(mapBytes) > physical) {
			err = fmt.Errorf("%w: sparse map of %d bytes in %d stored bytes", ErrCorrupt, mapBytes, physical)
		}
		physical -= int64(mapBytes)
		dataStart = len(buf)
	}
	if err != nil {
		return nil, 0, err
	}
	if dataStart != len(buf) {
		return nil, 0, fmt.Errorf("%w: sparse entry: %d bytes of headers, but its data starts after %d",
			ErrCorrupt, dataStart, len(buf))
	}
	ext, err := checkSparseMap(frags, hdr.Size, physical)
	return ext, physical, err
}

// checkSparseMap checks the fragments of a file of size bytes, physical of
// them stored, and returns them without the empty ones (never nil).
func checkSparseMap(frags []Extent, size, physical int64) ([]Extent, error) {
	out := make([]Extent, 0, len(frags))
	var end, total int64
	for i, f := range frags {
		switch {
		case f.Offset < 0 || f.Length < 0:
			return nil, fmt.Errorf("%w: sparse fragment %d [%d,+%d) negative", ErrCorrupt, i, f.Offset, f.Length)
		case f.Offset < end:
			return nil, fmt.Errorf("%w: sparse fragment %d at %d starts before the previous one ends (%d)", ErrCorrupt, i, f.Offset, end)
		case f.Offset > size || f.Length > size-f.Offset:
			return nil, fmt.Errorf("%w: sparse fragment %d [%d,+%d) past the size %d", ErrCorrupt, i, f.Offset, f.Length, size)
		}
		end = f.Offset + f.Length
		if f.Length > 0 {
			out = append(out, f)
			total += f.Length // ≤ size: the fragments do not overlap
		}
	}
	if total != physical {
		return nil, fmt.Errorf("%w: sparse fragments hold %d bytes, the entry stores %d", ErrCorrupt, total, physical)
	}
	return out, nil
}

// mainHeader returns where the entry's own header block starts in buf, the
// header blocks of one entry: PAX extended headers and GNU long names with
// their data come first.
func mainHeader(buf []byte) (int, error) {
	pos := 0
	for {
		if len(buf)-pos < blockSize {
			return 0, fmt.Errorf("%w: sparse entry: header blocks end after %d bytes", ErrCorrupt, len(buf))
		}
		switch buf[pos+hdrTypeflag] {
		case tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			size, ok := tarNumeric(buf[pos+hdrSize : pos+hdrSize+12])
			if !ok || size > int64(len(buf)) {
				return 0, fmt.Errorf("%w: sparse entry: meta header at %d of size %d past the headers", ErrCorrupt, pos, size)
			}
			pos += blockSize + int(size+blockSize-1)&^(blockSize-1)
		default:
			return pos, nil
		}
	}
}

// oldGNUMap reads the fragments of an old GNU sparse header at buf[main:]
// and its extension blocks, as archive/tar does, and returns them with the
// offset just past the last extension block.
func oldGNUMap(buf []byte, main int) ([]Extent, int, error) {
	s := buf[main+gnuSparse : main+gnuExtended+1]
	pos := main + blockSize
	var frags []Extent
	for {
		n := len(s) / 24
		for i := range n {
			e := s[i*24:]
			if e[0] == 0 { // as GNU and BSD tar: an empty offset ends the list
				break
			}
			off, ok1 := tarNumeric(e[:12])
			length, ok2 := tarNumeric(e[12:24])
			if !ok1 || !ok2 {
				return nil, 0, fmt.Errorf("%w: sparse map: bad number in fragment %d", ErrCorrupt, len(frags))
			}
			frags = append(frags, Extent{Offset: off, Length: length})
		}
		if s[n*24] == 0 {
			return frags, pos, nil
		}
		if len(buf)-pos < blockSize {
			return nil, 0, fmt.Errorf("%w: sparse map: extension block %d missing", ErrCorrupt, (pos-main)/blockSize)
		}
		s = buf[pos : pos+extSparse*24+1]
		pos += blockSize
	}
}

// pax0Map parses the GNU.sparse.map record of the PAX 0.0 and 0.1 forms:
// comma-separated offset and length pairs (archive/tar turns 0.0's
// separate records into one such map).
func pax0Map(m string) ([]Extent, error) {
	var frags []Extent
	if m == "" {
		return nil, nil // GNU.sparse.numblocks=0: all hole
	}
	nums := strings.Split(m, ",")
	if len(nums)%2 != 0 {
		return nil, fmt.Errorf("%w: sparse map: %d numbers, want pairs", ErrCorrupt, len(nums))
	}
	for i := 0; i < len(nums); i += 2 {
		off, err1 := strconv.ParseInt(nums[i], 10, 64)
		length, err2 := strconv.ParseInt(nums[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%w: sparse map: bad number in fragment %d", ErrCorrupt, i/2)
		}
		frags = append(frags, Extent{Offset: off, Length: length})
	}
	return frags, nil
}

// pax1Map parses the map that opens a PAX 1.0 sparse entry's data: decimal
// numbers, each ending in a newline, the count of fragments and then an
// offset and a length for each, padded to a 512-byte block.
func pax1Map(b []byte) ([]Extent, error) {
	if len(b)%blockSize != 0 {
		return nil, fmt.Errorf("%w: sparse map of %d bytes, not whole blocks", ErrCorrupt, len(b))
	}
	next := func() (int64, bool) {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return 0, false
		}
		v, err := strconv.ParseInt(string(b[:i]), 10, 64)
		b = b[i+1:]
		return v, err == nil
	}
	n, ok := next()
	if !ok || n < 0 || n > int64(len(b)/4) { // each fragment takes at least "0\n0\n"
		return nil, fmt.Errorf("%w: sparse map: bad fragment count", ErrCorrupt)
	}
	frags := make([]Extent, 0, n)
	for i := range n {
		off, ok1 := next()
		length, ok2 := next()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: sparse map: fragment %d of %d missing or bad", ErrCorrupt, i, n)
		}
		frags = append(frags, Extent{Offset: off, Length: length})
	}
	return frags, nil
}

// tarNumeric parses a tar header's numeric field, octal or base-256, as
// archive/tar does; negative values are refused.
func tarNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, false // negative
		}
		var x uint64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if x>>55 != 0 {
				return 0, false // would overflow int64
			}
			x = x<<8 | uint64(c)
		}
		return int64(x), true
	}
	b = bytes.Trim(b, " \x00")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return 0, true
	}
	x, err := strconv.ParseUint(string(b), 8, 63)
	return int64(x), err == nil
}

// headerName returns, as best it can, the name of the entry whose header
// blocks buf holds, for an error message; "" if it cannot tell.
func headerName(buf []byte) (name string) {
	for pos := 0; len(buf)-pos >= blockSize; {
		blk := buf[pos : pos+blockSize]
		if !checksumOK(blk) {
			return name
		}
		size, ok := tarNumeric(blk[hdrSize : hdrSize+12])
		data := buf[pos+blockSize:]
		if !ok || size > int64(len(data)) {
			size = int64(len(data))
		}
		data = data[:size]
		switch blk[hdrTypeflag] {
		case tar.TypeXHeader:
			for _, k := range []string{"path", "GNU.sparse.name"} {
				if v := paxRecord(data, k); v != "" {
					name = v
				}
			}
		case tar.TypeGNULongName:
			if name == "" {
				name = cString(data)
			}
		case tar.TypeGNULongLink:
		default:
			if name == "" {
				name = cString(blk[hdrName : hdrName+100])
				if string(blk[hdrMagic:hdrMagic+6]) == "ustar\x00" {
					if p := cString(blk[hdrPrefix : hdrPrefix+155]); p != "" {
						name = p + "/" + name
					}
				}
			}
			return name
		}
		pos += blockSize + int(size+blockSize-1)&^(blockSize-1)
	}
	return name
}

// checksumOK reports whether a header block's checksum field matches its
// bytes, summed unsigned or (as some old tars did) signed.
func checksumOK(blk []byte) bool {
	want, ok := tarNumeric(blk[hdrChksum : hdrChksum+8])
	if !ok {
		return false
	}
	var u, s int64
	for i, c := range blk {
		if i >= hdrChksum && i < hdrChksum+8 {
			c = ' '
		}
		u += int64(c)
		s += int64(int8(c))
	}
	return want == u || want == s
}

// paxRecord returns the value of key among PAX records ("LEN key=value\n"
// each), or "".
func paxRecord(data []byte, key string) string {
	var v string
	for len(data) > 0 {
		sp := bytes.IndexByte(data, ' ')
		if sp <= 0 {
			break
		}
		n, err := strconv.Atoi(string(data[:sp]))
		if err != nil || n <= sp+1 || n > len(data) || data[n-1] != '\n' {
			break
		}
		if k, val, ok := bytes.Cut(data[sp+1:n-1], []byte("=")); ok && string(k) == key {
			v = string(val)
		}
		data = data[n:]
	}
	return v
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
