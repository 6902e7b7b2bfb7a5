package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// containerdCRIConfig is containerdConfig with the CRI plugin on: lazyfs
// as its snapshotter with the remote-snapshot labels passed on, the
// sandbox (pause) image from the test's registry, registry hosts from a
// hosts.toml directory (plain HTTP to the loopback registry), and a CNI
// configuration directory of its own, empty: the test's pods use the
// host's network, for which the CRI plugin runs no CNI plugin.
// restrict_oom_score_adj keeps the sandbox's oom_score_adj (-998) from
// going below containerd's own: lowering it needs CAP_SYS_RESOURCE, which
// the test machines lack (runc create then fails with "can't get final
// child's PID from pipe: EOF").
const containerdCRIConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[proxy_plugins.lazyfs]
  type = "snapshot"
  address = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "lazyfs"
  disable_snapshot_annotations = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = %[7]q
  conf_dir = %[8]q

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = %[9]q
`

// registryHostsTOML makes containerd speak plain HTTP to the registry at
// %[1]s (written to CONFIG_PATH/%[1]s/hosts.toml).
const registryHostsTOML = `server = "http://%[1]s"

[host."http://%[1]s"]
  capabilities = ["pull", "resolve"]
`

// criClient is the CRI API (v1) of the test's containerd.
type criClient struct {
	rt  cri.RuntimeServiceClient
	img cri.ImageServiceClient
}

// criCall is the context of one CRI call: calls are slow on a loaded
// machine, and must still end.
func criCall(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), 3*time.Minute)
}

// dialCRI connects to containerd's CRI service and waits until its
// runtime is ready. A containerd whose CRI plugin did not load answers
// Unimplemented: that is a skip (or a failure under
// LAZYFS_REQUIRE_CONTAINERD=1), with containerd's log.
func dialCRI(t *testing.T, sock string, ctrd *daemon) *criClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial containerd's CRI service: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &criClient{rt: cri.NewRuntimeServiceClient(conn), img: cri.NewImageServiceClient(conn)}
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := criCall(t)
		st, err := c.rt.Status(ctx, &cri.StatusRequest{})
		cancel()
		if status.Code(err) == codes.Unimplemented {
			skipOrFailContainerd(t, "containerd's CRI plugin is not running: %v\ncontainerd:\n%s", err, ctrd.log)
		}
		var conds []string
		ready := false
		for _, c := range st.GetStatus().GetConditions() {
			conds = append(conds, fmt.Sprintf("%s=%v (%s)", c.Type, c.Status, c.Message))
			if c.Type == cri.RuntimeReady && c.Status {
				ready = true
			}
		}
		if err == nil && ready {
			t.Logf("CRI status: %s", strings.Join(conds, ", "))
			return c
		}
		if time.Now().After(deadline) {
			skipOrFailContainerd(t, "containerd's CRI runtime not ready after a minute: %v %s\ncontainerd:\n%s", err, conds, ctrd.log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// allMounts lists every mount point under dir, whatever its type.
func allMounts(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			out = append(out, f[4])
		}
	}
	return out
}

// lazyLogged reports whether the snapshotter logged msg for layer.
func lazyLogged(log string, msg string, layer digest.Digest) bool {
	for line := range strings.Lines(log) {
		if strings.Contains(line, `msg="`+msg+`"`) && strings.Contains(line, " layer="+layer.String()) {
			return true
		}
	}
	return false
}

// criLogLine is one line of a container log in the CRI format,
// "TIMESTAMP STREAM TAG TEXT".
type criLogLine struct{ stream, tag, text string }

func parseCRILog(b []byte) ([]criLogLine, error) {
	var out []criLogLine
	for line := range strings.Lines(string(b)) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 4)
		if len(f) != 4 {
			return nil, fmt.Errorf("log line %q: want TIMESTAMP STREAM TAG TEXT", line)
		}
		if _, err := time.Parse(time.RFC3339Nano, f[0]); err != nil {
			return nil, fmt.Errorf("log line %q: %w", line, err)
		}
		out = append(out, criLogLine{stream: f[1], tag: f[2], text: f[3]})
	}
	return out, nil
}

// TestSnapshotterCRI is the Kubernetes path with real parts: Debian's
// containerd with its CRI plugin on and `lazyfs snapshotter` as the CRI
// snapshotter, images in Debian's docker-registry with their indexes
// pushed beside them, and a CRI client doing what the kubelet does to run
// a pod: pull the image, run a (host-network) pod sandbox, whose pause
// image the CRI plugin pulls itself, create and start a container, read
// its log, then stop and remove everything. No layer is downloaded: every
// layer is mounted lazily and read with Range requests, and once the pod
// and the images are gone no mount is left.
func TestSnapshotterCRI(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	start := time.Now()
	reg := testutil.StartRegistry(t)

	// The application: busybox, and a layer of its own on top with a
	// small file the container reads and a big one it does not.
	base := testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)
	app := testutil.WriteLayer(t, []testutil.File{
		{Path: "hello.txt", Data: []byte("hello from a lazy layer\n")},
		{Path: "data/unread.bin", Size: 16 << 20, Seed: 5},
	}, types.OCILayer)
	appRef, _ := testutil.PushImage(t, reg.Addr, "test/cri-app:latest", []testutil.Layer{base, app},
		testutil.ImageConfig{Config: v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}})
	// The pause image: a layer of its own (static busybox as sleep), so
	// that the CRI plugin's own pull of it is seen too. containerd 1.6
	// runs its entrypoint as the sandbox's process and kills it with
	// SIGKILL when the pod stops.
	bb, err := os.ReadFile(testutil.BusyboxBinary)
	if err != nil {
		t.Fatal(err)
	}
	pause := testutil.WriteLayer(t, []testutil.File{
		{Path: "bin/"},
		{Path: "bin/busybox", Data: bb, Mode: 0o755},
		{Path: "bin/sleep", Type: tar.TypeSymlink, Linkname: "busybox"},
	}, types.OCILayer)
	pauseRef, _ := testutil.PushImage(t, reg.Addr, "test/pause:3.6", []testutil.Layer{pause},
		testutil.ImageConfig{Config: v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}, Env: []string{"PATH=/bin"}}})
	indexRoot := t.TempDir()
	mustLazyfs(t, "index", "--push", "--root", indexRoot, appRef)
	mustLazyfs(t, "index", "--push", "--root", indexRoot, pauseRef)
	indexed := len(reg.BlobGets(t))
	layerSize := map[digest.Digest]int64{base.Digest: base.Size, app.Digest: app.Size, pause.Digest: pause.Size}

	dir := t.TempDir()
	snapSock := filepath.Join(dir, "lazyfs.sock")
	root := filepath.Join(dir, "lazyfs")
	sn := startDaemon(t, "lazyfs snapshotter", lazyfsBin, "snapshotter", "--root", root, "--address", snapSock, "--background=off")
	if err := sn.waitSocket(t, snapSock, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sn.log)
	}
	hostsDir := filepath.Join(dir, "certs.d")
	if err := os.MkdirAll(filepath.Join(hostsDir, reg.Addr), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostsDir, reg.Addr, "hosts.toml"), fmt.Appendf(nil, registryHostsTOML, reg.Addr), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"cni/bin", "cni/net.d", "pods"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "containerd.sock")
	ctrd := runContainerd(t, dir, sock, fmt.Sprintf(containerdCRIConfig,
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", snapSock,
		pauseRef, filepath.Join(dir, "cni/bin"), filepath.Join(dir, "cni/net.d"), hostsDir))
	c := dialCRI(t, sock, ctrd)
	diag := func() string { return fmt.Sprintf("\nsnapshotter:\n%s\ncontainerd:\n%s", sn.log, ctrd.log) }
	t.Logf("registry, indexes, snapshotter and containerd (CRI) ready in %v", time.Since(start).Round(time.Millisecond))

	// PullImage: the CRI plugin passes the remote-snapshot labels, and
	// the snapshotter mounts both layers lazily.
	pullStart := time.Now()
	ctx, cancel := criCall(t)
	pulled, err := c.img.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: appRef}})
	cancel()
	if err != nil {
		t.Fatalf("PullImage(%s): %v%s", appRef, err, diag())
	}
	t.Logf("PullImage in %v: %s", time.Since(pullStart).Round(time.Millisecond), pulled.ImageRef)
	for _, l := range []digest.Digest{base.Digest, app.Digest} {
		if !lazyLogged(sn.log.String(), "layer mounted lazily", l) {
			t.Errorf("snapshotter did not mount layer %s lazily on PullImage%s", l, diag())
		}
	}
	if got := len(lazyMounts(t, root)); got != 2 {
		t.Errorf("%d lazy mounts under %s after PullImage, want 2", got, root)
	}

	// RunPodSandbox on the host's network: the CRI plugin pulls the
	// pause image itself, lazily too.
	sandboxStart := time.Now()
	podCfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "lazyfs-cri", Uid: "lazyfs-cri-uid", Namespace: "default"},
		LogDirectory: filepath.Join(dir, "pods"),
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	ctx, cancel = criCall(t)
	pod, err := c.rt.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: podCfg})
	cancel()
	if err != nil {
		t.Fatalf("RunPodSandbox: %v%s", err, diag())
	}
	podRemoved := false
	t.Cleanup(func() {
		// Whatever failed, leave no pod behind: its shim and mounts
		// would outlive containerd.
		if podRemoved {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId})
		c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	})
	t.Logf("RunPodSandbox in %v (pause image pulled by the CRI plugin)", time.Since(sandboxStart).Round(time.Millisecond))
	if !lazyLogged(sn.log.String(), "layer mounted lazily", pause.Digest) {
		t.Errorf("snapshotter did not mount the pause image's layer %s lazily%s", pause.Digest, diag())
	}
	ctx, cancel = criCall(t)
	podSt, err := c.rt.PodSandboxStatus(ctx, &cri.PodSandboxStatusRequest{PodSandboxId: pod.PodSandboxId})
	cancel()
	if err != nil || podSt.GetStatus().GetState() != cri.PodSandboxState_SANDBOX_READY {
		t.Fatalf("PodSandboxStatus = %v, %v; want SANDBOX_READY%s", podSt.GetStatus().GetState(), err, diag())
	}

	// CreateContainer, StartContainer, wait for it to exit, read its log.
	runStart := time.Now()
	const script = `cat /hello.txt; echo "uid $(id -u) in $(pwd)"; echo to stderr >&2`
	ctrCfg := &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "hello"},
		Image:    &cri.ImageSpec{Image: pulled.ImageRef},
		Command:  []string{"sh", "-c", script},
		LogPath:  "hello_0.log",
		Linux: &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE},
		}},
	}
	ctx, cancel = criCall(t)
	created, err := c.rt.CreateContainer(ctx, &cri.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: ctrCfg, SandboxConfig: podCfg})
	cancel()
	if err != nil {
		t.Fatalf("CreateContainer: %v%s", err, diag())
	}
	ctx, cancel = criCall(t)
	_, err = c.rt.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: created.ContainerId})
	cancel()
	if err != nil {
		t.Fatalf("StartContainer: %v%s", err, diag())
	}
	var ctrSt *cri.ContainerStatus
	for deadline := time.Now().Add(2 * time.Minute); ; {
		ctx, cancel = criCall(t)
		resp, err := c.rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: created.ContainerId})
		cancel()
		if err != nil {
			t.Fatalf("ContainerStatus: %v%s", err, diag())
		}
		if ctrSt = resp.Status; ctrSt.State == cri.ContainerState_CONTAINER_EXITED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container still %v after 2 minutes%s", ctrSt.State, diag())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ctrSt.ExitCode != 0 {
		t.Errorf("container exit code %d (%s: %s), want 0", ctrSt.ExitCode, ctrSt.Reason, ctrSt.Message)
	}
	if want := filepath.Join(dir, "pods", "hello_0.log"); ctrSt.LogPath != want {
		t.Errorf("ContainerStatus.LogPath = %q, want %q", ctrSt.LogPath, want)
	}
	// The CRI plugin copies the output to the log file as it comes;
	// wait for its last line.
	wantOut := []string{"hello from a lazy layer", "uid 0 in /"}
	wantErr := []string{"to stderr"}
	var gotOut, gotErr []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		b, err := os.ReadFile(ctrSt.LogPath)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		lines, err := parseCRILog(b)
		if err != nil {
			t.Fatalf("container log %s: %v", ctrSt.LogPath, err)
		}
		gotOut, gotErr = nil, nil
		for _, l := range lines {
			if l.tag != "F" {
				t.Errorf("container log line %+v: tag %q, want F (full line)", l, l.tag)
			}
			switch l.stream {
			case "stdout":
				gotOut = append(gotOut, l.text)
			case "stderr":
				gotErr = append(gotErr, l.text)
			default:
				t.Errorf("container log line %+v: stream %q", l, l.stream)
			}
		}
		if len(gotOut)+len(gotErr) >= len(wantOut)+len(wantErr) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !slices.Equal(gotOut, wantOut) || !slices.Equal(gotErr, wantErr) {
		t.Errorf("container log: stdout %q, stderr %q; want %q, %q%s", gotOut, gotErr, wantOut, wantErr, diag())
	}
	t.Logf("container created, started, exited and logged in %v", time.Since(runStart).Round(time.Millisecond))

	// The registry: no layer blob was downloaded, only read in ranges.
	ranges, rangeBytes := map[digest.Digest]int{}, map[digest.Digest]int64{}
	for _, g := range reg.BlobGets(t)[indexed:] {
		if _, ok := layerSize[g.Digest]; !ok || g.Method != http.MethodGet {
			continue
		}
		if g.Status != http.StatusPartialContent {
			t.Errorf("layer blob request not a Range read: %+v", g)
			continue
		}
		ranges[g.Digest]++
		rangeBytes[g.Digest] += g.Written
	}
	for _, l := range []digest.Digest{base.Digest, app.Digest, pause.Digest} {
		t.Logf("layer %s: %d Range reads, %d of %d bytes", l, ranges[l], rangeBytes[l], layerSize[l])
	}
	if ranges[base.Digest] == 0 || ranges[pause.Digest] == 0 {
		t.Errorf("no Range reads of the busybox layers: the programs' bytes came from elsewhere?")
	}
	if rangeBytes[app.Digest] > 1<<20 {
		t.Errorf("%d bytes read of the application layer (%d bytes), whose only file read is 24 bytes long: want < 1 MiB", rangeBytes[app.Digest], app.Size)
	}
	if got := len(lazyMounts(t, root)); got != 3 {
		t.Errorf("%d lazy mounts under %s with the pod running, want 3", got, root)
	}

	// Tear down as the kubelet does; then the images go, and with them
	// the snapshots and the lazy mounts.
	cleanStart := time.Now()
	ctx, cancel = criCall(t)
	defer cancel()
	if _, err := c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		t.Fatalf("StopPodSandbox: %v%s", err, diag())
	}
	if _, err := c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		t.Fatalf("RemovePodSandbox: %v%s", err, diag())
	}
	podRemoved = true
	for _, ref := range []string{appRef, pauseRef} {
		if _, err := c.img.RemoveImage(ctx, &cri.RemoveImageRequest{Image: &cri.ImageSpec{Image: ref}}); err != nil {
			t.Fatalf("RemoveImage(%s): %v%s", ref, err, diag())
		}
	}
	var left []string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if left = lazyMounts(t, root); len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("lazy mounts left after the pod and images were removed: %q%s", left, diag())
	}
	t.Logf("pod and images removed, lazy mounts released in %v", time.Since(cleanStart).Round(time.Millisecond))
	if m := allMounts(t, dir); len(m) > 0 {
		t.Errorf("mounts left under %s after cleanup: %q", dir, m)
	}
	if out, err := ctr(t, sock, "--namespace", "k8s.io", "snapshots", "--snapshotter", "lazyfs", "ls"); err != nil || strings.Count(out, "\n") > 1 {
		t.Errorf("ctr snapshots ls after cleanup = %q, %v; want none", out, err)
	}
	for _, l := range []digest.Digest{base.Digest, app.Digest, pause.Digest} {
		if !lazyLogged(sn.log.String(), "lazy layer unmounted", l) {
			t.Errorf("snapshotter log does not say layer %s was unmounted%s", l, diag())
		}
	}
	if err := sn.stop(t); err != nil {
		t.Errorf("lazyfs snapshotter exit after SIGTERM: %v\n%s", err, sn.log)
	}
	for line := range strings.Lines(sn.log.String()) {
		if strings.Contains(line, " level=WARN ") || strings.Contains(line, " level=ERROR ") {
			t.Errorf("snapshotter: %s", strings.TrimSpace(line))
		}
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}
