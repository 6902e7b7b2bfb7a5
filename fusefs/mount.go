package fusefs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// Config tunes a mount. The zero value is usable.
type Config struct {
	FSName       string        // shown as the source in /proc/mounts; "" = "lazyfs"
	CacheTimeout time.Duration // kernel entry and attribute cache lifetime; 0 = 1h (lower layers never change)
	MaxRead      int           // largest read request in bytes; 0 = 1 MiB less a page, so splice pipes suffice
	Logger       *slog.Logger  // nil = silent
	Debug        bool          // log every FUSE request (go-fuse's own debug output)
}

// fileSystem is what every node of one mount shares.
type fileSystem struct {
	layers []*index.Index
	src    FrameSource
	tree   *tree
	log    *slog.Logger
}

// Mount is a mounted, read-only union of layers.
type Mount struct {
	Dir    string
	server *fuse.Server
}

// MountLayers merges the layers (bottom first) and mounts the union at dir.
// It returns once the kernel serves the mount. The caller must Unmount.
func MountLayers(dir string, layers []*index.Index, src FrameSource, cfg Config) (*Mount, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := mergeLayers(layers, log)
	if err != nil {
		return nil, fmt.Errorf("merge layers: %w", err)
	}
	fsys := &fileSystem{layers: layers, src: src, tree: t, log: log}
	timeout := cfg.CacheTimeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	maxRead := cfg.MaxRead
	if maxRead <= 0 {
		maxRead = 1<<20 - 4096
	}
	name := cfg.FSName
	if name == "" {
		name = "lazyfs"
	}
	root := &lowerNode{n: t.root, fs: fsys}
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:  true,
			FsName:       name,
			Name:         "lazyfs",
			MaxWrite:     maxRead,
			MaxReadAhead: maxRead,
			// The kernel checks permissions from the modes we report, as
			// on any local file system; "ro" makes it refuse writes itself.
			Options: []string{"ro", "default_permissions"},
			// Containers run programs as any user: let the kernel's
			// permission checks (default_permissions) decide, not the
			// mounter's uid.
			AllowOther: true,
			Debug:      cfg.Debug,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: t.root.ino},
		OnAdd: func(ctx context.Context) {
			fsys.populate(ctx, &root.Inode, t.root, map[*node]*fs.Inode{})
		},
	}
	server, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	closeFuseOnExec(log)
	return &Mount{Dir: dir, server: server}, nil
}

// closeFuseOnExec marks this process's /dev/fuse descriptors close-on-exec.
// go-fuse opens /dev/fuse without O_CLOEXEC, so every program this process
// starts afterwards (a container's init, say) would otherwise hold the
// connection open: the mount then outlives its server and reads hang.
func closeFuseOnExec(log *slog.Logger) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		log.Warn("cannot list open files to mark /dev/fuse close-on-exec", "err", err)
		return
	}
	for _, d := range fds {
		fd, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + d.Name()); err == nil && target == "/dev/fuse" {
			unix.CloseOnExec(fd)
		}
	}
}

// populate creates the kernel-visible inodes for the whole tree up front:
// the tree is immutable and already in memory, and persistent inodes keep
// go-fuse from forgetting parts of it under memory pressure.
func (f *fileSystem) populate(ctx context.Context, parent *fs.Inode, dir *node, made map[*node]*fs.Inode) {
	for _, name := range sortedNames(dir.children) {
		c := dir.children[name]
		ino, ok := made[c]
		if !ok {
			mode := uint32(fuse.S_IFDIR)
			if c.entry != nil {
				mode = typeBits(c.entry.Type)
			}
			ino = parent.NewPersistentInode(ctx, &lowerNode{n: c, fs: f}, fs.StableAttr{Mode: mode, Ino: c.ino})
			made[c] = ino
		}
		parent.AddChild(name, ino, false)
		if c.isDir() {
			f.populate(ctx, ino, c, made)
		}
	}
}

// Wait blocks until the file system is unmounted.
func (m *Mount) Wait() { m.server.Wait() }

// Unmount detaches the file system; it fails (EBUSY) while a process still
// uses it.
func (m *Mount) Unmount() error {
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", m.Dir, err)
	}
	return nil
}
