package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types this package tells apart.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1Sig   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// maxConfigSize bounds an image config read by Resolve.
const maxConfigSize = 16 << 20

// maxIndexDepth bounds nested image indexes.
const maxIndexDepth = 4

// Image is a resolved image: the platform-specific manifest and its config.
type Image struct {
	Ref         string        // as given by the user
	Repo        string        // registry + repository, e.g. "127.0.0.1:5000/busybox"
	Digest      digest.Digest // the platform manifest's digest (the `subject` of index artifacts)
	MediaType   string        // the platform manifest's media type as served (OCI or Docker schema 2)
	IndexDigest digest.Digest // the image index the manifest was picked from; "" if the reference named a manifest

	// Manifest is the manifest in OCI form even if the registry served
	// Docker schema 2 (the same JSON shape); descriptors and Manifest.MediaType
	// keep the media types as served, so a layer's compression is still
	// told by its Docker or OCI media type.
	Manifest    ocispec.Manifest
	RawManifest []byte
	Config      ocispec.Image // parsed config (Docker's config JSON reads the same)
	RawConfig   []byte
}

// Descriptor returns the descriptor of img's manifest, as a `subject`.
func (img *Image) Descriptor() ocispec.Descriptor {
	mt := img.MediaType
	if mt == "" {
		mt = sniffMediaType(img.RawManifest)
	}
	return ocispec.Descriptor{MediaType: mt, Digest: img.Digest, Size: int64(len(img.RawManifest))}
}

// configReads bounds the reads of a config blob whose bytes do not match
// its digest: damage on the way is not retried below.
const configReads = 3

// Resolve fetches ref's manifest (a tag or a digest) and its config. An
// image index (OCI, or Docker manifest list) gives the manifest for
// Config.Platform; if it has none, the error wraps ErrNoPlatform and lists
// the platforms it has. An unknown tag, digest or repository gives an error
// wrapping ErrNotFound. Manifests are verified against their digest when
// asked by digest or picked from an index; the config always is, and must
// be as long as its descriptor says (else ErrDigestMismatch).
//
// A config whose bytes do not match its digest is read again, up to
// configReads times in all.
//
// Safe for concurrent use.
func (c *Client) Resolve(ctx context.Context, ref string) (*Image, error) {
	return c.ResolveWith(ctx, ref, nil)
}

// ResolveWith is Resolve, calling manifested (unless nil) with the image
// as soon as its manifest is known, before its config is fetched: a caller
// that needs only the manifest (the layers' indexes, the referrers) can
// start on it a round trip sooner. manifested gets a copy without Config
// and RawConfig; it must return at once.
func (c *Client) ResolveWith(ctx context.Context, ref string, manifested func(*Image)) (*Image, error) {
	r, err := c.parseReference(ref)
	if err != nil {
		return nil, err
	}
	cn, err := c.conn(ctx, r.Context().Name(), false)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	raw, mt, dgst, err := c.getManifest(ctx, cn, r)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	img := &Image{Ref: ref, Repo: cn.repo.Name()}
	for depth := 0; isIndex(mt); depth++ {
		if depth == maxIndexDepth {
			return nil, fmt.Errorf("resolve %s: image indexes nested more than %d deep: %w", ref, maxIndexDepth, ErrUnsupported)
		}
		child, err := pickFromIndex(raw, dgst, c.platform)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", ref, err)
		}
		img.IndexDigest = dgst
		raw, mt, dgst, err = c.getManifest(ctx, cn, cn.repo.Digest(child.Digest.String()))
		if err != nil {
			return nil, fmt.Errorf("resolve %s: manifest %s for %s: %w", ref, child.Digest, platformString(c.platform), err)
		}
	}
	img.Manifest, err = parseImageManifest(raw, mt, dgst)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	img.Digest, img.MediaType, img.RawManifest = dgst, mt, raw
	if manifested != nil {
		early := *img
		manifested(&early)
	}
	cd := img.Manifest.Config
	// Bytes damaged on the way fail the digest check, which the retries
	// below readBlob do not cover: read it again, a few times.
	for attempt := 1; ; attempt++ {
		img.RawConfig, err = c.readBlob(ctx, cn, cd.Digest, cd.Size)
		if !errors.Is(err, ErrDigestMismatch) || attempt == configReads {
			break
		}
		c.log.LogAttrs(ctx, slog.LevelDebug, "config blob corrupt, fetching it again", slog.String("op", "resolve"),
			slog.String("config", cd.Digest.String()), slog.Int("attempt", attempt), slog.Any("err", err))
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s: config %s: %w", ref, cd.Digest, err)
	}
	if img.Config, err = parseConfig(cd, img.RawConfig); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", ref, err)
	}
	return img, nil
}

