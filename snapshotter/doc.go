// Package snapshotter is lazyfs as a containerd remote snapshotter: a
// snapshots.Snapshotter served over containerd's proxy plugin API (gRPC on
// a unix socket) by one process with one frame cache for every layer of
// every image.
//
// A layer that containerd prepares with the remote-snapshot labels (the
// pull client's snapshotters.AppendInfoHandlerWrapper sets them: image
// reference, manifest and layer digest) and that has a lazyfs index is
// mounted read-only over FUSE, alone, at ROOT/snapshots/ID/fs, committed
// under the chain ID containerd asked for, and Prepare answers
// ErrAlreadyExists, so containerd never downloads the layer blob. Any other
// layer gets an ordinary writable snapshot that containerd unpacks into.
// Snapshots stack with kernel overlayfs, as containerd's overlay snapshotter
// does: an active snapshot is an overlay whose lower directories are its
// parents' directories, lazy mounts included, so a container gets a
// writable root. The lazy mounts show whiteouts and opaque directories in
// overlayfs' own form so that the kernel applies them.
//
// It owns the snapshot metadata (containerd's bolt MetaStore under ROOT),
// the snapshot directories, and the lazy mounts: removing a snapshot
// unmounts its layer, and a restart mounts the lazy layers of the
// committed snapshots again from the metadata and the local index store.
package snapshotter
