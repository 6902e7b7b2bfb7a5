package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
	"github.com/lazyfs/lazyfs/layers"
)

func TestParseImageName(t *testing.T) {
	const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		ref  string
		want ImageName
		str  string
	}{
		{"busybox", ImageName{Repository: "index.docker.io/library/busybox", Tag: "latest"}, "index.docker.io/library/busybox:latest"},
		{"127.0.0.1:5000/test/busybox:1.36", ImageName{Repository: "127.0.0.1:5000/test/busybox", Tag: "1.36"}, "127.0.0.1:5000/test/busybox:1.36"},
		{"localhost:5000/x@" + d, ImageName{Repository: "localhost:5000/x", Digest: d}, "localhost:5000/x@" + d},
	} {
		got, err := ParseImageName(tc.ref)
		if err != nil || got != tc.want || got.String() != tc.str {
			t.Errorf("ParseImageName(%q) = %+v (%q), %v; want %+v (%q)", tc.ref, got, got.String(), err, tc.want, tc.str)
		}
	}
	if _, err := ParseImageName("UPPER/case"); err == nil {
		t.Errorf("ParseImageName(%q) accepted an invalid reference", "UPPER/case")
	}
}

// fakeImage is a resolved image with the given layers, built in memory.
func fakeImage(t *testing.T, repo string, created time.Time, ls ...ocispec.Descriptor) *fetch.Image {
	t.Helper()
	cfg := ocispec.Image{Created: &created, Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}}
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(rawCfg), Size: int64(len(rawCfg))},
		Layers:    ls,
	}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &fetch.Image{Repo: repo, Digest: digest.FromBytes(raw), MediaType: m.MediaType, Manifest: m,
		RawManifest: raw, Config: cfg, RawConfig: rawCfg}
}

func layerDesc(blob string, size int64) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(blob), Size: size}
}

