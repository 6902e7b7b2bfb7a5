package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/layers"
)

// The images a root has seen (pulled or run) are kept under ROOT/images:
//
//	images/refs/<hex>.json         one ImageRecord per reference; <hex> is the
//	                               SHA-256 of the record's Name
//	images/blobs/<alg>/<hex>       the manifests and configs those records
//	                               name, content-addressed, verified when read
//
// Every file is written to a temp file in its directory and renamed. With
// the blobs, a recorded image can be mounted while the registry is away.
const (
	imagesDir         = "images"
	imageRefsDir      = "refs"
	imageBlobsDir     = "blobs"
	imageRecordFormat = 1
)

// ErrUnknownImageRecord is wrapped when an image record has a format version
// this program does not know.
var ErrUnknownImageRecord = errors.New("unknown image record version")

// ImageName is an image reference split as image records keep it.
type ImageName struct {
	Repository string        // registry and repository: "127.0.0.1:5000/busybox", "index.docker.io/library/busybox"
	Tag        string        // "" when the reference names a digest
	Digest     digest.Digest // "" unless the reference names a digest
}

// ParseImageName splits ref as docker does: a missing registry is Docker
// Hub's, a missing tag is "latest" unless a digest is given.
func ParseImageName(ref string) (ImageName, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ImageName{}, fmt.Errorf("parse reference %q: %w", ref, err)
	}
	n := ImageName{Repository: r.Context().Name()}
	switch v := r.(type) {
	case name.Tag:
		n.Tag = v.TagStr()
	case name.Digest:
		n.Digest = digest.Digest(v.DigestStr())
	}
	return n, nil
}

// String is "repository:tag", or "repository@digest" for a digest reference.
func (n ImageName) String() string {
	if n.Digest != "" {
		return n.Repository + "@" + n.Digest.String()
	}
	return n.Repository + ":" + n.Tag
}

// ImageRecord is what a root remembers of one image reference, in
// ROOT/images/refs/<sha256 of Name>.json.
type ImageRecord struct {
	Version     int           `json:"version"`    // imageRecordFormat
	Name        string        `json:"name"`       // ImageName.String() of the reference
	Repository  string        `json:"repository"` // as ImageName
	Tag         string        `json:"tag,omitempty"`
	Digest      digest.Digest `json:"digest"`                // the platform manifest
	IndexDigest digest.Digest `json:"indexDigest,omitempty"` // the image index it was picked from, if any
	MediaType   string        `json:"mediaType"`             // of the manifest
	Config      digest.Digest `json:"config"`                // the config blob: the image ID
	Created     time.Time     `json:"created,omitzero"`      // as the config says
	Size        int64         `json:"size"`                  // compressed: the layer blobs' sizes summed
	Layers      int           `json:"layers"`
	Pulled      time.Time     `json:"pulled,omitzero"` // last complete pull of this Digest
	LastUsed    time.Time     `json:"lastUsed"`        // last pull or run
	// ProfileLooked says that the registry was asked for this Digest's
	// prefetch profile; Profile is the profile it had (kept under
	// images/blobs), "" when it had none. A start of the recorded image
	// then asks the registry nothing, as --pull=missing means; pull
	// always, or --record-prefetch, updates it.
	ProfileLooked bool          `json:"profileLooked,omitempty"`
	Profile       digest.Digest `json:"profile,omitempty"`
}

func (r *Runtime) imagesDir() string { return filepath.Join(r.cfg.Root, imagesDir) }

func (r *Runtime) imageRecordPath(n string) string {
	sum := sha256.Sum256([]byte(n))
	return filepath.Join(r.imagesDir(), imageRefsDir, hex.EncodeToString(sum[:])+".json")
}

func (r *Runtime) imageBlobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("image blob %q: %w", d, err)
	}
	return filepath.Join(r.imagesDir(), imageBlobsDir, d.Algorithm().String(), d.Encoded()), nil
}

