package testutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// DockerLayerZstd is the zstd layer media type some Docker tooling uses; OCI
// has types.OCILayerZStd.
const DockerLayerZstd types.MediaType = "application/vnd.docker.image.rootfs.diff.tar.zstd"

// Layer is one layer blob for PushImage: either Blob in memory or the file at
// Path (streamed, never read into memory; see WriteLayer).
type Layer struct {
	Blob []byte
	Path string
	// MediaType empty means: detected from the blob's first bytes (gzip,
	// zstd or else uncompressed tar), with the OCI or Docker name as the
	// manifest type asks. A type given is used as it is.
	MediaType types.MediaType
	// DiffID is the sha256 of the uncompressed tar, as the config's
	// rootfs.diff_ids lists it. Empty means computed by decompressing
	// according to MediaType (gzip, zstd, none); other media types need it.
	DiffID digest.Digest
	// Digest and Size of the blob; computed when empty.
	Digest digest.Digest
	Size   int64
	// Annotations go on the layer's descriptor in the manifest.
	Annotations map[string]string
}

// ImageConfig describes the image around its layers.
type ImageConfig struct {
	OS           string // default "linux"
	Architecture string // default runtime.GOARCH
	Variant      string
	// Created is the config's and each history entry's creation time;
	// zero means the Unix epoch, so equal inputs give equal digests.
	Created time.Time
	// Config is what a runtime reads: Env, Entrypoint, Cmd, WorkingDir,
	// User, Labels, ExposedPorts, Volumes, StopSignal, …
	Config v1.Config
	// History, if set, is the config's history as it is (docker maps its
	// entries that are not EmptyLayer to the layers in order); nil means
	// one entry per layer, "testutil layer N", created at Created.
	History []v1.History
	// DockerSchema2 pushes a Docker schema 2 manifest
	// (application/vnd.docker.distribution.manifest.v2+json) with a Docker
	// config media type instead of an OCI manifest.
	DockerSchema2 bool
	// Annotations, Subject and ArtifactType go into the OCI manifest.
	Annotations  map[string]string
	Subject      *v1.Descriptor
	ArtifactType string
}

// PushedImage is what PushImageInfo pushed.
type PushedImage struct {
	Ref          string // host:port/repo:tag, or host:port/repo@digest when pushed untagged
	Digest       digest.Digest
	MediaType    types.MediaType
	Manifest     []byte // exactly the pushed bytes
	ConfigDigest digest.Digest
	Config       v1.ConfigFile
	Layers       []v1.Descriptor
	DiffIDs      []digest.Digest
}

// Descriptor returns the manifest's descriptor, platform included, as an
// index would list it.
func (p *PushedImage) Descriptor() v1.Descriptor {
	return v1.Descriptor{
		MediaType: p.MediaType,
		Size:      int64(len(p.Manifest)),
		Digest:    mustHash(p.Digest),
		Platform: &v1.Platform{
			OS:           p.Config.OS,
			Architecture: p.Config.Architecture,
			Variant:      p.Config.Variant,
		},
	}
}

// PushImage pushes the layers, a config whose rootfs.diff_ids are the
// layers' uncompressed sha256, and a manifest tagged as repo says
// ("test/busybox:latest"; no tag means latest) to the registry at reg
// (host:port, plain HTTP). It returns "reg/repo:tag" and the manifest digest.
func PushImage(t testing.TB, reg, repo string, layers []Layer, cfg ImageConfig) (ref string, manifestDigest digest.Digest) {
	t.Helper()
	p := PushImageInfo(t, reg, repo, layers, cfg)
	return p.Ref, p.Digest
}

// PushImageInfo is PushImage returning everything it pushed. An empty tag
// ("test/x@", i.e. repo ending in "@") pushes the manifest by digest only.
func PushImageInfo(t testing.TB, reg, repo string, layers []Layer, cfg ImageConfig) *PushedImage {
	t.Helper()
	c := newPusher(t, reg, repo)
	defer c.close()
	return c.pushImage(t, layers, cfg, c.tag)
}

// PlatformImage is one entry of PushIndex; the platform comes from Config.
type PlatformImage struct {
	Layers []Layer
	Config ImageConfig
}

