package index

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// The encoding of an Index. All integers are varints (encoding/binary:
// "uvarint" unsigned, "svarint" zig-zag signed). MarshalBinary writes
// version 2; Decode reads versions 1 and 2.
//
// Version 2 keeps the windows out of the table of contents (toc): the
// encoding is toc || windows, so that a reader may fetch the toc alone
// (its length is in its first bytes: TOCLen) and each frame's window
// later, with a Range read of the windows section (WindowRange).
//
//	version 2 envelope (the toc):
//	  magic     8 bytes "LZFSIDX\x00"
//	  version   uvarint, 2
//	  rawLen    uvarint: length of the body once decompressed
//	  zLen      uvarint: length of the compressed body
//	  winLen    uvarint: length of the windows section after the toc
//	  zbody     zLen bytes: the body as one zstd frame
//	  crc       4 bytes: CRC-32C (Castagnoli), little endian, of every byte before it
//	windows:    winLen bytes: each frame's window, stored on its own (one
//	            zstd frame, or the raw bytes when that is not smaller), back
//	            to back in frame order; frames without a window have none.
//
//	version 2 body: as version 1's, except that a frame's window field is
//	    winRaw    uvarint: the window's length (0: no window, nothing follows)
//	    [winRaw>0] winLen uvarint: its stored length in the windows section,
//	              ≤ winRaw (= winRaw: stored raw; < winRaw: zstd); its offset
//	              there is the sum of the earlier frames' winLen
//	    [winRaw>0] winCRC 4 bytes: CRC-32C of the stored bytes, little endian
//
//	version 1 envelope:
//	  magic     8 bytes "LZFSIDX\x00"
//	  version   uvarint, 1
//	  rawLen    uvarint: length of the body once decompressed
//	  zLen      uvarint: length of the compressed body
//	  zbody     zLen bytes: the body as one zstd frame
//	  crc       4 bytes: CRC-32C (Castagnoli), little endian, of every byte before it
//
//	body:
//	  format    1 byte
//	  layer     uvarint length + digest text (may be empty)
//	  blobSize, tarSize           uvarint
//	  nFrames, nEntries, nXattrs  uvarint (nXattrs: over all entries)
//	  nStrBytes uvarint: bytes of every string the decoder builds (layer,
//	            frame digests as "sha256:<hex>", paths, link names, xattrs)
//	  nFrames × frame:
//	    size      uvarint; Offset is implied (0, then previous Offset+Size)
//	    [not tar] cOffDelta svarint: CompressedOffset − (previous
//	              CompressedOffset+CompressedSize, 0 for the first)
//	    [not tar] cSize uvarint (tar: CompressedOffset=Offset, CompressedSize=Size)
//	    bits      1 byte: the start bits (0–7); 0x80: the frame keeps no
//	              window (Frame.PrevWindow), and the window field below is
//	              then only the uvarint length to cut from the frame before
//	    window    uvarint length + bytes
//	    digest    32 bytes, raw SHA-256
//	  nEntries × entry:
//	    head      1 byte: Type in bits 0–2; flags 0x08 Linkname, 0x10 Xattrs,
//	              0x20 device numbers, 0x40 Offset on a non-regular entry (a
//	              regular file always has one) and Sparse on a regular file,
//	              0x80 nanoseconds
//	    shared    uvarint: leading bytes shared with the previous entry's path
//	    suffix    uvarint length + bytes: the rest of the path
//	    mode, uid, gid      uvarint
//	    mtime     svarint: Unix seconds − the previous entry's Unix seconds
//	    [0x80]    uvarint nanoseconds, 1 to 999999999
//	    [regular] size uvarint
//	    [regular or 0x40] offDelta svarint: Offset − (previous such entry's
//	              Offset+StoredSize, 0 for the first)
//	    [regular and 0x40] sparse map: uvarint count (may be 0) ×
//	              (gap uvarint: Offset − the previous fragment's end, 0 for
//	              the first; length uvarint ≥ 1)
//	    [0x08]    Linkname: uvarint length (≥ 1) + bytes
//	    [0x20]    devmajor, devminor uvarint
//	    [0x10]    uvarint count (≥ 1) × (name length + bytes, value length + bytes)
//
// The body must be consumed exactly, and the decoded index must pass Validate.
//
// Builds before sparse files were supported refused 0x40 on a regular file,
// so encodings without sparse files are unchanged, and one with a sparse
// file is refused by such a build as corrupt (not mis-read). Likewise a
// frame that keeps no window (bits 0x80) fails an older build's check of
// the start bits, so it rebuilds the index rather than mis-read it.
const (
	encMagic    = "LZFSIDX\x00"
	encVersion1 = 1
	// bitsPrevWindow marks a frame that keeps no window in its bits byte.
	bitsPrevWindow = 0x80
	encVersion2    = 2
	encVersion     = encVersion2 // what MarshalBinary writes

	// maxHeadLen is the most bytes an envelope's header (magic, version
	// and the lengths) takes: TOCLen needs no more.
	maxHeadLen = len(encMagic) + 4*binary.MaxVarintLen64

	// encMaxDecoded bounds the memory one Decode may use (decompressed
	// body, strings, entry, frame and xattr tables, windows), and
	// encMaxRatio bounds it relative to the encoding's length, so that a
	// small input cannot make Decode allocate much (a "zstd bomb").
	// Real indexes stay far below both: a layer of 100 000 files decodes to
	// ~50 times its encoding; 32 KiB windows of zeros to ~800 times.
	encMaxDecoded = 2 << 30
	encMaxRatio   = 4096
)

