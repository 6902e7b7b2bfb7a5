// Package fusefs serves the merged file tree of an image's layers as a FUSE
// file system (go-fuse v2). It builds the union from the layers' file tables
// (OCI whiteouts and opaque directories applied), answers lookups, getattr,
// readdir, readlink and xattrs from memory, and reads file bytes through a
// FrameSource, which it declares and others implement.
//
// It knows nothing of registries or containers: it gets layer indexes and a
// source of verified frames.
package fusefs
