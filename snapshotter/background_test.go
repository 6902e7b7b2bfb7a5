package snapshotter

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/lazyfs/lazyfs/fetch"
	"github.com/lazyfs/lazyfs/internal/testutil"
	"github.com/lazyfs/lazyfs/layers"
	"github.com/lazyfs/lazyfs/metrics"
)

// With Background set, every lazy layer is fetched whole after its
// mount, shown per repository in the metrics; removing the layers stops
// their fetches and keeps the counts.
func TestLazyLayersFetchedInBackground(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	log, rec := newLog(t)
	reg := testutil.StartRegistry(t)
	client := fetch.New(fetch.Config{Logger: log})
	img := pushImage(t, reg, client, "test/bg:latest", twoLayers(t), true)
	store := openStore(t, t.TempDir())
	mx := metrics.New()
	sn := newSnapshotterWith(t, Config{Root: t.TempDir(), Client: client, Store: store, Logger: log, Metrics: mx,
		Background: layers.BackgroundConfig{Mode: layers.BackgroundFull}})
	ctx := t.Context()
	for i := range img.Layers {
		key := fmt.Sprintf("default/%d/extract-%d", i+1, i)
		if _, err := sn.Prepare(ctx, key, img.parent(i), snapshots.WithLabels(img.labels(i))); !errdefs.IsAlreadyExists(err) {
			t.Fatalf("Prepare(layer %d) = %v, want ErrAlreadyExists", i, err)
		}
	}
	repo, _ := repoOf(img.Ref)
	deadline := time.Now().Add(time.Minute)
	for rec.count("image fully fetched") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d layers fully fetched after a minute, want 2", rec.count("image fully fetched"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	frames := metricValue(t, mx, "lazyfs_background_frames", repo)
	if cached := metricValue(t, mx, "lazyfs_background_frames_cached", repo); frames == 0 || cached != frames {
		t.Errorf("background frames cached = %g of %g, want all", cached, frames)
	}
	if got := stateCount(t, mx, repo, "done"); got != 2 {
		t.Errorf("background fetches done = %g, want 2", got)
	}
	requests := metricValue(t, mx, "lazyfs_background_requests_total", repo)
	if requests == 0 {
		t.Error("no background requests counted")
	}
	for i := range img.Layers {
		if err := sn.Remove(ctx, img.chain[len(img.Layers)-1-i].String()); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("Remove: %v", err)
		}
	}
	if got := metricValue(t, mx, "lazyfs_background_requests_total", repo); got != requests {
		t.Errorf("background requests after the layers' removal = %g, want the %g counted before", got, requests)
	}
	if got := stateCount(t, mx, repo, "done"); got != 0 {
		t.Errorf("background fetches done after the layers' removal = %g, want none", got)
	}
}

// stateCount is lazyfs_background_fetches{image,state}, 0 when absent.
func stateCount(t *testing.T, mx *metrics.Registry, image, state string) float64 {
	t.Helper()
	mfs, err := mx.Gatherer().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lazyfs_background_fetches" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["image"] == image && labels["state"] == state {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
