package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
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
	// IndexMediaType is the media type of one encoded layer index blob as
	// Push writes it: encoding version 2, the toc and then the windows.
	// Builds before it skip such blobs (and build the index themselves).
	IndexMediaType = "application/vnd.lazyfs.index.v2+binary"
	// IndexMediaTypeV1 is the media type of the version 1 blobs earlier
	// builds pushed; they are still read, whole.
	IndexMediaTypeV1 = "application/vnd.lazyfs.index.v1+binary"
	// LayerAnnotation on an index blob names the layer blob it describes.
	LayerAnnotation = "dev.lazyfs.layer.digest"
	// TOCSizeAnnotation on a version 2 index blob is the length of its
	// toc in bytes (decimal): Download fetches only those.
	TOCSizeAnnotation = "dev.lazyfs.index.toc-size"

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
	// TOCSize and WindowsSize are the sizes of the index's toc (what a
	// start fetches) and of its windows section (fetched as frames need
	// them), from the registry's blob or else the local copy; 0 when
	// unknown. A version 1 index is all toc.
	TOCSize, WindowsSize int64
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
		if data, err := r.cfg.Store.GetIndex(d.Digest); err == nil {
			l.Local = true
			if toc, wins, err := index.TOCLen(data); err == nil {
				l.TOCSize, l.WindowsSize = toc, wins
			}
		}
		if rd, ok := remote[d.Digest]; ok {
			l.Remote = &rd
			l.TOCSize, l.WindowsSize = rd.Size, 0
			if toc, err := strconv.ParseInt(rd.Annotations[TOCSizeAnnotation], 10, 64); err == nil && toc > 0 && toc <= rd.Size {
				l.TOCSize, l.WindowsSize = toc, rd.Size-toc
			}
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
				var stored bool
				if x, stored, err = r.downloadOnce(gctx, img, d, rd); stored {
					origin = OriginLocal
				}
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

// EnsureIndexes makes sure that the local store has an index for every
// layer of img, finding or building the missing ones as Layers does, but
// without decoding those already there: a process that only prepares a
// mount for another leaves the decoding to that one (a damaged local index
// is found again there, by Layers).
func (r *Resolver) EnsureIndexes(ctx context.Context, img *fetch.Image) error {
	for _, d := range img.Manifest.Layers {
		if !r.cfg.Store.HasIndex(d.Digest) {
			_, err := r.Layers(ctx, img)
			return err
		}
	}
	return nil
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
		// An index kept as its toc alone (downloaded) gets its windows
		// from where it came from.
		x, err := withWindows(ctx, r.cfg.Client, r.cfg.Store, l.Index)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("index of layer %s: %w", l.Desc.Digest, err)
		}
		data, err := x.MarshalBinary()
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("encode index of layer %s: %w", l.Desc.Digest, err)
		}
		toc, _, err := index.TOCLen(data)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("encode index of layer %s: %w", l.Desc.Digest, err)
		}
		blobs[i] = fetch.ArtifactBlob{
			MediaType: IndexMediaType,
			Data:      data,
			Annotations: map[string]string{
				LayerAnnotation:   l.Desc.Digest.String(),
				TOCSizeAnnotation: strconv.FormatInt(toc, 10),
			},
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
// found again. So is a toc kept without the record of where its windows
// are (see Download).
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
	if !x.WindowsLoaded() {
		if _, err := getWindowOrigin(r.cfg.Store, x); err != nil {
			r.log.Warn("local index unusable, finding it again", "layer", layer, "err", err)
			return nil, nil
		}
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
		if err != nil || b.MediaType != IndexMediaType && b.MediaType != IndexMediaTypeV1 {
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
//
// Of a version 2 blob that says how long its toc is (TOCSizeAnnotation)
// only the toc is fetched, with one Range read: the returned index's
// windows are not loaded, and Source, Prefetch and Pull read them from the
// blob as frames need them. The store keeps the toc and, keyed by the
// toc's digest, where its windows are. Any other blob is fetched whole.
func (r *Resolver) Download(ctx context.Context, img *fetch.Image, layer, blob ocispec.Descriptor) (*index.Index, error) {
	if toc, err := strconv.ParseInt(blob.Annotations[TOCSizeAnnotation], 10, 64); err == nil && toc > 0 && toc < blob.Size {
		x, err := r.downloadTOC(ctx, img, layer, blob, toc)
		if err == nil || ctx.Err() != nil {
			return x, err
		}
		r.log.Warn("index toc unusable, fetching the whole index", "layer", layer.Digest, "err", err)
	}
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
	x, err := r.decodeFor(data, layer, blob)
	if err != nil {
		return nil, err
	}
	if err := r.cfg.Store.PutIndex(layer.Digest, data); err != nil {
		r.log.Warn("keep index locally", "layer", layer.Digest, "err", err)
	}
	return x, nil
}

// downloadOnce is Download, once among the processes that share the
// store: one that finds another downloading the same layer's index waits
// for it (at most indexPatience) and takes the index from the store
// (stored). 16 containers of one image started at once fetched 3.5 MB of
// index blobs where one container fetched 0.35 MB.
func (r *Resolver) downloadOnce(ctx context.Context, img *fetch.Image, layer, blob ocispec.Descriptor) (_ *index.Index, stored bool, _ error) {
	key := digest.FromString("lazyfs index download\n" + layer.Digest.String())
	unlock, ok := r.cfg.Store.TryLockFrame(key)
	if !ok {
		if r.cfg.Store.WaitFrameLock(ctx, key, indexPatience) {
			if x, err := r.LocalIndex(layer.Digest); err == nil && x != nil {
				return x, true, nil
			}
		}
		unlock, _ = r.cfg.Store.TryLockFrame(key) // not taken: download anyway
	}
	defer unlock()
	x, err := r.Download(ctx, img, layer, blob)
	return x, false, err
}

// indexPatience bounds how long a process waits for another's download
// of an index before it downloads the index itself.
const indexPatience = 5 * time.Second

// downloadTOC fetches the first toc bytes of blob and decodes them.
func (r *Resolver) downloadTOC(ctx context.Context, img *fetch.Image, layer, blob ocispec.Descriptor, toc int64) (*index.Index, error) {
	data, err := r.cfg.Client.ReadRange(ctx, img.Repo, blob.Digest, 0, toc)
	if err != nil {
		return nil, fmt.Errorf("fetch index toc of layer %s: %w", layer.Digest, err)
	}
	x, err := r.decodeFor(data, layer, blob)
	if err != nil {
		return nil, err
	}
	if x.WindowsLoaded() {
		// No windows (a tar layer): the toc is the whole index.
		if err := r.cfg.Store.PutIndex(layer.Digest, data); err != nil {
			r.log.Warn("keep index locally", "layer", layer.Digest, "err", err)
		}
		return x, nil
	}
	if _, n := x.WindowRange(0, len(x.Frames)-1); toc+n != blob.Size {
		return nil, fmt.Errorf("index blob %s: %w: toc of %d bytes and windows of %d, but the blob has %d",
			blob.Digest, index.ErrCorrupt, toc, n, blob.Size)
	}
	// Where the windows are goes first: a stored toc without it is a miss.
	err = putWindowOrigin(r.cfg.Store, x, windowOrigin{Repo: img.Repo, Blob: blob.Digest, Size: blob.Size, TOC: toc})
	if err == nil {
		err = r.cfg.Store.PutIndex(layer.Digest, data)
	}
	if err != nil {
		r.log.Warn("keep index locally", "layer", layer.Digest, "err", err)
	}
	return x, nil
}

// decodeFor decodes an index blob (whole, or its toc) and checks that it
// describes layer.
func (r *Resolver) decodeFor(data []byte, layer, blob ocispec.Descriptor) (*index.Index, error) {
	x, err := index.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("index of layer %s (blob %s): %w", layer.Digest, blob.Digest, err)
	}
	if x.Layer != layer.Digest || x.BlobSize != layer.Size {
		return nil, fmt.Errorf("index blob %s: %w: describes layer %s of %d bytes, want %s of %d",
			blob.Digest, index.ErrCorrupt, x.Layer, x.BlobSize, layer.Digest, layer.Size)
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
