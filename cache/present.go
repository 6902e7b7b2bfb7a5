package cache

import (
	"os"

	"github.com/lazyfs/lazyfs/index"
)

// Presence is how much of a set of frames a cache root holds.
type Presence struct {
	Frames, Total     int   // frames on disk; frames asked about
	Bytes, TotalBytes int64 // their uncompressed sizes (index.Frame.Size)
}

// FramesPresent reports which of frames (a layer index's, say) are on disk
// under the cache root dir: a regular file under the frame's digest with
// the frame's size. It only stats (no read, no verification: a file found
// here may still be refused when read), writes nothing and needs no Store,
// so it suits listings of a root other processes use. A malformed digest
// is never present. A frame listed twice counts twice.
func FramesPresent(dir string, frames []index.Frame) Presence {
	p := Presence{Total: len(frames)}
	for _, f := range frames {
		p.TotalBytes += f.Size
		h, err := hexOf(f.Digest)
		if err != nil {
			continue
		}
		if fi, err := os.Lstat(framePath(dir, h)); err == nil && fi.Mode().IsRegular() && fi.Size() == f.Size {
			p.Frames++
			p.Bytes += f.Size
		}
	}
	return p
}
