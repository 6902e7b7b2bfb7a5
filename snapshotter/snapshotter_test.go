package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"

	"github.com/lazyfs/lazyfs/cache"
	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/testutil"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/metrics"
)

// image is a pushed test image and what a pull client would label its
// layers with.
type image struct {
	*testutil.PushedImage
	chain []digest.Digest // chain IDs, bottom first
}

// labels are what containerd's unpacker, wrapped by
// snapshotters.AppendInfoHandlerWrapper, passes to Prepare for layer i.
func (img image) labels(i int) map[string]string {
	return map[string]string{
		snapshots.LabelSnapshotRef: img.chain[i].String(),
		labelImageRef:              img.Ref,
		labelManifest:              img.Digest.String(),
		labelDigest:                img.Layers[i].Digest.String(),
	}
}

func (img image) parent(i int) string {
	if i == 0 {
		return ""
	}
	return img.chain[i-1].String()
}

// pushImage pushes layers as repo and, with indexed, their indexes.
func pushImage(t *testing.T, reg *testutil.Registry, client *fetch.Client, repo string, ls []testutil.Layer, indexed bool) image {
	t.Helper()
	p := testutil.PushImageInfo(t, reg.Addr, repo, ls, testutil.ImageConfig{})
	if indexed {
		r := layers.NewResolver(layers.Config{Client: client, Store: openStore(t, t.TempDir())})
		img, err := client.Resolve(t.Context(), p.Ref)
		if err != nil {
			t.Fatalf("Resolve(%s): %v", p.Ref, err)
		}
		built, err := r.Build(t.Context(), img)
		if err != nil {
			t.Fatalf("Build(%s): %v", p.Ref, err)
		}
		if _, err := r.Push(t.Context(), img, built); err != nil {
			t.Fatalf("Push(%s): %v", p.Ref, err)
		}
	}
	return image{PushedImage: p, chain: identity.ChainIDs(slices.Clone(p.DiffIDs))}
}

func newSnapshotter(t *testing.T, root string, client *fetch.Client, store *cache.Store, log *slog.Logger) *Snapshotter {
	t.Helper()
	return newSnapshotterWith(t, Config{Root: root, Client: client, Store: store, Logger: log})
}

func newSnapshotterWith(t *testing.T, cfg Config) *Snapshotter {
	t.Helper()
	sn, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { sn.Close() })
	return sn
}