const (
	headTypeMask  = 0x07
	headLinkname  = 0x08
	headXattrs    = 0x10
	headDevice    = 0x20
	headOffset    = 0x40 // on a non-regular entry
	headSparse    = 0x40 // on a regular file
	headNanos     = 0x80
	sha256Prefix  = "sha256:"
	sha256TextLen = len(sha256Prefix) + 2*32

	// Smallest encodings, for checking counts against the bytes left.
	minFrameLen  = 1 + 1 + 1 + 32            // size, bits, window length, digest
	minEntryLen  = 1 + 1 + 1 + 1 + 1 + 1 + 1 // head, shared, suffix length, mode, uid, gid, mtime
	minXattrLen  = 1 + 1 + 1                 // name length, one name byte, value length
	minExtentLen = 1 + 1                     // gap, length

	sizeofEntry  = int64(unsafe.Sizeof(Entry{}))
	sizeofFrame  = int64(unsafe.Sizeof(Frame{}))
	sizeofXattr  = int64(unsafe.Sizeof(Xattr{}))
	sizeofExtent = int64(unsafe.Sizeof(Extent{}))
)

// ErrUnsupportedVersion is wrapped when an encoding comes from a newer (or
// unknown) version of the format than this build reads.
var ErrUnsupportedVersion = errors.New("index: unsupported encoding version")

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// The zstd coders are safe for concurrent EncodeAll/DecodeAll calls and
// costly to create, so each process makes one of each on first use.
var (
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderCRC(false), // the envelope's CRC covers the compressed bytes
			zstd.WithLowerEncoderMem(true),
		)
	})
	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(encMaxDecoded),
			zstd.WithDecodeAllCapLimit(true), // never past the rawLen we checked
		)
	})
)

// ErrWindowsNotLoaded is wrapped when an operation needs the windows of an
// index decoded from its toc alone (see WindowsLoaded).
var ErrWindowsNotLoaded = errors.New("index: windows not loaded")

// MarshalBinary encodes the index in the format Decode reads, version 2
// (see the layout above): the toc, then the windows. It refuses an index
// that does not pass Validate, one too large for Decode to accept, and
// one decoded from its toc alone (ErrWindowsNotLoaded: see WithWindows).
func (x *Index) MarshalBinary() ([]byte, error) {
	return x.marshal(encVersion2)
}

// marshal encodes x in the given version (1 is kept for tests: it is what
// earlier builds wrote).
func (x *Index) marshal(version int) ([]byte, error) {
	if err := x.Validate(); err != nil {
		return nil, err
	}
	if !x.WindowsLoaded() {
		return nil, fmt.Errorf("encode index of %s: %w", x.Layer, ErrWindowsNotLoaded)
	}
	if x.inMemory() {
		y, err := x.WithWindows(nil)
		if err != nil {
			return nil, fmt.Errorf("encode index of %s: %w", x.Layer, err)
		}
		return y.marshal(version)
	}
	enc, err := zstdEncoder()
	if err != nil {
		return nil, fmt.Errorf("index: encode: %w", err)
	}
	var wins []byte
	var refs []winRef
	if version == encVersion2 {
		wins, refs = x.packWindows(enc)
	}
	body, need, winNeed := x.appendBody(nil, version, refs)
	if need > encMaxDecoded {
		return nil, fmt.Errorf("index: encode: decoding would need %d bytes, more than the %d any encoding may use",
			need, int64(encMaxDecoded))
	}
	// An index whose frames repeat (a layer of zeros: equal windows, equal
	// digests) compresses past encMaxRatio. Padding the encoding up to
	// need/encMaxRatio bytes keeps it within the decoder's bomb rule, for
	// the toc alone and for toc and windows.
	tocNeed := need - winNeed
	minToc := max((tocNeed+encMaxRatio-1)/encMaxRatio, (need+encMaxRatio-1)/encMaxRatio-int64(len(wins)))
	out := seal(enc, version, body, int64(len(wins)), minToc)
	return append(out, wins...), nil
}

// packWindows compresses each frame's window on its own (kept raw when
// that is not smaller) into the windows section, and returns it with
// where each frame's window lies in it.
func (x *Index) packWindows(enc *zstd.Encoder) ([]byte, []winRef) {
	refs := make([]winRef, len(x.Frames))
	var out []byte
	for i := range x.Frames {
		w := x.Frames[i].Window
		if len(w) == 0 {
			continue
		}
		z := enc.EncodeAll(w, nil)
		if len(z) >= len(w) {
			z = w
		}
		refs[i] = winRef{off: int64(len(out)), n: uint32(len(z)), raw: uint32(len(w)), crc: crc32.Checksum(z, crc32c)}
		out = append(out, z...)
	}
	return out, refs
}

