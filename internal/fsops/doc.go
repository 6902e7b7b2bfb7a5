// Package fsops is a differential test harness for copy-on-write file
// system semantics. It applies the same seeded random sequence of file
// operations to several trees — a lazyfs copy-on-write mount, a kernel
// overlayfs mount of the same layers, a plain directory — and reports the
// first step where their outcomes differ, then compares the final trees.
// Only tests import it; like testutil, its helpers take a testing.TB and
// clean up through t.Cleanup.
//
//	merged, _ := fsops.Overlay(t, fsops.LayerTars(t), "")  // the reference
//	ours := mountLazyfsCoW(t, …)                          // the same layers
//	fsops.Run(t, seed, 3000, merged, ours)
//
// # Pieces
//
//   - Op is one operation (create with O_EXCL or O_TRUNC, write at an
//     offset, append, truncate, chmod, lchown, utimens, l{set,remove}xattr,
//     mkdir, mknod, symlink, link, unlink, rmdir, renameat2 with
//     RENAME_NOREPLACE and RENAME_EXCHANGE) or probe (read content, lstat,
//     readlink, listxattr, getxattr, readdir); it prints as a call.
//   - Apply performs one Op on a root and returns a Result: the errno and,
//     for probes, what was seen. Every path is resolved with
//     openat2(RESOLVE_IN_ROOT), so nothing outside the root is touched
//     whatever symlinks a layer holds, and device nodes and fifos are
//     never opened.
//   - Generator (and Generate) produce operations from a seed (math/rand/v2
//     PCG) over a model of the namespace that follows what succeeded.
//   - Check and Run apply each operation to every root in turn and stop at
//     the first step whose Results differ, printing seed, step, operation,
//     each root's Result and the operations before it; then they compare
//     the trees with testutil.Diff.
//   - Overlay, MountOverlay and UnpackLower build the kernel overlayfs
//     reference from image layers (whiteouts as 0/0 character devices,
//     opaque directories as trusted.overlay.opaque=y). Layers is a small
//     fixture with lower-layer hard links, whiteouts and an opaque
//     directory.
//
// # What is compared
//
// Per step: the errno; for probes the value: content size and sha256;
// type, permission bits with setuid/setgid/sticky, uid, gid, and for
// non-directories size, nlink and device numbers; mtime (of directories
// too); symlink targets; user.* xattrs; sorted directory names. At the
// end, testutil.Diff of the whole trees (type, mode, owner, size and
// content of files, mtime, symlink target, device numbers, xattrs of
// every namespace, hard-link groups).
//
// Not compared: atime; ctime (it cannot be set and copy-up changes it);
// a directory's size (file-system specific) and link count (overlayfs
// reports 1 for a merged directory); st_dev and inode numbers (but which
// names share an inode is). Mtimes set by the clock while the operations
// run differ between roots by the time between their turns, so an mtime at
// or after Config.Recent (default: 2 s before Check starts) only has to be
// recent on both sides; older mtimes (from the layers or an explicit
// utimens, which the generator keeps before 2021) must be equal to the
// nanosecond.
//
// # The reference: kernel overlayfs
//
// MountOverlay uses OverlayOptions: redirect_dir=off, index=off,
// metacopy=off, xino=off. The module defaults on the reference machine
// (kernel 6.18, /sys/module/overlay/parameters) are the same: redirect_dir
// N, index N, metacopy N, xino_auto N. With these, overlayfs differs from a
// POSIX file system (a plain directory) in ways a lazyfs copy-on-write
// mount must reproduce for Run to pass; measured with this harness over 40
// seeds of 3000 operations:
//
//   - rename(2) of a directory that exists in a lower layer (or is merged
//     with one) fails with EXDEV, also as either side of RENAME_EXCHANGE and
//     where POSIX would give ENOTEMPTY for a non-empty target. The VFS
//     checks come first: EINVAL for a move into itself, ENOTDIR and
//     EISDIR for type mismatches, EEXIST for RENAME_NOREPLACE. A directory
//     created in the upper layer (also one made over a whiteout, which is
//     opaque) renames normally. With redirect_dir=on none of this happens.
//   - Copying up one name of a lower file with several hard links breaks
//     the link (index=off): writing, chmod, chown, utimens, setxattr or
//     link(2) on it copies that name alone; the other names keep the
//     lower content, metadata and link count (2 for a lower pair, even
//     after the sibling went away). With index=on overlayfs keeps them
//     linked.
//   - mknod of a 0/0 character device (a whiteout) fails with EPERM.
//
// With redirect_dir=on and index=on, and without 0/0 devices, overlayfs and
// a plain directory agreed on 40 seeds. Names starting with ".wh." are
// ordinary names to overlayfs; the generator never makes them because an
// OCI layer cannot carry them (a converted upper would turn them into
// whiteouts). overlayfs hides trusted.overlay.* xattrs; the generator only
// uses user.* ones, which symlinks, fifos and devices refuse with EPERM on
// every file system here.
package fsops