// mountAll mounts what a snapshot's Mounts say at a new directory, as
// containerd would, and unmounts it at cleanup.
func mountAll(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(ms, dir); err != nil {
		t.Fatalf("mount %+v: %v", ms, err)
	}
	t.Cleanup(func() {
		if err := mount.UnmountAll(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func unmountNow(t *testing.T, dir string) {
	t.Helper()
	if err := mount.UnmountAll(dir, 0); err != nil {
		t.Fatalf("unmount %s: %v", dir, err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func absent(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Lstat(%s) = %v, want not exist", p, err)
	}
}

// twoLayers is a small image whose upper layer deletes a file and makes a
// directory opaque.
func twoLayers(t *testing.T) []testutil.Layer {
	return []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{
			{Path: "etc/"}, {Path: "etc/hostname", Data: []byte("lazy\n")}, {Path: "etc/gone", Data: []byte("x")},
			{Path: "opq/"}, {Path: "opq/old", Data: []byte("old")},
			{Path: "big", Size: 4 << 20, Seed: 3},
		}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{
			{Path: "etc/"}, {Path: "etc/.wh.gone"},
			{Path: "opq/"}, {Path: "opq/.wh..wh..opq"}, {Path: "opq/new", Data: []byte("new")},
		}, types.OCILayer),
	}
}

// wholeLayerGets lists the requests for a layer blob, after the first
// since requests of the registry's log, that were answered with the whole
// blob (status 200): what a download by containerd does.
func wholeLayerGets(t *testing.T, reg *testutil.Registry, since int, imgs ...image) []string {
	t.Helper()
	isLayer := map[digest.Digest]bool{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			isLayer[digest.Digest(l.Digest.String())] = true
		}
	}
	var out []string
	for _, g := range reg.BlobGets(t)[since:] {
		if g.Method == http.MethodGet && g.Status == http.StatusOK && isLayer[g.Digest] {
			out = append(out, fmt.Sprintf("%s %d bytes", g.Digest, g.Written))
		}
	}
	return out
}

// TestLazyLayersLifecycle drives the snapshotter as containerd would:
// unpack of a labelled image (every layer mounted lazily, Prepare answering
// ErrAlreadyExists), a container's writable root on top, a restart that
// mounts the layers again, and removal that unmounts them.
func TestLazyLayersLifecycle(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	log, rec := newLog(t)
	reg := testutil.StartRegistry(t)
	client := fetch.New(fetch.Config{Logger: log})
	img := pushImage(t, reg, client, "test/lazy:latest", twoLayers(t), true)
	pushed := len(reg.BlobGets(t)) // building the indexes read the layers
	root := t.TempDir()
	store := openStore(t, t.TempDir()) // no index locally: they come from the registry
	mx := metrics.New()
	sn := newSnapshotterWith(t, Config{Root: root, Client: client, Store: store, Logger: log, Metrics: mx})
	ctx := t.Context()

	for i := range img.Layers {
		key := fmt.Sprintf("default/%d/extract-%d", i+1, i)
		_, err := sn.Prepare(ctx, key, img.parent(i), snapshots.WithLabels(img.labels(i)))
		if !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare(layer %d) = %v, want ErrAlreadyExists", i, err)
		}
		info, err := sn.Stat(ctx, img.chain[i].String())
		if err != nil {
			t.Fatalf("Stat(chain %d): %v", i, err)
		}
		if info.Kind != snapshots.KindCommitted || info.Parent != img.parent(i) ||
			info.Labels[LabelLayer] != img.Layers[i].Digest.String() || info.Labels[snapshots.LabelSnapshotRef] != img.chain[i].String() {
			t.Errorf("Stat(chain %d) = %+v", i, info)
		}
		if _, err := sn.Stat(ctx, key); !errdefs.IsNotFound(err) {
			t.Errorf("Stat(%s) after lazy commit = %v, want not found", key, err)
		}
	}
	if n := rec.count("layer mounted lazily"); n != 2 {
		t.Errorf("%d layers logged as mounted lazily, want 2", n)
	}
	if got := metricValue(t, mx, "lazyfs_mounts_active", ""); got != 2 {
		t.Errorf("lazyfs_mounts_active after 2 lazy layers = %g, want 2", got)
	}
	// Another namespace pulling the same image finds the layers mounted.
	if _, err := sn.Prepare(ctx, "other/1/extract-0", "", snapshots.WithLabels(img.labels(0))); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second Prepare(layer 0) = %v, want ErrAlreadyExists", err)
	}

	// A container's root: an overlay on the lazy layers, writable.
	ms, err := sn.Prepare(ctx, "default/3/ctr", img.chain[1].String())
	if err != nil {
		t.Fatalf("Prepare(container): %v", err)
	}
	if len(ms) != 1 || ms[0].Type != "overlay" {
		t.Fatalf("Prepare(container) mounts = %+v, want one overlay", ms)
	}
	rootfs := mountAll(t, ms)
	if got := readFile(t, filepath.Join(rootfs, "etc/hostname")); got != "lazy\n" {
		t.Errorf("etc/hostname = %q, want %q", got, "lazy\n")
	}
	if got := readFile(t, filepath.Join(rootfs, "opq/new")); got != "new" {
		t.Errorf("opq/new = %q", got)
	}
	absent(t, filepath.Join(rootfs, "etc/gone"))
	absent(t, filepath.Join(rootfs, "opq/old"))
	want := make([]byte, 4<<20)
	testutil.PatternAt(3, 0, want)
	if got := readFile(t, filepath.Join(rootfs, "big")); got != string(want) {
		t.Errorf("big: %d bytes differ from the pattern", len(got))
	}
	repo, _ := repoOf(img.Ref)
	if got := metricValue(t, mx, "lazyfs_registry_fetched_bytes_total", repo); got <= 0 {
		t.Errorf("lazyfs_registry_fetched_bytes_total{image=%q} after reading a file = %g, want > 0", repo, got)
	}
	if got := metricValue(t, mx, "lazyfs_frame_fetch_duration_seconds", repo); got < 1 {
		t.Errorf("lazyfs_frame_fetch_duration_seconds{image=%q} count = %g, want ≥ 1", repo, got)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/written"), []byte("w"), 0o644); err != nil {
		t.Fatalf("write in the container's root: %v", err)
	}
	unmountNow(t, rootfs)
	if u, err := sn.Usage(ctx, "default/3/ctr"); err != nil || u.Size == 0 {
		t.Errorf("Usage(container) = %+v, %v; want some bytes", u, err)
	}
	if err := sn.Remove(ctx, "default/3/ctr"); err != nil {
		t.Fatalf("Remove(container): %v", err)
	}
	if gets := wholeLayerGets(t, reg, pushed, img); len(gets) > 0 {
		t.Errorf("layer blobs fetched whole: %q", gets)
	}

	// Labels are replaced by Update; the lazy marks stay.
	info, err := sn.Update(ctx, snapshots.Info{Name: img.chain[0].String(), Labels: map[string]string{"x": "y"}})
	if err != nil || info.Labels["x"] != "y" || info.Labels[LabelLayer] == "" {
		t.Errorf("Update(labels) = %+v, %v; want x=y and %s kept", info.Labels, err, LabelLayer)
	}

	// Restart: the layers are mounted again from the metadata.
	ids := map[int]string{}
	for i := range img.Layers {
		sn.mu.Lock()
		for id, l := range sn.lazy {
			if l.layer.String() == img.Layers[i].Digest.String() {
				ids[i] = id
			}
		}
		sn.mu.Unlock()
	}
	if err := sn.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, id := range ids {
		if mounted(t, sn.fsPath(id)) {
			t.Errorf("layer %d still mounted after Close", i)
		}
	}
	if got := metricValue(t, mx, "lazyfs_mounts_active", ""); got != 0 {
		t.Errorf("lazyfs_mounts_active after Close = %g, want 0", got)
	}
	sn = newSnapshotter(t, root, client, store, log)
	if n := rec.count("lazy layer mounted again"); n != 2 {
		t.Errorf("%d layers logged as mounted again, want 2", n)
	}
	ms, err = sn.View(ctx, "default/4/view", img.chain[1].String())
	if err != nil {
		t.Fatalf("View: %v", err)
	}
	view := mountAll(t, ms)
	if got := readFile(t, filepath.Join(view, "opq/new")); got != "new" {
		t.Errorf("opq/new after restart = %q", got)
	}
	absent(t, filepath.Join(view, "etc/written"))
	unmountNow(t, view)
	if err := sn.Remove(ctx, "default/4/view"); err != nil {
		t.Fatalf("Remove(view): %v", err)
	}

	// Removal, top first, unmounts each layer and removes its directory.
	if err := sn.Remove(ctx, img.chain[0].String()); err == nil {
		t.Errorf("Remove(chain 0) with a child = nil error, want one")
	}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		if err := sn.Remove(ctx, img.chain[i].String()); err != nil {
			t.Fatalf("Remove(chain %d): %v", i, err)
		}
		if _, err := os.Lstat(sn.dir(ids[i])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("snapshot directory of layer %d after Remove: %v", i, err)
		}
	}
	var left []string
	if err := sn.Walk(ctx, func(ctx context.Context, info snapshots.Info) error {
		left = append(left, info.Name)
		return nil
	}); err != nil || len(left) > 0 {
		t.Errorf("Walk after removing everything = %q, %v", left, err)
	}
}