func TestRecordImageAndLocalImage(t *testing.T) {
	rt := New(Config{Root: t.TempDir()})
	created := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	img := fakeImage(t, "127.0.0.1:5000/app", created, layerDesc("a", 100), layerDesc("b", 23))
	const ref = "127.0.0.1:5000/app"

	if _, _, err := rt.LocalImage(ref); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LocalImage before any record = %v, want fs.ErrNotExist", err)
	}
	if err := rt.RecordImage(ref, img, true); err != nil {
		t.Fatal(err)
	}
	got, rec, err := rt.LocalImage(ref + ":latest")
	if err != nil {
		t.Fatalf("LocalImage() = %v", err)
	}
	if !bytes.Equal(got.RawManifest, img.RawManifest) || !bytes.Equal(got.RawConfig, img.RawConfig) ||
		got.Digest != img.Digest || got.Repo != img.Repo || len(got.Manifest.Layers) != 2 || !got.Config.Created.Equal(created) {
		t.Errorf("LocalImage() = %+v, want the recorded image", got)
	}
	want := ImageRecord{Version: 1, Name: "127.0.0.1:5000/app:latest", Repository: "127.0.0.1:5000/app", Tag: "latest",
		Digest: img.Digest, MediaType: ocispec.MediaTypeImageManifest, Config: img.Manifest.Config.Digest,
		Created: created, Size: 123, Layers: 2}
	pulled := rec.Pulled
	if pulled.IsZero() || rec.LastUsed.IsZero() {
		t.Errorf("record %+v: Pulled and LastUsed not set", rec)
	}
	rec.Pulled, rec.LastUsed = time.Time{}, time.Time{}
	if *rec != want {
		t.Errorf("record = %+v\nwant %+v", *rec, want)
	}

	// A run of the same image keeps the pull; a new digest forgets it.
	if err := rt.RecordImage(ref, img, false); err != nil {
		t.Fatal(err)
	}
	if _, rec, _ = rt.LocalImage(ref); !rec.Pulled.Equal(pulled) {
		t.Errorf("after a run, Pulled = %v, want %v", rec.Pulled, pulled)
	}
	img2 := fakeImage(t, "127.0.0.1:5000/app", created, layerDesc("c", 5))
	if err := rt.RecordImage(ref, img2, false); err != nil {
		t.Fatal(err)
	}
	if _, rec, _ = rt.LocalImage(ref); rec.Digest != img2.Digest || !rec.Pulled.IsZero() {
		t.Errorf("after the tag moved: record %+v, want digest %s and no pull", rec, img2.Digest)
	}

	// A damaged blob is refused, not used.
	p, _ := rt.imageBlobPath(img2.Digest)
	if err := os.WriteFile(p, []byte(`{"schemaVersion":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rt.LocalImage(ref); !errors.Is(err, index.ErrCorrupt) {
		t.Errorf("LocalImage with a damaged manifest = %v, want ErrCorrupt", err)
	}
	// Temp files do not linger.
	tmps, _ := filepath.Glob(filepath.Join(rt.imagesDir(), "*", ".tmp-*"))
	if len(tmps) != 0 {
		t.Errorf("temp files left: %v", tmps)
	}
}

// The v1 record format is what roots on disk hold: it must keep decoding.
func TestImageRecordGolden(t *testing.T) {
	rec, err := readImageRecordFile("testdata/image-record-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	want := ImageRecord{
		Version: 1, Name: "127.0.0.1:5000/busybox:latest", Repository: "127.0.0.1:5000/busybox", Tag: "latest",
		Digest:      "sha256:7b3ccabffc97de872a30dfd234fd972a66d247c8cfc69b0550f276481852627c",
		IndexDigest: "sha256:9ae97d36d26566ff84e8893c64a6dc4fe8ca6d1144bf5b87b2b85a32def253c7",
		MediaType:   "application/vnd.oci.image.manifest.v1+json",
		Config:      "sha256:d2c94e258dcb3c5ac2798d32e1249e42ef01cba4841c2234249495f87264ac5a",
		Created:     time.Date(2024, 9, 26, 21, 31, 42, 0, time.UTC),
		Size:        2153183, Layers: 1,
		Pulled:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		LastUsed: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
	}
	if *rec != want {
		t.Errorf("golden record = %+v\nwant %+v", *rec, want)
	}
	b, _ := os.ReadFile("testdata/image-record-v1.json")
	future := filepath.Join(t.TempDir(), "r.json")
	os.WriteFile(future, bytes.Replace(b, []byte(`"version": 1`), []byte(`"version": 2`), 1), 0o600)
	if _, err := readImageRecordFile(future); !errors.Is(err, ErrUnknownImageRecord) {
		t.Errorf("a version 2 record = %v, want ErrUnknownImageRecord", err)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestResolveImageWithoutRegistry(t *testing.T) {
	addr := closedAddr(t)
	var logs bytes.Buffer
	rt := New(Config{Root: t.TempDir(), Client: fetch.New(fetch.Config{Retries: -1}),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ref := addr + "/app:v1"

	if _, err := rt.ResolveImage(t.Context(), ref); err == nil {
		t.Fatalf("ResolveImage(%s) with no registry and no record succeeded", ref)
	}
	img := fakeImage(t, addr+"/app", time.Unix(0, 0), layerDesc("a", 1))
	if err := rt.RecordImage(ref, img, false); err != nil {
		t.Fatal(err)
	}
	got, err := rt.ResolveImage(t.Context(), ref)
	if err != nil || got.Digest != img.Digest || got.Ref != ref {
		t.Fatalf("ResolveImage() from the record = %+v, %v; want digest %s", got, err, img.Digest)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "never pulled") {
		t.Errorf("using a never pulled image did not warn:\n%s", logs.String())
	}
	logs.Reset()
	if err := rt.RecordImage(ref, img, true); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.ResolveImage(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "using the pulled image") {
		t.Errorf("using a pulled image: log\n%s\nwant one Info line", logs.String())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := rt.ResolveImage(ctx, ref); err == nil {
		t.Errorf("ResolveImage() with a cancelled ctx used the record")
	}
}

func TestImagesReportsCache(t *testing.T) {
	root := t.TempDir()
	store, err := cache.Open(cache.Config{Dir: filepath.Join(root, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// A layer with an index and three of its frames cached, and one
	// without an index.
	blob := testutil.Tar(t, []testutil.File{{Path: "f", Size: 5 << 20, Seed: 9}})
	ld := digest.FromBytes(blob)
	x, err := index.Build(t.Context(), ld, bytes.NewReader(blob), index.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := x.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutIndex(ld, enc); err != nil {
		t.Fatal(err)
	}
	var cached int64
	for _, i := range []int{0, 2, 3} {
		f := x.Frames[i]
		if err := store.Put(t.Context(), f.Digest, bytes.Clone(blob[f.Offset:f.Offset+f.Size])); err != nil {
			t.Fatal(err)
		}
		cached += f.Size
	}
	rt := New(Config{Root: root})
	older := fakeImage(t, "127.0.0.1:5000/app", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: ld, Size: int64(len(blob))}, layerDesc("no index", 77))
	newer := fakeImage(t, "127.0.0.1:5000/other", time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), layerDesc("x", 1))
	for ref, img := range map[string]*fetch.Image{"127.0.0.1:5000/app:v1": older, "127.0.0.1:5000/other": newer} {
		if err := rt.RecordImage(ref, img, false); err != nil {
			t.Fatal(err)
		}
	}

	got, err := rt.Images()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "127.0.0.1:5000/other:latest" || got[1].Name != "127.0.0.1:5000/app:v1" {
		t.Fatalf("Images() = %+v, want other, then app", got)
	}
	app := got[1]
	if app.Layers != 2 || app.Indexed != 1 || app.Uncompressed != x.TarSize || app.Cached != cached || app.Size != int64(len(blob))+77 {
		t.Errorf("Images() app = %+v; want 2 layers, 1 indexed, %d uncompressed, %d cached, size %d",
			app, x.TarSize, cached, len(blob)+77)
	}
	if o := got[0]; o.Indexed != 0 || o.Cached != 0 {
		t.Errorf("Images() other = %+v, want nothing indexed or cached", o)
	}
}

// TestPullMakesImageLocal pulls a real registry's image, then resolves and
// reads it with the registry gone.
func TestPullMakesImageLocal(t *testing.T) {
	reg := testutil.StartRegistry(t)
	blobs := []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{{Path: "bin/", Mode: 0o755}, {Path: "bin/data", Size: 3 << 20, Seed: 1}}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "etc/motd", Data: []byte("hi\n")}}, types.OCILayerZStd),
	}
	testutil.PushImage(t, reg.Addr, "test/pull:v1", blobs, testutil.ImageConfig{Created: time.Date(2023, 3, 4, 0, 0, 0, 0, time.UTC)})
	relay := testutil.StartRelay(t, reg.Addr)
	ref := relay.Addr + "/test/pull:v1"

	root := t.TempDir()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	client := fetch.New(fetch.Config{Logger: log, Retries: -1})
	store, err := cache.Open(cache.Config{Dir: filepath.Join(root, "cache")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rt := New(Config{Root: root, Client: client, Store: store, Logger: log,
		Resolver: layers.NewResolver(layers.Config{Client: client, Store: store, Logger: log})})

	var resolved, indexed bool
	done := map[int]bool{}
	res, err := rt.Pull(t.Context(), ref, PullOptions{
		Resolved: func(*fetch.Image) { resolved = true },
		Indexed:  func(ls []layers.Layer) { indexed = len(ls) == 2 },
		Progress: func(p layers.PullProgress) {
			if p.Done {
				done[p.Layer] = true
			}
		},
	})
	if err != nil {
		t.Fatalf("Pull() = %v", err)
	}
	if !resolved || !indexed || len(done) != 2 || !res.Fetched() {
		t.Errorf("Pull() callbacks: resolved %v, indexed %v, done %v; fetched %v", resolved, indexed, done, res.Fetched())
	}
	imgs, err := rt.Images()
	if err != nil || len(imgs) != 1 {
		t.Fatalf("Images() = %+v, %v; want one", imgs, err)
	}
	if i := imgs[0]; i.Pulled.IsZero() || i.Indexed != 2 || i.Cached != i.Uncompressed || i.Digest != res.Image.Digest ||
		!i.Created.Equal(time.Date(2023, 3, 4, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("Images() after Pull = %+v, want pulled, all cached", i)
	}

	res2, err := rt.Pull(t.Context(), ref, PullOptions{})
	if err != nil || res2.Fetched() {
		t.Errorf("second Pull() = fetched %v, %v; want nothing fetched", res2 != nil && res2.Fetched(), err)
	}

	relay.Stop()
	img, err := rt.ResolveImage(t.Context(), ref)
	if err != nil {
		t.Fatalf("ResolveImage() with the registry stopped = %v", err)
	}
	ls, err := rt.cfg.Resolver.Layers(t.Context(), img)
	if err != nil {
		t.Fatalf("Layers() with the registry stopped = %v", err)
	}
	src := layers.NewSource(client, img.Repo, store, log)
	for _, l := range ls {
		for i, f := range l.Index.Frames {
			if b, err := src.Frame(t.Context(), l.Index, i); err != nil || digest.FromBytes(b) != f.Digest {
				t.Fatalf("frame %d of layer %s with the registry stopped: %v", i, l.Desc.Digest, err)
			}
		}
	}
}

// TestPullPolicy follows docker run's --pull on a real registry whose tag
// moves: missing keeps the recorded image and asks nothing, always follows
// the tag and needs the registry, never needs a record.
func TestPullPolicy(t *testing.T) {
	reg := testutil.StartRegistry(t)
	layer := func(seed int64) []testutil.Layer {
		return []testutil.Layer{testutil.WriteLayer(t, []testutil.File{{Path: "f", Size: 1000, Seed: seed}}, types.OCILayer)}
	}
	_, first := testutil.PushImage(t, reg.Addr, "test/policy", layer(1), testutil.ImageConfig{})
	relay := testutil.StartRelay(t, reg.Addr)
	proxy := testutil.NewFaultProxy(t, relay.Addr) // counts the requests
	ref := proxy.Addr + "/test/policy:latest"
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	rt := New(Config{Root: t.TempDir(), Client: fetch.New(fetch.Config{Logger: log, Retries: -1}), Logger: log})

	if _, err := rt.imageToRun(t.Context(), ref, PullNever, nil); !errors.Is(err, ErrNoSuchImage) {
		t.Fatalf("--pull=never before any run = %v, want ErrNoSuchImage", err)
	}
	img, err := rt.imageToRun(t.Context(), ref, PullMissing, nil)
	if err != nil || img.Digest != first {
		t.Fatalf("--pull=missing before any run = %v, %v; want %s from the registry", img, err, first)
	}

	_, second := testutil.PushImage(t, reg.Addr, "test/policy", layer(2), testutil.ImageConfig{})
	requests := len(proxy.Requests())
	for _, p := range []PullPolicy{PullMissing, PullNever} {
		if img, err := rt.imageToRun(t.Context(), ref, p, nil); err != nil || img.Digest != first {
			t.Errorf("--pull=%s after the tag moved = %v, %v; want the recorded %s", p, img, err, first)
		}
	}
	if n := len(proxy.Requests()) - requests; n != 0 {
		t.Errorf("--pull=missing and never of a recorded image made %d requests, want 0", n)
	}
	if img, err := rt.imageToRun(t.Context(), ref, PullAlways, nil); err != nil || img.Digest != second {
		t.Fatalf("--pull=always = %v, %v; want %s, where the tag moved", img, err, second)
	}
	if img, err := rt.imageToRun(t.Context(), ref, PullMissing, nil); err != nil || img.Digest != second {
		t.Errorf("--pull=missing after --pull=always = %v, %v; want the new record %s", img, err, second)
	}

	relay.Stop()
	if _, err := rt.imageToRun(t.Context(), ref, PullAlways, nil); err == nil {
		t.Errorf("--pull=always with the registry gone succeeded")
	}
	if img, err := rt.imageToRun(t.Context(), ref, PullMissing, nil); err != nil || img.Digest != second {
		t.Errorf("--pull=missing with the registry gone = %v, %v; want the record", img, err)
	}
	if _, err := ParsePullPolicy("sometimes"); err == nil {
		t.Errorf("ParsePullPolicy(sometimes) accepted it")
	}
}
