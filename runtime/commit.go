package runtime

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/runtime/spec"
)

// ErrUpperUnsupported is wrapped when a container's upper directory holds
// something that has no faithful form in an image layer.
var ErrUpperUnsupported = errors.New("upper layer cannot be committed")

// CommitOptions are docker commit's flags that lazyrun has.
type CommitOptions struct {
	Message string // the new history entry's comment (-m)
	Author  string // the config's and the history entry's author (-a)
	// Changes are -c/--change: Dockerfile instructions applied to the
	// new image's config (see spec.Change).
	Changes []string
}

// Commit makes an image of a stopped container, as docker commit does: its
// upper layer becomes one gzip layer on top of the image the container was
// created from (that exact manifest, even if its tag moved since), pushed
// to ref with the base's layers mounted or referenced, not copied through
// this machine. The new image's layer indexes are published with it (the
// base's from the local store or the base's own index artifact, the new
// layer's built from the file just written), so it runs lazily at once.
//
// The image config is the container's, as docker commit writes it: the
// base image's with the command, environment, user, working directory,
// anonymous volumes, published ports and stop signal the container ran
// with (spec.CommitConfig), then opt.Changes applied, the new diff_id and
// a history entry appended. A running container is refused (docker would
// pause it).
// Returns the pushed image. If only the index artifact failed, the image
// is returned with the error.
func (r *Runtime) Commit(ctx context.Context, c *Container, ref string, opt CommitOptions) (*fetch.Image, error) {
	if err := fetch.ValidatePushRef(ref); err != nil {
		return nil, err
	}
	if c.State.Status == StatusRunning {
		return nil, fmt.Errorf("%w: container %s is running: stop it before committing it (lazyrun does not pause containers)", ErrConflict, c.Name)
	}
	lock, err := c.lock()
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	if c.Rootfs != "" {
		return nil, fmt.Errorf("%w: container %s runs on --rootfs %s, not on an image: nothing to commit onto", ErrConflict, c.Name, c.Rootfs)
	}
	baseRef, err := fetch.DigestRef(c.Image, c.ImageDigest)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}
	base, err := r.cfg.Client.Resolve(ctx, baseRef)
	if err != nil {
		return nil, fmt.Errorf("commit %s: base image: %w", c.Name, err)
	}
	// The container ran from these indexes, so normally the local store
	// has them all.
	baseLayers, err := r.cfg.Resolver.Layers(ctx, base)
	if err != nil {
		return nil, fmt.Errorf("commit %s: base image: %w", c.Name, err)
	}

	change, err := commitConfig(c, base, opt.Changes)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}

	start := time.Now()
	lf, err := writeLayerFile(ctx, c.UpperDir(), c.Dir())
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}
	defer os.Remove(lf.Path)
	r.log.Debug("upper layer written", "id", c.ShortID(), "layer", lf.Digest, "len", lf.Size, "dur", time.Since(start))
	x, err := r.indexLayerFile(ctx, lf)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}

	now := time.Now().UTC()
	createdBy := strings.Join(c.Command, " ")
	if createdBy == "" {
		createdBy = "lazyrun commit"
	}
	img, err := r.cfg.Client.PushAppend(ctx, ref, fetch.Append{
		Base:    base,
		Layer:   lf,
		History: ocispec.History{Created: &now, CreatedBy: createdBy, Author: opt.Author, Comment: opt.Message},
		Created: now,
		Author:  opt.Author,
		Config:  &change.Config,
		OnBuild: change.OnBuild,
	})
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", c.Name, err)
	}
	r.log.Debug("image pushed", "image", ref, "digest", img.Digest)

	descs := img.Manifest.Layers
	if len(descs) != len(baseLayers)+1 || descs[len(descs)-1].Digest != lf.Digest {
		return img, fmt.Errorf("commit %s: pushed manifest %s does not end with layer %s", c.Name, img.Digest, lf.Digest)
	}
	ls := make([]layers.Layer, len(descs))
	for i, l := range baseLayers {
		if descs[i].Digest != l.Desc.Digest {
			return img, fmt.Errorf("commit %s: pushed manifest %s has layer %s where the base has %s", c.Name, img.Digest, descs[i].Digest, l.Desc.Digest)
		}
		ls[i] = layers.Layer{Desc: descs[i], Index: l.Index, Origin: l.Origin}
	}
	ls[len(ls)-1] = layers.Layer{Desc: descs[len(descs)-1], Index: x, Origin: layers.OriginBuilt}
	if _, err := r.cfg.Resolver.Push(ctx, img, ls); err != nil {
		return img, fmt.Errorf("commit %s: image pushed as %s, but not its indexes: %w", c.Name, img.Digest, err)
	}
	return img, nil
}

