package index

import (
	"bufio"
	"context"
	"fmt"
	"io"

	"github.com/lazyfs/lazyfs/index/internal/inflate"
)

// Block is the start of one deflate block of a gzip blob.
type Block struct {
	In   int64 // blob byte that holds the block's first bit
	Bits uint8 // low bits of that byte that belong to the block before (0..7)
	Out  int64 // where the block's output starts in the uncompressed stream
}

// GzipBlocks decompresses a whole gzip blob (checking it as Build does)
// and returns where each of its deflate blocks starts, in order. It is a
// measuring tool, not part of reading a layer: the benchmark uses it to
// say how many compressed bytes hold a set of uncompressed ones. Of
// block starts at the same output offset (an empty block or member) only
// the last is kept.
func GzipBlocks(ctx context.Context, r io.Reader) ([]Block, error) {
	var out []Block
	err := inflate.Scan(bufio.NewReaderSize(&ctxReader{ctx: ctx, r: r}, 1<<16), io.Discard, 0, func(cp inflate.Checkpoint) error {
		if n := len(out); n > 0 && out[n-1].Out == cp.Out {
			out[n-1] = Block{In: cp.In, Bits: cp.Bits, Out: cp.Out} // an empty block or member: the later start holds the bytes
			return nil
		}
		out = append(out, Block{In: cp.In, Bits: cp.Bits, Out: cp.Out})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deflate blocks: %w", err)
	}
	return out, nil
}
