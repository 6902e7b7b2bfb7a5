package runtime

import (
	"context"
	"fmt"
	"path/filepath"

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

// unpackImage writes every layer of ls out under ROOT/layers from the
// frames the cache holds (a pull has just put them all there: nothing is
// fetched), telling progress about each. A layer that cannot be unpacked
// is logged and reported, not returned: the image runs without it, lazily.
// Only ctx's end is an error.
func (r *Runtime) unpackImage(ctx context.Context, img *fetch.Image, ls []layers.Layer, progress func(UnpackProgress)) ([]UnpackProgress, error) {
	src := layers.NewSource(r.cfg.Client, img.Repo, r.cfg.Store, r.log)
	defer src.Close()
	store := r.unpacked()
	out := make([]UnpackProgress, len(ls))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(unpackParallel)
	for i, l := range ls {
		g.Go(func() error {
			res, err := store.Unpack(gctx, l.Index, src)
			if err != nil && gctx.Err() != nil {
				return gctx.Err()
			}
			if err != nil {
				r.log.Warn("layer not unpacked: the image runs over FUSE", "image", img.Ref, "layer", l.Desc.Digest, "err", err)
			}
			out[i] = UnpackProgress{Layer: i, Digest: l.Desc.Digest, Result: res, Err: err}
			if progress != nil {
				progress(out[i])
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return out, fmt.Errorf("unpack %s: %w", img.Ref, err)
	}
	return out, nil
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
