package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"
)

// nativeScript runs a command on the image's unpacked root without FUSE:
// in new mount, PID and network namespaces (loopback up), it mounts
// overlayfs (the cached root as the lower directory, a fresh upper, as a
// container's copy-on-write), /proc and the host's /dev, and then chroots.
// $1..$4 are lower (one or more directories, uppermost first, joined by
// ":"), upper, work and the mount point; the rest is the command, after the
// image's environment (NAME=VALUE words, which env takes as settings).
const nativeScript = `set -e
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount --rbind /dev "$4/dev"
ip link set lo up
m=$4
shift 4
cd /
exec chroot "$m" /usr/bin/env -i ` + imagePath + ` HOME=/root "$@"`

// nativeArgv returns the argv of a native run of w with its files under
// dir; prefix (strace and its options) goes before everything, outside the
// namespaces: the command must stay PID 1 of its PID namespace, so that
// daemons it started (nginx) end with it. The command gets the image's
// environment (Image.Env) as a container would.
func (r *runner) nativeArgv(w Workload, dir string, prefix ...string) ([]string, error) {
	return r.nativeArgvOn(w, r.images[w.Image].lowerDirs(), dir, prefix...)
}

// nativeArgvOn is nativeArgv with other lower directories (a copy of the
// image's root).
func (r *runner) nativeArgvOn(w Workload, lower, dir string, prefix ...string) ([]string, error) {
	b := r.images[w.Image]
	var ps []string
	for _, d := range []string{"upper", "work", "mnt"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	argv := append(prefix, "unshare", "--mount", "--pid", "--net", "--fork", "--propagation", "private",
		"sh", "-c", nativeScript, "sh", lower, ps[0], ps[1], ps[2])
	for _, e := range b.Env {
		if !strings.Contains(e, "=") || strings.HasPrefix(e, "=") {
			return nil, fmt.Errorf("image %s: environment entry %q is not NAME=VALUE", b.Name, e)
		}
	}
	argv = append(argv, b.Env...)
	return append(argv, w.Cmd...), nil
}

// measureNative times w on the unpacked root (page cache as the previous
// runs left it: the lower bound, not a cold disk).
func (r *runner) measureNative(ctx context.Context, w Workload) (s Sample) {
	sc, err := newScratch(ctx, r.cfg.WorkDir, "native", 0)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	argv, err := r.nativeArgv(w, sc.Dir)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	d, out, err := r.command(ctx, r.logPath(w.Name+"-native"), nil, argv...)
	s.Wall = d
	if err := checkRun(w, out, err); err != nil {
		s.Err = err.Error()
	}
	return s
}

// measureRootfs times w with lazyrun on the unpacked root (run --rootfs):
// the container runtime of the lazy runs without lazyfs, so that a warm
// start's cost of FUSE and the cache can be told from the runtime's. The
// image's unpacked layers are merged by a read-only overlay mounted here,
// which lazyrun then uses as its lower directory.
func (r *runner) measureRootfs(ctx context.Context, w Workload) (s Sample) {
	sc, err := newScratch(ctx, r.cfg.WorkDir, "rootfs", 0)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	b := r.images[w.Image]
	merged, root := filepath.Join(sc.Dir, "merged"), filepath.Join(sc.Dir, "lazyrun")
	for _, d := range []string{merged, root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return Sample{Err: err.Error()}
		}
	}
	if lower := b.lowerDirs(); !strings.Contains(lower, ":") {
		merged = lower // one directory: nothing to merge
	} else {
		// Without an upper directory overlayfs mounts read-only.
		if err := unix.Mount("overlay", merged, "overlay", unix.MS_RDONLY, "lowerdir="+lower); err != nil {
			return Sample{Err: fmt.Sprintf("mount the unpacked root at %s: %v", merged, err)}
		}
		defer unix.Unmount(merged, unix.MNT_DETACH) //nolint:errcheck // the scratch's clean-up unmounts too
	}
	args := append([]string{"run", "--rm", "--net", "none", "--rootfs"}, envFlags(b.Env)...)
	args = append(append(args, merged), w.Cmd...)
	d, out, err := r.command(ctx, r.logPath(w.Name+"-rootfs"), nil, r.lazyrun(root, args...)...)
	s.Wall = d
	if err := checkRun(w, out, err); err != nil {
		s.Err = err.Error()
	}
	return s
}

