// Package runtime will prepare and run containers on a mounted image root:
// state directory, upper layer, namespaces, pivot_root, and the image config
// applied as docker run applies it. It knows nothing of FUSE internals.
//
// It is empty until the containers issue; the package exists so the layout
// and its import rules are fixed from the start.
package runtime
