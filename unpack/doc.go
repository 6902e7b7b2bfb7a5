// Package unpack writes a layer whose frames are all in the cache out as a
// plain directory in kernel overlayfs' lower-layer format, so that a
// container of a pulled image can run on a kernel overlay with no FUSE
// mount under it (docker's behaviour: a pulled image is unpacked).
//
// A layer is read through its index and a FrameSource, the same path a
// mount reads: the bytes are the verified frames, not the registry's blob.
// Each layer is unpacked alone, as docker's overlay2 and containerd's
// overlay snapshotter apply layers, into Store.Path(layer):
//
//   - whiteouts ".wh.NAME" become NAME as a 0/0 character device, and an
//     opaque marker ".wh..wh..opq" the xattr trusted.overlay.opaque=y on
//     its directory (a layer that makes its own root opaque gets the xattr
//     on the layer directory, which overlayfs ignores there: RootOpaque
//     tells the caller to leave the layers below out); the layer's own
//     trusted.overlay.* xattrs are dropped, so an image cannot steer the
//     kernel's overlay;
//   - owners, modes (setuid, setgid, sticky), nanosecond times, xattrs,
//     hard links, symlinks, devices and fifos are kept; sparse files keep
//     their holes; directories get their times after their contents;
//   - a path whose parent is a symlink of the same layer is resolved inside
//     the layer directory as fusefs resolves it (RESOLVE_IN_ROOT's rules),
//     and every file is created through a directory descriptor opened with
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so nothing is ever created
//     outside the layer directory; a hard link whose target is not a file
//     of the layer is left out and logged, as fusefs leaves it out.
//
// A layer is made in a temporary sibling directory, synced, and renamed into
// place, under a lock file per layer: a crash never leaves a half layer that
// looks done, and two processes unpacking the same layer do it once. Nothing
// here removes an unpacked layer; a running container may use it.
package unpack
