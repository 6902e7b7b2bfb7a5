package runtime

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/index"
)

// bindMount is one host path shown inside the container.
type bindMount struct {
	Source   string `json:"source"` // host path
	Target   string `json:"target"` // absolute path inside the container
	ReadOnly bool   `json:"readOnly,omitempty"`
	File     bool   `json:"file,omitempty"` // the source is a file, not a directory
}

// rootfsPlan is what the container's init mounts before pivot_root.
type rootfsPlan struct {
	Rootfs  string      `json:"rootfs"` // where the root is assembled (a host path)
	Lower   []string    `json:"lower"`  // overlay lower directories, top first; with CowFuse the writable mount
	Cow     string      `json:"cow,omitempty"`
	Upper   string      `json:"upper"`
	Work    string      `json:"work"`
	Binds   []bindMount `json:"binds"`   // besides the -v ones: init files
	Volumes string      `json:"volumes"` // where volumes live: ROOT/volumes
	Net     string      `json:"net"`
	Tty     bool        `json:"tty"`
	// Anonymous are the container's anonymous volumes from an earlier
	// start, in the order of spec.Process.Volumes: a restart mounts them
	// again instead of making new ones, as docker does.
	Anonymous []string `json:"anonymous,omitempty"`
}

// writeInitLayer fills dir with what docker's init layer has: the mount
// points the runtime needs and empty files for the ones it bind-mounts, so
// none of them lands in the container's upper directory.
func writeInitLayer(dir string) error {
	for _, d := range []string{"proc", "sys", "dev", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// initLayerIndex is writeInitLayer's layer as an index, for a CowFuse
// mount: its files are empty, so no frame of it is ever read.
func initLayerIndex() (*index.Index, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, d := range []string{"proc/", "sys/", "dev/", "etc/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: now}); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"etc/hosts", "etc/hostname", "etc/resolv.conf"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f, Mode: 0o644, ModTime: now}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return index.Build(context.Background(), digest.FromBytes(buf.Bytes()), &buf, index.BuildOptions{})
}

// mountRoot runs in the container's init, in its new mount namespace, and
// mounts the container's root file system at p.Rootfs. Nothing it mounts is
// visible outside, and the kernel drops it all when the namespace's last
// process exits.
func mountRoot(p *rootfsPlan) error {
	// Keep our mounts from propagating back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if p.Cow == CowFuse {
		// The FUSE mount already is the writable root.
		if err := unix.Mount(p.Lower[0], p.Rootfs, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", p.Lower[0], p.Rootfs, err)
		}
		return nil
	}
	return mountOverlay(p.Rootfs, p.Lower, p.Upper, p.Work)
}

// overlayOff are the features that would write overlay-private xattrs into
// the upper (redirects, metacopy, the inode index): off whatever the
// kernel's defaults, so the upper stays a plain layer that commit can read
// and that fusefs' own copy-on-write produces too.
var overlayOff = []string{"redirect_dir", "index", "metacopy", "xino"}

// mountOverlay mounts a kernel overlay on target: lower (top first), upper
// and work. It uses the new mount API, one "lowerdir+" per layer (Linux
// 6.8+), since an image of many layers on long paths does not fit the one
// page of options mount(2) takes (40 layers under ROOT/layers/sha256 are
// over 4 KiB); on an older kernel it falls back to mount(2).
func mountOverlay(target string, lower []string, upper, work string) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return mountOverlayLegacy(target, lower, upper, work)
	}
	defer unix.Close(fd)
	// A refused parameter's reason is in the context's log.
	fail := func(what string, err error) error {
		buf := make([]byte, 512)
		if n, rerr := unix.Read(fd, buf); rerr == nil && n > 0 {
			return fmt.Errorf("mount overlay on %s: %s: %w (%s)", target, what, err, strings.TrimSpace(string(buf[:n])))
		}
		return fmt.Errorf("mount overlay on %s: %s: %w", target, what, err)
	}
	for _, k := range overlayOff {
		if err := unix.FsconfigSetString(fd, k, "off"); err != nil {
			return fail(k+"=off", err)
		}
	}
	for i, l := range lower {
		if err := unix.FsconfigSetString(fd, "lowerdir+", l); err != nil {
			if i == 0 && errors.Is(err, unix.EINVAL) {
				// A kernel before 6.8 does not know "lowerdir+".
				return mountOverlayLegacy(target, lower, upper, work)
			}
			return fail("lowerdir+ "+l, err)
		}
	}
	if err := unix.FsconfigSetString(fd, "upperdir", upper); err != nil {
		return fail("upperdir", err)
	}
	if err := unix.FsconfigSetString(fd, "workdir", work); err != nil {
		return fail("workdir", err)
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("create", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount overlay on %s: move_mount: %w", target, err)
	}
	return nil
}

// mountOverlayLegacy is mountOverlay with mount(2) and its options string.
func mountOverlayLegacy(target string, lower []string, upper, work string) error {
	opts := ""
	for _, k := range overlayOff {
		opts += k + "=off,"
	}
	opts += fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		strings.Join(escapeOverlay(lower), ":"), escapeOverlay([]string{upper})[0], escapeOverlay([]string{work})[0])
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("mount overlay on %s: %d lower directories take %d bytes of options, over the page mount(2) takes (Linux 6.8+ has no such limit)",
			target, len(lower), len(opts))
	}
	if err := unix.Mount("overlay", target, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", target, err)
	}
	return nil
}

