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
