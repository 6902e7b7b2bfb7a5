package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayerFile is a gzip-compressed layer tarball on disk, described by the
// one who wrote it (PushAppend does not read it to learn these).
type LayerFile struct {
	Path   string        // read once per upload attempt
	Digest digest.Digest // sha256 of the file
	DiffID digest.Digest // sha256 of the uncompressed tar
	Size   int64         // of the file
}

// Append is an image made of Base and one more layer on top, as
// `docker commit` makes it.
type Append struct {
	Base  *Image
	Layer LayerFile
	// History is the new layer's entry in the config's history (created,
	// created_by, author, comment). EmptyLayer is ignored.
	History ocispec.History
	// Created is the new config's creation time; zero means now.
	Created time.Time
	// Author replaces the config's author (docker commit --author sets it,
	// and clears it when not given).
	Author string
	// Config, when set, replaces the base's container config (command,
	// environment, user, ports, volumes, labels, stop signal): docker
	// commit writes the container's. Fields the OCI config lacks
	// (healthcheck, shell) are kept from the base.
	Config *ocispec.ImageConfig
	// OnBuild are ONBUILD triggers added to the base's.
	OnBuild []string
}

// ValidatePushRef checks that ref can be pushed to: a repository with a
// tag (none means "latest"), not a digest.
func ValidatePushRef(ref string) error {
	_, err := parseTag(ref)
	return err
}

func parseTag(ref string) (name.Tag, error) {
	t, err := name.NewTag(ref)
	if err != nil {
		return name.Tag{}, fmt.Errorf("invalid reference %q: want [REGISTRY/]REPOSITORY[:TAG]: %w", ref, err)
	}
	return t, nil
}

// DigestRef returns ref's repository with dgst instead of its tag or
// digest ("host/repo@sha256:…"), to name exactly the image a container was
// created from when its tag may have moved since.
func DigestRef(ref string, dgst digest.Digest) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("parse reference %q: %w", ref, err)
	}
	if err := dgst.Validate(); err != nil {
		return "", fmt.Errorf("digest of %s: %w", ref, err)
	}
	return r.Context().Name() + "@" + dgst.String(), nil
}

// PushAppend pushes to ref (a tag) the image a.Base plus a.Layer, and
// returns it as Resolve would. The manifest keeps Base's media type family
// (OCI or Docker schema 2, layer media type to match), its annotations and
// its layers by digest; the config is Base's with the layer's diff_id and
// a.History appended and created and author set. Base's layers are not
// uploaded again: in Base's repository they exist; in another repository
// of the same registry they are mounted from Base's (the registry copies
// them itself), and elsewhere they are streamed from Base's registry.
//
// go-containerregistry builds the image (mutate.Append on the remote base,
// which round-trips the config through its v1.ConfigFile: fields it does
// not know are dropped) and pushes it (remote.Write). A layer upload is not
// bound by Config.RequestTimeout as a whole, only each pause of it (a big
// layer takes its time); uploads are retried on connection errors by
// go-containerregistry, which then reads the file again.
//
// Safe for concurrent use.
func (c *Client) PushAppend(ctx context.Context, ref string, a Append) (*Image, error) {
	fail := func(err error) (*Image, error) { return nil, fmt.Errorf("push %s: %w", ref, err) }
	dst, err := parseTag(ref)
	if err != nil {
		return nil, err
	}
	if dst, err = name.NewTag(ref, c.nameOptions(dst.RegistryStr())...); err != nil {
		return fail(err)
	}
	if a.Base == nil {
		return fail(errors.New("no base image"))
	}
	if err := a.Base.Digest.Validate(); err != nil {
		return fail(fmt.Errorf("base image: %w", err))
	}
	for _, d := range []digest.Digest{a.Layer.Digest, a.Layer.DiffID} {
		if err := d.Validate(); err != nil {
			return fail(fmt.Errorf("layer %s: %w", a.Layer.Path, err))
		}
	}
	layerType, err := gzipLayerType(a.Base.MediaType)
	if err != nil {
		return fail(err)
	}

	src, err := c.conn(ctx, a.Base.Repo, false)
	if err != nil {
		return fail(fmt.Errorf("base image %s: %w", a.Base.Digest, err))
	}
	base, err := remote.Image(src.repo.Digest(a.Base.Digest.String()), remote.WithTransport(src.rt), remote.WithContext(ctx))
	if err != nil {
		return fail(fmt.Errorf("base image %s: %w", a.Base.Digest, convertErr(err)))
	}
	h := a.History
	created := time.Now()
	if h.Created != nil {
		created = *h.Created
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: &fileLayer{f: a.Layer, mediaType: layerType},
		History: v1.History{
			Author:    h.Author,
			Created:   v1.Time{Time: created.UTC()},
			CreatedBy: h.CreatedBy,
			Comment:   h.Comment,
		},
		MediaType: layerType,
	})
	if err != nil {
		return fail(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return fail(fmt.Errorf("base image %s config: %w", a.Base.Digest, convertErr(err)))
	}
	cf.Created = v1.Time{Time: timeOr(a.Created, time.Now()).UTC()}
	cf.Author = a.Author
	if c := a.Config; c != nil {
		cf.Config.Cmd, cf.Config.Entrypoint, cf.Config.Env = c.Cmd, c.Entrypoint, c.Env
		cf.Config.User, cf.Config.WorkingDir, cf.Config.StopSignal = c.User, c.WorkingDir, c.StopSignal
		cf.Config.Labels, cf.Config.Volumes, cf.Config.ExposedPorts = c.Labels, c.Volumes, c.ExposedPorts
	}
	cf.Config.OnBuild = append(cf.Config.OnBuild, a.OnBuild...)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return fail(err)
	}

	rt, err := c.pushTransport(ctx, dst.Repository, src.repo)
	if err != nil {
		return fail(err)
	}
	err = remote.Write(dst, img,
		remote.WithTransport(rt),
		remote.WithContext(ctx),
		remote.WithRetryBackoff(remote.Backoff{Duration: c.cfg.Backoff, Factor: 2, Jitter: 0.25, Steps: c.retries + 1}),
		remote.WithRetryPredicate(ggcrRetryable),
	)
	if err != nil {
		return fail(convertErr(err))
	}
	out, err := imageOf(ref, dst.Repository.Name(), img)
	if err != nil {
		return fail(fmt.Errorf("pushed image: %w", err))
	}
	return out, nil
}

