package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
)

const (
	// ArtifactType marks the artifact that carries an image's layer indexes.
	ArtifactType = "application/vnd.lazyfs.index.v1"
	// IndexMediaType is the media type of one encoded layer index blob.
	IndexMediaType = "application/vnd.lazyfs.index.v1+binary"
	// LayerAnnotation on an index blob names the layer blob it describes.
	LayerAnnotation = "dev.lazyfs.layer.digest"

	maxIndexBytes = 1 << 30
)

// Origin says where a layer's index came from.
type Origin string

const (
	OriginLocal    Origin = "local"    // the store under --root had it
	OriginRegistry Origin = "registry" // the image's index artifact had it
	OriginBuilt    Origin = "built"    // no index existed: built by streaming the layer
)

// Config wires the parts. Client and Store are required.
type Config struct {
	Client   *fetch.Client
	Store    *cache.Store
	Build    index.BuildOptions
	Parallel int          // layers handled at once; 0 = 4
	Logger   *slog.Logger // nil = silent
	// Progress, if set, is told how many blob bytes each build has read.
	Progress func(layer digest.Digest, read, total int64)
}

// Layer is one layer of an image with its index.
type Layer struct {
	Desc   ocispec.Descriptor
	Index  *index.Index
	Origin Origin
}

// Resolver finds and builds layer indexes.
type Resolver struct {
	cfg Config
	log *slog.Logger
}

func NewResolver(cfg Config) *Resolver {
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Resolver{cfg: cfg, log: log}
}

// Lookup is what is known about a layer's index without building it.
type Lookup struct {
	Desc     ocispec.Descriptor
	Local    bool                // the local store has it
	Remote   *ocispec.Descriptor // the index artifact's blob for this layer, if any
	Lazy     bool                // the layer can be read lazily once indexed
	WhyNot   string              // why it cannot be read lazily, when !Lazy
	Artifact *ocispec.Descriptor
}

// Inspect reports, per layer, where its index would come from, without
// fetching any layer bytes.
func (r *Resolver) Inspect(ctx context.Context, img *fetch.Image) ([]Lookup, error) {
	remote, art, err := r.remoteIndexes(ctx, img)
	if err != nil {
		return nil, err
	}
	out := make([]Lookup, len(img.Manifest.Layers))
	for i, d := range img.Manifest.Layers {
		l := Lookup{Desc: d, Artifact: art, Lazy: true}
		if _, err := r.cfg.Store.GetIndex(d.Digest); err == nil {
			l.Local = true
		}
		if rd, ok := remote[d.Digest]; ok {
			l.Remote = &rd
		}
		if why := WhyNotLazy(d.MediaType); why != "" {
			l.Lazy, l.WhyNot = false, why
		}
		out[i] = l
	}
	return out, nil
}

// WhyNotLazy says why a layer of this media type cannot be read lazily
// even with an index, or "" if it can.
func WhyNotLazy(mediaType string) string {
	switch {
	case strings.Contains(mediaType, "zstd"):
		return "zstd layers are not seekable: the first read fetches the whole layer"
	case !strings.Contains(mediaType, "tar"):
		return "not a tar layer (" + mediaType + ")"
	}
	return ""
}

