// Package cache is lazyfs's frame store: the verified, content-addressed
// bytes of index frames, kept on disk under one root shared by every mount,
// container and image on the machine, with a bounded in-memory tier
// (ristretto) in front.
//
// It owns:
//   - verification: a frame's SHA-256 is checked against its digest before
//     it is stored or handed to anyone, whether it came from a load function
//     or from disk; a whole copy of a file (copies.go) is hashed as it is
//     written, and again only if its file changed since;
//   - single-flight: concurrent readers of one frame share one load, which
//     runs detached from any one reader's context under its own deadline;
//   - the on-disk layout (frames/ab/abcdef…, index/sha256/…), atomic writes
//     (an unnamed O_TMPFILE file linked into place, so a killed process
//     leaves nothing behind; a named temp file and rename where that cannot
//     be used), and least recently used eviction under a byte limit and
//     when the disk is full;
//   - small immutable index blobs keyed by digest (PutIndex, GetIndex);
//   - what a root holds and how to shrink it (Usage, Store.Prune).
//
// The memory tier is an accelerator only; the disk is the record. Several
// processes may share a root: renames are atomic, a file another process
// removed is a miss, and each process's byte totals are its own estimate.
package cache
