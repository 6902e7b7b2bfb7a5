package fusefs

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// Config tunes a mount. The zero value is usable.
type Config struct {
	FSName       string        // shown as the source in /proc/mounts; "" = "lazyfs"
	CacheTimeout time.Duration // read-only mount: kernel entry and attribute cache lifetime; 0 = 1h (lower layers never change)
	// NoPassthrough keeps a mount from making and using whole copies of
	// lower files (copies.go): a read-only mount hands the kernel those
	// copies (FUSE passthrough, see passthrough.go), a writable one reads
	// lower files from them.
	NoPassthrough bool
	MaxRead       int          // largest read request in bytes; 0 = 1 MiB less a page, so splice pipes suffice
	Logger        *slog.Logger // nil = silent
	Debug         bool         // log every FUSE request (go-fuse's own debug output)

	// UpperDir makes the mount writable (copy-on-write, see the package
	// documentation): every change goes to this directory, in overlayfs'
	// on-disk format, so the same directory also works as the upperdir of
	// a kernel overlay mount over the same layers. It may hold what an
	// earlier mount, or overlayfs with redirect_dir=off and metacopy=off,
	// wrote. Writing whiteouts and trusted xattrs needs root.
	// "" = read-only.
	UpperDir string
	// WorkDir is where copy-ups and new entries are prepared before they
	// are renamed into UpperDir, as overlayfs' workdir: a directory on the
	// same file system, outside UpperDir. Required with UpperDir. The mount
	// keeps its files in a subdirectory "lazyfs-work", emptied at mount.
	WorkDir string
	// WritableCacheTimeout is the kernel's entry and attribute cache
	// lifetime on a writable mount; 0 = 1s, negative = none. Every change
	// goes through the kernel, which updates its caches itself, so this
	// only bounds how long a change made behind the mount's back (in
	// UpperDir directly, which is not supported) stays invisible; the
	// differential tests pass with none, 1s and 1h. Without caching a stat
	// costs ~70x more (BenchmarkCowMetadata). Lower names with several hard
	// links are never cached: copying one of them up changes its identity.
	WritableCacheTimeout time.Duration
	// OnIOError, if set, is called each time the mount answers a request
	// with EIO because a frame could not be fetched or verified (a read,
	// or a copy-up on a writable mount), after the error is logged. It is
	// called concurrently and must return at once; metrics count read
	// errors with it.
	OnIOError func()
	// Setuid honours setuid and setgid bits and device nodes, as a
	// container's root file system must; false mounts nosuid,nodev.
	Setuid bool
}

// fileSystem is what every node of one mount shares.
type fileSystem struct {
	layers []*index.Index
	src    FrameSource
	tree   *tree
	log    *slog.Logger
	onEIO  func() // Config.OnIOError; nil = none
	// noXattrs: no entry of a read-only mount has an extended attribute,
	// so the first getxattr or listxattr answers ENOSYS and the kernel
	// stops asking (EOPNOTSUPP without a round trip). Overlayfs over the
	// mount asks for trusted.overlay.metacopy of every lower file it looks
	// up: a stat walk of 50 000 files in a new container took 2.1 s with
	// those round trips, against 0.36 s without overlay.
	noXattrs bool
	copies   *copies // whole copies of lower files; never nil
}

// Mount is a mounted union of layers: read-only, or copy-on-write with
// Config.UpperDir.
type Mount struct {
	Dir    string
	server *fuse.Server
	dev    uint64 // the mount's device number: its FUSE connection
	log    *slog.Logger
	ro     *roFS       // the read-only file system; nil for a writable mount
	fs     *fileSystem // what either serves
}

// MountLayers merges the layers (bottom first) and mounts the union at dir,
// writable if cfg.UpperDir is set. It returns once the kernel serves the
// mount. The caller must Unmount.
func MountLayers(dir string, layers []*index.Index, src FrameSource, cfg Config) (*Mount, error) {
	return mount(dir, layers, src, cfg, nil)
}