// Layers returns the index of every layer of img, bottom first, taking each
// from the local store, else from the image's index artifact, else by
// streaming the layer and building it (logged, never silent). Every index
// found is kept in the local store.
func (r *Resolver) Layers(ctx context.Context, img *fetch.Image) ([]Layer, error) {
	descs := img.Manifest.Layers
	out := make([]Layer, len(descs))
	var remote map[digest.Digest]ocispec.Descriptor
	missing := false
	for i, d := range descs {
		x, err := r.LocalIndex(d.Digest)
		if err != nil {
			return nil, err
		}
		if x == nil {
			missing = true
			continue
		}
		out[i] = Layer{Desc: d, Index: x, Origin: OriginLocal}
	}
	if missing {
		var err error
		if remote, _, err = r.remoteIndexes(ctx, img); err != nil {
			return nil, err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for i, d := range descs {
		if out[i].Index != nil {
			continue
		}
		g.Go(func() error {
			var (
				x      *index.Index
				origin = OriginRegistry
				err    error
			)
			if rd, ok := remote[d.Digest]; ok {
				x, err = r.Download(gctx, img, d, rd)
			} else {
				origin = OriginBuilt
				r.log.Info("no index for layer: building it by streaming the layer once", "layer", d.Digest, "len", d.Size)
				x, err = r.build(gctx, img, d)
			}
			if err != nil {
				return err
			}
			out[i] = Layer{Desc: d, Index: x, Origin: origin}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Build streams every layer of img and builds its index, ignoring any
// index that exists already (for `lazyfs index`).
func (r *Resolver) Build(ctx context.Context, img *fetch.Image) ([]Layer, error) {
	descs := img.Manifest.Layers
	out := make([]Layer, len(descs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Parallel)
	for i, d := range descs {
		g.Go(func() error {
			x, err := r.build(gctx, img, d)
			if err != nil {
				return err
			}
			out[i] = Layer{Desc: d, Index: x, Origin: OriginBuilt}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Push publishes the layers' indexes as one artifact whose subject is img.
func (r *Resolver) Push(ctx context.Context, img *fetch.Image, layers []Layer) (ocispec.Descriptor, error) {
	blobs := make([]fetch.ArtifactBlob, len(layers))
	for i, l := range layers {
		data, err := l.Index.MarshalBinary()
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("encode index of layer %s: %w", l.Desc.Digest, err)
		}
		blobs[i] = fetch.ArtifactBlob{
			MediaType:   IndexMediaType,
			Data:        data,
			Annotations: map[string]string{LayerAnnotation: l.Desc.Digest.String()},
		}
	}
	desc, err := r.cfg.Client.PushArtifact(ctx, img, ArtifactType, blobs, map[string]string{
		ocispec.AnnotationCreated: time.Now().UTC().Format(time.RFC3339),
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push index artifact for %s: %w", img.Digest, err)
	}
	return desc, nil
}

// LocalIndex returns layer's index from the local store, or nil if there
// is none. A stored copy that does not decode or names another layer is
// logged and reported as none: it is a cache miss, and the index can be
// found again.
func (r *Resolver) LocalIndex(layer digest.Digest) (*index.Index, error) {
	data, err := r.cfg.Store.GetIndex(layer)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read local index of layer %s: %w", layer, err)
	}
	x, err := index.Decode(data)
	if err != nil || x.Layer != layer {
		// A damaged local copy is only a cache miss: the index can be found again.
		r.log.Warn("local index unusable, finding it again", "layer", layer, "err", err)
		return nil, nil
	}
	return x, nil
}

// remoteIndexes finds the newest index artifact for img and lists its blobs
// by the layer each describes. No artifact is not an error.
func (r *Resolver) remoteIndexes(ctx context.Context, img *fetch.Image) (map[digest.Digest]ocispec.Descriptor, *ocispec.Descriptor, error) {
	refs, err := r.cfg.Client.Referrers(ctx, img, ArtifactType)
	if err != nil {
		return nil, nil, fmt.Errorf("find index artifact of %s: %w", img.Digest, err)
	}
	if len(refs) == 0 {
		return nil, nil, nil
	}
	art := newest(refs)
	m, err := r.cfg.Client.Manifest(ctx, img.Repo, art.Digest)
	if err != nil {
		return nil, nil, fmt.Errorf("read index artifact %s: %w", art.Digest, err)
	}
	out := map[digest.Digest]ocispec.Descriptor{}
	for _, b := range m.Layers {
		d, err := digest.Parse(b.Annotations[LayerAnnotation])
		if err != nil || b.MediaType != IndexMediaType {
			continue
		}
		out[d] = b
	}
	return out, &art, nil
}

// newest picks the artifact with the latest creation annotation (RFC 3339
// sorts as text), so a re-pushed index wins over an older one.
func newest(refs []ocispec.Descriptor) ocispec.Descriptor {
	best := refs[0]
	for _, d := range refs[1:] {
		if d.Annotations[ocispec.AnnotationCreated] > best.Annotations[ocispec.AnnotationCreated] {
			best = d
		}
	}
	return best
}

// Download fetches the index of layer from blob, a blob of img's index
// artifact (see Lookup.Remote), checks that it describes layer (digest and
// size), and keeps it in the local store (a failure to keep it is logged).
// An index for another layer wraps index.ErrCorrupt.
func (r *Resolver) Download(ctx context.Context, img *fetch.Image, layer, blob ocispec.Descriptor) (*index.Index, error) {
	// The client does not retry a digest mismatch; bytes damaged on the
	// way are fetched again, as a corrupt frame is (corruptFetches).
	var (
		data []byte
		err  error
	)
	for attempt := 1; attempt <= corruptFetches; attempt++ {
		data, err = r.cfg.Client.ReadBlob(ctx, img.Repo, blob.Digest, maxIndexBytes)
		if !errors.Is(err, fetch.ErrDigestMismatch) || attempt == corruptFetches {
			break
		}
		r.log.Warn("index blob corrupt, fetching it again", "layer", layer.Digest, "attempt", attempt, "err", err)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch index of layer %s: %w", layer.Digest, err)
	}
	x, err := index.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("index of layer %s (blob %s): %w", layer.Digest, blob.Digest, err)
	}
	if x.Layer != layer.Digest || x.BlobSize != layer.Size {
		return nil, fmt.Errorf("index blob %s: %w: describes layer %s of %d bytes, want %s of %d",
			blob.Digest, index.ErrCorrupt, x.Layer, x.BlobSize, layer.Digest, layer.Size)
	}
	if err := r.cfg.Store.PutIndex(layer.Digest, data); err != nil {
		r.log.Warn("keep index locally", "layer", layer.Digest, "err", err)
	}
	return x, nil
}

func (r *Resolver) build(ctx context.Context, img *fetch.Image, layer ocispec.Descriptor) (*index.Index, error) {
	rc, err := r.cfg.Client.OpenBlob(ctx, img.Repo, layer.Digest)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", layer.Digest, err)
	}
	defer rc.Close()
	var src io.Reader = rc
	if r.cfg.Progress != nil {
		src = &progressReader{r: rc, layer: layer.Digest, total: layer.Size, report: r.cfg.Progress}
	}
	start := time.Now()
	x, err := index.Build(ctx, layer.Digest, src, r.cfg.Build)
	if err != nil {
		return nil, err
	}
	if x.BlobSize != layer.Size {
		return nil, fmt.Errorf("layer %s: read %d bytes, manifest says %d: %w", layer.Digest, x.BlobSize, layer.Size, fetch.ErrDigestMismatch)
	}
	data, err := x.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode index of layer %s: %w", layer.Digest, err)
	}
	if err := r.cfg.Store.PutIndex(layer.Digest, data); err != nil {
		r.log.Warn("keep index locally", "layer", layer.Digest, "err", err)
	}
	r.log.Info("layer indexed", "layer", layer.Digest, "format", x.Format.String(),
		"entries", len(x.Entries), "frames", len(x.Frames), "len", len(data), "dur", time.Since(start))
	return x, nil
}

type progressReader struct {
	r      io.Reader
	layer  digest.Digest
	read   int64
	total  int64
	report func(digest.Digest, int64, int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read += int64(n)
	p.report(p.layer, p.read, p.total)
	return n, err
}
