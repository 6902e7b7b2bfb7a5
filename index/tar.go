package index

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"slices"
	"strings"
)

// ErrUnsupported is wrapped when a layer uses a tar feature the index cannot
// describe (an entry type it does not know, a NUL byte in a name, a name no
// Linux file system can hold, a GNU sparse encoding other than the three
// archive/tar reads).
var ErrUnsupported = errors.New("index: unsupported layer content")

// Limits of Linux file names. No local file system holds a longer name, so
// docker and containerd fail to unpack such a layer (ENAMETOOLONG), and so
// would a copy-up of it to a container's upper directory; a FUSE mount
// cannot even list a directory with a name over 1024 bytes (the kernel
// fails the whole listing with EIO).
const (
	// NameMax is the longest element of a path (NAME_MAX). A whiteout's
	// ".wh." prefix does not count: it names a file of at most NameMax.
	NameMax = 255
	// SymlinkMax is the longest symlink target (PATH_MAX less the NUL).
	SymlinkMax = 4095
)

const xattrPrefix = "SCHILY.xattr."

// WalkTar reads a whole uncompressed tar stream and returns its entries in
// order together with the stream's total length, trailing padding included.
// Paths are cleaned so that none can leave the layer root ("../x" becomes
// "x"); the root directory's own entry is dropped.
//
// GNU sparse entries (the old GNU 'S' type, PAX 0.0, 0.1 and 1.0) become
// regular files with a Sparse map. archive/tar reads their maps but does
// not expose them, so WalkTar keeps the header blocks the tar reader
// consumes for each entry and reads the map from them again.
//
// A layer of more than DefaultMaxEntries entries is refused (ErrUnsupported).
func WalkTar(r io.Reader) ([]Entry, int64, error) {
	return walkTar(r, DefaultMaxEntries)
}

func walkTar(r io.Reader, maxEntries int) ([]Entry, int64, error) {
	hr := &headerRecorder{r: r}
	tr := tar.NewReader(hr)
	var entries []Entry
	var next int64            // where the next entry's header blocks start
	var prev string           // the name of the entry before, if it has content
	var prevAt, prevLen int64 // where its content starts, and how long it is
	for {
		hr.record(next)
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && prev != "" && hr.n < next {
			// The stream ended inside the content of the entry before
			// (a truncated layer, or a size that lies): name that entry.
			return nil, 0, fmt.Errorf("tar entry %d (%q): content of %d bytes from byte %d, but the stream ends at byte %d: %w",
				len(entries)-1, shortString(prev), prevLen, prevAt, hr.n, err)
		}
		if err != nil {
			name := ""
			if n := headerName(hr.buf); n != "" {
				name = fmt.Sprintf(" (%q)", shortString(n))
			}
			return nil, 0, fmt.Errorf("read tar entry %d%s at byte %d: %w", len(entries), name, hr.n, err)
		}
		e, keep, stored, err := entryFromHeader(hdr, hr.n, hr)
		if err != nil {
			return nil, 0, fmt.Errorf("tar entry %q: %w", shortString(hdr.Name), err)
		}
		if keep {
			if len(entries) == maxEntries {
				return nil, 0, fmt.Errorf("%w: more than %d entries (a tar bomb?): entry %q at byte %d",
					ErrUnsupported, maxEntries, shortString(hdr.Name), hr.n)
			}
			entries = append(entries, e)
		}
		prev, prevAt, prevLen = "", hr.n, stored
		if keep && stored > 0 {
			prev = hdr.Name
		}
		// The tar reader skips the content and its padding to the next
		// 512-byte block; a stream too short for it fails in Next.
		next = hr.n + stored
		if next < 0 || next > math.MaxInt64-blockSize {
			next = math.MaxInt64 // past any real stream: record nothing
		} else {
			next += -next & (blockSize - 1)
		}
	}
	hr.record(-1)
	// The tar reader stops at the end-of-archive marker; the stream may
	// hold more padding, and frames must cover every byte of it.
	if _, err := io.Copy(io.Discard, hr); err != nil {
		return nil, 0, fmt.Errorf("read tar padding: %w", err)
	}
	return entries, hr.n, nil
}

// checkNameLengths returns what makes the clean relative path p longer
// than Linux allows (an element past NameMax), or "".
func checkNameLengths(p string) string {
	for elem := range strings.SplitSeq(p, "/") {
		if n := len(strings.TrimPrefix(elem, whiteoutPrefix)); n > NameMax {
			return fmt.Sprintf("path element of %d bytes %q (at most %d)", n, shortString(elem), NameMax)
		}
	}
	return ""
}