// RecordImage notes that ref resolved to img and was used now, keeping
// img's manifest and config so that it can run without the registry.
// pulled says that a pull has just put every frame of img into the cache.
func (r *Runtime) RecordImage(ref string, img *fetch.Image, pulled bool) error {
	n, err := ParseImageName(ref)
	if err != nil {
		return err
	}
	for _, b := range [][]byte{img.RawManifest, img.RawConfig} {
		if err := r.putImageBlob(b); err != nil {
			return fmt.Errorf("record image %s: %w", n, err)
		}
	}
	now := time.Now().UTC()
	rec := ImageRecord{
		Version:     imageRecordFormat,
		Name:        n.String(),
		Repository:  n.Repository,
		Tag:         n.Tag,
		Digest:      img.Digest,
		IndexDigest: img.IndexDigest,
		MediaType:   img.MediaType,
		Config:      img.Manifest.Config.Digest,
		Layers:      len(img.Manifest.Layers),
		LastUsed:    now,
	}
	if c := img.Config.Created; c != nil {
		rec.Created = c.UTC()
	}
	for _, l := range img.Manifest.Layers {
		rec.Size += l.Size
	}
	old, err := r.readImageRecord(rec.Name)
	same := err == nil && old.Digest == rec.Digest
	switch {
	case pulled:
		rec.Pulled = now
	case same:
		rec.Pulled = old.Pulled
	}
	if same {
		rec.ProfileLooked, rec.Profile = old.ProfileLooked, old.Profile
	}
	b, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(r.imageRecordPath(rec.Name), append(b, '\n')); err != nil {
		return fmt.Errorf("record image %s: %w", n, err)
	}
	return nil
}

// recordProfile notes in ref's record what the registry answered when
// asked for img's prefetch profile: p, or nil for none. A record of
// another digest is left alone.
func (r *Runtime) recordProfile(ref string, img *fetch.Image, p *layers.Profile) error {
	n, err := ParseImageName(ref)
	if err != nil {
		return err
	}
	rec, err := r.readImageRecord(n.String())
	if err != nil || rec.Digest != img.Digest {
		return err
	}
	rec.ProfileLooked, rec.Profile = true, ""
	if p != nil {
		b, err := p.Encode()
		if err != nil {
			return fmt.Errorf("record prefetch profile of %s: %w", n, err)
		}
		if err := r.putImageBlob(b); err != nil {
			return fmt.Errorf("record prefetch profile of %s: %w", n, err)
		}
		rec.Profile = digest.FromBytes(b)
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(r.imageRecordPath(rec.Name), append(b, '\n'))
}

// recordedProfile returns the prefetch profile ref's record keeps for img
// (nil when the registry had none) and true, or false when the record
// cannot say: no record of img, never asked, or the kept profile unusable.
func (r *Runtime) recordedProfile(ref string, img *fetch.Image) (*layers.Profile, bool) {
	n, err := ParseImageName(ref)
	if err != nil {
		return nil, false
	}
	rec, err := r.readImageRecord(n.String())
	if err != nil || rec.Digest != img.Digest || !rec.ProfileLooked {
		return nil, false
	}
	if rec.Profile == "" {
		return nil, true
	}
	b, err := r.imageBlob(rec.Profile)
	if err != nil {
		r.log.Debug("recorded prefetch profile unusable", "image", ref, "err", err)
		return nil, false
	}
	p, err := layers.DecodeProfile(b)
	if err != nil || p.Image != img.Digest {
		r.log.Debug("recorded prefetch profile unusable", "image", ref, "err", err)
		return nil, false
	}
	return p, true
}

// readImageRecord reads the record named n. The error wraps fs.ErrNotExist
// when there is none.
func (r *Runtime) readImageRecord(n string) (*ImageRecord, error) {
	return readImageRecordFile(r.imageRecordPath(n))
}

func readImageRecordFile(path string) (*ImageRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec ImageRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("image record %s: %w", path, err)
	}
	if rec.Version != imageRecordFormat {
		return nil, fmt.Errorf("image record %s: %w %d (this lazyrun knows %d)", path, ErrUnknownImageRecord, rec.Version, imageRecordFormat)
	}
	if err := rec.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("image record %s: digest: %w", path, err)
	}
	return &rec, nil
}

