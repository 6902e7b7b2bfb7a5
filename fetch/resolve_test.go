package fetch

import (
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	dockerConfigType = "application/vnd.docker.container.image.v1+json"
	dockerLayerType  = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// imageFixture is a fake registry with repository lazy/img holding:
//
//	:multi   OCI index → amd64 and arm64/v8 OCI manifests, plus an attestation
//	:docker  Docker manifest list → amd64 and arm64 (no variant) schema 2 manifests
//	:v1      a schema 1 manifest
type imageFixture struct {
	reg             *fakeRegistry
	host, repo      string
	amd64, arm64    digest.Digest // OCI manifests
	index           digest.Digest
	dAmd64, dArm64  digest.Digest // Docker manifests
	dList           digest.Digest
	amd64Cfg        digest.Digest
	layer           digest.Digest
	artifactDigest  digest.Digest
	artifactPayload []byte
}

func newImageFixture(t *testing.T) *imageFixture {
	return newImageFixtureBehind(t, nil)
}

// newImageFixtureBehind serves the fixture through wrap (nil: directly).
func newImageFixtureBehind(t *testing.T, wrap func(http.Handler) http.Handler) *imageFixture {
	t.Helper()
	fx := &imageFixture{reg: newFakeRegistry()}
	var h http.Handler = fx.reg
	if wrap != nil {
		h = wrap(h)
	}
	fx.host = serve(t, h)
	fx.repo = fx.host + "/lazy/img"
	layer := testData(3000, 3)
	fx.layer = fx.reg.putBlob(layer)

	manifest := func(arch, variant, mt, cfgType, layerType, tag string) (digest.Digest, digest.Digest, int) {
		cfg := []byte(`{"architecture":"` + arch + `","os":"linux","variant":"` + variant +
			`","config":{"Env":["PATH=/bin"],"Cmd":["sh","-c","echo ` + arch + `"]},"rootfs":{"type":"layers","diff_ids":["` +
			digest.FromString("diff").String() + `"]}}`)
		cd := fx.reg.putBlob(cfg)
		m := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: mt,
			Config:    ocispec.Descriptor{MediaType: cfgType, Digest: cd, Size: int64(len(cfg))},
			Layers:    []ocispec.Descriptor{{MediaType: layerType, Digest: fx.layer, Size: int64(len(layer))}},
		}
		d, raw := fx.reg.putJSON(t, "lazy/img", tag, mt, m)
		return d, cd, len(raw)
	}
	var amdSize, armSize, dAmdSize, dArmSize int
	fx.amd64, fx.amd64Cfg, amdSize = manifest("amd64", "", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip, "")
	fx.arm64, _, armSize = manifest("arm64", "v8", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageLayerGzip, "")
	fx.dAmd64, _, dAmdSize = manifest("amd64", "", MediaTypeDockerManifest, dockerConfigType, dockerLayerType, "")
	fx.dArm64, _, dArmSize = manifest("arm64", "", MediaTypeDockerManifest, dockerConfigType, dockerLayerType, "")

	fx.index, _ = fx.reg.putJSON(t, "lazy/img", "multi", ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{
			{MediaType: ocispec.MediaTypeImageManifest, Digest: fx.amd64, Size: int64(amdSize), Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}},
			{MediaType: ocispec.MediaTypeImageManifest, Digest: fx.arm64, Size: int64(armSize), Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
			{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("attestation"), Size: 10,
				Platform:    &ocispec.Platform{OS: "unknown", Architecture: "unknown"},
				Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}},
		},
	})
	fx.dList, _ = fx.reg.putJSON(t, "lazy/img", "docker", MediaTypeDockerManifestList, map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeDockerManifestList,
		"manifests": []map[string]any{
			{"mediaType": MediaTypeDockerManifest, "digest": fx.dAmd64, "size": dAmdSize, "platform": map[string]string{"os": "linux", "architecture": "amd64"}},
			{"mediaType": MediaTypeDockerManifest, "digest": fx.dArm64, "size": dArmSize, "platform": map[string]string{"os": "linux", "architecture": "arm64"}},
		},
	})
	fx.reg.putManifest("lazy/img", "v1", mediaTypeDockerSchema1Sig, []byte(`{"schemaVersion":1,"name":"lazy/img","tag":"v1","fsLayers":[]}`))

	fx.artifactPayload = []byte("payload")
	pd := fx.reg.putBlob(fx.artifactPayload)
	empty := fx.reg.putBlob([]byte("{}"))
	fx.artifactDigest, _ = fx.reg.putJSON(t, "lazy/img", "", ocispec.MediaTypeImageManifest, ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.lazyfs.test",
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: empty, Size: 2},
		Layers:       []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: pd, Size: int64(len(fx.artifactPayload))}},
		Subject:      &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: fx.amd64, Size: int64(amdSize)},
	})
	return fx
}

