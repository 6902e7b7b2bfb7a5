package main

import (
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/registrylog"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// A recorded image's start asks the registry nothing about prefetch
// profiles, as --pull=missing asks nothing about the image: the root keeps
// what the registry answered, a profile or none, until --pull=always or
// --record-prefetch asks again.
func TestRunRecordedProfile(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	layer := testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)
	ref, _ := testutil.PushImage(t, reg.Addr, "busybox", []testutil.Layer{layer},
		testutil.ImageConfig{Config: v1.Config{Cmd: []string{"cat", "/etc/passwd"}}})
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })

	seen := 0
	// lookups runs lazyrun and returns the manifest and referrers requests
	// the registry answered meanwhile (a profile is found through those)
	// and what the supervisor logged about prefetching.
	lookups := func(args ...string) (reqs []string, prefetched bool) {
		t.Helper()
		r := e.lazyrun(t, "", append([]string{"--log-level", "debug"}, args...)...)
		if r.code != 0 {
			t.Fatalf("lazyrun %s = exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
		f, err := os.Open(reg.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		all, err := registrylog.Parse(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range all[seen:] {
			if strings.Contains(q.URI, "/manifests/") || strings.Contains(q.URI, "/referrers/") {
				reqs = append(reqs, q.Method+" "+q.URI)
			}
		}
		seen = len(all)
		return reqs, strings.Contains(r.stderr, `msg=prefetched`)
	}

	if reqs, _ := lookups("run", "--rm", ref); len(reqs) == 0 {
		t.Fatal("the first run asked the registry nothing")
	}
	if reqs, prefetched := lookups("run", "--rm", ref); len(reqs) != 0 || prefetched {
		t.Errorf("a recorded image without a profile: asked %q, prefetched %v; want nothing asked, no prefetch", reqs, prefetched)
	}

	// Another root records a profile and pushes it; this root goes on
	// with what it recorded until it asks again.
	other := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { other.checkClean(t) })
	if r := other.lazyrun(t, "", "run", "--rm", "--record-prefetch", ref); r.code != 0 || !strings.Contains(r.stderr, "prefetch profile pushed") {
		t.Fatalf("--record-prefetch = exit %d\n%s", r.code, r.stderr)
	}
	seen = 0
	lookups("images") // skip what the other root asked
	if reqs, prefetched := lookups("run", "--rm", ref); len(reqs) != 0 || prefetched {
		t.Errorf("recorded without a profile, after one was pushed: asked %q, prefetched %v; want the record kept", reqs, prefetched)
	}
	reqs, prefetched := lookups("run", "--rm", "--pull=always", ref)
	if !slices.ContainsFunc(reqs, func(s string) bool { return strings.Contains(s, "sha256-") || strings.Contains(s, "/referrers/") }) || !prefetched {
		t.Errorf("--pull=always: asked %q, prefetched %v; want the profile looked for and used", reqs, prefetched)
	}
	if reqs, prefetched := lookups("run", "--rm", ref); len(reqs) != 0 || !prefetched {
		t.Errorf("recorded with a profile: asked %q, prefetched %v; want nothing asked and the recorded profile used", reqs, prefetched)
	}
}