// pickFromIndex parses raw as an image index (OCI, or Docker manifest
// list), dgst's bytes, and picks the manifest for platform as pickPlatform
// does.
func pickFromIndex(raw []byte, dgst digest.Digest, platform ocispec.Platform) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("parse index %s: %w", dgst, err)
	}
	child, err := pickPlatform(idx.Manifests, platform)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("index %s: %w", dgst, err)
	}
	return child, nil
}

// parseImageManifest parses raw, dgst's bytes served as media type mt, as
// an image manifest: an OCI or Docker schema 2 manifest whose config is
// at most maxConfigSize bytes. Other media types give ErrUnsupported, a
// config too large ErrTooLarge.
func parseImageManifest(raw []byte, mt string, dgst digest.Digest) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	switch mt {
	case ocispec.MediaTypeImageManifest, MediaTypeDockerManifest:
	case mediaTypeDockerSchema1, mediaTypeDockerSchema1Sig:
		return m, fmt.Errorf("manifest %s is a Docker schema 1 manifest (push the image again with a current tool): %w", dgst, ErrUnsupported)
	default:
		return m, fmt.Errorf("manifest %s has media type %q: %w", dgst, mt, ErrUnsupported)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("parse manifest %s: %w", dgst, err)
	}
	cd := m.Config
	if cd.Size < 0 || cd.Size > maxConfigSize {
		return m, fmt.Errorf("config %s of %d bytes: %w", cd.Digest, cd.Size, ErrTooLarge)
	}
	return m, nil
}

// parseConfig parses raw, the config blob cd names (its digest already
// verified), as an image config; raw must be cd.Size bytes long, else the
// error wraps ErrDigestMismatch.
func parseConfig(cd ocispec.Descriptor, raw []byte) (ocispec.Image, error) {
	var cfg ocispec.Image
	if int64(len(raw)) != cd.Size {
		// The digest matched, so the descriptor lies about the size.
		return cfg, fmt.Errorf("config %s: %d bytes, the manifest says %d: %w",
			cd.Digest, len(raw), cd.Size, ErrDigestMismatch)
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, fmt.Errorf("parse config %s: %w", cd.Digest, err)
	}
	return cfg, nil
}

// getManifest fetches one manifest or index through go-containerregistry
// (Accept negotiation, digest check when ref is a digest).
func (c *Client) getManifest(ctx context.Context, cn *conn, ref name.Reference) (raw []byte, mediaType string, dgst digest.Digest, err error) {
	d, err := remote.Get(ref, remote.WithTransport(cn.rt), remote.WithContext(ctx))
	if err != nil {
		return nil, "", "", convertErr(err)
	}
	return d.Manifest, manifestMediaType(string(d.MediaType), d.Manifest), digest.Digest(d.Digest.String()), nil
}

// manifestMediaType returns the media type of the manifest or index raw,
// served with Content-Type served: served without its parameters if that
// is an index or manifest type this package knows, else the document's own
// mediaType field or its shape (sniffMediaType), else served as it is.
// Both are compared in lower case, as media types are case-insensitive.
func manifestMediaType(served string, raw []byte) string {
	mt := bareMediaType(served)
	if !isIndex(mt) && !isKnownManifest(mt) {
		// A registry that answers with a generic Content-Type: trust the
		// document's own mediaType field.
		if s := sniffMediaType(raw); s != "" {
			mt = bareMediaType(s)
		}
	}
	return mt
}