func platform(os, arch, variant string) *ocispec.Platform {
	return &ocispec.Platform{OS: os, Architecture: arch, Variant: variant}
}

func TestResolveIndex(t *testing.T) {
	fx := newImageFixture(t)
	for _, tc := range []struct {
		name     string
		ref      string
		platform *ocispec.Platform
		want     digest.Digest
		index    digest.Digest
		mt       string
		arch     string
	}{
		{"oci amd64", fx.repo + ":multi", platform("linux", "amd64", ""), fx.amd64, fx.index, ocispec.MediaTypeImageManifest, "amd64"},
		{"oci arm64 no variant", fx.repo + ":multi", platform("linux", "arm64", ""), fx.arm64, fx.index, ocispec.MediaTypeImageManifest, "arm64"},
		{"oci aarch64 v8", fx.repo + ":multi", platform("linux", "aarch64", "v8"), fx.arm64, fx.index, ocispec.MediaTypeImageManifest, "arm64"},
		{"index by digest", fx.repo + "@" + fx.index.String(), platform("linux", "arm64", ""), fx.arm64, fx.index, ocispec.MediaTypeImageManifest, "arm64"},
		{"manifest by digest", fx.repo + "@" + fx.arm64.String(), platform("linux", "amd64", ""), fx.arm64, "", ocispec.MediaTypeImageManifest, "arm64"},
		{"docker amd64", fx.repo + ":docker", platform("linux", "amd64", ""), fx.dAmd64, fx.dList, MediaTypeDockerManifest, "amd64"},
		{"docker arm64 v8 wanted, none given", fx.repo + ":docker", platform("linux", "arm64", "v8"), fx.dArm64, fx.dList, MediaTypeDockerManifest, "arm64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testClient(t, Config{Platform: tc.platform})
			img, err := c.Resolve(t.Context(), tc.ref)
			if err != nil {
				t.Fatalf("Resolve(%s) = %v", tc.ref, err)
			}
			if img.Digest != tc.want || img.IndexDigest != tc.index || img.MediaType != tc.mt {
				t.Errorf("Resolve(%s) = digest %s index %s type %s, want %s %s %s", tc.ref, img.Digest, img.IndexDigest, img.MediaType, tc.want, tc.index, tc.mt)
			}
			if img.Ref != tc.ref || img.Repo != fx.repo {
				t.Errorf("Resolve(%s) = Ref %q Repo %q, want %q %q", tc.ref, img.Ref, img.Repo, tc.ref, fx.repo)
			}
			if digest.FromBytes(img.RawManifest) != img.Digest || digest.FromBytes(img.RawConfig) != img.Manifest.Config.Digest {
				t.Errorf("raw manifest or config do not match their digests")
			}
			if img.Config.Architecture != tc.arch || img.Config.OS != "linux" || strings.Join(img.Config.Config.Cmd, " ") != "sh -c echo "+tc.arch {
				t.Errorf("Config = %+v, want %s linux with its Cmd", img.Config, tc.arch)
			}
			if len(img.Manifest.Layers) != 1 || img.Manifest.Layers[0].Digest != fx.layer {
				t.Fatalf("Manifest.Layers = %+v, want the one layer", img.Manifest.Layers)
			}
			wantLayerType := ocispec.MediaTypeImageLayerGzip
			if tc.mt == MediaTypeDockerManifest {
				wantLayerType = dockerLayerType // kept as served
			}
			if got := img.Manifest.Layers[0].MediaType; got != wantLayerType {
				t.Errorf("layer media type = %q, want %q", got, wantLayerType)
			}
			if d := img.Descriptor(); d.Digest != img.Digest || d.MediaType != tc.mt || d.Size != int64(len(img.RawManifest)) {
				t.Errorf("Descriptor() = %+v", d)
			}
		})
	}
}

