// Package fusefs serves the merged file tree of an image's layers as a FUSE
// file system (go-fuse v2). It builds the union from the layers' file tables
// (OCI whiteouts and opaque directories applied), answers lookups, getattr,
// readdir, readlink and xattrs from memory, and reads file bytes through a
// FrameSource, which it declares and others implement.
//
// It knows nothing of registries or containers: it gets layer indexes and a
// source of verified frames.
//
// # Copy-on-write
//
// With Config.UpperDir the mount is writable (lazyfs' --cow=fuse). It shows
// the lower layers merged with an upper directory the way kernel overlayfs
// does with redirect_dir=off, index=off, metacopy=off and xino=off, and
// keeps the upper directory in overlayfs' on-disk format, so the same
// directory also works as the upperdir of a kernel overlay mount over the
// same layers:
//
//   - an upper entry hides what the lower layers have at its name;
//   - a whiteout (a 0/0 character device) hides the lower entry and shows
//     nothing;
//   - an upper directory marked opaque (xattr trusted.overlay.opaque=y)
//     hides every lower entry below it; one that is not opaque, over a
//     lower directory, is merged with it; a lower directory with no upper
//     one is shown from the lower tree alone;
//   - the first change to a lower entry copies it up (content through the
//     FrameSource, owner, mode, times and xattrs kept), after its parent
//     directories, whose times stay as they were;
//   - removing a name a lower layer has leaves a whiteout; a directory made
//     where a whiteout was is opaque, and so is an upper directory renamed
//     into a merged one.
//
// Where overlayfs departs from POSIX this mount does too, and the package
// internal/fsops pins both down: renaming a directory that has a lower part
// fails with EXDEV (no redirect_dir); copying up one name of a lower file
// with several hard links breaks the link (no index); mknod of a 0/0
// character device fails with EPERM.
//
// Every upper entry is made in the work directory (Config.WorkDir) and
// renamed into place, a copied-up file after fsync, so a crash leaves no
// half-made entry under its final name. Upper files are read and written
// through descriptors of their own (not FUSE passthrough, see upperFile); a
// descriptor opened read-only before a copy-up reads the copy afterwards.
package fusefs