// putImageBlob keeps b under its SHA-256 unless it is there already.
func (r *Runtime) putImageBlob(b []byte) error {
	p, err := r.imageBlobPath(digest.FromBytes(b))
	if err != nil {
		return err
	}
	if fi, err := os.Stat(p); err == nil && fi.Size() == int64(len(b)) {
		return nil
	}
	return writeFileAtomic(p, b)
}

// imageBlob returns the kept blob d, verified.
func (r *Runtime) imageBlob(d digest.Digest) ([]byte, error) {
	p, err := r.imageBlobPath(d)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if got := d.Algorithm().FromBytes(b); got != d {
		return nil, fmt.Errorf("image blob %s: %w: the file's digest is %s", d, index.ErrCorrupt, got)
	}
	return b, nil
}

// LocalImage returns the image this root recorded for ref, built from the
// kept manifest and config without asking the registry. The error wraps
// fs.ErrNotExist when ref was never pulled or run here.
func (r *Runtime) LocalImage(ref string) (*fetch.Image, *ImageRecord, error) {
	n, err := ParseImageName(ref)
	if err != nil {
		return nil, nil, err
	}
	rec, err := r.readImageRecord(n.String())
	if err != nil {
		return nil, nil, fmt.Errorf("local image %s: %w", n, err)
	}
	img := &fetch.Image{Ref: ref, Repo: rec.Repository, Digest: rec.Digest, MediaType: rec.MediaType, IndexDigest: rec.IndexDigest}
	if img.RawManifest, err = r.imageBlob(rec.Digest); err != nil {
		return nil, nil, fmt.Errorf("local image %s: manifest: %w", n, err)
	}
	if err := json.Unmarshal(img.RawManifest, &img.Manifest); err != nil {
		return nil, nil, fmt.Errorf("local image %s: manifest %s: %w", n, rec.Digest, err)
	}
	if img.RawConfig, err = r.imageBlob(img.Manifest.Config.Digest); err != nil {
		return nil, nil, fmt.Errorf("local image %s: config: %w", n, err)
	}
	if err := json.Unmarshal(img.RawConfig, &img.Config); err != nil {
		return nil, nil, fmt.Errorf("local image %s: config %s: %w", n, img.Manifest.Config.Digest, err)
	}
	return img, rec, nil
}

// PullPolicy is docker run's --pull: when to ask the registry what a
// reference names rather than use the image this root has recorded for it.
type PullPolicy string

const (
	// PullMissing uses the recorded image if there is one, else asks the
	// registry: a start of a known image makes no request before the mount.
	PullMissing PullPolicy = "missing"
	// PullAlways asks the registry every time and fails without it.
	PullAlways PullPolicy = "always"
	// PullNever uses the recorded image and fails without one.
	PullNever PullPolicy = "never"
)

// ParsePullPolicy checks a --pull value.
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch p := PullPolicy(s); p {
	case PullMissing, PullAlways, PullNever:
		return p, nil
	}
	return "", fmt.Errorf("invalid pull policy %q: want %s, %s or %s", s, PullMissing, PullAlways, PullNever)
}

// ErrNoSuchImage is wrapped when --pull=never finds no record of an image.
var ErrNoSuchImage = errors.New("no such image")

// imageToRun returns the image ref names under policy p, and records it as
// used. "Recorded" means this root pulled or ran ref before and kept its
// manifest and config (LocalImage); its frames may still be in the
// registry only, as with any lazily run image.
//
// manifested, unless nil, is called as fetch.Client.ResolveWith calls it
// when the image comes from the registry.
func (r *Runtime) imageToRun(ctx context.Context, ref string, p PullPolicy, manifested func(*fetch.Image)) (*fetch.Image, error) {
	if p == PullAlways {
		img, err := r.cfg.Client.ResolveWith(ctx, ref, manifested)
		if err != nil {
			return nil, err
		}
		if err := r.RecordImage(ref, img, false); err != nil {
			r.log.Warn("cannot record image", "image", ref, "err", err)
		}
		return img, nil
	}
	img, _, err := r.LocalImage(ref)
	switch {
	case err == nil:
		if err := r.RecordImage(ref, img, false); err != nil {
			r.log.Warn("cannot record image", "image", ref, "err", err)
		}
		r.log.Debug("image as recorded", "image", ref, "digest", img.Digest)
		return img, nil
	case p == PullNever:
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: this root has not pulled or run it (--pull=never)", ErrNoSuchImage, ref)
		}
		return nil, err
	case !errors.Is(err, fs.ErrNotExist):
		r.log.Warn("local copy of image unusable: asking the registry", "image", ref, "err", err)
	}
	img, _, err = r.resolveImage(ctx, ref, manifested)
	return img, err
}

