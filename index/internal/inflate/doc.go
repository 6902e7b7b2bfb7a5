// Package inflate decodes gzip streams (RFC 1952 members holding RFC 1951
// deflate data) in a way that lets a reader enter the stream in the middle.
//
// lazyfs serves files out of unmodified gzip layer blobs, so it must be able
// to decompress a small range of a blob without decompressing everything
// before it. Deflate allows that only at the start of a block, and only with
// the 32 KiB of output that came before it (back-references reach that far).
// The standard library's compress/flate cannot say where blocks start, and
// priming it with a dictionary behind a bit-shifting reader is wrong: stored
// blocks pad to a byte boundary of the real stream, not of the shifted one.
// So this package has its own small inflater.
//
// A Checkpoint is a block start: the compressed byte that holds the block's
// first bit, how many low bits of that byte belong to the block before, the
// offset of the block's output in the uncompressed stream, and the window of
// output before it. Scan decompresses a whole stream once, verifying CRC-32
// and ISIZE of every member, and reports checkpoints about a chosen spacing
// apart. NewReader resumes at a checkpoint and reads on from there, across
// member boundaries; it needs no compressed bytes past those that encode the
// output it returns, so a caller can fetch just one checkpoint's span.
package inflate