// commitConfig is the config of the image c's commit makes on base, with
// the --change values applied.
func commitConfig(c *Container, base *fetch.Image, changes []string) (*spec.Change, error) {
	cfg, err := spec.CommitConfig(base.Config.Config, c.Spec.Process, c.Spec.Ports, c.Spec.StopSignal)
	if err != nil {
		return nil, err
	}
	change := &spec.Change{Config: cfg}
	for _, ch := range changes {
		if err := change.Apply(ch); err != nil {
			return nil, err
		}
	}
	if s := change.Config.StopSignal; s != "" {
		if _, err := ParseSignal(s); err != nil {
			return nil, fmt.Errorf("%w: STOPSIGNAL %s: %w", spec.ErrInvalidChange, s, err)
		}
	}
	return change, nil
}

// indexLayerFile builds the index of the layer just written and keeps it
// in the local store, as if it had been fetched.
func (r *Runtime) indexLayerFile(ctx context.Context, lf fetch.LayerFile) (*index.Index, error) {
	f, err := os.Open(lf.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	x, err := index.Build(ctx, lf.Digest, f, index.BuildOptions{})
	if err != nil {
		return nil, err
	}
	if x.BlobSize != lf.Size {
		return nil, fmt.Errorf("index of layer %s: read %d bytes of %d", lf.Digest, x.BlobSize, lf.Size)
	}
	data, err := x.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode index of layer %s: %w", lf.Digest, err)
	}
	if err := r.cfg.Store.PutIndex(lf.Digest, data); err != nil {
		r.log.Warn("keep index locally", "layer", lf.Digest, "err", err)
	}
	return x, nil
}

