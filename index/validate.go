package index

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// maxWindowLen is the most history a deflate back-reference can reach.
const maxWindowLen = 32 << 10

// Validate checks that the index keeps every promise its types make, so
// that code reading it (the union tree, frame lookups, the cache) may trust
// paths, sizes and offsets without checking them again:
//
//   - Format is known; Layer is empty or a valid digest; sizes are not negative.
//   - Frames are sorted and contiguous from 0 to TarSize (none when TarSize
//     is 0), each non-empty and at most MaxFrameSize, inside the blob, with
//     a SHA-256 Digest. A tar frame is its own compressed range; only gzip
//     frames have Bits (≤ 7) and a Window (≤ 32 KiB), or instead of a
//     Window a PrevWindow (≤ 32 KiB, and no longer than the frame before;
//     never on the first frame).
//   - Every entry has a known Type and a clean relative path (path.Clean
//     form, not ".", no ".." element, no NUL, no element past NameMax); a
//     symlink's target is at most SymlinkMax bytes; Mode has only the 07777
//     bits; only regular files have a Size or a Sparse map; a sparse
//     map's fragments are non-empty, sorted, not overlapping and inside
//     Size; content lies inside the tar stream (0 ≤ Offset,
//     Offset+StoredSize ≤ TarSize); a hard link's Linkname is
//     a clean relative path; link names hold no NUL; Xattrs are sorted by
//     name, unique, with non-empty names and no NUL in them.
//
// Every error wraps ErrCorrupt and names the frame or entry and the field.
func (x *Index) Validate() error {
	switch x.Format {
	case FormatTar, FormatGzip, FormatZstd:
	default:
		return fmt.Errorf("%w: Format %d unknown", ErrCorrupt, x.Format)
	}
	if x.Layer != "" {
		if err := checkDigest(x.Layer); err != "" {
			return fmt.Errorf("%w: Layer %q: %s", ErrCorrupt, x.Layer, err)
		}
	}
	if x.BlobSize < 0 || x.TarSize < 0 {
		return fmt.Errorf("%w: BlobSize %d or TarSize %d negative", ErrCorrupt, x.BlobSize, x.TarSize)
	}
	if err := x.validateFrames(); err != nil {
		return err
	}
	if msg := x.validateWindows(); msg != "" {
		return fmt.Errorf("%w: %s", ErrCorrupt, msg)
	}
	for i := range x.Entries {
		if msg := x.checkEntry(&x.Entries[i]); msg != "" {
			return fmt.Errorf("%w: entry %d %s: %s", ErrCorrupt, i, shortQuote(x.Entries[i].Path), msg)
		}
	}
	return nil
}

func (x *Index) validateFrames() error {
	var end int64 // where the next frame must start
	for i := range x.Frames {
		if msg := x.checkFrame(&x.Frames[i], end); msg != "" {
			return fmt.Errorf("%w: frame %d: %s", ErrCorrupt, i, msg)
		}
		if pw := int64(x.Frames[i].PrevWindow); pw > 0 && (i == 0 || pw > x.Frames[i-1].Size) {
			return fmt.Errorf("%w: frame %d: PrevWindow %d, but the frame before holds %d bytes", ErrCorrupt, i, pw, x.frameSize(i-1))
		}
		end += x.Frames[i].Size
	}
	if end != x.TarSize {
		return fmt.Errorf("%w: %d frames cover [0, %d), want [0, TarSize %d)", ErrCorrupt, len(x.Frames), end, x.TarSize)
	}
	return nil
}

// frameSize returns frame i's Size, 0 when there is no such frame.
func (x *Index) frameSize(i int) int64 {
	if i < 0 || i >= len(x.Frames) {
		return 0
	}
	return x.Frames[i].Size
}