// bareMediaType returns mt lower-cased and without parameters, or mt as it
// is when it does not parse as a media type.
func bareMediaType(mt string) string {
	if parsed, _, err := mime.ParseMediaType(mt); err == nil {
		return parsed
	}
	return mt
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isKnownManifest(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageManifest, MediaTypeDockerManifest, mediaTypeDockerSchema1, mediaTypeDockerSchema1Sig:
		return true
	}
	return false
}

// sniffMediaType reads a manifest's mediaType field, or guesses from its
// shape: "manifests" makes an OCI index, "config" an OCI manifest.
func sniffMediaType(raw []byte) string {
	var probe struct {
		MediaType string            `json:"mediaType"`
		Manifests []json.RawMessage `json:"manifests"`
		Config    json.RawMessage   `json:"config"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// normalizePlatform lower-cases and maps the common aliases (x86_64,
// aarch64, armhf), and gives arm64 and arm their default variants (v8, v7)
// and amd64 v1 the empty one.
func normalizePlatform(p ocispec.Platform) ocispec.Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	}
	switch {
	case p.Architecture == "arm64" && p.Variant == "":
		p.Variant = "v8"
	case p.Architecture == "arm" && p.Variant == "":
		p.Variant = "v7"
	case p.Architecture == "amd64" && p.Variant == "v1":
		p.Variant = ""
	}
	return p
}

// pickPlatform returns the first of descs for want: same OS and
// architecture, and the same variant (after normalizePlatform) if one is
// that exact, else — only when want names no variant — any variant. An
// OSVersion in want must match too. Entries without a platform never match.
func pickPlatform(descs []ocispec.Descriptor, want ocispec.Platform) (ocispec.Descriptor, error) {
	w := normalizePlatform(want)
	var loose *ocispec.Descriptor
	for i := range descs {
		d := &descs[i]
		if d.Platform == nil {
			continue
		}
		h := normalizePlatform(*d.Platform)
		if h.OS != w.OS || h.Architecture != w.Architecture {
			continue
		}
		if want.OSVersion != "" && want.OSVersion != d.Platform.OSVersion {
			continue
		}
		if h.Variant == w.Variant {
			return *d, nil
		}
		if want.Variant == "" && loose == nil {
			loose = d
		}
	}
	if loose != nil {
		return *loose, nil
	}
	var have []string
	for _, d := range descs {
		if d.Platform == nil || d.Annotations["vnd.docker.reference.type"] != "" {
			continue // attestations and the like
		}
		if s := platformString(*d.Platform); !slices.Contains(have, s) {
			have = append(have, s)
		}
	}
	list := "none"
	if len(have) > 0 {
		list = strings.Join(have, ", ")
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w %s (the index has: %s)", ErrNoPlatform, platformString(want), list)
}

// platformString writes p as "os/arch[/variant]".
func platformString(p ocispec.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	if p.OSVersion != "" {
		s += " (" + p.OSVersion + ")"
	}
	return s
}

// Manifest fetches the image manifest repo@dgst (an artifact found by
// Referrers, say), verified against dgst. An index or a schema 1 manifest
// is refused with ErrUnsupported; an unknown digest gives ErrNotFound.
//
// Safe for concurrent use.
func (c *Client) Manifest(ctx context.Context, repo string, dgst digest.Digest) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := dgst.Validate(); err != nil {
		return m, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	cn, err := c.conn(ctx, repo, false)
	if err != nil {
		return m, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	raw, mt, _, err := c.getManifest(ctx, cn, cn.repo.Digest(dgst.String()))
	if err != nil {
		return m, fmt.Errorf("manifest %s in %s: %w", dgst, repo, err)
	}
	if mt != ocispec.MediaTypeImageManifest && mt != MediaTypeDockerManifest {
		return m, fmt.Errorf("manifest %s in %s has media type %q: %w", dgst, repo, mt, ErrUnsupported)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return m, fmt.Errorf("manifest %s in %s: %w", dgst, repo, err)
	}
	return m, nil
}
