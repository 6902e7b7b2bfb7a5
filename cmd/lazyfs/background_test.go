package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// `lazyfs mount --background=full` fetches the whole image while nothing
// reads it, says so once, shows it in /metrics, and the image then reads
// whole and right with the registry gone.
func TestMountBackgroundFull(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	reg := testutil.StartRegistry(t)
	layers := []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{{Path: "bin/", Mode: 0o755}, {Path: "bin/tool", Size: 6 << 20, Seed: 7, Mode: 0o755},
			{Path: "etc/", Mode: 0o755}, {Path: "etc/conf", Data: []byte("a=1\n")}}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "usr/", Mode: 0o755}, {Path: "usr/share", Size: 3 << 20, Seed: 8},
			{Path: "etc/", Mode: 0o755}, {Path: "etc/motd", Data: []byte("hi\n")}}, types.OCIUncompressedLayer),
	}
	testutil.PushImage(t, reg.Addr, "test/bg:v1", layers, testutil.ImageConfig{})
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	ref := proxy.Addr + "/test/bg:v1"
	want := t.TempDir()
	testutil.UnpackLayers(t, want, layers)
	root := t.TempDir()
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), "--span", "262144", ref)

	proxy.ClearStats()
	m := mount(t, root, ref, "--background=full", "--metrics-address", "127.0.0.1:0")
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(m.stderr.String(), "image fully fetched") {
		if time.Now().After(deadline) {
			t.Fatalf("no 'image fully fetched' 2 minutes after the mount:\n%s", m.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(m.stderr.String(), "image fully fetched"); n != 1 {
		t.Errorf("%d 'image fully fetched' lines, want 1:\n%s", n, m.stderr)
	}
	image := fmt.Sprintf("{image=%q}", proxy.Addr+"/test/bg")
	s := scrape(t, m.metricsURL(t))
	frames := sample(t, s, "lazyfs_background_frames"+image)
	if cached := sample(t, s, "lazyfs_background_frames_cached"+image); frames == 0 || cached != frames {
		t.Errorf("background frames cached %v of %v, want all", cached, frames)
	}
	if st := sample(t, s, fmt.Sprintf("lazyfs_background_fetches{image=%q,state=\"done\"}", proxy.Addr+"/test/bg")); st != 1 {
		t.Errorf("background fetches done = %v, want 1", st)
	}
	if n := sample(t, s, "lazyfs_background_requests_total"+image); n == 0 || n > 16 {
		t.Errorf("background requests = %v, want a few (9 MiB in requests of up to 1 MiB)", n)
	}

	// The registry is gone: every file reads right from the cache.
	proxy.ClearStats()
	proxy.Fail(http.StatusServiceUnavailable, 1<<20)
	testutil.CompareTreesWith(t, want, m.dir, testutil.CompareOptions{IgnoreRootMeta: true})
	if n := proxy.Stats().BlobRequests; n != 0 {
		t.Errorf("%d blob requests reading a fully fetched image", n)
	}
	m.stop(t)
}
