package testutil

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

const acceptAll = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// get does one GET and returns status, headers and body.
func get(t *testing.T, url string, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, body
}

// pullManifest fetches and checks a manifest by reference.
func pullManifest(t *testing.T, reg, repo, reference string, want digest.Digest) []byte {
	t.Helper()
	status, hdr, body := get(t, fmt.Sprintf("http://%s/v2/%s/manifests/%s", reg, repo, reference), map[string]string{"Accept": acceptAll})
	if status != http.StatusOK {
		t.Fatalf("GET manifest %s:%s = %d: %s", repo, reference, status, body)
	}
	if got := hdr.Get("Docker-Content-Digest"); got != want.String() || digest.FromBytes(body) != want {
		t.Fatalf("manifest %s:%s digest = %s (header %s), want %s", repo, reference, digest.FromBytes(body), got, want)
	}
	return body
}

func pullBlob(t *testing.T, reg, repo string, d v1.Hash) []byte {
	t.Helper()
	status, _, body := get(t, fmt.Sprintf("http://%s/v2/%s/blobs/%s", reg, repo, d), nil)
	if status != http.StatusOK || digest.FromBytes(body).String() != d.String() {
		t.Fatalf("GET blob %s = %d, %d bytes with digest %s", d, status, len(body), digest.FromBytes(body))
	}
	return body
}

func TestRegistryPushPullBack(t *testing.T) {
	reg := StartRegistry(t)
	base := TarDir(t, BusyboxRoot(t))
	top := Tar(t, []File{{Path: "etc/.wh.hostname"}, {Path: "hello", Data: []byte("hi\n")}})
	layers := []Layer{{Blob: Gzip(t, base, gzip.BestSpeed)}, {Blob: top}}
	cfg := ImageConfig{Config: v1.Config{Cmd: []string{"/bin/sh", "-c", "echo hi"}, Env: []string{"PATH=/bin"}, WorkingDir: "/root"}}
	p := PushImageInfo(t, reg.Addr, "test/busybox:v1", layers, cfg)
	if want := reg.Addr + "/test/busybox:v1"; p.Ref != want {
		t.Errorf("Ref = %s, want %s", p.Ref, want)
	}

	// Pull it back and read it with ggcr's parsers.
	body := pullManifest(t, reg.Addr, "test/busybox", "v1", p.Digest)
	if !bytes.Equal(body, p.Manifest) {
		t.Errorf("pulled manifest differs from the pushed one")
	}
	m, err := v1.ParseManifest(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || len(m.Layers) != 2 ||
		m.Layers[0].MediaType != types.OCILayer || m.Layers[1].MediaType != types.OCIUncompressedLayer {
		t.Errorf("manifest = %s config %s layers %v, want OCI with a gzip and a tar layer", m.MediaType, m.Config.MediaType, m.Layers)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(pullBlob(t, reg.Addr, "test/busybox", m.Config.Digest)))
	if err != nil {
		t.Fatal(err)
	}
	wantDiffs := []string{digest.FromBytes(base).String(), digest.FromBytes(top).String()}
	var gotDiffs []string
	for _, h := range cf.RootFS.DiffIDs {
		gotDiffs = append(gotDiffs, h.String())
	}
	if !slices.Equal(gotDiffs, wantDiffs) {
		t.Errorf("diff_ids = %v, want %v", gotDiffs, wantDiffs)
	}
	if !slices.Equal(cf.Config.Cmd, cfg.Config.Cmd) || cf.Config.WorkingDir != "/root" || cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("config = %+v", cf)
	}
	layer0 := pullBlob(t, reg.Addr, "test/busybox", m.Layers[0].Digest)
	if !bytes.Equal(layer0, layers[0].Blob) {
		t.Errorf("layer 0 pulled back differs")
	}

	// A range read, and what the registry's log tells of it.
	status, hdr, part := get(t, fmt.Sprintf("http://%s/v2/test/busybox/blobs/%s", reg.Addr, m.Layers[0].Digest), map[string]string{"Range": "bytes=10-19"})
	if status != http.StatusPartialContent || !bytes.Equal(part, layer0[10:20]) {
		t.Errorf("Range bytes=10-19 = %d %q (%s), want 206 and the bytes", status, part, hdr.Get("Content-Range"))
	}
	gets := reg.BlobGets(t)
	want := BlobRequest{Method: "GET", Repo: "test/busybox", Digest: digest.Digest(m.Layers[0].Digest.String()), Status: 206, Written: 10, Offset: 10}
	if !slices.Contains(gets, want) {
		t.Errorf("BlobGets() = %+v, want it to contain %+v", gets, want)
	}
	full := BlobRequest{Method: "GET", Repo: "test/busybox", Digest: want.Digest, Status: 200, Written: int64(len(layer0)), Offset: 0}
	if !slices.Contains(gets, full) {
		t.Errorf("BlobGets() = %+v, want it to contain %+v", gets, full)
	}
	for _, g := range gets {
		if g.Method == "HEAD" && g.Offset != -1 {
			t.Errorf("HEAD %s has offset %d, want -1", g.Digest, g.Offset)
		}
	}

	t.Run("skopeo reads it", func(t *testing.T) {
		if _, err := exec.LookPath("skopeo"); err != nil {
			t.Skip("skopeo not installed: an independent client check only")
		}
		out, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "docker://"+p.Ref).CombinedOutput()
		if err != nil || !strings.Contains(string(out), p.Digest.String()) {
			t.Errorf("skopeo inspect %s: %v\n%s", p.Ref, err, out)
		}
	})
}