// checkFrame returns what is wrong with f, which must start at off, or "".
func (x *Index) checkFrame(f *Frame, off int64) string {
	switch {
	case f.Offset != off:
		return fmt.Sprintf("Offset %d, want %d (frames must be sorted and contiguous from 0)", f.Offset, off)
	case f.Size <= 0:
		return fmt.Sprintf("Size %d, want > 0", f.Size)
	case f.Size > MaxFrameSize:
		return fmt.Sprintf("Size %d above MaxFrameSize %d", f.Size, MaxFrameSize)
	case f.Size > x.TarSize-f.Offset:
		return fmt.Sprintf("Offset+Size %d+%d past TarSize %d", f.Offset, f.Size, x.TarSize)
	case f.CompressedOffset < 0:
		return fmt.Sprintf("CompressedOffset %d negative", f.CompressedOffset)
	case f.CompressedSize <= 0:
		return fmt.Sprintf("CompressedSize %d, want > 0", f.CompressedSize)
	case f.CompressedSize > x.BlobSize-f.CompressedOffset:
		return fmt.Sprintf("CompressedOffset+CompressedSize %d+%d past BlobSize %d", f.CompressedOffset, f.CompressedSize, x.BlobSize)
	case x.Format == FormatTar && (f.CompressedOffset != f.Offset || f.CompressedSize != f.Size):
		return fmt.Sprintf("compressed range [%d,+%d) differs from the uncompressed [%d,+%d) in a tar layer",
			f.CompressedOffset, f.CompressedSize, f.Offset, f.Size)
	case f.Bits > 7:
		return fmt.Sprintf("Bits %d, want ≤ 7", f.Bits)
	case len(f.Window) > maxWindowLen:
		return fmt.Sprintf("Window of %d bytes, want ≤ %d", len(f.Window), maxWindowLen)
	case x.Format != FormatGzip && (f.Bits != 0 || len(f.Window) != 0 || f.PrevWindow != 0):
		return fmt.Sprintf("Bits %d and a %d-byte Window in a %s layer (gzip only)", f.Bits, len(f.Window)+int(f.PrevWindow), x.Format)
	case f.PrevWindow > maxWindowLen:
		return fmt.Sprintf("PrevWindow %d, want ≤ %d", f.PrevWindow, maxWindowLen)
	case f.PrevWindow > 0 && len(f.Window) > 0:
		return fmt.Sprintf("a %d-byte Window and PrevWindow %d", len(f.Window), f.PrevWindow)
	}
	if !isSHA256(f.Digest) {
		return fmt.Sprintf("Digest %q is not a sha256 digest", shortString(string(f.Digest)))
	}
	return ""
}

// checkEntry returns what is wrong with e, or "".
func (x *Index) checkEntry(e *Entry) string {
	if e.Type < TypeReg || e.Type > TypeFIFO {
		return fmt.Sprintf("Type %d unknown", e.Type)
	}
	if msg := checkRelPath(e.Path); msg != "" {
		return "Path " + msg
	}
	if msg := checkNameLengths(e.Path); msg != "" {
		return "Path has a " + msg
	}
	if e.Type == TypeSymlink && len(e.Linkname) > SymlinkMax {
		return fmt.Sprintf("Linkname of %d bytes, want ≤ %d", len(e.Linkname), SymlinkMax)
	}
	if e.Mode&^0o7777 != 0 {
		return fmt.Sprintf("Mode %#o has bits outside 07777", e.Mode)
	}
	switch {
	case e.Size < 0:
		return fmt.Sprintf("Size %d negative", e.Size)
	case e.Size != 0 && e.Type != TypeReg:
		return fmt.Sprintf("Size %d for a %s, want 0", e.Size, e.Type)
	case e.Sparse != nil && e.Type != TypeReg:
		return fmt.Sprintf("Sparse map for a %s", e.Type)
	case e.Offset < 0:
		return fmt.Sprintf("Offset %d negative", e.Offset)
	}
	if msg := checkSparse(e); msg != "" {
		return msg
	}
	// After checkSparse, StoredSize cannot overflow: it is at most Size.
	if stored := e.StoredSize(); e.Offset > x.TarSize || stored > x.TarSize-e.Offset {
		if e.Sparse != nil {
			return fmt.Sprintf("Offset+StoredSize %d+%d past TarSize %d", e.Offset, stored, x.TarSize)
		}
		return fmt.Sprintf("Offset+Size %d+%d past TarSize %d", e.Offset, stored, x.TarSize)
	}
	if e.Type == TypeHardlink {
		if msg := checkRelPath(e.Linkname); msg != "" {
			return fmt.Sprintf("Linkname %s %s", shortQuote(e.Linkname), msg)
		}
	} else if strings.IndexByte(e.Linkname, 0) >= 0 {
		return "Linkname holds a NUL byte"
	}
	for j, a := range e.Xattrs {
		switch {
		case a.Name == "":
			return fmt.Sprintf("Xattrs[%d] has an empty name", j)
		case strings.IndexByte(a.Name, 0) >= 0:
			return fmt.Sprintf("Xattrs[%d] name %q holds a NUL byte", j, shortString(a.Name))
		case j > 0 && e.Xattrs[j-1].Name >= a.Name:
			return fmt.Sprintf("Xattrs[%d] name %q after %q: want sorted and unique",
				j, shortString(a.Name), shortString(e.Xattrs[j-1].Name))
		}
	}
	return ""
}