// UnmarshalBinary replaces *x with the index Decode(data) returns.
func (x *Index) UnmarshalBinary(data []byte) error {
	y, err := Decode(data)
	if err != nil {
		return err
	}
	*x = *y
	return nil
}

// decodeLimit is how many bytes Decode may allocate for an encoding of n bytes.
func decodeLimit(n int) int64 {
	return min(encMaxDecoded, encMaxRatio*int64(n))
}

// seal compresses body and wraps it in the envelope of version, at least
// minLen bytes long: a shorter encoding gets a zstd skippable frame of
// zeros after the compressed body, which decoders pass over. winLen is the
// length of the windows section that will follow (version 2).
func seal(enc *zstd.Encoder, version int, body []byte, winLen, minLen int64) []byte {
	z := enc.EncodeAll(body, make([]byte, 0, len(body)/4+64))
	out := wrapBody(version, body, z, winLen)
	if short := minLen - int64(len(out)); short > 0 {
		z = binary.LittleEndian.AppendUint32(z, 0x184D2A50) // skippable frame magic
		z = binary.LittleEndian.AppendUint32(z, uint32(short))
		z = append(z, make([]byte, short)...)
		out = wrapBody(version, body, z, winLen)
	}
	return out
}

// wrapBody wraps z, the compressed body, with magic, lengths and checksum.
func wrapBody(version int, body, z []byte, winLen int64) []byte {
	out := make([]byte, 0, maxHeadLen+len(z)+4)
	out = append(out, encMagic...)
	out = binary.AppendUvarint(out, uint64(version))
	out = binary.AppendUvarint(out, uint64(len(body)))
	out = binary.AppendUvarint(out, uint64(len(z)))
	if version >= encVersion2 {
		out = binary.AppendUvarint(out, uint64(winLen))
	}
	out = append(out, z...)
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, crc32c))
}

// appendBody appends the uncompressed body of a valid index to b, in the
// given version (refs: where each window lies, for version 2). It also
// returns how many bytes Decode will allocate for it, and how many of
// those are windows.
func (x *Index) appendBody(b []byte, version int, refs []winRef) ([]byte, int64, int64) {
	strBytes := int64(len(x.Layer)) + int64(len(x.Frames))*int64(sha256TextLen)
	var nXattrs, nExtents, winBytes, est int64
	for i := range x.Frames {
		winBytes += int64(len(x.Frames[i].Window))
	}
	for i := range x.Entries {
		e := &x.Entries[i]
		strBytes += int64(len(e.Path) + len(e.Linkname))
		for _, a := range e.Xattrs {
			strBytes += int64(len(a.Name) + len(a.Value))
		}
		nXattrs += int64(len(e.Xattrs))
		nExtents += int64(len(e.Sparse))
	}
	// Paths shrink with prefix sharing; the rest is a few varints each.
	est = 64 + int64(len(x.Layer)) + winBytes + int64(len(x.Frames))*48 + int64(len(x.Entries))*24 + strBytes/2 +
		nExtents*8
	if b == nil {
		b = make([]byte, 0, est)
	}
	start := len(b)

	b = append(b, byte(x.Format))
	b = appendString(b, string(x.Layer))
	b = binary.AppendUvarint(b, uint64(x.BlobSize))
	b = binary.AppendUvarint(b, uint64(x.TarSize))
	b = binary.AppendUvarint(b, uint64(len(x.Frames)))
	b = binary.AppendUvarint(b, uint64(len(x.Entries)))
	b = binary.AppendUvarint(b, uint64(nXattrs))
	b = binary.AppendUvarint(b, uint64(strBytes))

	var cEnd int64
	for i := range x.Frames {
		f := &x.Frames[i]
		b = binary.AppendUvarint(b, uint64(f.Size))
		if x.Format != FormatTar {
			b = binary.AppendVarint(b, f.CompressedOffset-cEnd)
			b = binary.AppendUvarint(b, uint64(f.CompressedSize))
			cEnd = f.CompressedOffset + f.CompressedSize
		}
		if f.PrevWindow > 0 {
			b = append(b, f.Bits|bitsPrevWindow)
			b = binary.AppendUvarint(b, uint64(f.PrevWindow))
		} else if b = append(b, f.Bits); version == encVersion1 {
			b = binary.AppendUvarint(b, uint64(len(f.Window)))
			b = append(b, f.Window...)
		} else {
			b = binary.AppendUvarint(b, uint64(len(f.Window)))
			if len(f.Window) > 0 {
				b = binary.AppendUvarint(b, uint64(refs[i].n))
				b = binary.LittleEndian.AppendUint32(b, refs[i].crc)
			}
		}
		b = appendSHA256(b, f.Digest)
	}

	var prevPath string
	var prevSec, contentEnd int64
	for i := range x.Entries {
		e := &x.Entries[i]
		head := byte(e.Type) & headTypeMask
		if e.Linkname != "" {
			head |= headLinkname
		}
		if len(e.Xattrs) > 0 {
			head |= headXattrs
		}
		if e.Devmajor != 0 || e.Devminor != 0 {
			head |= headDevice
		}
		hasOffset := e.Type == TypeReg
		if !hasOffset && e.Offset != 0 {
			head |= headOffset
			hasOffset = true
		}
		if e.Type == TypeReg && e.Sparse != nil {
			head |= headSparse
		}
		sec, nsec := e.ModTime.Unix(), e.ModTime.Nanosecond()
		if nsec != 0 {
			head |= headNanos
		}
		b = append(b, head)

		shared := commonPrefix(prevPath, e.Path)
		b = binary.AppendUvarint(b, uint64(shared))
		b = appendString(b, e.Path[shared:])
		prevPath = e.Path

		b = binary.AppendUvarint(b, uint64(e.Mode))
		b = binary.AppendUvarint(b, uint64(e.UID))
		b = binary.AppendUvarint(b, uint64(e.GID))
		b = binary.AppendVarint(b, sec-prevSec) // wraps consistently with the decoder
		prevSec = sec
		if nsec != 0 {
			b = binary.AppendUvarint(b, uint64(nsec))
		}
		if e.Type == TypeReg {
			b = binary.AppendUvarint(b, uint64(e.Size))
		}
		if hasOffset {
			b = binary.AppendVarint(b, e.Offset-contentEnd)
			contentEnd = e.Offset + e.StoredSize()
		}
		if e.Type == TypeReg && e.Sparse != nil {
			b = binary.AppendUvarint(b, uint64(len(e.Sparse)))
			var end int64
			for _, f := range e.Sparse {
				b = binary.AppendUvarint(b, uint64(f.Offset-end))
				b = binary.AppendUvarint(b, uint64(f.Length))
				end = f.Offset + f.Length
			}
		}
		if e.Linkname != "" {
			b = appendString(b, e.Linkname)
		}
		if head&headDevice != 0 {
			b = binary.AppendUvarint(b, uint64(e.Devmajor))
			b = binary.AppendUvarint(b, uint64(e.Devminor))
		}
		if len(e.Xattrs) > 0 {
			b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
			for _, a := range e.Xattrs {
				b = appendString(b, a.Name)
				b = appendString(b, a.Value)
			}
		}
	}
	need := int64(len(b)-start) + strBytes + winBytes +
		int64(len(x.Entries))*sizeofEntry + int64(len(x.Frames))*sizeofFrame + nXattrs*sizeofXattr +
		nExtents*sizeofExtent
	return b, need, winBytes
}

