package fusefs

import (
	"context"

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