// ResolveImage resolves ref in the registry and records the image as used.
// If the registry cannot answer (it is down, or the network is) and this
// root has a record of ref, the recorded image is returned instead and the
// log says so: at Info if it was pulled, else at Warn, since files that are
// not in the cache will then fail to read. A failure to record is logged,
// not returned.
func (r *Runtime) ResolveImage(ctx context.Context, ref string) (*fetch.Image, error) {
	img, _, err := r.resolveImage(ctx, ref, nil)
	return img, err
}

// resolveImage is ResolveImage, also telling whether the image came from
// the record because the registry did not answer.
func (r *Runtime) resolveImage(ctx context.Context, ref string, manifested func(*fetch.Image)) (img *fetch.Image, recorded bool, err error) {
	img, err = r.cfg.Client.ResolveWith(ctx, ref, manifested)
	if err == nil {
		if rerr := r.RecordImage(ref, img, false); rerr != nil {
			r.log.Warn("cannot record image", "image", ref, "err", rerr)
		}
		return img, false, nil
	}
	if ctx.Err() != nil {
		return nil, false, err
	}
	local, rec, lerr := r.LocalImage(ref)
	if lerr != nil {
		if !errors.Is(lerr, fs.ErrNotExist) {
			r.log.Warn("local copy of image unusable", "image", ref, "err", lerr)
		}
		return nil, false, err
	}
	if rec.Pulled.IsZero() {
		r.log.Warn("registry unreachable: using the image as last seen; it was never pulled, so files not in the cache will fail to read",
			"image", ref, "digest", rec.Digest, "err", err)
	} else {
		r.log.Info("registry unreachable: using the pulled image", "image", ref, "digest", rec.Digest,
			"pulled", rec.Pulled.Format(time.RFC3339), "err", err)
	}
	return local, true, nil
}

// PullOptions tune Pull and let the caller follow it.
type PullOptions struct {
	Parallel int // requests in flight at once; 0 = layers.PullConfig's default
	// Resolved, if set, is called once ref is resolved, before layer
	// indexes are looked for (which may mean building them).
	Resolved func(img *fetch.Image)
	// Indexed, if set, is called with every layer's index before any frame
	// is fetched.
	Indexed func(ls []layers.Layer)
	// Progress is layers.PullConfig.Progress.
	Progress func(layers.PullProgress)
	// Unpack writes every layer out under ROOT/layers once its frames are
	// cached (docker's pull unpacks too), so that containers of the image
	// run on a kernel overlay over them, without FUSE.
	Unpack bool
	// Unpacked, if set, is told about each layer as its unpack ends;
	// calls may come from several goroutines at once.
	Unpacked func(UnpackProgress)
}

// PullResult is what Pull did.
type PullResult struct {
	Image  *fetch.Image
	Layers []layers.Layer
	Pulls  []layers.LayerPull // per layer
	// Unpacks is per layer what the unpack did (with PullOptions.Unpack).
	Unpacks []UnpackProgress
}

// Fetched reports whether the pull stored anything.
func (p *PullResult) Fetched() bool {
	for _, lp := range p.Pulls {
		if lp.Stored > 0 {
			return true
		}
	}
	return false
}