// appendSHA256 appends the 32 raw bytes of d, which Validate made sure is
// "sha256:" and 64 lowercase hex digits.
func appendSHA256(b []byte, d digest.Digest) []byte {
	h := string(d[len(sha256Prefix):])
	for i := 0; i+1 < len(h); i += 2 {
		b = append(b, unhex(h[i])<<4|unhex(h[i+1]))
	}
	return b
}

func unhex(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// header is what an envelope's first bytes say.
type header struct {
	version       uint64
	rawLen, zLen  uint64
	winLen        uint64 // version 2: the windows section's length
	headLen       int    // bytes of magic, version and lengths
	tocLen, total int64  // the envelope's length; with the windows section
}

// parseHeader reads the header at the start of data. An unknown version
// wraps ErrUnsupportedVersion; everything else wrong wraps ErrCorrupt.
func parseHeader(data []byte) (header, error) {
	var h header
	if len(data) < len(encMagic) || string(data[:len(encMagic)]) != encMagic {
		return h, fmt.Errorf("%w: not an index encoding (bad magic)", ErrCorrupt)
	}
	d := decoder{buf: data, pos: len(encMagic)}
	h.version = d.uvarint("version")
	if d.msg != "" {
		return h, d.errorf("header")
	}
	if h.version != encVersion1 && h.version != encVersion2 {
		return h, fmt.Errorf("%w %d (this build reads %d and %d)", ErrUnsupportedVersion, h.version, encVersion1, encVersion2)
	}
	h.rawLen = d.uvarint("body length")
	h.zLen = d.uvarint("compressed body length")
	if h.version == encVersion2 {
		h.winLen = d.uvarint("windows length")
	}
	if d.msg != "" {
		return h, d.errorf("header")
	}
	if h.zLen > encMaxDecoded || h.winLen > encMaxDecoded {
		return h, fmt.Errorf("%w: header: lengths %d and %d too large", ErrCorrupt, h.zLen, h.winLen)
	}
	h.headLen = d.pos
	h.tocLen = int64(d.pos) + int64(h.zLen) + 4
	h.total = h.tocLen + int64(h.winLen)
	return h, nil
}

// TOCLen reads the first bytes of an encoding (at most 48 are needed; fewer
// will do when the lengths are short) and returns the length of its toc
// and of the windows section that follows it. A version 1 encoding has its
// windows inside: its toc is all of it, and windows is 0. Too few bytes
// wrap ErrCorrupt.
func TOCLen(head []byte) (toc, windows int64, err error) {
	h, err := parseHeader(head)
	if err != nil {
		return 0, 0, err
	}
	return h.tocLen, int64(h.winLen), nil
}

// TOCHeadLen is how many first bytes of an encoding TOCLen may need.
const TOCHeadLen = maxHeadLen

// Decode parses an encoding made by MarshalBinary and checks it with
// Validate. Version 2 may be given whole (toc and windows): then every
// window's checksum is checked, WindowsLoaded is true, and the index keeps
// data's windows section, unpacking a frame's window only when the frame
// is decoded (Frame.Window stays nil), so data must not change afterwards.
// Or it may be given as its toc alone (the first TOCLen bytes): then no
// Frame.Window is set, WindowsLoaded is false, and the windows are read
// with WindowRange and Windows. Version 1 is always whole.
//
// Every problem with data (truncation, a flipped bit, an impossible count
// or length, an index that breaks a rule) is reported by an error
// wrapping ErrCorrupt; an encoding of an unknown version by one wrapping
// ErrUnsupportedVersion. Decode never panics, and allocates in proportion
// to what the data holds: at most 4096 times the length of data, and never
// more than 2 GiB (MarshalBinary refuses to make an encoding that would
// need more).
//
// Entries and frames share a few allocations: paths and other strings
// point into one buffer, windows into another, each entry's Xattrs into one
// table. ModTime is in the Local time zone, as archive/tar returns it; no
// xattrs decode as nil Xattrs, no window as nil Window.
func Decode(data []byte) (*Index, error) {
	h, err := parseHeader(data)
	if err != nil {
		return nil, err
	}
	if h.version == encVersion1 && int64(len(data)) != h.tocLen && len(data) >= h.headLen+4 {
		return nil, fmt.Errorf("%w: compressed body length %d, but %d bytes follow", ErrCorrupt, h.zLen, len(data)-h.headLen-4)
	}
	if int64(len(data)) < h.tocLen {
		return nil, fmt.Errorf("%w: %d bytes, the header says %d (truncated)", ErrCorrupt, len(data), h.tocLen)
	}
	toc := data[:h.tocLen]
	sealed := toc[:len(toc)-4]
	if got, want := crc32.Checksum(sealed, crc32c), binary.LittleEndian.Uint32(toc[len(toc)-4:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x (truncated or damaged)", ErrCorrupt, got, want)
	}
	var wins []byte
	switch rest := int64(len(data)) - h.tocLen; {
	case rest == 0:
	case h.version == encVersion1:
		return nil, fmt.Errorf("%w: %d bytes after the encoding", ErrCorrupt, rest)
	case rest != int64(h.winLen):
		return nil, fmt.Errorf("%w: windows section of %d bytes, the header says %d (truncated?)", ErrCorrupt, rest, h.winLen)
	default:
		wins = data[h.tocLen:]
	}
	limit := decodeLimit(len(data))
	if h.rawLen > uint64(limit) {
		return nil, fmt.Errorf("%w: body length %d exceeds the %d bytes a %d-byte encoding may decode to",
			ErrCorrupt, h.rawLen, limit, len(data))
	}
	dec, err := zstdDecoder()
	if err != nil {
		return nil, fmt.Errorf("index: decode: %w", err)
	}
	body, err := dec.DecodeAll(sealed[h.headLen:], make([]byte, 0, h.rawLen))
	if err != nil {
		return nil, fmt.Errorf("%w: body: %w", ErrCorrupt, err)
	}
	if uint64(len(body)) != h.rawLen {
		return nil, fmt.Errorf("%w: body decompressed to %d bytes, want %d", ErrCorrupt, len(body), h.rawLen)
	}
	budget := limit - int64(h.rawLen)
	x, err := decodeBodyV(body, &budget, int(h.version), h.tocLen, int64(h.winLen))
	if err != nil {
		return nil, err
	}
	if x.win != nil {
		x.win.toc = digest.FromBytes(toc)
	}
	if wins != nil && x.win != nil {
		if x.win.raw > budget {
			return nil, fmt.Errorf("%w: windows: %d bytes exceed the decoding limit", ErrCorrupt, x.win.raw)
		}
		// Checked now, unpacked when their frames are decoded.
		if err := x.checkWindows(wins); err != nil {
			return nil, err
		}
		x.win.data = wins
	}
	return x, nil
}

// decodeBody parses an uncompressed version 1 body, allocating at most
// budget bytes beyond it, and validates the result.
func decodeBody(body []byte, budget int64) (*Index, error) {
	return decodeBodyV(body, &budget, encVersion1, 0, 0)
}

// decodeBodyV parses an uncompressed body of the given version, taking
// what it allocates beyond it from *budget, and validates the result.
// Windows and strings are copied out: the index keeps no reference to
// body. A version 2 body's windows are not loaded; tocLen and winLen are
// where its windows section is and how long.
func decodeBodyV(body []byte, pbudget *int64, version int, tocLen, winLen int64) (*Index, error) {
	budget := *pbudget
	defer func() { *pbudget = budget }()
	d := decoder{buf: body}
	x := &Index{Format: Format(d.byte("format"))}
	layerLen := d.uvarint("layer digest length")
	layerText := d.bytes(layerLen, "layer digest")
	x.BlobSize = d.int64("blob size")
	x.TarSize = d.int64("tar size")
	nFrames := d.uvarint("frame count")
	nEntries := d.uvarint("entry count")
	nXattrs := d.uvarint("xattr count")
	nStr := d.uvarint("string bytes")
	if d.msg != "" {
		return nil, d.errorf("header")
	}
	left := uint64(len(body) - d.pos)
	switch {
	case nFrames > left/minFrameLen:
		return nil, fmt.Errorf("%w: header: %d frames cannot fit in %d bytes", ErrCorrupt, nFrames, left)
	case nEntries > left/minEntryLen:
		return nil, fmt.Errorf("%w: header: %d entries cannot fit in %d bytes", ErrCorrupt, nEntries, left)
	case nXattrs > left/minXattrLen:
		return nil, fmt.Errorf("%w: header: %d xattrs cannot fit in %d bytes", ErrCorrupt, nXattrs, left)
	case nStr > uint64(budget):
		return nil, fmt.Errorf("%w: header: %d string bytes exceed the decoding limit", ErrCorrupt, nStr)
	}
	// All counts are now below len(body) ≤ encMaxDecoded, so none of this overflows.
	need := int64(nStr) + int64(nFrames)*sizeofFrame + int64(nEntries)*sizeofEntry + int64(nXattrs)*sizeofXattr
	if need > budget {
		return nil, fmt.Errorf("%w: header: decoding would need %d bytes, more than the %d allowed", ErrCorrupt, need, budget)
	}
	budget -= need
	d.strs.Grow(int(nStr))
	d.strLeft = int(nStr)
	x.Layer = digest.Digest(d.str(layerText, "layer digest"))

	if nFrames > 0 {
		x.Frames = make([]Frame, nFrames)
	}
	var winBytes int
	var off, cEnd, winOff int64
	var wt *windowTable // version 2, once a frame has a window
	for i := range x.Frames {
		f := &x.Frames[i]
		f.Offset = off
		f.Size = d.int64("size")
		if f.Size > x.TarSize-off {
			d.failf("size %d runs past tar size %d", f.Size, x.TarSize)
		}
		off += f.Size
		if x.Format == FormatTar {
			f.CompressedOffset, f.CompressedSize = f.Offset, f.Size
		} else {
			// cEnd stays in [0, BlobSize], so none of this overflows.
			delta := d.varint("compressed offset")
			f.CompressedSize = d.int64("compressed size")
			if d.msg == "" && (delta < -cEnd || delta > x.BlobSize-cEnd) {
				d.failf("compressed offset %d%+d outside the blob's %d bytes", cEnd, delta, x.BlobSize)
			}
			f.CompressedOffset = cEnd + delta
			if d.msg == "" && f.CompressedSize > x.BlobSize-f.CompressedOffset {
				d.failf("compressed size %d runs past the blob's %d bytes", f.CompressedSize, x.BlobSize)
			}
			cEnd = f.CompressedOffset + f.CompressedSize
		}
		f.Bits = d.byte("bits")
		wl := d.uvarint("window length")
		if f.Bits&bitsPrevWindow != 0 {
			// No window of its own: its length, cut from the frame before.
			f.Bits &^= bitsPrevWindow
			switch {
			case d.msg != "":
			case x.Format != FormatGzip:
				d.failf("a window in a %s layer (gzip only)", x.Format)
			case wl == 0 || wl > maxWindowLen:
				d.failf("window of %d bytes from the frame before, want 1 to %d", wl, maxWindowLen)
			default:
				f.PrevWindow = uint32(wl)
			}
		} else if version == encVersion1 {
			if w := d.bytes(wl, "window"); len(w) > 0 {
				f.Window = w // points into body until copied below
				winBytes += len(w)
			}
		} else if wl > 0 {
			if wt == nil {
				// One winRef per frame; nFrames is below len(body), and the
				// table is small beside the windows it saves.
				if int64(nFrames)*sizeofWinRef > budget {
					return nil, fmt.Errorf("%w: window table exceeds the decoding limit", ErrCorrupt)
				}
				budget -= int64(nFrames) * sizeofWinRef
				wt = &windowTable{base: tocLen, size: winLen, refs: make([]winRef, nFrames)}
			}
			n := d.uvarint("stored window length")
			crc := d.bytes(4, "window checksum")
			switch {
			case d.msg != "":
			case x.Format != FormatGzip:
				d.failf("a window in a %s layer (gzip only)", x.Format)
			case wl > maxWindowLen:
				d.failf("window of %d bytes, want ≤ %d", wl, maxWindowLen)
			case n == 0 || n > wl:
				d.failf("window stored in %d bytes, want 1 to its length %d", n, wl)
			case n > uint64(winLen-winOff):
				d.failf("window of %d stored bytes at %d runs past the %d-byte windows section", n, winOff, winLen)
			default:
				wt.refs[i] = winRef{off: winOff, n: uint32(n), raw: uint32(wl), crc: binary.LittleEndian.Uint32(crc)}
				winOff += int64(n)
				wt.raw += int64(wl)
			}
		}
		f.Digest = digest.Digest(d.sha256("digest"))
		if d.msg != "" {
			return nil, d.errorf("frame %d", i)
		}
	}
	if version == encVersion2 && winOff != winLen {
		return nil, fmt.Errorf("%w: windows take %d bytes, the header says %d", ErrCorrupt, winOff, winLen)
	}
	x.win = wt
	if winBytes > 0 {
		if int64(winBytes) > budget {
			return nil, fmt.Errorf("%w: windows: %d bytes exceed the decoding limit", ErrCorrupt, winBytes)
		}
		budget -= int64(winBytes)
		wins := make([]byte, 0, winBytes)
		for i := range x.Frames {
			if w := x.Frames[i].Window; w != nil {
				n := len(wins)
				wins = append(wins, w...)
				x.Frames[i].Window = wins[n:len(wins):len(wins)]
			}
		}
	}

	if nEntries > 0 {
		x.Entries = make([]Entry, nEntries)
	}
	var xattrs []Xattr
	if nXattrs > 0 {
		xattrs = make([]Xattr, 0, nXattrs)
	}
	var prevPath string
	var prevSec, contentEnd int64
	for i := range x.Entries {
		e := &x.Entries[i]
		head := d.byte("type")
		e.Type = Type(head & headTypeMask)

		shared := d.uvarint("shared path prefix")
		if shared > uint64(len(prevPath)) {
			d.failf("shares %d path bytes with a %d-byte path", shared, len(prevPath))
			shared = 0
		}
		suffLen := d.uvarint("path length")
		suffix := d.bytes(suffLen, "path")
		e.Path = d.str2(prevPath[:shared], suffix, "path")
		prevPath = e.Path

		e.Mode = d.uint32("mode")
		e.UID = d.uint32("uid")
		e.GID = d.uint32("gid")
		prevSec += d.varint("mtime")
		var nsec uint64
		if head&headNanos != 0 {
			if nsec = d.uvarint("mtime nanoseconds"); nsec == 0 || nsec >= 1e9 {
				d.failf("mtime nanoseconds %d not in [1, 999999999]", nsec)
			}
		}
		e.ModTime = time.Unix(prevSec, int64(nsec))

		hasOffset, sparse := e.Type == TypeReg, false
		if hasOffset {
			e.Size = d.int64("size")
			sparse = head&headSparse != 0
		} else if head&headOffset != 0 {
			hasOffset = true
		}
		if hasOffset {
			// contentEnd stays in [0, TarSize], so none of this overflows.
			delta := d.varint("offset")
			if d.msg == "" && (delta < -contentEnd || delta > x.TarSize-contentEnd) {
				d.failf("offset %d%+d outside the tar's %d bytes", contentEnd, delta, x.TarSize)
			}
			e.Offset = contentEnd + delta
			stored := e.Size
			if sparse {
				stored = d.sparse(e, &budget)
			}
			if d.msg == "" && stored > x.TarSize-e.Offset {
				if sparse {
					d.failf("%d stored bytes at offset %d run past the tar's %d bytes", stored, e.Offset, x.TarSize)
				} else {
					d.failf("size %d at offset %d runs past the tar's %d bytes", e.Size, e.Offset, x.TarSize)
				}
			}
			contentEnd = e.Offset + stored
		}
		if head&headLinkname != 0 {
			n := d.uvarint("link name length")
			if n == 0 {
				d.failf("empty link name with the link name flag")
			}
			e.Linkname = d.str(d.bytes(n, "link name"), "link name")
		}
		if head&headDevice != 0 {
			e.Devmajor = d.uint32("device major")
			e.Devminor = d.uint32("device minor")
		}
		if head&headXattrs != 0 {
			n := d.uvarint("xattr count")
			if n == 0 || n > uint64(cap(xattrs)-len(xattrs)) {
				d.failf("%d xattrs, but %d left of the header's %d", n, cap(xattrs)-len(xattrs), nXattrs)
				n = 0
			}
			start := len(xattrs)
			for range n {
				name := d.str(d.bytes(d.uvarint("xattr name length"), "xattr name"), "xattr name")
				value := d.str(d.bytes(d.uvarint("xattr value length"), "xattr value"), "xattr value")
				xattrs = append(xattrs, Xattr{Name: name, Value: value})
			}
			if n > 0 {
				e.Xattrs = xattrs[start:len(xattrs):len(xattrs)]
			}
		}
		if d.msg != "" {
			return nil, d.errorf("entry %d", i)
		}
	}
	switch {
	case d.pos != len(body):
		return nil, fmt.Errorf("%w: %d bytes left over after the last entry", ErrCorrupt, len(body)-d.pos)
	case len(xattrs) != int(nXattrs):
		return nil, fmt.Errorf("%w: %d xattrs, header says %d", ErrCorrupt, len(xattrs), nXattrs)
	case d.strLeft != 0:
		return nil, fmt.Errorf("%w: %d string bytes, header says %d", ErrCorrupt, int(nStr)-d.strLeft, nStr)
	}
	if err := x.Validate(); err != nil {
		return nil, err
	}
	return x, nil
}

// sparse reads e's sparse map, taking its table from *budget, and returns
// how many bytes of the stream the fragments hold (0 after a problem).
// Each fragment must lie inside e.Size after the previous one, so the sum
// cannot overflow.
func (d *decoder) sparse(e *Entry, budget *int64) int64 {
	n := d.uvarint("fragment count")
	if left := uint64(len(d.buf) - d.pos); n > left/minExtentLen {
		d.failf("%d sparse fragments cannot fit in %d bytes", n, left)
		return 0
	}
	if int64(n)*sizeofExtent > *budget {
		d.failf("%d sparse fragments exceed the decoding limit", n)
		return 0
	}
	*budget -= int64(n) * sizeofExtent
	e.Sparse = make([]Extent, n) // not nil even when empty: a file that is all hole
	var end, stored int64
	for j := range e.Sparse {
		gap := d.int64("fragment gap")
		length := d.int64("fragment length")
		if d.msg != "" {
			return 0
		}
		if gap > e.Size-end || length == 0 || length > e.Size-end-gap {
			d.failf("sparse fragment %d [%d%+d,+%d) not inside size %d", j, end, gap, length, e.Size)
			return 0
		}
		e.Sparse[j] = Extent{Offset: end + gap, Length: length}
		end += gap + length
		stored += length
	}
	return stored
}

// decoder reads varints and byte strings from buf. After the first
// problem it records a message, stops advancing and returns zero values,
// so callers check msg once per record rather than after every field.
type decoder struct {
	buf []byte
	pos int
	msg string // the first problem; "" while all is well

	// strs holds every string of the index, sized once from the header:
	// strings handed out point into its one buffer.
	strs    strings.Builder
	strLeft int // bytes strs may still take
}

func (d *decoder) fail(msg string) {
	if d.msg == "" {
		d.msg = msg
	}
	d.pos = len(d.buf)
}

func (d *decoder) failf(format string, args ...any) {
	if d.msg == "" {
		d.fail(fmt.Sprintf(format, args...))
	}
}

// errorf returns the recorded problem, wrapping ErrCorrupt and prefixed
// with where it was found.
func (d *decoder) errorf(where string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCorrupt, fmt.Sprintf(where, args...), d.msg)
}

func (d *decoder) byte(what string) byte {
	if d.pos >= len(d.buf) {
		d.failf("%s past end", what)
		return 0
	}
	b := d.buf[d.pos]
	d.pos++
	return b
}

func (d *decoder) uvarint(what string) uint64 {
	if d.pos < len(d.buf) {
		if b := d.buf[d.pos]; b < 0x80 {
			d.pos++
			return uint64(b)
		}
	}
	v, n := binary.Uvarint(d.buf[d.pos:])
	if n <= 0 {
		if n == 0 {
			d.failf("%s past end", what)
		} else {
			d.failf("%s overflows 64 bits", what)
		}
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) varint(what string) int64 {
	v, n := binary.Varint(d.buf[d.pos:])
	if n <= 0 {
		if n == 0 {
			d.failf("%s past end", what)
		} else {
			d.failf("%s overflows 64 bits", what)
		}
		return 0
	}
	d.pos += n
	return v
}

func (d *decoder) int64(what string) int64 {
	v := d.uvarint(what)
	if v > math.MaxInt64 {
		d.failf("%s %d too large", what, v)
		return 0
	}
	return int64(v)
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.failf("%s %d too large", what, v)
		return 0
	}
	return uint32(v)
}

// bytes returns the next n bytes (a view of buf), or nil if n is 0 or
// more than is left.
func (d *decoder) bytes(n uint64, what string) []byte {
	if n == 0 {
		return nil
	}
	if left := uint64(len(d.buf) - d.pos); n > left {
		d.failf("%s length %d past end (%d bytes left)", what, n, left)
		return nil
	}
	b := d.buf[d.pos : d.pos+int(n)]
	d.pos += int(n)
	return b
}

// str copies b into the string buffer and returns it as a string.
func (d *decoder) str(b []byte, what string) string {
	return d.str2("", b, what)
}

// str2 copies prefix+b into the string buffer and returns it as a string.
func (d *decoder) str2(prefix string, b []byte, what string) string {
	n := len(prefix) + len(b)
	if n == 0 {
		return ""
	}
	if n > d.strLeft {
		d.failf("%s of %d bytes overruns the header's string bytes", what, n)
		return ""
	}
	d.strLeft -= n
	start := d.strs.Len()
	d.strs.WriteString(prefix)
	d.strs.Write(b)
	// strs never grows past the capacity set in Grow, so earlier strings
	// stay where they are (and would stay valid even if it did grow).
	return d.strs.String()[start:]
}

// sha256 reads a raw 32-byte SHA-256 and returns its digest text.
func (d *decoder) sha256(what string) string {
	raw := d.bytes(32, what)
	if raw == nil {
		return ""
	}
	var text [sha256TextLen]byte
	copy(text[:], sha256Prefix)
	hex.Encode(text[len(sha256Prefix):], raw)
	return d.str(text[:], what)
}
