package fetch

import (
	"errors"
	"io"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A registry that lies: blobs whose bytes do not match their digest,
// descriptors whose sizes do not match their blobs, manifests that are not
// what their digest names. RELIABILITY.md lists these cases.

// lyingBlob serves, under digest named, the bytes served instead.
func lyingBlob(reg *fakeRegistry, named digest.Digest, served []byte) {
	reg.mu.Lock()
	reg.blobs[named] = served
	reg.mu.Unlock()
}

func TestHostileBlobDigest(t *testing.T) {
	reg := newFakeRegistry()
	host := serve(t, reg)
	c := testClient(t, Config{})
	real := testData(5000, 1)
	named := digest.FromBytes(real)
	lyingBlob(reg, named, testData(5000, 2))

	rc, err := c.OpenBlob(t.Context(), host+"/lazy/img", named)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), named.String()) {
		t.Errorf("OpenBlob(other bytes) read error %v, want %v naming the blob", err, ErrDigestMismatch)
	}
	if _, err := c.ReadBlob(t.Context(), host+"/lazy/img", named, 1<<20); !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), named.String()) {
		t.Errorf("ReadBlob(other bytes) error %v, want %v naming the blob", err, ErrDigestMismatch)
	}
	// One byte more than the digest's content: caught by length or digest.
	lyingBlob(reg, named, append(real, 'x'))
	if _, err := c.ReadBlob(t.Context(), host+"/lazy/img", named, 1<<20); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("ReadBlob(one byte more) error %v, want %v", err, ErrDigestMismatch)
	}
}

// lyingImage puts a manifest whose config descriptor is cfg, with the
// config bytes served under cfg.Digest, and returns its reference.
func lyingImage(t *testing.T, reg *fakeRegistry, host, tag string, cfg ocispec.Descriptor, served []byte) string {
	t.Helper()
	lyingBlob(reg, cfg.Digest, served)
	layer := reg.putBlob(testData(100, 9))
	reg.putJSON(t, "lazy/lies", tag, ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfg,
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layer, Size: 100}},
	})
	return host + "/lazy/lies:" + tag
}

func TestHostileConfig(t *testing.T) {
	reg := newFakeRegistry()
	host := serve(t, reg)
	c := testClient(t, Config{})
	cfg := []byte(`{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	d := digest.FromBytes(cfg)
	desc := func(size int64) ocispec.Descriptor {
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: d, Size: size}
	}
	other := []byte(strings.Replace(string(cfg), `"sh"`, `"ev"`, 1)) // same length
	for _, tc := range []struct {
		name   string
		desc   ocispec.Descriptor
		served []byte
		want   error
	}{
		{"bytes do not match the digest", desc(int64(len(cfg))), other, ErrDigestMismatch},
		{"size smaller than the blob", desc(int64(len(cfg)) - 10), cfg, ErrTooLarge},
		{"size larger than the blob", desc(int64(len(cfg)) + 10), cfg, ErrDigestMismatch},
		{"size negative", desc(-1), cfg, ErrTooLarge},
		{"size past the 16 MiB bound", desc(1 << 40), cfg, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := lyingImage(t, reg, host, strings.ReplaceAll(tc.name, " ", "-"), tc.desc, tc.served)
			_, err := c.Resolve(t.Context(), ref)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "config "+d.String()) {
				t.Errorf("Resolve(config %s) error %v, want %v naming the config", tc.name, err, tc.want)
			}
		})
	}
}

func TestHostileManifestDigest(t *testing.T) {
	fx := newImageFixture(t)
	c := testClient(t, Config{})
	// The registry answers a digest with another manifest.
	lie := digest.FromString("not this manifest")
	fx.reg.mu.Lock()
	fx.reg.manifests["lazy/img@"+lie.String()] = fx.reg.manifests["lazy/img@"+fx.amd64.String()]
	fx.reg.mu.Unlock()
	if _, err := c.Resolve(t.Context(), fx.repo+"@"+lie.String()); err == nil {
		t.Error("Resolve(@digest answered with another manifest) succeeded")
	} else {
		t.Logf("Resolve(@digest answered with another manifest): %v", err)
	}
	if _, err := c.Manifest(t.Context(), fx.repo, lie); err == nil {
		t.Error("Manifest(digest answered with another manifest) succeeded")
	}
	// An index whose entry's digest is answered with another manifest.
	fx.reg.putJSON(t, "lazy/img", "lying-index", ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: lie, Size: 500,
			Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}},
	})
	c = testClient(t, Config{Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}})
	if _, err := c.Resolve(t.Context(), fx.repo+":lying-index"); err == nil || !strings.Contains(err.Error(), lie.String()) {
		t.Errorf("Resolve(index entry answered with another manifest) error %v, want one naming %s", err, lie)
	}
}