// Pull resolves ref, finds (or builds) every layer's index, and puts every
// frame of the image into the cache, so that the image then runs — every
// file of it — without the registry; with opt.Unpack it then unpacks every
// layer from the cache (see unpackImage). The image is recorded as seen once it
// is resolved, and as pulled once every frame is in the cache.
func (r *Runtime) Pull(ctx context.Context, ref string, opt PullOptions) (*PullResult, error) {
	img, err := r.cfg.Client.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := r.RecordImage(ref, img, false); err != nil {
		r.log.Warn("cannot record image", "image", ref, "err", err)
	}
	if opt.Resolved != nil {
		opt.Resolved(img)
	}
	ls, err := r.cfg.Resolver.Layers(ctx, img)
	if err != nil {
		return nil, err
	}
	if opt.Indexed != nil {
		opt.Indexed(ls)
	}
	progress := opt.Progress
	var (
		un     *imageUnpack
		cancel context.CancelFunc = func() {}
	)
	if opt.Unpack {
		// Each layer is unpacked as soon as its frames are in: behind the
		// fetch of the others.
		var uctx context.Context
		uctx, cancel = context.WithCancel(ctx)
		defer cancel()
		un = r.startUnpack(uctx, img, ls, opt.Unpacked)
		progress = func(pp layers.PullProgress) {
			if opt.Progress != nil {
				opt.Progress(pp)
			}
			if pp.Done {
				un.layer(pp.Layer)
			}
		}
	}
	pulls, err := r.cfg.Resolver.Pull(ctx, img, ls, layers.PullConfig{Parallel: opt.Parallel, Progress: progress})
	if err == nil {
		err = r.RecordImage(ref, img, true)
	}
	if err != nil {
		if un != nil {
			cancel()
			un.wait() //nolint:errcheck // the pull failed: this only stops the unpacks started
		}
		return nil, err
	}
	res := &PullResult{Image: img, Layers: ls, Pulls: pulls}
	if un != nil {
		if res.Unpacks, err = un.wait(); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// ImageInfo is an image record with what the cache holds of it now.
type ImageInfo struct {
	ImageRecord
	Indexed      int   // layers whose index is in the local store (they mount without the registry's help)
	Uncompressed int64 // uncompressed bytes of the indexed layers
	Cached       int64 // uncompressed bytes of their frames on disk
}

// Images lists the images this root has seen, newest (by config creation
// time) first. It reads only files under the root: no registry, and no
// cache writes. Unreadable records are skipped and logged.
func (r *Runtime) Images() ([]ImageInfo, error) {
	dir := filepath.Join(r.imagesDir(), imageRefsDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cacheDir := filepath.Join(r.cfg.Root, "cache")
	seen := map[digest.Digest]*layerCacheInfo{}
	var out []ImageInfo
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		rec, err := readImageRecordFile(filepath.Join(dir, e.Name()))
		if err != nil {
			r.log.Warn("skipping unreadable image record", "path", filepath.Join(dir, e.Name()), "err", err)
			continue
		}
		info := ImageInfo{ImageRecord: *rec}
		raw, err := r.imageBlob(rec.Digest)
		var m ocispec.Manifest
		if err == nil {
			err = json.Unmarshal(raw, &m)
		}
		if err != nil {
			r.log.Warn("image manifest unreadable: cache figures left out", "image", rec.Name, "err", err)
			out = append(out, info)
			continue
		}
		for _, l := range m.Layers {
			lc := seen[l.Digest]
			if lc == nil {
				lc = r.layerCacheInfo(cacheDir, l.Digest)
				seen[l.Digest] = lc
			}
			if lc.indexed {
				info.Indexed++
				info.Uncompressed += lc.size
				info.Cached += lc.cached
			}
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b ImageInfo) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

type layerCacheInfo struct {
	indexed      bool
	size, cached int64
}

// layerCacheInfo reads layer d's index from the cache root and sums the
// sizes of its frames that are on disk (present, not verified).
func (r *Runtime) layerCacheInfo(cacheDir string, d digest.Digest) *layerCacheInfo {
	lc := &layerCacheInfo{}
	p, err := cache.IndexPath(cacheDir, d)
	if err != nil {
		return lc
	}
	b, err := os.ReadFile(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log.Warn("layer index unreadable", "layer", d, "err", err)
		}
		return lc
	}
	x, err := index.Decode(b)
	if err != nil || x.Layer != d {
		r.log.Warn("layer index unusable", "layer", d, "err", err)
		return lc
	}
	lc.indexed, lc.size = true, x.TarSize
	lc.cached = cache.FramesPresent(cacheDir, x.Frames).Bytes
	return lc
}

// writeFileAtomic writes data to a temp file in path's directory (made if
// missing) and renames it to path, so that concurrent readers and writers
// in other processes see a whole file or none.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
