package runtime

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/unpack"
)

// What a container's image was mounted from at its last start
// (Container.Lower).
const (
	// LowerUnpacked: a kernel overlay straight over the pulled image's
	// unpacked layers (ROOT/layers), no FUSE mount.
	LowerUnpacked = "unpacked"
	// LowerLazy: the image's FUSE mount, read lazily through the cache.
	LowerLazy = "lazy"
)

// unpackParallel is how many layers a pull unpacks at once: the work is
// disk writes and hashing, and two keep this kind of machine busy.
const unpackParallel = 2

func (r *Runtime) unpacked() *unpack.Store {
	return unpack.New(unpack.Config{Dir: filepath.Join(r.cfg.Root, "layers"), Logger: r.log})
}

// UnpackProgress is what happened to one layer of a pull's unpack.
type UnpackProgress struct {
	Layer  int // position in the image's layers, bottom first
	Digest digest.Digest
	Result unpack.Result
	// Err is why the layer was not unpacked; the image then runs lazily
	// over FUSE, as an image that was not pulled.
	Err error
}

// imageUnpack writes the layers of one image out under ROOT/layers from
// the frames the cache holds, each as soon as the pull has put all of its
// frames there (so that unpacking overlaps the fetch of the others), at
// most unpackParallel at once. A layer that cannot be unpacked is logged
// and reported, not returned: the image runs without it, lazily. Only
// ctx's end is an error.
type imageUnpack struct {
	r        *Runtime
	img      *fetch.Image
	ls       []layers.Layer
	progress func(UnpackProgress)
	src      *layers.Source
	store    *unpack.Store
	g        *errgroup.Group
	gctx     context.Context

	mu      sync.Mutex // guards started; out[i] is written by layer i's goroutine alone
	started []bool
	out     []UnpackProgress
}

func (r *Runtime) startUnpack(ctx context.Context, img *fetch.Image, ls []layers.Layer, progress func(UnpackProgress)) *imageUnpack {
	u := &imageUnpack{r: r, img: img, ls: ls, progress: progress,
		src:   layers.NewSource(r.cfg.Client, img.Repo, r.cfg.Store, r.log),
		store: r.unpacked(), started: make([]bool, len(ls)), out: make([]UnpackProgress, len(ls))}
	u.g, u.gctx = errgroup.WithContext(ctx)
	u.g.SetLimit(unpackParallel)
	return u
}

// layer starts unpacking layer i (once) in the background if a slot is
// free, without waiting: it is called from the pull's progress, which must
// not stall. A layer it cannot start now is left for wait.
func (u *imageUnpack) layer(i int) { u.start(i, false) }

func (u *imageUnpack) start(i int, block bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.started[i] {
		return
	}
	l := u.ls[i]
	f := func() error {
		res, err := u.store.Unpack(u.gctx, l.Index, u.src)
		if err != nil && u.gctx.Err() != nil {
			return u.gctx.Err()
		}
		if err != nil {
			u.r.log.Warn("layer not unpacked: the image runs over FUSE", "image", u.img.Ref, "layer", l.Desc.Digest, "err", err)
		}
		u.out[i] = UnpackProgress{Layer: i, Digest: l.Desc.Digest, Result: res, Err: err}
		if u.progress != nil {
			u.progress(u.out[i])
		}
		return nil
	}
	if block {
		u.mu.Unlock() // Go may wait for a slot: not under the lock
		u.g.Go(f)
		u.mu.Lock()
		u.started[i] = true
		return
	}
	u.started[i] = u.g.TryGo(f)
}

// wait unpacks the layers not started yet and waits for all of them. It
// is called once, after the pull (after the pull's last progress call).
func (u *imageUnpack) wait() ([]UnpackProgress, error) {
	defer u.src.Close()
	for i := range u.ls {
		if u.gctx.Err() != nil {
			break
		}
		u.start(i, true)
	}
	if err := u.g.Wait(); err != nil {
		return u.out, fmt.Errorf("unpack %s: %w", u.img.Ref, err)
	}
	return u.out, nil
}

// unpackedLowers returns the overlay lower directories of img's unpacked
// layers, top first, or ok false if some layer is not unpacked. Below a
// layer that makes its root opaque nothing is shown, which overlayfs
// cannot be told on a lower root: those layers are left out.
func (r *Runtime) unpackedLowers(img *fetch.Image) (dirs []string, ok bool) {
	store := r.unpacked()
	ls := img.Manifest.Layers
	if len(ls) == 0 {
		return nil, false
	}
	for i := len(ls) - 1; i >= 0; i-- {
		d := ls[i].Digest
		if !store.Has(d) {
			return nil, false
		}
		p, err := store.Path(d)
		if err != nil {
			return nil, false
		}
		dirs = append(dirs, p)
		if unpack.RootOpaque(p) {
			break
		}
	}
	return dirs, true
}

// unpackedImage returns c's image and its unpacked lower directories (top
// first) when the container can run on them: kernel overlay copy-on-write,
// no recording of a prefetch profile (which needs reads through FUSE), the
// image recorded locally and every layer unpacked. Otherwise nil.
func (r *Runtime) unpackedImage(c *Container) (*fetch.Image, []string) {
	if c.Rootfs != "" || c.Spec.Cow == CowFuse || c.Spec.RecordPrefetch {
		return nil, nil
	}
	img, err := r.localContainerImage(c)
	if err != nil {
		return nil, nil
	}
	dirs, ok := r.unpackedLowers(img)
	if !ok {
		return nil, nil
	}
	return img, dirs
}