// mount is MountLayers; wrap, if not nil, wraps the file system the
// FUSE server calls (tests count requests with it).
func mount(dir string, layers []*index.Index, src FrameSource, cfg Config, wrap func(fuse.RawFileSystem) fuse.RawFileSystem) (*Mount, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := mergeLayers(layers, log)
	if err != nil {
		return nil, fmt.Errorf("merge layers: %w", err)
	}
	fsys := &fileSystem{layers: layers, src: src, tree: t, log: log, onEIO: cfg.OnIOError, noXattrs: cfg.UpperDir == "" && !hasXattrs(layers)}
	fsys.copies = newCopies(fsys, !cfg.NoPassthrough)
	maxRead := cfg.MaxRead
	if maxRead <= 0 {
		maxRead = 1<<20 - 4096
	}
	name := cfg.FSName
	if name == "" {
		name = "lazyfs"
	}
	mo := fuse.MountOptions{
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
	}
	if cfg.Setuid {
		// go-fuse reads zero as "nosuid,nodev"; the kernel ignores this
		// magic value, leaving no flags.
		mo.DirectMountFlags = unix.MS_MGC_VAL
	}
	var raw fuse.RawFileSystem
	var ro *roFS
	if cfg.UpperDir == "" {
		timeout := cfg.CacheTimeout
		if timeout <= 0 {
			timeout = time.Hour
		}
		// A symlink's target never changes: the kernel may keep it
		// rather than ask at every path walk through the link.
		mo.EnableSymlinkCaching = true
		ro = newROFS(fsys, timeout)
		raw = ro
	} else {
		cow, err := newCowFS(fsys, cfg)
		if err != nil {
			return nil, err
		}
		wt := cfg.WritableCacheTimeout
		switch {
		case wt == 0:
			wt = time.Second
		case wt < 0:
			wt = 0
		}
		cow.timeout = wt
		mo.Options = []string{"default_permissions"}
		raw = fs.NewNodeFS(cow.root, &fs.Options{
			MountOptions: mo,
			// Each reply carries its own entry and attribute timeouts
			// (cow.go): a lower name with several hard links must not
			// be cached at all.
			NegativeTimeout: &wt,
			NullPermissions: true,
			RootStableAttr:  &fs.StableAttr{Ino: t.root.ino},
		})
	}
	if wrap != nil {
		raw = wrap(raw)
	}
	server, err := fuse.NewServer(raw, dir, &mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	closeFuseOnExec(log)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		server.Unmount() //nolint:errcheck // the stat's error says more
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return &Mount{Dir: dir, server: server, dev: st.Dev, log: log, ro: ro, fs: fsys}, nil
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

// hasXattrs reports whether any entry of the layers has an extended
// attribute.
func hasXattrs(layers []*index.Index) bool {
	for _, x := range layers {
		for i := range x.Entries {
			if len(x.Entries[i].Xattrs) > 0 {
				return true
			}
		}
	}
	return false
}

// Wait blocks until the file system is unmounted.
func (m *Mount) Wait() { m.server.Wait() }

// Unmount detaches the file system and waits until its server has
// stopped; it fails (EBUSY) while a process still uses it.
//
// The server stops when the kernel drops the file system, which a copy of
// the mount in another mount namespace delays (a namespace made while it
// was mounted, or a slave one it propagated into). After unmountGrace the
// connection is aborted (fusectl's abort: every request fails), so that
// Unmount never waits for ever; the log names the processes whose
// namespaces held it.
func (m *Mount) Unmount() error {
	done := make(chan error, 1)
	go func() { done <- m.server.Unmount() }()
	select {
	case err := <-done:
		return m.unmounted(err)
	case <-time.After(unmountGrace):
	}
	m.log.Warn("file system still held after its unmount: aborting its connection",
		"path", m.Dir, "dur", unmountGrace, "holders", holders(m.dev))
	if err := abortConnection(m.dev); err != nil {
		m.log.Warn("cannot abort the FUSE connection", "path", m.Dir, "err", err)
	}
	select {
	case err := <-done:
		return m.unmounted(err)
	case <-time.After(unmountGrace):
		return fmt.Errorf("unmount %s: the server did not stop, even after its connection was aborted", m.Dir)
	}
}

// unmountGrace is how long Unmount waits for the kernel to drop the file
// system before it aborts the connection.
const unmountGrace = 5 * time.Second

func (m *Mount) unmounted(err error) error {
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.Dir, err)
	}
	if m.ro != nil {
		// The connection is gone: a push or relist still under way
		// fails at once.
		m.ro.waitPushes()
		m.ro.waitRelist()
	}
	m.fs.copies.wait()
	return nil
}

// fusectlDir is where the FUSE control file system is usually mounted.
const fusectlDir = "/sys/fs/fuse/connections"

// abortConnection aborts the FUSE connection of device dev through the
// FUSE control file system, mounting it on a temporary directory (and
// unmounting it) if it is not at fusectlDir.
func abortConnection(dev uint64) error {
	conn := strconv.FormatUint(uint64(unix.Minor(dev)), 10)
	dir := fusectlDir
	if _, err := os.Stat(filepath.Join(dir, conn)); err != nil {
		tmp, err := os.MkdirTemp("", "lazyfs-fusectl-")
		if err != nil {
			return err
		}
		defer os.Remove(tmp)
		if err := unix.Mount("fusectl", tmp, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("mount fusectl: %w", err)
		}
		defer unix.Unmount(tmp, unix.MNT_DETACH) //nolint:errcheck // a temporary view
		dir = tmp
	}
	return os.WriteFile(filepath.Join(dir, conn, "abort"), []byte("1"), 0)
}

// holders lists, for each other mount namespace that has a mount of device
// dev, one process in it ("PID COMM").
func holders(dev uint64) []string {
	want := fmt.Sprintf(" %d:%d ", unix.Major(dev), unix.Minor(dev))
	seen := map[string]bool{}
	var out []string
	infos, _ := filepath.Glob("/proc/[0-9]*/mountinfo")
	for _, p := range infos {
		procDir := filepath.Dir(p)
		ns, err := os.Readlink(filepath.Join(procDir, "ns", "mnt"))
		if err != nil || seen[ns] {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), want) {
			continue
		}
		seen[ns] = true
		comm, _ := os.ReadFile(filepath.Join(procDir, "comm"))
		out = append(out, filepath.Base(procDir)+" "+strings.TrimSpace(string(comm)))
	}
	return out
}
