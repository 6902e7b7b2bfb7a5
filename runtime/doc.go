// Package runtime prepares and runs containers on a lazily mounted image
// root: state directory, upper layer, namespaces, pivot_root, and the image
// config applied as docker run applies it. Every container has a supervisor
// process of its own (Supervise) that serves its image and holds its output;
// the other commands reach it through its control socket and its records.
// It knows nothing of FUSE internals.
package runtime