// checkSparse returns what is wrong with e's sparse map, or "". Size must
// already be known not to be negative.
func checkSparse(e *Entry) string {
	var end int64 // where the previous fragment ended
	for j, f := range e.Sparse {
		switch {
		case f.Length <= 0:
			return fmt.Sprintf("Sparse[%d] length %d, want > 0", j, f.Length)
		case f.Offset < end:
			return fmt.Sprintf("Sparse[%d] at %d starts before the previous fragment's end %d (want sorted, not overlapping)",
				j, f.Offset, end)
		case f.Offset > e.Size || f.Length > e.Size-f.Offset:
			return fmt.Sprintf("Sparse[%d] [%d,+%d) past Size %d", j, f.Offset, f.Length, e.Size)
		}
		end = f.Offset + f.Length
	}
	return ""
}

// checkRelPath returns what keeps p from being a clean path relative to a
// root that it cannot leave, or "". Such a path equals path.Clean(p), is
// neither "." nor absolute, and has no ".." element: every element is
// non-empty and neither "." nor "..".
func checkRelPath(p string) string {
	if p == "" {
		return "is empty"
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "holds a NUL byte"
	}
	for rest := p; ; {
		elem, tail, more := strings.Cut(rest, "/")
		switch elem {
		case "":
			return "is absolute or not clean (empty element)"
		case ".":
			return "is not clean (\".\" element)"
		case "..":
			return "leaves the root (\"..\" element)"
		}
		if !more {
			return ""
		}
		rest = tail
	}
}

// isSHA256 reports whether d is "sha256:" and 64 lowercase hex digits, the
// form digest.Digest.Validate accepts for sha256.
func isSHA256(d digest.Digest) bool {
	hexPart, ok := strings.CutPrefix(string(d), sha256Prefix)
	if !ok || len(hexPart) != 64 {
		return false
	}
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkDigest returns what is wrong with d, or "".
func checkDigest(d digest.Digest) string {
	if strings.HasPrefix(string(d), sha256Prefix) {
		if !isSHA256(d) {
			return "not a valid sha256 digest"
		}
		return ""
	}
	if err := d.Validate(); err != nil {
		return err.Error()
	}
	return ""
}

// shortQuote quotes s for an error message, eliding the middle of a long one.
func shortQuote(s string) string {
	return fmt.Sprintf("%q", shortString(s))
}

func shortString(s string) string {
	const most = 96
	if len(s) <= most {
		return s
	}
	return s[:most/2] + "…" + s[len(s)-most/2:]
}
