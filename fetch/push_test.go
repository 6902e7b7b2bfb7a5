package fetch

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	kgzip "github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// baseLayerData is the one layer of the images pushBase pushes.
var baseLayerData = testData(300_000, 7)

// pushBase pushes a one-layer image with a config that has an
// environment, a command, an author and a history entry to host/repo:base,
// as an OCI or a Docker schema 2 image.
func pushBase(t *testing.T, host, repo string, docker bool) string {
	t.Helper()
	lt, mt, ct := types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	if docker {
		lt, mt, ct = types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   static.NewLayer(baseLayerData, lt),
		History: v1.History{Created: v1.Time{Time: time.Unix(1_600_000_000, 0).UTC()}, CreatedBy: "base layer"},
	})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, mt)
	img = mutate.ConfigMediaType(img, ct)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Author = "linux", "amd64", "base author"
	cf.Config = v1.Config{Env: []string{"PATH=/bin", "BASE=1"}, Cmd: []string{"sh"}, WorkingDir: "/w"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref := host + "/" + repo + ":base"
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

// writeGzipLayer writes a gzip layer with one file into a temp file.
func writeGzipLayer(t *testing.T) (LayerFile, []byte) {
	t.Helper()
	var tarball bytes.Buffer
	tw := tar.NewWriter(&tarball)
	content := []byte("committed\n")
	if err := tw.WriteHeader(&tar.Header{Name: "new.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1_700_000_000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(content)
	tw.Close()
	var blob bytes.Buffer
	zw := kgzip.NewWriter(&blob)
	zw.Write(tarball.Bytes())
	zw.Close()
	p := filepath.Join(t.TempDir(), "layer.tar.gz")
	if err := os.WriteFile(p, blob.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return LayerFile{Path: p, Digest: digest.FromBytes(blob.Bytes()), DiffID: digest.FromBytes(tarball.Bytes()), Size: int64(blob.Len())}, blob.Bytes()
}

func TestPushAppend(t *testing.T) {
	ggcr := ggcrRegistry(t, false)
	var reg *testutil.Registry
	var proxy *testutil.FaultProxy
	parent := t
	dockerReg := func() string { // started once, for the parent test
		if reg == nil {
			reg = testutil.StartRegistry(parent)
			proxy = testutil.NewFaultProxy(parent, reg.Addr)
		}
		return proxy.Addr
	}
	for _, tc := range []struct {
		name     string
		docker   bool // Docker schema 2 base
		sameRepo bool
		real     bool // Debian's docker-registry (mounts blobs) behind a proxy, else ggcr's (copies)
	}{
		{name: "oci other repo copied"},
		{name: "docker other repo copied", docker: true},
		{name: "oci same repo", sameRepo: true},
		{name: "oci other repo mounted", real: true},
		{name: "docker other repo mounted", docker: true, real: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			host := ggcr
			if tc.real {
				host = dockerReg()
				proxy.ClearStats()
			}
			repo := "lazy/" + strings.ReplaceAll(tc.name, " ", "-")
			baseRef := pushBase(t, host, repo+"-base", tc.docker)
			c := testClient(t, Config{Platform: platform("linux", "amd64", "")})
			base, err := c.Resolve(ctx, baseRef)
			if err != nil {
				t.Fatal(err)
			}
			lf, blob := writeGzipLayer(t)
			dst := host + "/" + repo + ":v2"
			if tc.sameRepo {
				dst = base.Repo + ":v2"
			}
			created := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			img, err := c.PushAppend(ctx, dst, Append{
				Base:    base,
				Layer:   lf,
				History: ocispec.History{Created: &created, CreatedBy: "sh -c echo hi", Author: "me", Comment: "a message"},
				Created: created,
				Author:  "me",
			})
			if err != nil {
				t.Fatalf("PushAppend(%s) = %v", dst, err)
			}
			if tc.real {
				for _, r := range proxy.Requests() {
					if r.Method == http.MethodGet && r.Digest == base.Manifest.Layers[0].Digest {
						t.Errorf("the base layer was fetched (%s %s): want it mounted", r.Method, r.Path)
					}
				}
			}

			got, err := c.Resolve(ctx, dst)
			if err != nil {
				t.Fatalf("Resolve(%s) = %v", dst, err)
			}
			if got.Digest != img.Digest || !bytes.Equal(got.RawManifest, img.RawManifest) || !bytes.Equal(got.RawConfig, img.RawConfig) ||
				got.Repo != img.Repo || got.MediaType != img.MediaType {
				t.Errorf("PushAppend returned %s (%s in %s); the registry has %s (%s in %s)", img.Digest, img.MediaType, img.Repo, got.Digest, got.MediaType, got.Repo)
			}
			wantMT, wantLT := ocispec.MediaTypeImageManifest, string(types.OCILayer)
			if tc.docker {
				wantMT, wantLT = MediaTypeDockerManifest, string(types.DockerLayer)
			}
			if got.MediaType != wantMT || got.Manifest.Config.MediaType != base.Manifest.Config.MediaType {
				t.Errorf("manifest %s with config %s; want %s with %s", got.MediaType, got.Manifest.Config.MediaType, wantMT, base.Manifest.Config.MediaType)
			}
			ls := got.Manifest.Layers
			if len(ls) != 2 || ls[0].Digest != base.Manifest.Layers[0].Digest || ls[0].MediaType != base.Manifest.Layers[0].MediaType ||
				ls[1].Digest != lf.Digest || ls[1].Size != lf.Size || ls[1].MediaType != wantLT {
				t.Errorf("layers = %+v; want the base's and %s (%d bytes, %s)", ls, lf.Digest, lf.Size, wantLT)
			}

			var cf v1.ConfigFile
			if err := json.Unmarshal(got.RawConfig, &cf); err != nil {
				t.Fatal(err)
			}
			var diffIDs []string
			for _, h := range cf.RootFS.DiffIDs {
				diffIDs = append(diffIDs, h.String())
			}
			if want := []string{base.Config.RootFS.DiffIDs[0].String(), lf.DiffID.String()}; !slices.Equal(diffIDs, want) {
				t.Errorf("diff_ids = %v, want %v", diffIDs, want)
			}
			if len(cf.History) != 2 || cf.History[0].CreatedBy != "base layer" {
				t.Fatalf("history = %+v, want the base's entry and a new one", cf.History)
			}
			h := cf.History[1]
			if !h.Created.Equal(created) || h.CreatedBy != "sh -c echo hi" || h.Author != "me" || h.Comment != "a message" || h.EmptyLayer {
				t.Errorf("new history entry = %+v", h)
			}
			if !cf.Created.Equal(created) || cf.Author != "me" || cf.OS != "linux" || cf.Architecture != "amd64" ||
				!slices.Equal(cf.Config.Env, []string{"PATH=/bin", "BASE=1"}) || !slices.Equal(cf.Config.Cmd, []string{"sh"}) || cf.Config.WorkingDir != "/w" {
				t.Errorf("config = %+v; want the base's with created %v and author me", cf, created)
			}

			// Both layers are in the new repository.
			for _, l := range []struct {
				d    digest.Digest
				want []byte
			}{{base.Manifest.Layers[0].Digest, baseLayerData}, {lf.Digest, blob}} {
				b, err := c.ReadBlob(ctx, got.Repo, l.d, 1<<20)
				if err != nil || !bytes.Equal(b, l.want) {
					t.Errorf("ReadBlob(%s, %s) = %d bytes, %v; want %d bytes", got.Repo, l.d, len(b), err, len(l.want))
				}
			}
		})
	}
}

func TestPushAppendErrors(t *testing.T) {
	c := testClient(t, Config{})
	lf, _ := writeGzipLayer(t)
	base := &Image{Repo: "127.0.0.1:1/x", Digest: digest.FromString("m"), MediaType: ocispec.MediaTypeImageManifest}
	for _, tc := range []struct {
		name string
		ref  string
		a    Append
	}{
		{"digest reference", "127.0.0.1:1/x@" + digest.FromString("x").String(), Append{Base: base, Layer: lf}},
		{"bad reference", "127.0.0.1:1/Not Valid", Append{Base: base, Layer: lf}},
		{"no base", "127.0.0.1:1/x:t", Append{Layer: lf}},
		{"no layer digest", "127.0.0.1:1/x:t", Append{Base: base, Layer: LayerFile{Path: lf.Path}}},
		{"index base", "127.0.0.1:1/x:t", Append{Base: &Image{Repo: base.Repo, Digest: base.Digest, MediaType: ocispec.MediaTypeImageIndex}, Layer: lf}},
	} {
		if _, err := c.PushAppend(t.Context(), tc.ref, tc.a); err == nil {
			t.Errorf("%s: PushAppend succeeded", tc.name)
		}
	}
}

func TestValidatePushRef(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"127.0.0.1:5000/a/b:v1", true},
		{"127.0.0.1:5000/a/b", true},
		{"busybox:latest", true},
		{"127.0.0.1:5000/a@" + digest.FromString("x").String(), false},
		{"UPPER/case", false},
		{"has space:v1", false},
		{"", false},
	} {
		if err := ValidatePushRef(tc.ref); (err == nil) != tc.ok {
			t.Errorf("ValidatePushRef(%q) = %v, want ok %v", tc.ref, err, tc.ok)
		}
	}
}

func TestDigestRef(t *testing.T) {
	d := digest.FromString("m")
	for _, tc := range []struct{ ref, want string }{
		{"127.0.0.1:5000/a/b:v1", "127.0.0.1:5000/a/b@" + d.String()},
		{"127.0.0.1:5000/a/b@" + digest.FromString("old").String(), "127.0.0.1:5000/a/b@" + d.String()},
		{"busybox", "index.docker.io/library/busybox@" + d.String()},
	} {
		if got, err := DigestRef(tc.ref, d); err != nil || got != tc.want {
			t.Errorf("DigestRef(%q) = %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
	if _, err := DigestRef("x:y", "sha256:short"); err == nil {
		t.Errorf("DigestRef with a bad digest succeeded")
	}
}

// streamingServer is a RoundTripper standing for a registry that reads an
// upload's body one byte per pause, and answers 201 at its end.
type streamingServer struct {
	pause   time.Duration
	managed *bool // set to whether the request came as managed
}

func (s streamingServer) RoundTrip(req *http.Request) (*http.Response, error) {
	*s.managed = isManaged(req.Context())
	buf := make([]byte, 1)
	for req.Body != nil {
		select {
		case <-time.After(s.pause):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		if _, err := req.Body.Read(buf); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
	}
	return &http.Response{StatusCode: http.StatusCreated, Body: http.NoBody, Request: req}, nil
}

func TestUploadTransport(t *testing.T) {
	const idle = 10 * time.Second
	for _, tc := range []struct {
		name        string
		pause       time.Duration
		replayable  bool // the body has GetBody: our usual stack handles it
		wantStalled bool
	}{
		{name: "slow but steady", pause: idle / 2},
		{name: "stalled", pause: 2 * idle, wantStalled: true},
		{name: "replayable body", pause: time.Second, replayable: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var managed bool
				ut := &uploadTransport{inner: streamingServer{pause: tc.pause, managed: &managed}, idle: idle}
				body := strings.Repeat("x", 8) // 8 pauses: longer than idle in all
				req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, "http://127.0.0.1:1/v2/r/blobs/uploads/u", io.NopCloser(strings.NewReader(body)))
				if err != nil {
					t.Fatal(err)
				}
				if tc.replayable {
					req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
				}
				resp, err := ut.RoundTrip(req)
				if tc.wantStalled {
					if !errors.Is(err, ErrStalled) {
						t.Errorf("RoundTrip = %v, want ErrStalled", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("RoundTrip = %v", err)
				}
				resp.Body.Close()
				if managed == tc.replayable {
					t.Errorf("request managed = %v, want %v", managed, !tc.replayable)
				}
			})
		})
	}
}