// ResolveWith shows the picked manifest before the config is fetched, once.
func TestResolveWithManifested(t *testing.T) {
	fx := newImageFixture(t)
	c := testClient(t, Config{Platform: platform("linux", "arm64", "")})
	var early []*Image
	img, err := c.ResolveWith(t.Context(), fx.repo+":multi", func(m *Image) { early = append(early, m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(early) != 1 {
		t.Fatalf("manifested called %d times, want once", len(early))
	}
	if m := early[0]; m.Digest != fx.arm64 || m.IndexDigest != fx.index || len(m.Manifest.Layers) != 1 || m.RawConfig != nil || m == img {
		t.Errorf("manifested got %+v; want the arm64 manifest without its config, a copy", m)
	}
	if img.RawConfig == nil || img.Config.Architecture != "arm64" {
		t.Errorf("ResolveWith() = %+v, want the config too", img)
	}
}

func TestResolveDefaultPlatform(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("the fixture has linux/amd64 and linux/arm64 only, this is %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	fx := newImageFixture(t)
	img, err := testClient(t, Config{}).Resolve(t.Context(), fx.repo+":multi")
	if err != nil {
		t.Fatalf("Resolve = %v", err)
	}
	if img.Config.Architecture != runtime.GOARCH {
		t.Errorf("Resolve with the default platform picked %s, want %s", img.Config.Architecture, runtime.GOARCH)
	}
}

func TestResolveErrors(t *testing.T) {
	fx := newImageFixture(t)
	c := testClient(t, Config{Platform: platform("linux", "s390x", "")})
	ctx := t.Context()

	_, err := c.Resolve(ctx, fx.repo+":multi")
	if !errors.Is(err, ErrNoPlatform) {
		t.Fatalf("Resolve for s390x = %v, want ErrNoPlatform", err)
	}
	for _, want := range []string{"linux/s390x", "linux/amd64", "linux/arm64/v8"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "unknown") {
		t.Errorf("Resolve error %q lists the attestation", err)
	}

	c = testClient(t, Config{Platform: platform("linux", "amd64", "")})
	for _, ref := range []string{fx.repo + ":nosuchtag", fx.host + "/lazy/nosuchrepo:latest", fx.repo + "@" + digest.FromString("x").String()} {
		if _, err := c.Resolve(ctx, ref); !errors.Is(err, ErrNotFound) {
			t.Errorf("Resolve(%s) = %v, want ErrNotFound", ref, err)
		}
	}
	if _, err := c.Resolve(ctx, fx.repo+":v1"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Resolve of a schema 1 manifest = %v, want ErrUnsupported", err)
	}
	if _, err := c.Resolve(ctx, "Not A Reference"); err == nil {
		t.Errorf("Resolve of a malformed reference succeeded")
	}

	// A config damaged once is read again; one damaged every time fails.
	fx.reg.setFaults(fault{kind: faultCorrupt})
	if _, err := c.Resolve(ctx, fx.repo+":multi"); err != nil {
		t.Errorf("Resolve with a config corrupted once = %v, want it read again", err)
	}
	fx.reg.setFaults(fault{kind: faultCorrupt}, fault{kind: faultCorrupt}, fault{kind: faultCorrupt})
	if _, err := c.Resolve(ctx, fx.repo+":multi"); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Resolve with a config corrupted %d times = %v, want ErrDigestMismatch", configReads, err)
	}
}

func TestManifest(t *testing.T) {
	fx := newImageFixture(t)
	c := testClient(t, Config{})
	m, err := c.Manifest(t.Context(), fx.repo, fx.artifactDigest)
	if err != nil {
		t.Fatalf("Manifest = %v", err)
	}
	if m.ArtifactType != "application/vnd.lazyfs.test" || m.Subject == nil || m.Subject.Digest != fx.amd64 {
		t.Errorf("Manifest = %+v, want the artifact", m)
	}
	payload, err := c.ReadBlob(t.Context(), fx.repo, m.Layers[0].Digest, 1<<10)
	if err != nil || string(payload) != string(fx.artifactPayload) {
		t.Errorf("ReadBlob of the artifact's layer = %q, %v", payload, err)
	}
	if _, err := c.Manifest(t.Context(), fx.repo, fx.index); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Manifest of an index = %v, want ErrUnsupported", err)
	}
	if _, err := c.Manifest(t.Context(), fx.repo, digest.FromString("nope")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Manifest of a missing digest = %v, want ErrNotFound", err)
	}
}

func TestPickPlatform(t *testing.T) {
	descs := []ocispec.Descriptor{
		{Digest: "sha256:0", Platform: nil},
		{Digest: "sha256:1", Platform: platform("linux", "amd64", "")},
		{Digest: "sha256:2", Platform: platform("linux", "arm", "v6")},
		{Digest: "sha256:3", Platform: platform("linux", "arm", "v7")},
		{Digest: "sha256:4", Platform: platform("linux", "arm64", "")},
		{Digest: "sha256:5", Platform: platform("linux", "amd64", "v3")},
		{Digest: "sha256:6", Platform: platform("Windows", "AMD64", "")},
		{Digest: "sha256:7", Platform: &ocispec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}},
	}
	for _, tc := range []struct {
		name string
		want ocispec.Platform
		got  digest.Digest // "" = none
	}{
		{"amd64", *platform("linux", "amd64", ""), "sha256:1"},
		{"amd64 v1 is plain amd64", *platform("linux", "amd64", "v1"), "sha256:1"},
		{"amd64 v3 exact", *platform("linux", "amd64", "v3"), "sha256:5"},
		{"x86_64 alias", *platform("linux", "x86_64", ""), "sha256:1"},
		{"arm v7", *platform("linux", "arm", "v7"), "sha256:3"},
		{"arm v6", *platform("linux", "arm", "v6"), "sha256:2"},
		{"arm without variant means v7", *platform("linux", "arm", ""), "sha256:3"},
		{"armhf", *platform("linux", "armhf", ""), "sha256:3"},
		{"arm v5 missing", *platform("linux", "arm", "v5"), ""},
		{"arm64 v8 matches no variant", *platform("linux", "arm64", "v8"), "sha256:4"},
		{"case folded", *platform("windows", "amd64", ""), "sha256:6"},
		{"os version", ocispec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}, "sha256:7"},
		{"os version missing", ocispec.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.1"}, ""},
		{"riscv64 missing", *platform("linux", "riscv64", ""), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := pickPlatform(descs, tc.want)
			if tc.got == "" {
				if !errors.Is(err, ErrNoPlatform) {
					t.Fatalf("pickPlatform(%s) = %s, %v; want ErrNoPlatform", platformString(tc.want), d.Digest, err)
				}
				return
			}
			if err != nil || d.Digest != tc.got {
				t.Fatalf("pickPlatform(%s) = %s, %v; want %s", platformString(tc.want), d.Digest, err, tc.got)
			}
		})
	}
}
