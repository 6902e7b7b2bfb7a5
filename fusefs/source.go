package fusefs

import (
	"context"
	"os"

	"github.com/lazyfs/lazyfs/index"
)

// FrameSource returns the uncompressed bytes of frame number i of a layer.
//
// Safe for concurrent use. The returned slice is shared and must not be
// modified. The bytes match layer.Frames[i].Digest; on mismatch the error
// wraps index.ErrCorrupt. If ctx ends first it returns ctx.Err() promptly,
// while the fetch itself may go on to fill the cache for other readers.
type FrameSource interface {
	Frame(ctx context.Context, layer *index.Index, i int) ([]byte, error)
}

// FileOpener is a FrameSource that wants to know when a lower regular file
// is opened for reading, with the bytes [off, off+n) its content takes in
// the layer's uncompressed stream, to start fetching them before they are
// read. OpenedFile must return at once.
type FileOpener interface {
	OpenedFile(layer *index.Index, off, n int64)
}

// RunFetcher is a FrameSource that fetches a run of frames with one
// request: a read that needs more than one frame tells it so before it
// asks for each (which then waits for that request). FetchRun must
// return at once.
type RunFetcher interface {
	FetchRun(layer *index.Index, first, end int)
}

// FileCopier is a FrameSource that can keep whole copies of lower regular
// files, which a read-only mount then hands to the kernel to read from
// (FUSE passthrough) and a writable one reads lower files from. The file
// is the n bytes at off of the layer's uncompressed stream.
type FileCopier interface {
	// OpenCopy returns the file's copy, as written or checked, or nil
	// when there is none.
	OpenCopy(layer *index.Index, off, n int64) *os.File
	// CopyFile makes the file's copy from the frames the cache holds,
	// fetching nothing and reading nothing ahead. It reports false when
	// one of them is not there, or the copy is there already; it stops
	// when ctx ends.
	CopyFile(ctx context.Context, layer *index.Index, off, n int64) (bool, error)
}
