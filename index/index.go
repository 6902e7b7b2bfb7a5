package index

import (
	"errors"
	"io/fs"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrCorrupt is wrapped by every error that reports data that does not match
// what the index promised (a bad encoding, a frame whose digest differs).
var ErrCorrupt = errors.New("index: corrupt data")

// ErrNotSeekable is wrapped when a layer's compression cannot be entered in
// the middle (a single zstd frame): such a layer is fetched whole.
var ErrNotSeekable = errors.New("index: layer compression is not seekable")

// Format is how a layer blob is compressed, which decides how frames decode.
type Format uint8

const (
	FormatTar  Format = 1 // uncompressed tar: a frame is a plain byte range
	FormatGzip Format = 2 // gzip (one or more members) with checkpoints
	FormatZstd Format = 3 // zstd: not seekable; every frame's compressed range is the whole blob
)

func (f Format) String() string {
	switch f {
	case FormatTar:
		return "tar"
	case FormatGzip:
		return "gzip"
	case FormatZstd:
		return "zstd"
	}
	return "unknown"
}

// Type is the kind of a file table entry.
type Type uint8

const (
	TypeReg      Type = 1
	TypeDir      Type = 2
	TypeSymlink  Type = 3
	TypeHardlink Type = 4 // Linkname names an earlier entry of the same layer
	TypeChar     Type = 5
	TypeBlock    Type = 6
	TypeFIFO     Type = 7
)

func (t Type) String() string {
	switch t {
	case TypeReg:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeHardlink:
		return "hardlink"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	case TypeFIFO:
		return "fifo"
	}
	return "unknown"
}

// Xattr is one extended attribute of an entry.
type Xattr struct {
	Name  string
	Value string
}

// Entry is one tar entry of a layer. Whiteouts (".wh.NAME", ".wh..wh..opq")
// are kept as the regular files the layer has; the union applies them.
type Entry struct {
	Path     string // cleaned, relative to the layer root, never "" or starting with "/" or ".."
	Type     Type
	Mode     uint32 // permission bits plus setuid, setgid and sticky (07777)
	UID, GID uint32
	Size     int64     // bytes of content; 0 for everything but regular files
	ModTime  time.Time // nanosecond precision where the tar has it
	Linkname string    // symlink target as written, or the cleaned path a hard link refers to
	Devmajor uint32
	Devminor uint32
	Xattrs   []Xattr // sorted by name
	Offset   int64   // where the content starts in the uncompressed tar stream

	// Sparse is nil for an ordinary file, whose Size bytes lie contiguous
	// in the tar stream from Offset. A regular file from a GNU sparse tar
	// entry has a non-nil Sparse: its data fragments, in logical file
	// offsets, sorted, not overlapping, each non-empty, all inside Size.
	// Their bytes lie back to back in the stream from Offset (for the PAX
	// 1.0 form, after the map block that precedes them); the rest of the
	// file is holes that read as zeros. An empty, non-nil Sparse is a file
	// that is all hole. Pieces turns a read of the file into stream ranges.
	Sparse []Extent
}

// Extent is a fragment of a sparse file: Length bytes from Offset, in
// logical file offsets.
type Extent struct {
	Offset, Length int64
}

// FileMode returns the entry's mode in io/fs terms (type bits included).
func (e *Entry) FileMode() fs.FileMode {
	m := fs.FileMode(e.Mode & 0o777)
	if e.Mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if e.Mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if e.Mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch e.Type {
	case TypeDir:
		m |= fs.ModeDir
	case TypeSymlink:
		m |= fs.ModeSymlink
	case TypeChar:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case TypeBlock:
		m |= fs.ModeDevice
	case TypeFIFO:
		m |= fs.ModeNamedPipe
	}
	return m
}

// Frame is a range of the blob that decodes on its own into the uncompressed
// tar stream's bytes [Offset, Offset+Size), whose SHA-256 is Digest.
type Frame struct {
	CompressedOffset int64 // first blob byte to fetch
	CompressedSize   int64 // blob bytes to fetch, from CompressedOffset
	Offset           int64 // first uncompressed byte the frame yields
	Size             int64 // uncompressed bytes the frame yields
	Digest           digest.Digest

	// Gzip resume state: how many bits of the first fetched byte belong to
	// the previous deflate block, and the 32 KiB of output before Offset
	// that back-references may reach (empty at a member's start).
	Bits   uint8
	Window []byte

	// PrevWindow, when above 0, says the frame keeps no window of its
	// own: its window is the last PrevWindow bytes of the frame before,
	// decoded (WindowFrom), so it decodes only after that one. Such
	// frames start at deflate blocks between checkpoints (BuildOptions.
	// BlockSpan): a read fetches from the checkpoint before it up to the
	// block after it, not a whole span, and the index grows by a frame
	// record, not a window. Gzip only; never a layer's first frame.
	PrevWindow uint32
}

// Index describes one layer blob.
type Index struct {
	Layer  digest.Digest // the blob the index describes
	Format Format
	// BlobSize is the blob's size in bytes; TarSize the uncompressed stream's.
	BlobSize int64
	TarSize  int64
	Entries  []Entry // in tar order
	Frames   []Frame // sorted by Offset, contiguous, covering [0, TarSize)

	// win is where the windows are, for an index decoded from its
	// version 2 toc alone; nil when every Window is in memory.
	win *windowTable
}