// finishRoot mounts /proc, /sys, /dev and binds into the mounted root, in
// order of their depth, and pivots into it.
func finishRoot(p *rootfsPlan, binds []bindMount) error {
	root := p.Rootfs
	type m struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}
	const base = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	for _, x := range []m{
		{"proc", "proc", "proc", base, ""},
		{"sysfs", "sys", "sysfs", base | unix.MS_RDONLY, ""},
		{"tmpfs", "dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"},
	} {
		if err := unix.Mount(x.src, filepath.Join(root, x.target), x.fstype, x.flags, x.data); err != nil {
			if x.fstype == "sysfs" && p.Net == "host" && errors.Is(err, unix.EPERM) {
				// Without a network namespace of its own a fresh sysfs may
				// be refused; show the host's, read-only.
				if err := bindReadOnly("/sys", filepath.Join(root, "sys")); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("mount %s on /%s: %w", x.fstype, x.target, err)
		}
	}
	if err := populateDev(root, p.Tty); err != nil {
		return err
	}
	slices.SortStableFunc(binds, func(a, b bindMount) int {
		return strings.Count(path.Clean(a.Target), "/") - strings.Count(path.Clean(b.Target), "/")
	})
	for _, b := range binds {
		if err := bind(root, b); err != nil {
			return err
		}
	}
	return pivotRoot(root)
}

// escapeOverlay escapes the characters overlayfs' option parser treats as
// separators in directory names.
func escapeOverlay(dirs []string) []string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	out := make([]string, len(dirs))
	for i, d := range dirs {
		out[i] = r.Replace(d)
	}
	return out
}

// populateDev makes the minimal /dev a container expects, as docker's.
func populateDev(root string, tty bool) error {
	dev := filepath.Join(root, "dev")
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		path := filepath.Join(dev, d.name)
		if err := unix.Mknod(path, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("mknod /dev/%s: %w", d.name, err)
		}
		// mknod is subject to the umask.
		if err := os.Chmod(path, 0o666); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC,
		"newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return fmt.Errorf("mount devpts on /dev/pts: %w", err)
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC,
		"mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mount tmpfs on /dev/shm: %w", err)
	}
	if err := unix.Mount("mqueue", filepath.Join(dev, "mqueue"), "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		// Not every kernel has it; nothing common needs it.
		os.Remove(filepath.Join(dev, "mqueue"))
	}
	for link, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore",
	} {
		if err := os.Symlink(target, filepath.Join(dev, link)); err != nil {
			return err
		}
	}
	if tty {
		// The container's terminal is its console, as runc makes it.
		slave, err := os.Readlink("/proc/self/fd/0")
		if err != nil {
			return err
		}
		console := filepath.Join(dev, "console")
		if err := os.WriteFile(console, nil, 0o600); err != nil {
			return err
		}
		if err := unix.Mount(slave, console, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on /dev/console: %w", slave, err)
		}
	}
	return nil
}

// bind mounts b.Source at b.Target inside root. The target is resolved
// inside the root, symlinks included, so an image cannot redirect a bind
// mount to a host path.
func bind(root string, b bindMount) error {
	target, err := securejoin.SecureJoin(root, b.Target)
	if err != nil {
		return fmt.Errorf("mount point %s: %w", b.Target, err)
	}
	if b.File {
		if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				return err
			}
		}
	} else if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount point %s: %w", b.Target, err)
	}
	if err := unix.Mount(b.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", b.Source, b.Target, err)
	}
	if b.ReadOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", b.Target, err)
		}
	}
	return nil
}

func bindReadOnly(src, target string) error {
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, "")
}

// pivotRoot makes root the process's / and detaches the old root, with
// runc's trick of pivoting onto the same directory so no put_old directory
// has to be made inside the image.
func pivotRoot(root string) error {
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(oldroot)
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root %s: %w", root, err)
	}
	if err := unix.Fchdir(oldroot); err != nil {
		return err
	}
	// The old root is stacked on /: keep its unmount from propagating.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host root: %w", err)
	}
	return unix.Chdir("/")
}