// gzipLayerType is the gzip layer media type of a manifest's family.
func gzipLayerType(manifestType string) (types.MediaType, error) {
	switch manifestType {
	case ocispec.MediaTypeImageManifest:
		return types.OCILayer, nil
	case MediaTypeDockerManifest:
		return types.DockerLayer, nil
	}
	return "", fmt.Errorf("base manifest media type %q: %w", manifestType, ErrUnsupported)
}

func timeOr(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

// imageOf describes a pushed image as Resolve would have.
func imageOf(ref, repo string, img v1.Image) (*Image, error) {
	out := &Image{Ref: ref, Repo: repo}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, err
	}
	out.Digest, out.MediaType = digest.Digest(d.String()), string(mt)
	if out.RawManifest, err = img.RawManifest(); err != nil {
		return nil, err
	}
	if out.RawConfig, err = img.RawConfigFile(); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(out.RawManifest, &out.Manifest); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", out.Digest, err)
	}
	if err := json.Unmarshal(out.RawConfig, &out.Config); err != nil {
		return nil, fmt.Errorf("config of %s: %w", out.Digest, err)
	}
	return out, nil
}

// pushTransport authenticates for pushing to dst and, when from is another
// repository of the same registry, pulling from it, so that the registry
// may mount from's blobs into dst. Made for one push, not kept.
func (c *Client) pushTransport(ctx context.Context, dst, from name.Repository) (http.RoundTripper, error) {
	auth, err := authn.Resolve(ctx, c.keychain, dst)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", dst.RegistryStr(), err)
	}
	scopes := []string{dst.Scope(transport.PushScope)}
	if from.RegistryStr() == dst.RegistryStr() && from.RepositoryStr() != dst.RepositoryStr() {
		scopes = append(scopes, from.Scope(transport.PullScope))
	}
	inner := &uploadTransport{inner: c.base, idle: c.cfg.RequestTimeout}
	rt, err := transport.NewWithContext(ctx, dst.Registry, auth, inner, scopes)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", dst.Name(), convertErr(err))
	}
	return rt, nil
}

// uploadTransport lets a request with a streamed body (a blob upload, which
// our retry layer cannot replay anyway) past the retry and per-request
// timeout layers, whose deadline would cut off a big upload, and instead
// ends it when its body is not read, or its answer does not come, for idle.
// Other requests go through unchanged.
type uploadTransport struct {
	inner http.RoundTripper
	idle  time.Duration
}

func (t *uploadTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return t.inner.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(managed(req.Context()))
	w := &watchdog{timer: time.AfterFunc(t.idle, func() {
		cancel(fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), ErrStalled))
	}), idle: t.idle}
	r := req.WithContext(ctx)
	r.Body = &watchedBody{ReadCloser: req.Body, w: w}
	resp, err := t.inner.RoundTrip(r)
	w.stop()
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

// watchdog is a timer that each sign of progress pushes back.
type watchdog struct {
	mu      sync.Mutex // guards stopped
	stopped bool
	timer   *time.Timer
	idle    time.Duration
}

func (w *watchdog) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(w.idle)
	}
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
}

type watchedBody struct {
	io.ReadCloser
	w *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.w.kick()
	return n, err
}

// fileLayer is a v1.Layer of a LayerFile.
type fileLayer struct {
	f         LayerFile
	mediaType types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return v1.NewHash(l.f.Digest.String()) }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return v1.NewHash(l.f.DiffID.String()) }
func (l *fileLayer) Size() (int64, error)                { return l.f.Size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.f.Path) }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.f.Path)
	if err != nil {
		return nil, err
	}
	zr, err := kgzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("layer %s: %w", l.f.Path, err)
	}
	return &gunzipFile{Reader: zr, f: f}, nil
}

type gunzipFile struct {
	*kgzip.Reader
	f *os.File
}

func (g *gunzipFile) Close() error {
	g.Reader.Close()
	return g.f.Close()
}
