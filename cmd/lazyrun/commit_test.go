package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// registryGet reads one manifest or blob path ("committed/manifests/v1")
// of the test registry.
func registryGet(t *testing.T, reg *testutil.Registry, p string) []byte {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, reg.URL()+"/v2/"+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json"}, ","))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s, %v", p, resp.StatusCode, b, err)
	}
	return b
}

func registryJSON(t *testing.T, reg *testutil.Registry, p string, v any) []byte {
	t.Helper()
	b := registryGet(t, reg, p)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v", p, err)
	}
	return b
}

// Both copy-on-write modes commit the same way.
func TestCommit(t *testing.T) {
	for _, cow := range []string{"overlay", "fuse"} {
		t.Run(cow, func(t *testing.T) { testCommit(t, cow) })
	}
}

func testCommit(t *testing.T, cow string) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	base := testutil.BusyboxRoot(t)
	for p, c := range map[string]string{
		"etc/motd":         "welcome\n",
		"home/doc.txt":     "doc\n",
		"opt/app/config":   "v1\n",
		"opt/app/lib/x.so": "lib\n",
	} {
		if err := os.MkdirAll(filepath.Join(base, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	layer := testutil.WriteLayerDir(t, base, types.OCILayer)
	ref, _ := testutil.PushImage(t, reg.Addr, "busybox", []testutil.Layer{layer},
		testutil.ImageConfig{Config: v1.Config{Env: []string{"PATH=/bin"}, Cmd: []string{"sh"}}})
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })

	script := `set -e
echo written > /tmp/new.txt
mkdir -p /data/sub && echo deep > /data/sub/f
ln /data/sub/f /data/hard
ln -s ../etc/passwd /data/sym
chown 65534:65534 /data/sub/f
mv /home/doc.txt /home/renamed.txt
rm /etc/motd
echo appended >> /etc/passwd
rm -rf /opt/app
mkdir /opt/app
echo fresh > /opt/app/config2`
	e.mustRun(t, "run", "--cow", cow, "--name", "writer", ref, "sh", "-c", script)

	newRef := reg.Addr + "/committed:v1"
	out := e.mustRun(t, "commit", "-m", "the message", "-a", "Jane <jane@example.com>", "writer", newRef)
	manifest := registryGet(t, reg, "committed/manifests/v1")
	if want := digest.FromBytes(manifest).String() + "\n"; out != want {
		t.Errorf("commit printed %q, want the manifest digest %q", out, want)
	}

	// A fresh root: nothing cached, no local index.
	fresh := &env{root: t.TempDir(), ref: newRef}
	t.Cleanup(func() { fresh.checkClean(t) })
	check := `cat /tmp/new.txt /data/sub/f /data/hard /home/renamed.txt /opt/app/config2
stat -c '%h %u:%g' /data/hard
readlink /data/sym
tail -n 1 /etc/passwd
ls /opt/app /home
test ! -e /home/doc.txt && test ! -e /etc/motd && test ! -e /opt/app/config && test ! -e /opt/app/lib && echo gone`
	r := fresh.lazyrun(t, "", "run", "--rm", newRef, "sh", "-c", check)
	want := "written\ndeep\ndeep\ndoc\nfresh\n2 65534:65534\n../etc/passwd\nappended\n/home:\nrenamed.txt\n\n/opt/app:\nconfig2\ngone\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("run %s = exit %d\n%s\nwant\n%s\nstderr: %s", newRef, r.code, r.stdout, want, r.stderr)
	}
	if strings.Contains(r.stderr, "building it") {
		t.Errorf("run %s built an index: the committed image's index artifact was not used\n%s", newRef, r.stderr)
	}

	// The run found the index artifact: it fetched its index blobs (a
	// version 2 blob with a toc size: its toc alone, a 206).
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		t.Fatal(err)
	}
	var fallback ocispec.Index
	registryJSON(t, reg, "committed/manifests/"+strings.Replace(digest.FromBytes(manifest).String(), ":", "-", 1), &fallback)
	if len(fallback.Manifests) != 1 {
		t.Fatalf("index artifacts of %s = %d, want 1", newRef, len(fallback.Manifests))
	}
	var art ocispec.Manifest
	registryJSON(t, reg, "committed/manifests/"+fallback.Manifests[0].Digest.String(), &art)
	if art.ArtifactType != "application/vnd.lazyfs.index.v1" || len(art.Layers) != len(m.Layers) {
		t.Fatalf("index artifact = %s with %d blobs, want one per layer (%d)", art.ArtifactType, len(art.Layers), len(m.Layers))
	}
	got := map[digest.Digest]bool{}
	for _, g := range reg.BlobGets(t) {
		if g.Method == http.MethodGet && g.Repo == "committed" && (g.Status == http.StatusOK || g.Status == http.StatusPartialContent) {
			got[g.Digest] = true
		}
	}
	for i, b := range art.Layers {
		if b.Annotations["dev.lazyfs.layer.digest"] != m.Layers[i].Digest.String() {
			t.Errorf("index blob %d describes %s, want layer %s", i, b.Annotations["dev.lazyfs.layer.digest"], m.Layers[i].Digest)
		}
		if !got[b.Digest] {
			t.Errorf("the run did not fetch index blob %s of layer %d", b.Digest, i)
		}
	}

	// The image: the base's layer and config plus one layer and a history
	// entry with -m and -a.
	if len(m.Layers) != 2 || m.Layers[0].Digest != layer.Digest || m.MediaType != ocispec.MediaTypeImageManifest ||
		m.Layers[1].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Errorf("manifest %s: layers %+v; want the base's %s and a gzip layer", m.MediaType, m.Layers, layer.Digest)
	}
	var cfg ocispec.Image
	registryJSON(t, reg, "committed/blobs/"+m.Config.Digest.String(), &cfg)
	h := cfg.History[len(cfg.History)-1]
	if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[0] != layer.DiffID || cfg.Author != "Jane <jane@example.com>" ||
		h.Comment != "the message" || h.Author != cfg.Author || !strings.HasPrefix(h.CreatedBy, "sh -c set -e") ||
		len(cfg.History) != 2 || strings.Join(cfg.Config.Env, " ") != "PATH=/bin" {
		t.Errorf("config = %+v", cfg)
	}

	// The committed layers unpacked with OCI rules are what the container
	// saw: its upper over the base tree, mounted read-only by overlayfs.
	unpacked := t.TempDir()
	var blobs []testutil.Layer
	for _, l := range m.Layers {
		blobs = append(blobs, testutil.Layer{Blob: registryGet(t, reg, "committed/blobs/"+l.Digest.String()), MediaType: types.MediaType(l.MediaType)})
	}
	testutil.UnpackLayers(t, unpacked, blobs)
	uppers, err := filepath.Glob(filepath.Join(e.root, "containers", "*", "upper"))
	if err != nil || len(uppers) != 1 {
		t.Fatalf("upper dirs = %v, %v", uppers, err)
	}
	saw := filepath.Join(t.TempDir(), "merged")
	if err := os.Mkdir(saw, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", saw, "overlay", unix.MS_RDONLY, "lowerdir="+uppers[0]+":"+base); err != nil {
		t.Fatalf("mount the container's view: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(saw, 0) })
	testutil.CompareTreesWith(t, saw, unpacked, testutil.CompareOptions{IgnoreRootMeta: true})
}

func TestCommitErrors(t *testing.T) {
	e := newEnv(t, v1.Config{})
	newRef := strings.Replace(e.ref, "busybox", "other", 1)
	if r := e.lazyrun(t, "", "commit", "nosuch", newRef); r.code != 1 || !strings.Contains(r.stderr, "no such container") {
		t.Errorf("commit nosuch = exit %d, %q; want 1, no such container", r.code, r.stderr)
	}
	e.mustRun(t, "run", "--name", "done", e.ref, "true")
	for _, bad := range []string{"Not A Ref", newRef + "@" + digest.FromString("x").String()} {
		if r := e.lazyrun(t, "", "commit", "done", bad); r.code != 1 || !strings.Contains(r.stderr, "invalid reference") {
			t.Errorf("commit done %q = exit %d, %q; want 1, invalid reference", bad, r.code, r.stderr)
		}
	}
	if r := e.lazyrun(t, "", "commit", "done"); r.code != 125 {
		t.Errorf("commit with one argument = exit %d, want 125", r.code)
	}

	// A running container is refused.
	cmd := exec.Command(lazyrunBin, "--root", e.root, "run", "--name", "busy", e.ref, "sh", "-c", "echo ready; sleep 1000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("container did not start: %q, %v, %s", line, err, stderr.String())
	}
	r := e.lazyrun(t, "", "commit", "busy", newRef)
	if r.code != 1 || !strings.Contains(r.stderr, "is running") {
		t.Errorf("commit of a running container = exit %d, %q; want 1, is running", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("commit of a running container printed %q", r.stdout)
	}
}

// The committed image's config is the container's, as docker commit
// writes it, with --change applied: a later run of it without a command
// runs what the container ran, with its environment, directory and user.
func TestCommitConfig(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	layer := testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)
	ref, _ := testutil.PushImage(t, reg.Addr, "busybox", []testutil.Layer{layer},
		testutil.ImageConfig{Config: v1.Config{Env: []string{"PATH=/bin", "KEEP=image"}, Cmd: []string{"sh"}}})
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkClean(t) })

	show := `echo "$GREETING $B $KEEP $(pwd) $(id -u)"`
	e.mustRun(t, "run", "--name", "cfg", "-e", "GREETING=hi", "-w", "/tmp", "-u", "65534",
		"--stop-signal", "SIGUSR1", "-v", "/cache", ref, "sh", "-c", show)
	newRef := reg.Addr + "/configured:v1"
	if r := e.lazyrun(t, "", "commit", "-c", "FROM scratch", "cfg", newRef); r.code != 1 ||
		!strings.Contains(r.stderr, "FROM is not a valid change command") {
		t.Errorf("commit -c 'FROM scratch' = exit %d, %q; want 1, not a valid change command", r.code, r.stderr)
	}
	e.mustRun(t, "commit", "-c", "ENV B=${GREETING}-2", "-c", "LABEL org.example.k=v", "-c", "EXPOSE 8080 53/udp",
		"--change", "ONBUILD RUN true", "cfg", newRef)

	var m ocispec.Manifest
	registryJSON(t, reg, "configured/manifests/v1", &m)
	var cfg struct {
		Config struct {
			ocispec.ImageConfig
			OnBuild []string
		} `json:"config"`
	}
	registryJSON(t, reg, "configured/blobs/"+m.Config.Digest.String(), &cfg)
	c := cfg.Config
	if got, want := strings.Join(c.Env, " "), "GREETING=hi PATH=/bin KEEP=image B=hi-2"; got != want {
		t.Errorf("Env = %q, want %q", got, want)
	}
	if got := strings.Join(c.Cmd, "|"); got != "sh|-c|"+show || c.WorkingDir != "/tmp" || c.User != "65534" || c.StopSignal != "SIGUSR1" {
		t.Errorf("Cmd %q, WorkingDir %q, User %q, StopSignal %q: want the container's", got, c.WorkingDir, c.User, c.StopSignal)
	}
	_, vol := c.Volumes["/cache"]
	_, tcp := c.ExposedPorts["8080/tcp"]
	_, udp := c.ExposedPorts["53/udp"]
	if !vol || !tcp || !udp || c.Labels["org.example.k"] != "v" || strings.Join(c.OnBuild, "|") != "RUN true" {
		t.Errorf("Volumes %v, ExposedPorts %v, Labels %v, OnBuild %q", c.Volumes, c.ExposedPorts, c.Labels, c.OnBuild)
	}

	fresh := &env{root: t.TempDir(), ref: newRef}
	t.Cleanup(func() { fresh.checkClean(t) })
	if r := fresh.lazyrun(t, "", "run", "--rm", newRef); r.code != 0 || r.stdout != "hi hi-2 image /tmp 65534\n" {
		t.Errorf("run %s = exit %d, %q (stderr %s); want the committed command's output", newRef, r.code, r.stdout, r.stderr)
	}
}