// TestLayersWithoutIndexAreUnpacked checks the fallback: a layer with no
// index, or a Prepare without the labels, is an ordinary snapshot that
// containerd unpacks into and commits, and containers stack on it.
func TestLayersWithoutIndexAreUnpacked(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	log, rec := newLog(t)
	reg := testutil.StartRegistry(t)
	client := fetch.New(fetch.Config{Logger: log})
	img := pushImage(t, reg, client, "test/plain:latest", twoLayers(t)[:1], false)
	sn := newSnapshotter(t, t.TempDir(), client, openStore(t, t.TempDir()), log)
	ctx := t.Context()

	key := "default/1/extract-0"
	ms, err := sn.Prepare(ctx, key, "", snapshots.WithLabels(img.labels(0)))
	if err != nil {
		t.Fatalf("Prepare(layer without index) = %v, want mounts", err)
	}
	if len(ms) != 1 || ms[0].Type != "bind" || slices.Contains(ms[0].Options, "ro") {
		t.Fatalf("Prepare(layer without index) mounts = %+v, want a writable bind", ms)
	}
	if n := rec.count("layer unpacked by containerd", "no lazyfs index"); n != 1 {
		t.Errorf("%d log records say the layer is unpacked for want of an index, want 1", n)
	}
	dir := mountAll(t, ms) // containerd's applier would unpack here
	if err := os.WriteFile(filepath.Join(dir, "unpacked"), []byte("u"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmountNow(t, dir)
	if err := sn.Commit(ctx, img.chain[0].String(), key, snapshots.WithLabels(img.labels(0))); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if u, err := sn.Usage(ctx, img.chain[0].String()); err != nil || u.Size == 0 {
		t.Errorf("Usage(committed) = %+v, %v; want some bytes", u, err)
	}

	ms, err = sn.Prepare(ctx, "default/2/ctr", img.chain[0].String())
	if err != nil {
		t.Fatalf("Prepare(container): %v", err)
	}
	rootfs := mountAll(t, ms)
	if got := readFile(t, filepath.Join(rootfs, "unpacked")); got != "u" {
		t.Errorf("unpacked = %q", got)
	}
	unmountNow(t, rootfs)
	if rec.count("snapshot prepared", "default/2/ctr") != 1 {
		t.Errorf("no log record of the container's snapshot")
	}
	for _, k := range []string{"default/2/ctr", img.chain[0].String()} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatalf("Remove(%s): %v", k, err)
		}
	}
	if err := sn.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	des, err := os.ReadDir(filepath.Join(sn.cfg.Root, "snapshots"))
	if err != nil || len(des) > 0 {
		t.Errorf("snapshot directories left: %v, %v", des, err)
	}
}