// PushedIndex is what PushIndexInfo pushed.
type PushedIndex struct {
	Ref       string
	Digest    digest.Digest
	MediaType types.MediaType
	Manifest  []byte
	Images    []*PushedImage
}

// PushIndex pushes each image's manifest by digest and then an index listing
// them with their platforms, tagged as repo says. The index is a Docker
// manifest list if every image is DockerSchema2, an OCI index otherwise.
func PushIndex(t testing.TB, reg, repo string, images []PlatformImage) (ref string, indexDigest digest.Digest) {
	t.Helper()
	p := PushIndexInfo(t, reg, repo, images)
	return p.Ref, p.Digest
}

// PushIndexInfo is PushIndex returning everything it pushed.
func PushIndexInfo(t testing.TB, reg, repo string, images []PlatformImage) *PushedIndex {
	t.Helper()
	c := newPusher(t, reg, repo)
	defer c.close()
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.DockerManifestList}
	out := &PushedIndex{}
	for _, im := range images {
		p := c.pushImage(t, im.Layers, im.Config, "")
		out.Images = append(out.Images, p)
		idx.Manifests = append(idx.Manifests, p.Descriptor())
		if !im.Config.DockerSchema2 {
			idx.MediaType = types.OCIImageIndex
		}
	}
	body, err := json.Marshal(idx)
	if err != nil {
		t.Fatalf("PushIndex: %v", err)
	}
	out.MediaType = idx.MediaType
	out.Manifest = body
	out.Digest = c.putManifest(t, c.tag, idx.MediaType, body)
	out.Ref = c.ref(c.tag, out.Digest)
	return out
}

// PushBlob uploads blob to repo (tags in repo are ignored) and returns its digest.
func PushBlob(t testing.TB, reg, repo string, blob []byte) digest.Digest {
	t.Helper()
	c := newPusher(t, reg, repo)
	defer c.close()
	d := digest.FromBytes(blob)
	c.putBlob(t, d, int64(len(blob)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(blob)), nil
	})
	return d
}

// PushManifest puts body as a manifest of type mt under reference (a tag, or
// "" for by-digest only) and returns its digest. For artifacts and hand-made
// or broken manifests.
func PushManifest(t testing.TB, reg, repo, reference string, mt types.MediaType, body []byte) digest.Digest {
	t.Helper()
	c := newPusher(t, reg, repo)
	defer c.close()
	return c.putManifest(t, reference, mt, body)
}

type pusher struct {
	client *http.Client
	tr     *http.Transport
	reg    string
	repo   string // repository name without registry and tag
	tag    string // "" for by-digest
}

func newPusher(t testing.TB, reg, repo string) *pusher {
	t.Helper()
	tag := "latest"
	if s, ok := strings.CutSuffix(repo, "@"); ok {
		repo, tag = s, ""
	}
	r, err := name.ParseReference(reg+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatalf("push %s/%s: %v", reg, repo, err)
	}
	if tg, ok := r.(name.Tag); ok && tag != "" {
		tag = tg.TagStr()
	}
	if _, ok := r.(name.Digest); ok {
		t.Fatalf("push %s/%s: give a tag, not a digest", reg, repo)
	}
	// Its own transport, closed after the push: no keep-alive connection
	// (file descriptor) outlives the call.
	tr := &http.Transport{Proxy: nil, DisableCompression: true}
	return &pusher{client: &http.Client{Transport: tr}, tr: tr, reg: reg, repo: r.Context().RepositoryStr(), tag: tag}
}

func (c *pusher) close() { c.tr.CloseIdleConnections() }

func (c *pusher) ref(tag string, d digest.Digest) string {
	if tag == "" {
		return c.reg + "/" + c.repo + "@" + d.String()
	}
	return c.reg + "/" + c.repo + ":" + tag
}

func (c *pusher) url(suffix string) string {
	return "http://" + c.reg + "/v2/" + c.repo + suffix
}

