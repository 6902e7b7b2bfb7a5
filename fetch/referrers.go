package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Referrers returns the descriptors of artifacts whose subject is
// img.Digest and whose artifactType equals artifactType ("" = all). It uses
// the registry's referrers API, or for registries without one (Debian's
// docker-registry 2.8 is one) the OCI 1.1 referrers tag schema: the image
// index tagged `sha256-<hex>`. No referrers is an empty result, not an
// error. Only the first page of a paginated referrers answer is read. The
// filter is applied here, not by the registry; an entry listed with no
// artifact type or the empty config's media type costs one manifest read to
// learn its real artifact type (registries that derive it from the config
// exist).
//
// Safe for concurrent use.
func (c *Client) Referrers(ctx context.Context, img *Image, artifactType string) ([]ocispec.Descriptor, error) {
	cn, err := c.conn(ctx, img.Repo, false)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", img.Digest, err)
	}
	if err := img.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", img.Digest, err)
	}
	im, err := c.referrersIndex(ctx, cn, img.Digest)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s in %s: %w", img.Digest, img.Repo, err)
	}
	out := make([]ocispec.Descriptor, 0, len(im.Manifests))
	for _, od := range im.Manifests {
		if od.Digest.Validate() != nil {
			continue
		}
		if (od.ArtifactType == "" || od.ArtifactType == ocispec.MediaTypeEmptyJSON) && od.MediaType == ocispec.MediaTypeImageManifest {
			// Some referrers APIs (go-containerregistry's own test
			// registry among them) give the config's media type even when
			// the manifest has an artifactType: read the manifest.
			m, err := c.Manifest(ctx, img.Repo, od.Digest)
			if err != nil {
				return nil, fmt.Errorf("referrers of %s in %s: %w", img.Digest, img.Repo, err)
			}
			if m.ArtifactType != "" && m.ArtifactType != od.ArtifactType {
				c.log.LogAttrs(ctx, slog.LevelDebug, "referrers API gave another artifact type than the manifest",
					slog.String("op", "referrers"), slog.String("manifest", od.Digest.String()),
					slog.String("listed", od.ArtifactType), slog.String("artifactType", m.ArtifactType))
				od.ArtifactType = m.ArtifactType
			}
		}
		if artifactType != "" && od.ArtifactType != artifactType {
			continue
		}
		out = append(out, od)
	}
	return out, nil
}

// maxReferrersIndex bounds a referrers listing (the API's answer or the
// fallback tag's index), as go-containerregistry bounds manifests.
const maxReferrersIndex = 100 << 20

// referrersIndex lists the referrers of d: the referrers API's answer if
// the registry has one, else the index under the fallback tag (none:
// empty). Both are asked at once, so that a registry without the API
// costs one round trip, not two.
func (c *Client) referrersIndex(ctx context.Context, cn *conn, d digest.Digest) (*ocispec.Index, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		idx *ocispec.Index
		err error
	}
	tagc := make(chan answer, 1)
	go func() {
		idx, err := c.fallbackIndex(ctx, cn, d)
		tagc <- answer{idx, err}
	}()
	idx, hasAPI, err := c.referrersAPI(ctx, cn, d)
	if err != nil {
		return nil, err
	}
	if hasAPI {
		return idx, nil
	}
	a := <-tagc
	return a.idx, a.err
}

// referrersAPI asks the registry's referrers API; hasAPI is false when the
// registry answers as one without it (404, 400, 406, or not an index).
func (c *Client) referrersAPI(ctx context.Context, cn *conn, d digest.Digest) (idx *ocispec.Index, hasAPI bool, err error) {
	u := cn.repo.Registry.Scheme() + "://" + cn.repo.RegistryStr() + "/v2/" + cn.repo.RepositoryStr() + "/referrers/" + d.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Accept", ocispec.MediaTypeImageIndex)
	resp, err := cn.http.Do(req)
	if err != nil {
		return nil, false, convertErr(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound, resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusNotAcceptable:
		return nil, false, nil
	case resp.StatusCode != http.StatusOK:
		return nil, false, convertErr(transport.CheckError(resp, http.StatusOK))
	case resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex:
		return nil, false, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReferrersIndex+1))
	if err != nil {
		return nil, false, err
	}
	if len(b) > maxReferrersIndex {
		return nil, false, fmt.Errorf("referrers API answer: %w: over %d bytes", ErrTooLarge, maxReferrersIndex)
	}
	idx = &ocispec.Index{}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, false, fmt.Errorf("referrers API answer: %w", err)
	}
	return idx, true, nil
}

