package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	typeIndex   = "application/vnd.lazyfs.index.v1+zstd"
	typeProfile = "application/vnd.lazyfs.profile.v1"
)

// subjectLayer is the one layer of the image pushSubject pushes.
var subjectLayer = testData(200_000, 4)

// pushSubject pushes a one-layer linux/amd64 OCI image to host/lazy/subject:v1
// with go-containerregistry and returns its reference.
func pushSubject(t *testing.T, host string) string {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, static.NewLayer(subjectLayer, types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := host + "/lazy/subject:v1"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// fallbackIndex returns the image index under img's referrers fallback tag,
// or ok false if the tag does not exist.
func fallbackIndex(t *testing.T, img *Image) (idx []digest.Digest, ok bool) {
	t.Helper()
	tag := img.Repo + ":" + strings.Replace(img.Digest.String(), ":", "-", 1)
	r, err := name.ParseReference(tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Get(r, remote.WithContext(t.Context()))
	if err != nil {
		if strings.Contains(err.Error(), "MANIFEST_UNKNOWN") || strings.Contains(err.Error(), "404") {
			return nil, false
		}
		t.Fatalf("get %s: %v", tag, err)
	}
	if d.MediaType != types.OCIImageIndex {
		t.Errorf("fallback tag %s has media type %s, want an OCI index", tag, d.MediaType)
	}
	ii, err := d.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		idx = append(idx, digest.Digest(m.Digest.String()))
	}
	return idx, true
}

func digests(ds []ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	slices.Sort(out)
	return out
}

// testArtifactRoundTrip pushes a subject image and two artifacts referring
// to it to the registry at host, and finds them again through Referrers.
func testArtifactRoundTrip(t *testing.T, host string, wantFallbackTag bool) *Image {
	ctx := t.Context()
	ref := pushSubject(t, host)
	c := testClient(t, Config{Platform: platform("linux", "amd64", "")})
	img, err := c.Resolve(ctx, ref)
	if err != nil {
		t.Fatalf("Resolve(%s) = %v", ref, err)
	}
	if got, err := c.Referrers(ctx, img, ""); err != nil || len(got) != 0 {
		t.Fatalf("Referrers before any push = %v, %v; want none", got, err)
	}

	payload := testData(5000, 5)
	blobs := []ArtifactBlob{{
		MediaType:   typeIndex,
		Data:        payload,
		Annotations: map[string]string{"dev.lazyfs.layer": img.Manifest.Layers[0].Digest.String()},
	}}
	ann := map[string]string{"org.opencontainers.image.created": "2025-01-01T00:00:00Z"}
	d1, err := c.PushArtifact(ctx, img, typeIndex, blobs, ann)
	if err != nil {
		t.Fatalf("PushArtifact(index) = %v", err)
	}
	d2, err := c.PushArtifact(ctx, img, typeProfile, nil, nil)
	if err != nil {
		t.Fatalf("PushArtifact(profile, no blobs) = %v", err)
	}
	again, err := c.PushArtifact(ctx, img, typeIndex, blobs, ann)
	if err != nil || again.Digest != d1.Digest {
		t.Fatalf("PushArtifact again = %s, %v; want the same digest %s", again.Digest, err, d1.Digest)
	}
	if d1.ArtifactType != typeIndex || d1.MediaType != ocispec.MediaTypeImageManifest || d1.Size <= 0 {
		t.Errorf("PushArtifact = %+v", d1)
	}

	all, err := c.Referrers(ctx, img, "")
	if err != nil {
		t.Fatalf("Referrers = %v", err)
	}
	want := []digest.Digest{d1.Digest, d2.Digest}
	slices.Sort(want)
	if got := digests(all); !slices.Equal(got, want) {
		t.Fatalf("Referrers = %v, want %v", got, want)
	}
	for _, d := range all {
		wantType := typeProfile
		if d.Digest == d1.Digest {
			wantType = typeIndex
			if d.Annotations["org.opencontainers.image.created"] != "2025-01-01T00:00:00Z" {
				t.Errorf("referrer %s has annotations %v, want the manifest's", d.Digest, d.Annotations)
			}
		}
		if d.ArtifactType != wantType || d.MediaType != ocispec.MediaTypeImageManifest {
			t.Errorf("referrer %s = %+v, want artifact type %s", d.Digest, d, wantType)
		}
	}
	if got, err := c.Referrers(ctx, img, typeIndex); err != nil || !slices.Equal(digests(got), []digest.Digest{d1.Digest}) {
		t.Errorf("Referrers(%s) = %v, %v; want [%s]", typeIndex, digests(got), err, d1.Digest)
	}
	if got, err := c.Referrers(ctx, img, "application/x-other"); err != nil || len(got) != 0 {
		t.Errorf("Referrers(other type) = %v, %v; want none", got, err)
	}

	m, err := c.Manifest(ctx, img.Repo, d1.Digest)
	if err != nil {
		t.Fatalf("Manifest(%s) = %v", d1.Digest, err)
	}
	if m.Subject == nil || m.Subject.Digest != img.Digest || m.Subject.MediaType != img.MediaType || m.Subject.Size != int64(len(img.RawManifest)) {
		t.Errorf("artifact subject = %+v, want the image's descriptor", m.Subject)
	}
	if m.Config.MediaType != ocispec.MediaTypeEmptyJSON || m.Config.Digest != ocispec.DescriptorEmptyJSON.Digest || m.ArtifactType != typeIndex {
		t.Errorf("artifact config %+v, type %q; want the empty config and %s", m.Config, m.ArtifactType, typeIndex)
	}
	if len(m.Layers) != 1 || m.Layers[0].Annotations["dev.lazyfs.layer"] == "" {
		t.Fatalf("artifact layers = %+v", m.Layers)
	}
	if got, err := c.ReadBlob(ctx, img.Repo, m.Layers[0].Digest, 1<<20); err != nil || !bytes.Equal(got, payload) {
		t.Errorf("ReadBlob of the artifact's blob = %d bytes, %v", len(got), err)
	}
	m2, err := c.Manifest(ctx, img.Repo, d2.Digest)
	if err != nil || len(m2.Layers) != 1 || m2.Layers[0].MediaType != ocispec.MediaTypeEmptyJSON {
		t.Errorf("artifact without blobs = %+v, %v; want the empty descriptor as its layer", m2.Layers, err)
	}

	tagged, ok := fallbackIndex(t, img)
	if ok != wantFallbackTag {
		t.Errorf("fallback tag exists = %v, want %v", ok, wantFallbackTag)
	}
	if ok {
		slices.Sort(tagged)
		if !slices.Equal(tagged, want) {
			t.Errorf("fallback tag index = %v, want %v (once each)", tagged, want)
		}
	}
	return img
}

func ggcrRegistry(t *testing.T, referrers bool) string {
	return serve(t, registry.New(registry.WithReferrersSupport(referrers), registry.Logger(log.New(io.Discard, "", 0))))
}

func TestArtifactsGGCRRegistryWithReferrersAPI(t *testing.T) {
	testArtifactRoundTrip(t, ggcrRegistry(t, true), false)
}

func TestArtifactsGGCRRegistryFallbackTag(t *testing.T) {
	testArtifactRoundTrip(t, ggcrRegistry(t, false), true)
}

func TestPushArtifactArguments(t *testing.T) {
	c := testClient(t, Config{})
	img := &Image{Repo: "127.0.0.1:1/x", Digest: digest.FromString("m"), RawManifest: []byte("{}")}
	if _, err := c.PushArtifact(t.Context(), img, "", nil, nil); err == nil {
		t.Errorf("PushArtifact without an artifact type succeeded")
	}
	if _, err := c.PushArtifact(t.Context(), img, typeIndex, []ArtifactBlob{{Data: []byte("x")}}, nil); err == nil {
		t.Errorf("PushArtifact of a blob without media type succeeded")
	}
}

const dockerRegistryBin = "/usr/bin/docker-registry"

// dockerRegistry starts Debian's docker-registry on a free loopback port
// with a temporary storage directory and returns its host:port. It skips
// the test if the binary is missing, unless LAZYFS_REQUIRE_REGISTRY=1.
func dockerRegistry(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(dockerRegistryBin); err != nil {
		if os.Getenv("LAZYFS_REQUIRE_REGISTRY") == "1" {
			t.Fatalf("%s is missing (apt-get install docker-registry) and LAZYFS_REQUIRE_REGISTRY=1", dockerRegistryBin)
		}
		t.Skipf("%s is missing (apt-get install docker-registry)", dockerRegistryBin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(dockerRegistryBin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", dockerRegistryBin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("docker-registry output:\n%s", out.String())
		}
	})

	// Readiness: poll /v2/ until it answers (or the process dies).
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("docker-registry exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("docker-registry did not answer on %s: %v\n%s", addr, ctx.Err(), out.String())
		case <-tick.C:
		}
	}
}

func TestDockerRegistry(t *testing.T) {
	host := dockerRegistry(t)
	img := testArtifactRoundTrip(t, host, true)

	c := testClient(t, Config{})
	ctx := t.Context()
	layer := img.Manifest.Layers[0]
	size := int64(len(subjectLayer))
	if layer.Size != size {
		t.Fatalf("layer size = %d, want %d", layer.Size, size)
	}
	for _, r := range []struct{ off, n int64 }{
		{0, 1}, {0, 4096}, {65_536, 65_536}, {123_457, 1}, {size - 1, 1}, {size - 4096, 4096}, {0, size},
	} {
		got, err := c.ReadRange(ctx, img.Repo, layer.Digest, r.off, r.n)
		if err != nil {
			t.Fatalf("ReadRange(%d, %d) = %v", r.off, r.n, err)
		}
		if !bytes.Equal(got, subjectLayer[r.off:r.off+r.n]) {
			t.Errorf("ReadRange(%d, %d) returned other bytes", r.off, r.n)
		}
	}
	if _, err := c.ReadRange(ctx, img.Repo, layer.Digest, size-1, 2); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange past the end = %v, want ErrRange", err)
	}
	if _, err := c.ReadRange(ctx, img.Repo, layer.Digest, size, 1); !errors.Is(err, ErrRange) {
		t.Errorf("ReadRange at the end = %v, want ErrRange", err)
	}
	if _, err := c.ReadRange(ctx, img.Repo, digest.FromString("missing"), 0, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadRange of a missing blob = %v, want ErrNotFound", err)
	}
	rc, err := c.OpenBlob(ctx, img.Repo, layer.Digest)
	if err != nil {
		t.Fatalf("OpenBlob = %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, subjectLayer) {
		t.Errorf("OpenBlob read %d bytes, %v", len(got), err)
	}
	if s := c.Stats(); s.Retries != 0 {
		t.Errorf("Stats() = %+v, want no retries against a healthy registry", s)
	}
	if _, err := c.Resolve(ctx, host+"/lazy/subject:nosuchtag"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve of a missing tag = %v, want ErrNotFound", err)
	}
}