// TestLayerNotMountedAgainFailsLoudly restarts the snapshotter while the
// registry fails: the lazy layer cannot be mounted again, which is logged,
// and a snapshot on it fails to prepare (and is not left behind) instead
// of showing an empty directory. The next restart with the registry back
// mounts the layer.
func TestLayerNotMountedAgainFailsLoudly(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	log, rec := newLog(t)
	reg := testutil.StartRegistry(t)
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	client := fetch.New(fetch.Config{Logger: log, Retries: -1})
	img := pushImage(t, reg, client, "test/lazy:latest", twoLayers(t)[:1], true)
	img.Ref = proxy.Addr + "/test/lazy:latest"
	root := t.TempDir()
	ctx := t.Context()
	sn := newSnapshotter(t, root, client, openStore(t, t.TempDir()), log)
	if _, err := sn.Prepare(ctx, "default/1/extract-0", "", snapshots.WithLabels(img.labels(0))); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare(layer 0) = %v, want ErrAlreadyExists", err)
	}
	sn.Close()

	rec.expectWarnings()
	proxy.Fail(http.StatusServiceUnavailable, 1000)
	// A new cache: the index has to come from the registry again.
	sn = newSnapshotter(t, root, client, openStore(t, t.TempDir()), log)
	if n := rec.count("lazy layer not mounted again"); n != 1 {
		t.Errorf("%d records say the layer was not mounted again, want 1", n)
	}
	if _, err := sn.Prepare(ctx, "default/2/ctr", img.chain[0].String()); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("Prepare(on an unmounted layer) = %v, want an error saying it is not mounted", err)
	}
	if _, err := sn.Stat(ctx, "default/2/ctr"); !errdefs.IsNotFound(err) {
		t.Errorf("Stat(failed prepare) = %v, want not found", err)
	}
	sn.Close()

	proxy.ClearFaults()
	sn = newSnapshotter(t, root, client, openStore(t, t.TempDir()), log)
	ms, err := sn.Prepare(ctx, "default/3/ctr", img.chain[0].String())
	if err != nil {
		t.Fatalf("Prepare(after the registry is back): %v", err)
	}
	rootfs := mountAll(t, ms)
	if got := readFile(t, filepath.Join(rootfs, "etc/hostname")); got != "lazy\n" {
		t.Errorf("etc/hostname = %q", got)
	}
}

// metricValue returns a counter's or gauge's value, or a histogram's
// count, from a scrape of mx; image "" matches a metric without labels.
func metricValue(t *testing.T, mx *metrics.Registry, name, image string) float64 {
	t.Helper()
	mfs, err := mx.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "image" {
					got = l.GetValue()
				}
			}
			if got != image {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no metric %s{image=%q} in the scrape", name, image)
	return 0
}
