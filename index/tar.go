package index

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// ErrUnsupported is wrapped when a layer uses a tar feature the index cannot
// describe (sparse entries, whose bytes are not contiguous in the stream).
var ErrUnsupported = errors.New("index: unsupported layer content")

const xattrPrefix = "SCHILY.xattr."

// WalkTar reads a whole uncompressed tar stream and returns its entries in
// order together with the stream's total length, trailing padding included.
// Paths are cleaned so that none can leave the layer root ("../x" becomes
// "x"); the root directory's own entry is dropped.
func WalkTar(r io.Reader) ([]Entry, int64, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	var entries []Entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read tar entry %d at byte %d: %w", len(entries), cr.n, err)
		}
		e, keep, err := entryFromHeader(hdr, cr.n)
		if err != nil {
			return nil, 0, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		if keep {
			entries = append(entries, e)
		}
	}
	// The tar reader stops at the end-of-archive marker; the stream may
	// hold more padding, and frames must cover every byte of it.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, 0, fmt.Errorf("read tar padding: %w", err)
	}
	return entries, cr.n, nil
}

// cleanPath maps a tar name to a path relative to the layer root that cannot
// escape it; "" means the root itself.
func cleanPath(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func entryFromHeader(hdr *tar.Header, dataOffset int64) (Entry, bool, error) {
	if strings.IndexByte(hdr.Name, 0) >= 0 || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return Entry{}, false, fmt.Errorf("%w: NUL byte in name", ErrUnsupported)
	}
	p := cleanPath(hdr.Name)
	if p == "" {
		return Entry{}, false, nil
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
	case tar.TypeReg, tar.TypeCont: // the reader already maps the old TypeRegA
		e.Type = TypeReg
		e.Size = hdr.Size
		e.Offset = dataOffset
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type = TypeSymlink
		e.Linkname = hdr.Linkname
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
	case tar.TypeGNUSparse:
		return Entry{}, false, fmt.Errorf("%w: sparse entry", ErrUnsupported)
	default:
		return Entry{}, false, fmt.Errorf("%w: tar type %q", ErrUnsupported, hdr.Typeflag)
	}
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return Entry{}, false, fmt.Errorf("%w: sparse entry", ErrUnsupported)
		}
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