// fallbackIndex reads the index under d's referrers fallback tag
// (sha256-<hex>); no such tag is an empty index.
func (c *Client) fallbackIndex(ctx context.Context, cn *conn, d digest.Digest) (*ocispec.Index, error) {
	tag := cn.repo.Tag(d.Algorithm().String() + "-" + d.Encoded())
	desc, err := remote.Get(tag, remote.WithTransport(cn.rt), remote.WithContext(ctx))
	var terr *transport.Error
	switch {
	case errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound:
		return &ocispec.Index{}, nil
	case err != nil:
		return nil, convertErr(err)
	}
	idx := &ocispec.Index{}
	if err := json.Unmarshal(desc.Manifest, idx); err != nil {
		return nil, fmt.Errorf("referrers tag %s: %w", tag, err)
	}
	return idx, nil
}

// ArtifactBlob is one blob of an artifact pushed by PushArtifact.
type ArtifactBlob struct {
	MediaType   string
	Data        []byte
	Annotations map[string]string
}

// emptyJSON is the content of the empty descriptor's blob.
var emptyJSON = []byte("{}")

// PushArtifact uploads blobs (each with its media type and annotations)
// and an OCI image manifest with artifactType, subject = img's manifest
// descriptor, and the empty config (application/vnd.oci.empty.v1+json,
// `{}`), then makes it findable through Referrers. An artifact without
// blobs gets the empty descriptor as its one layer, as the image spec asks.
//
// The manifest is pushed by digest (no tag). go-containerregistry's writer
// checks whether the registry has a referrers API and, if not, adds the
// manifest's descriptor to the image index under the subject's fallback
// tag. That update is a read-modify-write without conditional requests:
// two clients pushing referrers of one subject at the same moment may lose
// one of the entries (the manifests themselves are safe).
//
// Pushing the same content again yields the same digest and is harmless.
// Returns the artifact manifest's descriptor. Safe for concurrent use.
func (c *Client) PushArtifact(ctx context.Context, img *Image, artifactType string, blobs []ArtifactBlob, annotations map[string]string) (ocispec.Descriptor, error) {
	fail := func(err error) (ocispec.Descriptor, error) {
		return ocispec.Descriptor{}, fmt.Errorf("push %s artifact for %s: %w", artifactType, img.Digest, err)
	}
	if artifactType == "" {
		return fail(errors.New("artifact type is empty"))
	}
	if err := img.Digest.Validate(); err != nil {
		return fail(err)
	}
	for i, b := range blobs {
		if b.MediaType == "" {
			return fail(fmt.Errorf("blob %d has no media type", i))
		}
	}
	cn, err := c.conn(ctx, img.Repo, true)
	if err != nil {
		return fail(err)
	}
	pusher, err := remote.NewPusher(
		remote.WithTransport(cn.rt),
		remote.WithRetryBackoff(remote.Backoff{Duration: c.cfg.Backoff, Factor: 2, Jitter: 0.25, Steps: c.retries + 1}),
		remote.WithRetryPredicate(ggcrRetryable),
	)
	if err != nil {
		return fail(err)
	}

	upload := func(data []byte, mt string) error {
		if err := pusher.Upload(ctx, cn.repo, static.NewLayer(data, types.MediaType(mt))); err != nil {
			return fmt.Errorf("upload %s blob %s: %w", mt, digest.FromBytes(data), convertErr(err))
		}
		return nil
	}
	empty := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digest.FromBytes(emptyJSON), Size: int64(len(emptyJSON))}
	if err := upload(emptyJSON, empty.MediaType); err != nil {
		return fail(err)
	}
	layers := make([]ocispec.Descriptor, 0, max(len(blobs), 1))
	for _, b := range blobs {
		if err := upload(b.Data, b.MediaType); err != nil {
			return fail(err)
		}
		layers = append(layers, ocispec.Descriptor{
			MediaType: b.MediaType, Digest: digest.FromBytes(b.Data), Size: int64(len(b.Data)), Annotations: b.Annotations,
		})
	}
	if len(layers) == 0 {
		layers = append(layers, empty)
	}
	subject := img.Descriptor()
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       empty,
		Layers:       layers,
		Subject:      &subject,
		Annotations:  annotations,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return fail(err)
	}
	d := digest.FromBytes(raw)
	if err := pusher.Put(ctx, cn.repo.Digest(d.String()), rawManifest{raw: raw, mediaType: ocispec.MediaTypeImageManifest}); err != nil {
		return fail(fmt.Errorf("put manifest %s: %w", d, convertErr(err)))
	}
	return ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		Digest:       d,
		Size:         int64(len(raw)),
		ArtifactType: artifactType,
		Annotations:  annotations,
	}, nil
}

// rawManifest is a go-containerregistry Taggable of bytes we made.
type rawManifest struct {
	raw       []byte
	mediaType string
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.MediaType(m.mediaType), nil }

// ggcrRetryable decides go-containerregistry's own upload retries: only
// failures our transport could not retry itself (a connection broken while
// a streamed body was being sent). Statuses were retried below already, and
// an ended context is final.
func ggcrRetryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return false
	}
	return retryable(context.Background(), err)
}