// envFlags turns NAME=VALUE settings into lazyrun's -e flags.
func envFlags(env []string) []string {
	var out []string
	for _, e := range env {
		out = append(out, "-e", e)
	}
	return out
}

// Opened is what a command opened of its image.
type Opened struct {
	Files int   // distinct regular files of the image opened or executed
	Bytes int64 // their sizes added up
	Err   string
	How   string
}

// openedFiles runs w natively under strace (not timed) and adds up the
// sizes of the image's regular files it opened or executed: an upper
// bound of the image bytes the command read (a file may be read in part;
// mmapped libraries are opened first, so they count).
func (r *runner) openedFiles(ctx context.Context, w Workload) (o Opened) {
	o.How = "native run under strace -f: distinct regular files of the image opened (open, openat) or executed, sizes added up"
	sc, err := newScratch(ctx, r.cfg.WorkDir, "strace", 0)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	defer r.closeScratch(sc)
	trace := filepath.Join(sc.Dir, "strace.out")
	argv, err := r.nativeArgv(w, filepath.Join(sc.Dir, "root"),
		"strace", "-f", "-qq", "-e", "trace=open,openat,execve,chroot", "-e", "status=successful", "-o", trace)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, out, err := r.command(ctx, r.logPath(w.Name+"-strace"), nil, argv...)
	if err := checkRun(w, out, err); err != nil {
		o.Err = err.Error()
		return o
	}
	f, err := os.Open(trace)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	defer f.Close()
	files, err := parseOpened(bufio.NewScanner(f), r.images[w.Image].roots()...)
	if err != nil {
		o.Err = err.Error()
		return o
	}
	for _, size := range files {
		o.Files++
		o.Bytes += size
	}
	return o
}

// straceOpenRe matches a successful open, openat (relative to the working
// directory) or execve in strace -f output; group 2 is the path.
var straceOpenRe = regexp.MustCompile(`^\d+\s+(open|openat|execve)\((?:AT_FDCWD, )?"((?:[^"\\]|\\.)*)"`)

// parseOpened returns the regular files of the image, by their resolved
// path inside the uppermost of roots that has them (roots are the native
// run's lower directories, uppermost first; whiteouts are not looked at),
// that the trace opened after the first chroot (before it, unshare, sh,
// mount and ip open host files), with their sizes.
// Paths relative to the working directory are taken from "/" (the native
// run's cwd); opens relative to another directory's descriptor are not
// counted.
func parseOpened(sc *bufio.Scanner, roots ...string) (map[string]int64, error) {
	files := map[string]int64{}
	inRoot := false
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if !inRoot {
			inRoot = strings.Contains(line, " chroot(")
			continue
		}
		m := straceOpenRe.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		p := m[2]
		if strings.Contains(p, `\`) {
			continue // escaped bytes: not an image path we can stat
		}
		p = path.Join("/", p)
		if strings.HasPrefix(p, "/proc/") || strings.HasPrefix(p, "/dev/") || strings.HasPrefix(p, "/sys/") {
			continue
		}
		for _, root := range roots {
			full, err := securejoin.SecureJoin(root, p)
			if err != nil {
				continue
			}
			fi, err := os.Lstat(full)
			if err != nil {
				continue // not in this root (or made by the command, in the upper)
			}
			if fi.Mode().IsRegular() {
				files[full] = fi.Size()
			}
			break // the uppermost root that has it decides
		}
	}
	return files, sc.Err()
}