// whiteoutPrefix starts the name of an OCI whiteout entry.
const whiteoutPrefix = ".wh."

// cleanPath maps a tar name to a path relative to the layer root that cannot
// escape it; "" means the root itself.
func cleanPath(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// entryFromHeader turns the header the tar reader returned, whose content
// starts at dataOffset, into an entry; keep is false for the root's own
// entry. stored is how many bytes of content follow in the stream (before
// the padding to a 512-byte block): what the tar reader skips to reach the
// next header. hr holds the header blocks the reader consumed for it.
func entryFromHeader(hdr *tar.Header, dataOffset int64, hr *headerRecorder) (e Entry, keep bool, stored int64, err error) {
	sparse, stored, err := sparseMap(hdr, hr)
	if err != nil {
		return Entry{}, false, 0, err
	}
	if sparse == nil {
		stored = hdr.Size
		if headerOnly(hdr.Typeflag) {
			stored = 0
		}
	}
	e, keep, err = entryFromPlainHeader(hdr, dataOffset)
	if err != nil || !keep {
		return Entry{}, false, stored, err
	}
	if sparse != nil {
		if e.Type != TypeReg {
			return Entry{}, false, 0, fmt.Errorf("%w: sparse %s", ErrUnsupported, e.Type)
		}
		e.Sparse = sparse
	}
	return e, true, stored, nil
}

// headerOnly reports whether the tar reader gives entries of type t no
// content, whatever their size field says.
func headerOnly(t byte) bool {
	switch t {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return true
	}
	return false
}

func entryFromPlainHeader(hdr *tar.Header, dataOffset int64) (Entry, bool, error) {
	if strings.IndexByte(hdr.Name, 0) >= 0 || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return Entry{}, false, fmt.Errorf("%w: NUL byte in name", ErrUnsupported)
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		// Defaults for later entries (git archive writes a commit ID in
		// one); archive/tar has already applied them.
		return Entry{}, false, nil
	}
	p := cleanPath(hdr.Name)
	if p == "" {
		return Entry{}, false, nil
	}
	if msg := checkNameLengths(p); msg != "" {
		return Entry{}, false, fmt.Errorf("%w: %s", ErrUnsupported, msg)
	}
	e := Entry{
		Path:    p,
		Mode:    uint32(hdr.Mode) & 0o7777,
		UID:     uint32(hdr.Uid),
		GID:     uint32(hdr.Gid),
		ModTime: hdr.ModTime,
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<32-1 || hdr.Gid > 1<<32-1 {
		return Entry{}, false, fmt.Errorf("%w: owner %d:%d out of range", ErrUnsupported, hdr.Uid, hdr.Gid)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse: // the reader already maps the old TypeRegA
		e.Type = TypeReg
		e.Size = hdr.Size
		e.Offset = dataOffset
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type = TypeSymlink
		e.Linkname = hdr.Linkname
		if len(e.Linkname) > SymlinkMax {
			return Entry{}, false, fmt.Errorf("%w: symlink target of %d bytes (at most %d)", ErrUnsupported, len(e.Linkname), SymlinkMax)
		}
	case tar.TypeLink:
		e.Type = TypeHardlink
		e.Linkname = cleanPath(hdr.Linkname)
		if e.Linkname == "" {
			return Entry{}, false, fmt.Errorf("%w: hard link to the root", ErrUnsupported)
		}
	case tar.TypeChar, tar.TypeBlock:
		e.Type = TypeChar
		if hdr.Typeflag == tar.TypeBlock {
			e.Type = TypeBlock
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor > 1<<32-1 {
			return Entry{}, false, fmt.Errorf("%w: device %d,%d out of range", ErrUnsupported, hdr.Devmajor, hdr.Devminor)
		}
		e.Devmajor, e.Devminor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		e.Type = TypeFIFO
	default:
		return Entry{}, false, fmt.Errorf("%w: tar type %q", ErrUnsupported, hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPrefix); ok && name != "" {
			e.Xattrs = append(e.Xattrs, Xattr{Name: name, Value: v})
		}
	}
	slices.SortFunc(e.Xattrs, func(a, b Xattr) int { return strings.Compare(a.Name, b.Name) })
	return e, true, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
