package runtime

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/layers"
)

// Laziness says how a layer's files would be read.
type Laziness string

const (
	// LazyYes: the layer has an index, here or in the registry, and its
	// files are fetched frame by frame as they are read.
	LazyYes Laziness = "yes"
	// LazyPull: no index anywhere; the first run streams the whole layer
	// once to build one.
	LazyPull Laziness = "pull"
	// LazyNo: the layer's format cannot be entered in the middle (zstd,
	// not a tar): the first read fetches all of it.
	LazyNo Laziness = "no"
	// LazyUnknown: there is no index here and the registry did not say
	// whether it has one.
	LazyUnknown Laziness = ""
)

// HistoryLayer is one layer of an image as History reports it.
type HistoryLayer struct {
	Desc ocispec.Descriptor
	Lazy Laziness
	// Indexed says that the layer's index is known (and now kept here);
	// then Size is the uncompressed size of the layer, else the blob's
	// compressed size, as nothing else is known without reading it.
	Indexed bool
	Size    int64
	// Cached is the uncompressed bytes of the layer's frames in the cache;
	// its share of Size is how much of the layer is here.
	Cached int64
}

// HistoryEntry is one entry of the config's history.
type HistoryEntry struct {
	Created   time.Time // zero when the config does not say
	CreatedBy string
	Comment   string
	// Layer is the layer the entry made, nil for an empty_layer entry.
	Layer *HistoryLayer
}

// ImageHistory is how an image was made, layer by layer.
type ImageHistory struct {
	Image *fetch.Image
	// Recorded says that the registry did not answer and the image is as
	// this root last recorded it.
	Recorded bool
	// Entries are oldest first, as the config lists them. Layers that no
	// history entry accounts for (a config with a short or no history)
	// follow, each as an entry with the config's creation time.
	Entries []HistoryEntry
}

// History resolves ref (from the record when the registry is away, as
// ResolveImage) and maps the config's history entries onto the manifest's
// layers as docker does: entries marked empty_layer have no layer, the
// others take the layers in order. For each layer it says whether it is
// read lazily and how much of it the cache holds. An index that only the
// registry has is downloaded (and kept, as a run would) for the layer's
// uncompressed size; nothing is built or fetched besides. The error wraps
// fetch.ErrNotFound when the registry does not know ref.
func (r *Runtime) History(ctx context.Context, ref string) (*ImageHistory, error) {
	img, recorded, err := r.resolveImage(ctx, ref, nil)
	if err != nil {
		return nil, err
	}
	var lookups []layers.Lookup
	if !recorded {
		if lookups, err = r.cfg.Resolver.Inspect(ctx, img); err != nil {
			r.log.Warn("cannot ask the registry for the image's layer indexes", "image", ref, "err", err)
			lookups = nil
		}
	}
	cacheDir := filepath.Join(r.cfg.Root, "cache")
	descs := img.Manifest.Layers
	hl := make([]*HistoryLayer, len(descs))
	for i, d := range descs {
		var lk *layers.Lookup
		if i < len(lookups) {
			lk = &lookups[i]
		}
		hl[i] = r.historyLayer(ctx, img, d, lk, cacheDir)
	}

	h := &ImageHistory{Image: img, Recorded: recorded}
	next := 0
	for _, e := range img.Config.History {
		he := HistoryEntry{CreatedBy: e.CreatedBy, Comment: e.Comment}
		if e.Created != nil {
			he.Created = *e.Created
		}
		if !e.EmptyLayer {
			if next >= len(hl) {
				return nil, fmt.Errorf("image %s: config %s: too many non-empty layers in history (the manifest has %d layers)",
					ref, img.Manifest.Config.Digest, len(hl))
			}
			he.Layer = hl[next]
			next++
		}
		h.Entries = append(h.Entries, he)
	}
	for _, l := range hl[next:] {
		he := HistoryEntry{Layer: l}
		if c := img.Config.Created; c != nil {
			he.Created = *c
		}
		h.Entries = append(h.Entries, he)
	}
	return h, nil
}

// historyLayer finds what History says of layer d; lk is the registry's
// answer about its index, nil when there is none.
func (r *Runtime) historyLayer(ctx context.Context, img *fetch.Image, d ocispec.Descriptor, lk *layers.Lookup, cacheDir string) *HistoryLayer {
	l := &HistoryLayer{Desc: d, Size: d.Size}
	x, err := r.cfg.Resolver.LocalIndex(d.Digest)
	if err != nil {
		r.log.Warn("layer index unreadable", "layer", d.Digest, "err", err)
	}
	if x == nil && lk != nil && lk.Remote != nil {
		if x, err = r.cfg.Resolver.Download(ctx, img, d, *lk.Remote); err != nil {
			r.log.Warn("layer index in the registry unusable", "layer", d.Digest, "err", err)
			x = nil
		}
	}
	switch {
	case layers.WhyNotLazy(d.MediaType) != "":
		l.Lazy = LazyNo
	case x != nil:
		l.Lazy = LazyYes
	case lk != nil:
		l.Lazy = LazyPull
	default:
		l.Lazy = LazyUnknown
	}
	if x != nil {
		l.Indexed, l.Size = true, x.TarSize
		l.Cached = cache.FramesPresent(cacheDir, x.Frames).Bytes
	}
	return l
}