func (c *pusher) pushImage(t testing.TB, layers []Layer, cfg ImageConfig, tag string) *PushedImage {
	t.Helper()
	created := cfg.Created
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	cf := v1.ConfigFile{
		Architecture: cfg.Architecture,
		OS:           cfg.OS,
		Variant:      cfg.Variant,
		Created:      v1.Time{Time: created},
		Config:       cfg.Config,
		RootFS:       v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{}},
	}
	if cf.OS == "" {
		cf.OS = "linux"
	}
	if cf.Architecture == "" {
		cf.Architecture = runtime.GOARCH
	}
	out := &PushedImage{}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Layers:        []v1.Descriptor{},
		Annotations:   cfg.Annotations,
		Subject:       cfg.Subject,
		ArtifactType:  cfg.ArtifactType,
	}
	cfgType := types.OCIConfigJSON
	if cfg.DockerSchema2 {
		m.MediaType, cfgType = types.DockerManifestSchema2, types.DockerConfigJSON
		if cfg.Annotations != nil || cfg.Subject != nil || cfg.ArtifactType != "" {
			t.Fatalf("PushImage: annotations, subject and artifactType need an OCI manifest")
		}
	}
	for i, l := range layers {
		l, err := resolveLayer(l, cfg.DockerSchema2)
		if err != nil {
			t.Fatalf("PushImage: layer %d: %v", i, err)
		}
		c.putBlob(t, l.Digest, l.Size, l.open)
		m.Layers = append(m.Layers, v1.Descriptor{
			MediaType:   l.MediaType,
			Size:        l.Size,
			Digest:      mustHash(l.Digest),
			Annotations: l.Annotations,
		})
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, mustHash(l.DiffID))
		cf.History = append(cf.History, v1.History{Created: cf.Created, CreatedBy: fmt.Sprintf("testutil layer %d", i)})
		out.DiffIDs = append(out.DiffIDs, l.DiffID)
	}
	if cfg.History != nil {
		cf.History = cfg.History
	}
	cfgBody, err := json.Marshal(cf)
	if err != nil {
		t.Fatalf("PushImage: config: %v", err)
	}
	cfgDigest := digest.FromBytes(cfgBody)
	c.putBlob(t, cfgDigest, int64(len(cfgBody)), func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(cfgBody)), nil
	})
	m.Config = v1.Descriptor{MediaType: cfgType, Size: int64(len(cfgBody)), Digest: mustHash(cfgDigest)}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("PushImage: manifest: %v", err)
	}
	out.Digest = c.putManifest(t, tag, m.MediaType, body)
	out.Ref = c.ref(tag, out.Digest)
	out.MediaType = m.MediaType
	out.Manifest = body
	out.ConfigDigest = cfgDigest
	out.Config = cf
	out.Layers = m.Layers
	return out
}

func mustHash(d digest.Digest) v1.Hash {
	h, err := v1.NewHash(d.String())
	if err != nil {
		panic(fmt.Sprintf("testutil: digest %q: %v", d, err))
	}
	return h
}

type compression int

const (
	compNone compression = iota
	compGzip
	compZstd
)

func compressionOf(mt types.MediaType) (compression, error) {
	switch mt {
	case types.OCILayer, types.DockerLayer, types.OCIRestrictedLayer, types.DockerForeignLayer:
		return compGzip, nil
	case types.OCILayerZStd, DockerLayerZstd:
		return compZstd, nil
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer, types.OCIUncompressedRestrictedLayer:
		return compNone, nil
	}
	return 0, fmt.Errorf("layer media type %q: compression unknown", mt)
}

// layerInfo is a Layer with every field known.
type layerInfo struct {
	Layer
	open func() (io.ReadCloser, error)
}

// openLayer returns l with its opener and media type set (detected from the
// blob's first bytes when empty), reading nothing else.
func openLayer(l Layer, docker bool) (layerInfo, error) {
	li := layerInfo{Layer: l}
	switch {
	case l.Blob != nil && l.Path != "":
		return li, fmt.Errorf("both Blob and Path set")
	case l.Blob != nil:
		li.open = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l.Blob)), nil }
	case l.Path != "":
		li.open = func() (io.ReadCloser, error) { return os.Open(l.Path) }
	default:
		return li, fmt.Errorf("neither Blob nor Path set")
	}
	if li.MediaType != "" {
		return li, nil
	}
	r, err := li.open()
	if err != nil {
		return li, err
	}
	var magic [4]byte
	n, _ := io.ReadFull(r, magic[:])
	r.Close()
	comp := compNone
	switch {
	case n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		comp = compGzip
	case n == 4 && bytes.Equal(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		comp = compZstd
	}
	li.MediaType = map[bool]map[compression]types.MediaType{
		false: {compNone: types.OCIUncompressedLayer, compGzip: types.OCILayer, compZstd: types.OCILayerZStd},
		true:  {compNone: types.DockerUncompressedLayer, compGzip: types.DockerLayer, compZstd: DockerLayerZstd},
	}[docker][comp]
	return li, nil
}

