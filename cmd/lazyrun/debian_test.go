package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/cli"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// debianPath is the PATH of Debian's official images.
const debianPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maxStartFraction bounds the share of the image's compressed layer bytes
// that starting python3 in a fresh root may fetch. Measured: 16–18 MB of
// 71 MB (23–26 %) with the default 1 MiB frames and read-ahead, for the
// 4 MB of files python3 reads; plus 2.1 MB of index blobs, fetched once per
// image. Smaller frames fetch fewer layer bytes but make the indexes bigger
// (256 KiB: 8.5 + 6.5 MB; 64 KiB: 5.5 + 15 MB).
const maxStartFraction = 1.0 / 3

// pushIndexes builds the layer indexes of ref and pushes them beside the
// image, as `lazyfs index --push` does, with a state root of its own: the
// layers are streamed here once, so that the runs after it start lazily.
func pushIndexes(t *testing.T, ref string) {
	t.Helper()
	g := &cli.Globals{Root: t.TempDir(), LogLevel: "warn", Timeout: time.Minute, Retries: 4, CacheSize: "0",
		Stdout: io.Discard, Stderr: t.Output()}
	if err := g.Setup(); err != nil {
		t.Fatal(err)
	}
	p, err := g.Open()
	if err != nil {
		t.Fatalf("pushIndexes: %v", err)
	}
	defer p.Close()
	defer p.Client.CloseIdleConnections()
	img, err := p.Client.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("pushIndexes: resolve %s: %v", ref, err)
	}
	built, err := p.Resolver.Build(t.Context(), img)
	if err != nil {
		t.Fatalf("pushIndexes: build %s: %v", ref, err)
	}
	if _, err := p.Resolver.Push(t.Context(), img, built); err != nil {
		t.Fatalf("pushIndexes: %v", err)
	}
}

