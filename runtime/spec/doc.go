// Package spec turns an image config and `docker run` flags into the process
// a container starts: argv, environment, working directory, user and groups
// (read from the image's own /etc/passwd and /etc/group), mounts and
// anonymous volumes, following docker's rules (its CLI, daemon and runc
// together) to the letter. It also parses the flags that carry resource
// limits (--memory, --cpus, --pids-limit) and -p (--publish), and resolves container paths
// inside a root file system without leaving it.
//
// It starts nothing and creates no namespace; it only reads files in the
// root, with plain reads that it closes, so it is safe to call from the
// process that serves that root over FUSE.
package spec