// resolveLayer fills in media type, digest, size and diff ID, reading the
// blob once (streaming when it is a file).
func resolveLayer(l Layer, docker bool) (layerInfo, error) {
	li, err := openLayer(l, docker)
	if err != nil {
		return li, err
	}
	if li.Digest != "" && li.Size > 0 && li.DiffID != "" {
		return li, nil
	}
	comp, err := compressionOf(li.MediaType)
	if err != nil && li.DiffID == "" {
		return li, fmt.Errorf("%w: set DiffID", err)
	}
	r, err := li.open()
	if err != nil {
		return li, err
	}
	defer r.Close()
	blobHash := sha256.New()
	blob := &countWriter{w: blobHash}
	tee := io.TeeReader(r, blob)
	if li.DiffID == "" {
		var dec io.Reader
		switch comp {
		case compGzip:
			zr, err := kgzip.NewReader(tee)
			if err != nil {
				return li, fmt.Errorf("gunzip: %w", err)
			}
			dec = zr
		case compZstd:
			zr, err := zstd.NewReader(tee)
			if err != nil {
				return li, fmt.Errorf("zstd: %w", err)
			}
			defer zr.Close()
			dec = zr
		default:
			dec = tee
		}
		diffHash := sha256.New()
		if _, err := io.Copy(diffHash, dec); err != nil {
			return li, fmt.Errorf("decompress: %w", err)
		}
		li.DiffID = digestOf(diffHash)
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return li, err
	}
	d := digestOf(blobHash)
	if li.Digest != "" && li.Digest != d {
		return li, fmt.Errorf("digest %s given, blob has %s", li.Digest, d)
	}
	if li.Size != 0 && li.Size != blob.n {
		return li, fmt.Errorf("size %d given, blob has %d bytes", li.Size, blob.n)
	}
	li.Digest, li.Size = d, blob.n
	return li, nil
}

// putBlob uploads a blob unless the repository has it: POST to start an
// upload, then one monolithic PUT streaming the body.
func (c *pusher) putBlob(t testing.TB, d digest.Digest, size int64, open func() (io.ReadCloser, error)) {
	t.Helper()
	ctx := t.Context()
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, c.url("/blobs/"+d.String()), nil)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("push blob %s: %v", d, err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, c.url("/blobs/uploads/"), nil)
	resp, err = c.client.Do(req)
	if err != nil {
		t.Fatalf("push blob %s: start upload: %v", d, err)
	}
	msg := readErrBody(resp)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("push blob %s: POST uploads = %s, want 202: %s", d, resp.Status, msg)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("push blob %s: upload location %q: %v", d, resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	body, err := open()
	if err != nil {
		t.Fatalf("push blob %s: %v", d, err)
	}
	defer body.Close()
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), body)
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = c.client.Do(req)
	if err != nil {
		t.Fatalf("push blob %s: PUT: %v", d, err)
	}
	msg = readErrBody(resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push blob %s: PUT = %s, want 201: %s", d, resp.Status, msg)
	}
}

// putManifest PUTs a manifest under reference (a tag, or its digest when
// reference is "") and checks the digest the registry reports.
func (c *pusher) putManifest(t testing.TB, reference string, mt types.MediaType, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	if reference == "" {
		reference = d.String()
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, c.url("/manifests/"+url.PathEscape(reference)), bytes.NewReader(body))
	req.Header.Set("Content-Type", string(mt))
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("push manifest %s:%s: %v", c.repo, reference, err)
	}
	msg := readErrBody(resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push manifest %s:%s (%s) = %s, want 201: %s", c.repo, reference, mt, resp.Status, msg)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		t.Fatalf("push manifest %s:%s: registry says digest %s, want %s", c.repo, reference, got, d)
	}
	return d
}

// readErrBody reads at most 4 KiB of a response body for a message and
// closes it.
func readErrBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return strings.TrimSpace(string(b))
}
