// Package index turns a container image layer of any supported format into
// one shape: a file table (every tar entry with its metadata and where its
// bytes start in the uncompressed tar stream) and a frame table (compressed
// byte ranges of the blob that each decompress on their own into a known,
// digest-checked range of that stream).
//
// The layer's format (uncompressed tar, gzip with checkpoints, zstd streamed
// whole) is decided here and nowhere else: callers ask an Index which frames
// cover a file range and how to decode a frame's compressed bytes.
//
// The package knows nothing of registries, caches or FUSE.
package index