// writeLayerFile writes upper as a gzip layer into a new file in dir,
// hashing the tar (diff_id) and the blob (digest) as they stream.
func writeLayerFile(ctx context.Context, upper, dir string) (lf fetch.LayerFile, err error) {
	f, err := os.CreateTemp(dir, "commit-*.tar.gz")
	if err != nil {
		return lf, err
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	blobHash, diffHash := sha256.New(), sha256.New()
	fb := bufio.NewWriterSize(f, 1<<20)
	blob := &countWriter{w: io.MultiWriter(fb, blobHash)}
	zw, err := kgzip.NewWriterLevel(blob, kgzip.DefaultCompression)
	if err != nil {
		return lf, err
	}
	if err := writeUpperTar(ctx, io.MultiWriter(zw, diffHash), upper); err != nil {
		return lf, err
	}
	if err := zw.Close(); err != nil {
		return lf, err
	}
	if err := fb.Flush(); err != nil {
		return lf, err
	}
	return fetch.LayerFile{Path: f.Name(), Digest: digestOf(blobHash), DiffID: digestOf(diffHash), Size: blob.n}, nil
}

func digestOf(h hash.Hash) digest.Digest { return digest.NewDigest(digest.SHA256, h) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Overlayfs' own xattrs in an upper directory (trusted mode; lazyrun does
// not mount with userxattr, so user.overlay.* belong to the container).
const (
	xattrOverlay  = "trusted.overlay."
	xattrOpaque   = "trusted.overlay.opaque"
	xattrRedirect = "trusted.overlay.redirect"
	xattrMetacopy = "trusted.overlay.metacopy"
)

// keepXattr says which extended attributes go into the layer: user.*,
// trusted.* other than overlayfs' own, and security.capability (file
// capabilities). Other security.* (SELinux labels, IMA, EVM) and system.*
// (ACLs, which lazyfs' mount would not enforce) are the host's business.
func keepXattr(name string) bool {
	switch {
	case strings.HasPrefix(name, xattrOverlay):
		return false
	case strings.HasPrefix(name, "user."), strings.HasPrefix(name, "trusted."):
		return true
	}
	return name == "security.capability"
}

// writeUpperTar writes an overlayfs upper directory to w as an OCI layer
// tar (PAX), without its root entry:
//
//   - directories, regular files, symlinks, devices and fifos with mode
//     (setuid, setgid, sticky too), owner, nanosecond mtime and the xattrs
//     keepXattr keeps; sockets are left out, as docker leaves them;
//   - names of one inode found more than once become hard links to the
//     first in walk order (whiteouts are never linked: the kernel does
//     share one inode among them);
//   - a whiteout (0/0 character device) becomes an empty `.wh.NAME`, 0600,
//     with the device's owner and mtime;
//   - an opaque directory (trusted.overlay.opaque = "y") is followed by an
//     empty `.wh..wh..opq` with its permissions, owner and mtime. Kernels
//     from 6.7 also write "x" there, on a lower directory holding xattr
//     whiteouts; it never means opaque, and in an upper layer it means
//     nothing (the kernel creates no xattr whiteouts, so a regular file
//     with trusted.overlay.whiteout is, in an upper layer, just a file);
//   - names are walked in byte order, directory before its contents, so the
//     same upper gives the same bytes.
//
// Nothing is followed: entries are Lstat'ed, directories and files opened
// with O_NOFOLLOW, and a file is read only if it is still the inode that was
// Lstat'ed. An upper that needs the lower layers to be understood (a
// directory renamed with redirect_dir, a metacopy-only copy-up) or that
// holds a name starting with ".wh." is refused with ErrUpperUnsupported.
func writeUpperTar(ctx context.Context, w io.Writer, upper string) error {
	t := &upperTar{ctx: ctx, tw: tar.NewWriter(w), root: upper, links: map[inode]string{}}
	if err := t.dir(""); err != nil {
		return err
	}
	return t.tw.Close()
}

type inode struct{ dev, ino uint64 }

type upperTar struct {
	ctx   context.Context
	tw    *tar.Writer
	root  string
	links map[inode]string // first name written of each multiply-linked inode
	buf   []byte
}

// dir writes the entries of the directory rel ("" is the root), sorted.
func (t *upperTar) dir(rel string) error {
	full := filepath.Join(t.root, rel)
	fd, err := unix.Open(full, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: full, Err: err}
	}
	d := os.NewFile(uintptr(fd), full)
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	slices.Sort(names)
	for _, n := range names {
		if err := t.ctx.Err(); err != nil {
			return err
		}
		if err := t.entry(rel, n); err != nil {
			return err
		}
	}
	return nil
}

func (t *upperTar) entry(dir, name string) error {
	rel := path.Join(dir, name)
	full := filepath.Join(t.root, rel)
	if strings.HasPrefix(name, ".wh.") {
		return fmt.Errorf("%s: %w: the name is reserved for whiteouts in image layers", rel, ErrUpperUnsupported)
	}
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: full, Err: err}
	}
	xa, err := lxattrs(full)
	if err != nil {
		return err
	}
	for _, k := range []string{xattrRedirect, xattrMetacopy} {
		if _, ok := xa[k]; ok {
			return fmt.Errorf("%s: %w: it has %s (mount overlayfs with redirect_dir=off,metacopy=off for containers to commit)", rel, ErrUpperUnsupported, k)
		}
	}
	mode := st.Mode & unix.S_IFMT
	mtime := time.Unix(st.Mtim.Sec, st.Mtim.Nsec)
	if mode == unix.S_IFCHR && st.Rdev == 0 {
		return t.tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: path.Join(dir, ".wh."+name), Mode: 0o600,
			Uid: int(st.Uid), Gid: int(st.Gid), ModTime: mtime, Format: tar.FormatPAX,
		})
	}
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtime,
		Format:  tar.FormatPAX,
	}
	for k, v := range xa {
		if keepXattr(k) {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if mode == unix.S_IFDIR {
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		if err := t.tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if xa[xattrOpaque] == "y" {
			err := t.tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", Mode: int64(st.Mode & 0o777),
				Uid: int(st.Uid), Gid: int(st.Gid), ModTime: mtime, Format: tar.FormatPAX,
			})
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		return t.dir(rel)
	}
	if st.Nlink > 1 && mode != unix.S_IFSOCK {
		key := inode{st.Dev, st.Ino}
		if first, ok := t.links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			hdr.PAXRecords = nil // the target's entry has them
			return t.tw.WriteHeader(hdr)
		}
		t.links[key] = rel
	}
	switch mode {
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		return t.file(full, rel, hdr, &st)
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if mode == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default: // a socket: it means nothing in an image
		return nil
	}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// file writes a regular file's header and content, reading it only if it
// is still the inode st describes.
func (t *upperTar) file(full, rel string, hdr *tar.Header, st *unix.Stat_t) error {
	fd, err := unix.Open(full, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: full, Err: err}
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return &os.PathError{Op: "fstat", Path: full, Err: err}
	}
	if fst.Dev != st.Dev || fst.Ino != st.Ino || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s: changed while committing", rel)
	}
	if err := t.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if t.buf == nil {
		t.buf = make([]byte, 1<<20)
	}
	n, err := io.CopyBuffer(t.tw, io.LimitReader(struct{ io.Reader }{f}, hdr.Size), t.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: changed while committing (%d of %d bytes)", rel, n, hdr.Size)
	}
	return nil
}

// lxattrs returns path's extended attributes without following a symlink.
// A file system without xattrs gives none.
func lxattrs(path string) (map[string]string, error) {
	var names []byte
	for {
		size, err := unix.Llistxattr(path, nil)
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		if size == 0 {
			return nil, nil
		}
		names = make([]byte, size)
		n, err := unix.Llistxattr(path, names)
		if errors.Is(err, unix.ERANGE) {
			continue // grew meanwhile
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		names = names[:n]
		break
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(names), "\x00") {
		if name == "" {
			continue
		}
		v, err := lgetxattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		out[name] = v
	}
	return out, nil
}

func lgetxattr(path, name string) (string, error) {
	for {
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return "", err
		}
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