// TestRunDebianPython runs apt-installed programs of a Debian image built
// from Debian's packages (a minbase layer and a python3 layer on top) and
// checks that starting them fetches a small part of the image. It needs
// debootstrap and the Debian mirror the first time (testutil.DebianRoot);
// without them it skips, unless LAZYFS_REQUIRE_DEBIAN=1.
func TestRunDebianPython(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	layers := testutil.DebianLayers(t, "python3")
	reg := testutil.StartRegistry(t)
	img := testutil.PushImageInfo(t, reg.Addr, "debian/python3", layers, testutil.ImageConfig{
		Config: v1.Config{Env: []string{debianPath}, Cmd: []string{"bash"}}})
	pushIndexes(t, img.Ref)
	var imageBytes int64
	isLayer := map[digest.Digest]bool{}
	for _, l := range img.Layers {
		imageBytes += l.Size
		isLayer[digest.Digest(l.Digest.String())] = true
	}

	// The runs go through a proxy that counts what the registry sends.
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	ref := proxy.Addr + strings.TrimPrefix(img.Ref, reg.Addr)
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })

	// runIn runs args in a new container of root e and says what it
	// printed and fetched.
	type fetched struct {
		out, stderr string
		layerBytes  int64
		requests    int
	}
	runIn := func(t *testing.T, e *env, flags []string, args ...string) fetched {
		t.Helper()
		proxy.ClearStats()
		start := time.Now()
		r := e.lazyrun(t, "", slices.Concat([]string{"run", "--rm"}, flags, []string{ref}, args)...)
		took := time.Since(start)
		st := proxy.Stats()
		var layerBytes, otherBytes int64
		for d, b := range st.Blobs {
			if isLayer[d] {
				layerBytes += b.Bytes
			} else {
				otherBytes += b.Bytes
			}
		}
		t.Logf("%s: %v; fetched %.2f MB of layers (%.1f%% of the image's %.1f MB compressed) in %d blob requests, and %.1f kB of other blobs",
			args[0], took.Round(time.Millisecond), float64(layerBytes)/1e6, 100*float64(layerBytes)/float64(imageBytes),
			float64(imageBytes)/1e6, st.BlobRequests, float64(otherBytes)/1e3)
		if r.code != 0 {
			t.Fatalf("lazyrun run %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		if strings.Contains(r.stderr, "no index for layer") {
			t.Errorf("lazyrun built an index: the pushed indexes were not used\n%s", r.stderr)
		}
		return fetched{out: r.stdout, stderr: r.stderr, layerBytes: layerBytes, requests: st.BlobRequests}
	}
	// run runs args in a new container and returns its output and the
	// layer bytes fetched for it.
	run := func(t *testing.T, flags []string, args ...string) (string, int64) {
		t.Helper()
		f := runIn(t, e, flags, args...)
		return f.out, f.layerBytes
	}

	t.Run("python3 -c", func(t *testing.T) {
		out, fetched := run(t, nil, "python3", "-c", "import sys; print(sys.version_info[:2])")
		if out != "(3, 11)\n" {
			t.Errorf("python3 printed %q, want bookworm's \"(3, 11)\\n\"", out)
		}
		if limit := int64(maxStartFraction * float64(imageBytes)); fetched > limit {
			t.Errorf("starting python3 fetched %d layer bytes, want at most %d (%.0f%% of the image)", fetched, limit, 100*maxStartFraction)
		}
	})
	t.Run("dpkg -l", func(t *testing.T) {
		out, _ := run(t, nil, "dpkg", "-l", "python3")
		if !regexp.MustCompile(`(?m)^ii  python3 +3\.11\.`).MatchString(out) {
			t.Errorf("dpkg -l python3 does not list python3 3.11 installed:\n%s", out)
		}
	})
	// A profile recorded on one machine (root), used by a cold start on
	// another: it fetches what the start needs in fewer requests.
	t.Run("prefetch profile", func(t *testing.T) {
		python := []string{"python3", "-c", "import sys; print(sys.version_info[:2])"}
		cold := func(flags ...string) fetched {
			t.Helper()
			e := &env{root: t.TempDir(), ref: ref}
			defer e.checkClean(t)
			f := runIn(t, e, flags, python...)
			if f.out != "(3, 11)\n" {
				t.Fatalf("python3 printed %q", f.out)
			}
			return f
		}
		without := cold("--prefetch=false")
		rec := cold("--record-prefetch")
		if !strings.Contains(rec.stderr, "prefetch profile pushed") {
			t.Fatalf("--record-prefetch did not say it pushed a profile:\n%s", rec.stderr)
		}
		with := cold()
		t.Logf("cold start without a profile: %d requests, %.2f MB; with one: %d requests, %.2f MB",
			without.requests, float64(without.layerBytes)/1e6, with.requests, float64(with.layerBytes)/1e6)
		if with.requests >= without.requests {
			t.Errorf("with a profile the start made %d blob requests, without %d: want fewer", with.requests, without.requests)
		}
		if with.layerBytes > without.layerBytes*11/10 {
			t.Errorf("with a profile the start fetched %d layer bytes, without %d: want no more", with.layerBytes, without.layerBytes)
		}
	})
	for _, cow := range []string{"overlay", "fuse"} {
		t.Run("script/cow="+cow, func(t *testing.T) { testDebianScript(t, run, cow) })
	}
}

func testDebianScript(t *testing.T, run func(*testing.T, []string, ...string) (string, int64), cow string) {
	script := `set -e
cd /tmp
python3 -c 'import json, os; json.dump({"sum": sum(range(10)), "stdlib": len(os.listdir("/usr/lib/python3.11")) > 100}, open("out.json", "w"))'
cat out.json; echo
python3 - <<'EOF'
import hashlib, pathlib
p = pathlib.Path("/tmp/data.txt")
p.write_text("lazy\n" * 1000)
print(hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
EOF
ls -l /tmp/data.txt | cut -d' ' -f1,3,5`
	out, _ := run(t, []string{"--cow", cow}, "sh", "-c", script)
	sum := sha256.Sum256([]byte(strings.Repeat("lazy\n", 1000)))
	want := `{"sum": 45, "stdlib": true}` + "\n" + hex.EncodeToString(sum[:]) + " 5000\n-rw-r--r-- root 5000\n"
	if out != want {
		t.Errorf("script printed\n%s\nwant\n%s", out, want)
	}
}