func TestRegistryDockerSchema2AndZstd(t *testing.T) {
	reg := StartRegistry(t)
	files := []File{{Path: "big", Size: 2<<20 + 7, Seed: 1}, {Path: "small", Data: []byte("s")}}
	tarball := Tar(t, files)

	// Docker schema 2 with a detected gzip layer.
	ref, d := PushImage(t, reg.Addr, "test/docker", []Layer{{Blob: Gzip(t, tarball, gzip.DefaultCompression)}}, ImageConfig{DockerSchema2: true})
	if ref != reg.Addr+"/test/docker:latest" {
		t.Errorf("ref = %s", ref)
	}
	m, err := v1.ParseManifest(bytes.NewReader(pullManifest(t, reg.Addr, "test/docker", "latest", d)))
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON || m.Layers[0].MediaType != types.DockerLayer {
		t.Errorf("manifest = %s config %s layer %s, want Docker schema 2 types", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}

	// A zstd layer streamed from a file, pushed by digest only.
	l := WriteLayer(t, files, types.OCILayerZStd)
	p := PushImageInfo(t, reg.Addr, "test/zstd@", []Layer{l}, ImageConfig{})
	if !strings.HasSuffix(p.Ref, "/test/zstd@"+p.Digest.String()) {
		t.Errorf("by-digest Ref = %s", p.Ref)
	}
	m, err = v1.ParseManifest(bytes.NewReader(pullManifest(t, reg.Addr, "test/zstd", p.Digest.String(), p.Digest)))
	if err != nil {
		t.Fatal(err)
	}
	blob := pullBlob(t, reg.Addr, "test/zstd", m.Layers[0].Digest)
	zr, err := zstd.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != digest.FromBytes(tarball) || p.DiffIDs[0] != got {
		t.Errorf("zstd layer decompresses to %s, DiffID %s, want %s", got, p.DiffIDs[0], digest.FromBytes(tarball))
	}
}

func TestRegistryIndex(t *testing.T) {
	reg := StartRegistry(t)
	layer := Layer{Blob: Gzip(t, Tar(t, []File{{Path: "f", Data: []byte("x")}}), gzip.BestSpeed)}
	for _, docker := range []bool{false, true} {
		images := []PlatformImage{
			{Layers: []Layer{layer}, Config: ImageConfig{Architecture: "amd64", DockerSchema2: docker}},
			{Layers: []Layer{layer}, Config: ImageConfig{Architecture: "arm64", Variant: "v8", DockerSchema2: docker}},
		}
		p := PushIndexInfo(t, reg.Addr, "test/multi:"+map[bool]string{false: "oci", true: "docker"}[docker], images)
		idx, err := v1.ParseIndexManifest(bytes.NewReader(pullManifest(t, reg.Addr, "test/multi", strings.SplitN(p.Ref, ":", 3)[2], p.Digest)))
		if err != nil {
			t.Fatal(err)
		}
		wantType := map[bool]types.MediaType{false: types.OCIImageIndex, true: types.DockerManifestList}[docker]
		if idx.MediaType != wantType || len(idx.Manifests) != 2 {
			t.Fatalf("index = %s with %d manifests, want %s with 2", idx.MediaType, len(idx.Manifests), wantType)
		}
		for i, want := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}} {
			desc := idx.Manifests[i]
			if desc.Platform == nil || !desc.Platform.Equals(want) {
				t.Errorf("manifest %d platform = %v, want %v", i, desc.Platform, want)
			}
			pullManifest(t, reg.Addr, "test/multi", desc.Digest.String(), digest.Digest(desc.Digest.String()))
		}
	}
}

func TestPushBlobAndManifest(t *testing.T) {
	reg := StartRegistry(t)
	cfg := []byte("{}")
	cd := PushBlob(t, reg.Addr, "test/artifact", cfg)
	art := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.lazyfs.test",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"%s","size":2},"layers":[]}`, cd)
	d := PushManifest(t, reg.Addr, "test/artifact", "idx", types.OCIManifestSchema1, []byte(art))
	if got := pullManifest(t, reg.Addr, "test/artifact", "idx", d); string(got) != art {
		t.Errorf("artifact manifest = %s", got)
	}
	// Pushing the same blob again is a no-op.
	if PushBlob(t, reg.Addr, "test/artifact", cfg) != cd {
		t.Errorf("PushBlob digest changed")
	}
}
