package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// TestPullThenRunWithoutRegistry pulls a two-layer image (busybox, and a
// layer of larger files spread over many frames), stops the registry, and
// runs a container that reads every file of the image and checksums it.
func TestPullThenRunWithoutRegistry(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	extra := t.TempDir()
	for name, size := range map[string]int64{"data/big": 6 << 20, "data/mid": 700 << 10, "data/small": 3} {
		p := filepath.Join(extra, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, testutil.PatternReader(size, size)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	busybox := testutil.BusyboxRoot(t)
	ls := []testutil.Layer{
		testutil.WriteLayerDir(t, busybox, types.OCILayer),
		testutil.WriteLayerDir(t, extra, types.OCILayer),
	}
	_, manifest := testutil.PushImage(t, reg.Addr, "test/busybox:v1", ls, testutil.ImageConfig{Created: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)})
	// lazyrun → relay (the "registry" this test stops) → fault proxy (counts) → registry.
	proxy := testutil.NewFaultProxy(t, reg.Addr)
	relay := testutil.StartRelay(t, proxy.Addr)
	e := &env{root: t.TempDir(), ref: relay.Addr + "/test/busybox:v1"}
	t.Cleanup(func() { e.checkClean(t) })

	start := time.Now()
	out := e.mustRun(t, "pull", e.ref)
	took := time.Since(start)
	st := proxy.Stats()
	var frameReqs int
	for _, l := range ls {
		frameReqs += st.Blobs[l.Digest].Requests
	}
	t.Logf("pull: %v, %d requests (%d blob requests, %d of them for layers incl. index builds), %d blob bytes\n%s",
		took, st.BlobRequests+st.OtherRequests, st.BlobRequests, frameReqs, st.BlobBytes, out)
	wantLines := []string{"v1: Pulling from test/busybox"}
	for _, l := range ls {
		wantLines = append(wantLines, l.Digest.Encoded()[:12]+": Pull complete")
	}
	wantLines = append(wantLines, "Digest: "+manifest.String(), "Status: Downloaded newer image for "+e.ref, e.ref)
	for _, w := range wantLines {
		if !strings.Contains(out, w+"\n") {
			t.Errorf("pull output lacks %q:\n%s", w, out)
		}
	}

	imagesRe := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(relay.Addr+"/test/busybox") + `\s+v1\s+[0-9a-f]{12}\s+\S.* ago\s+\S+\s+\S+ \(100%\)\s+2/2$`)
	if out := e.mustRun(t, "images"); !imagesRe.MatchString(out) || !strings.HasPrefix(out, "REPOSITORY") {
		t.Errorf("images after pull:\n%s\nwant a line matching %s", out, imagesRe)
	}

	proxy.ClearStats()
	out = e.mustRun(t, "pull", e.ref)
	if !strings.Contains(out, "Status: Image is up to date for "+e.ref) || strings.Count(out, ": Already exists\n") != 2 {
		t.Errorf("second pull:\n%s\nwant both layers existing and up to date", out)
	}
	for _, l := range ls {
		if n := proxy.Stats().Blobs[l.Digest].Requests; n != 0 {
			t.Errorf("second pull fetched layer %s %d times", l.Digest, n)
		}
	}

	relay.Stop()
	r := e.lazyrun(t, "", "run", "--rm", e.ref, "sh", "-c",
		"find / -xdev -type f -exec cat {} + > /dev/null && find / -xdev -type f -exec sha256sum {} +")
	if r.code != 0 {
		t.Fatalf("run with the registry stopped: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "level=") {
		// --pull=missing: a pulled image is used as recorded, the
		// registry is not asked.
		t.Errorf("run with the registry stopped logged:\n%s", r.stderr)
	}
	if r := e.lazyrun(t, "", "run", "--rm", "--pull=always", e.ref, "true"); r.code != 125 {
		t.Errorf("run --pull=always with the registry stopped = exit %d, %q; want 125", r.code, r.stderr)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		sum, path, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("sha256sum printed %q", sc.Text())
		}
		got[path] = sum
	}
	// The container's /etc/hostname, hosts and resolv.conf are its own.
	own := map[string]bool{"/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true}
	want := map[string]string{}
	for _, dir := range []string{busybox, extra} {
		for p, sum := range fileSums(t, dir) {
			if !own[p] {
				want[p] = sum
			}
		}
	}
	if len(want) < 20 {
		t.Fatalf("only %d files in the image", len(want))
	}
	for p, sum := range want {
		if got[p] != sum {
			t.Errorf("%s: container read sha256 %q, want %s", p, got[p], sum)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok && !own[p] {
			t.Errorf("container has a file the image does not: %s", p)
		}
	}

	// images reads only the root: it works with the registry gone.
	if out := e.mustRun(t, "images"); !imagesRe.MatchString(out) {
		t.Errorf("images with the registry stopped:\n%s", out)
	}
	// A pull needs the registry.
	if r := e.lazyrun(t, "", "--retries", "0", "pull", e.ref); r.code != 1 {
		t.Errorf("pull with the registry stopped: exit %d, want 1\n%s", r.code, r.stderr)
	}
}

// fileSums returns the SHA-256 of every regular file under dir, keyed by
// its path inside the image ("/bin/busybox").
func fileSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out["/"+filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImagesWithoutImages(t *testing.T) {
	e := &env{root: t.TempDir()}
	out := e.mustRun(t, "images")
	if strings.TrimSpace(out) != "REPOSITORY   TAG   IMAGE ID   CREATED   SIZE   CACHED   LAZY" {
		t.Errorf("images on an empty root = %q", out)
	}
	if r := e.lazyrun(t, "", "pull"); r.code != 125 {
		t.Errorf("pull without an image: exit %d, want 125", r.code)
	}
}
