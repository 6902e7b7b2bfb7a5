package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// requireContainerdEnv turns a containerd that cannot be found or started
// from a skip into a failure.
const requireContainerdEnv = "LAZYFS_REQUIRE_CONTAINERD"

func skipOrFailContainerd(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(requireContainerdEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, requireContainerdEnv)
	}
	t.Skip(msg)
}

// daemon is a background process stopped by PID at cleanup.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	log    *testutil.SyncBuffer // stdout and stderr
	exited chan error
}

func startDaemon(t *testing.T, name string, argv ...string) *daemon {
	t.Helper()
	d := &daemon{name: name, cmd: exec.Command(argv[0], argv[1:]...), log: &testutil.SyncBuffer{}, exited: make(chan error, 1)}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGTERM and waits (30 s, then SIGKILL); it returns the exit
// error, and is a no-op once the process is gone.
func (d *daemon) stop(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.exited:
		d.exited <- err // gone already: keep the result for later callers
		return nil
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.exited <- err
		return err
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		err := <-d.exited
		d.exited <- err
		t.Errorf("%s did not exit 30 s after SIGTERM: killed\n%s", d.name, d.log)
		return err
	}
}

// waitSocket waits until something accepts connections on path.
func (d *daemon) waitSocket(t *testing.T, path string, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			return fmt.Errorf("%s exited (%v) before serving %s", d.name, err, path)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not serving %s after %v", d.name, path, timeout)
		}
	}
}

// containerdConfig gives containerd its own root, state and sockets, and
// the lazyfs snapshotter as a proxy plugin.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[proxy_plugins.lazyfs]
  type = "snapshot"
  address = %[5]q
`

// startContainerd runs Debian's containerd from a config under dir.
func startContainerd(t *testing.T, dir, snapshotterSock string) (sock string) {
	t.Helper()
	sock = filepath.Join(dir, "containerd.sock")
	body := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc", snapshotterSock)
	runContainerd(t, dir, sock, body)
	return sock
}

// runContainerd writes body to dir/config.toml and runs Debian's
// containerd with it until cleanup. sock is the gRPC address body names;
// it returns once containerd serves it.
func runContainerd(t *testing.T, dir, sock, body string) *daemon {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOrFailContainerd(t, "%s missing (apt-get install containerd, or scripts/install-deps.sh)", bin)
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "containerd", "containerd", "--config", cfg)
	if err := d.waitSocket(t, sock, 30*time.Second); err != nil {
		skipOrFailContainerd(t, "containerd did not start: %v\n%s", err, d.log)
	}
	return d
}

// ctr runs Debian's ctr against the test's containerd.
func ctr(t *testing.T, sock string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock}, args...)...).CombinedOutput()
	return string(out), err
}

// lazyMounts lists the FUSE mounts under dir.
func lazyMounts(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") && strings.Contains(line, "fuse") {
			out = append(out, f[4])
		}
	}
	return out
}

// TestContainerdRunsLazyImage is the whole path with real parts: Debian's
// containerd with `lazyfs snapshotter` as its proxy plugin, an image in
// Debian's docker-registry with its index pushed beside it, `lazyfs
// rpull`, and `ctr run` of a program from the image. containerd must
// download no layer blob: the layer is mounted lazily and read with Range
// requests.
func TestContainerdRunsLazyImage(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	start := time.Now()
	reg := testutil.StartRegistry(t)
	layer := testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)
	ref, _ := testutil.PushImage(t, reg.Addr, "test/busybox:latest", []testutil.Layer{layer},
		testutil.ImageConfig{Config: v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}})
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)
	indexed := len(reg.BlobGets(t))

	dir := t.TempDir()
	snapSock := filepath.Join(dir, "lazyfs.sock")
	root := filepath.Join(dir, "lazyfs")
	sn := startDaemon(t, "lazyfs snapshotter", lazyfsBin, "snapshotter", "--root", root, "--address", snapSock, "--background=off")
	if err := sn.waitSocket(t, snapSock, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sn.log)
	}
	sock := startContainerd(t, dir, snapSock)
	t.Logf("registry, index, snapshotter and containerd ready in %v", time.Since(start).Round(time.Millisecond))

	pullStart := time.Now()
	out, errOut, err := lazyfs(t, "rpull", "--address", sock, ref)
	if err != nil {
		t.Fatalf("lazyfs rpull: %v\n%s%s\nsnapshotter:\n%s", err, out, errOut, sn.log)
	}
	t.Logf("rpull in %v: %s", time.Since(pullStart).Round(time.Millisecond), strings.TrimSpace(out))
	if !strings.Contains(out, "1 of 1 layers mounted lazily") {
		t.Errorf("lazyfs rpull = %q, want 1 of 1 layers mounted lazily\nsnapshotter:\n%s", out, sn.log)
	}
	for _, g := range reg.BlobGets(t)[indexed:] {
		if g.Method == http.MethodGet && g.Digest == digest.Digest(layer.Digest) {
			t.Errorf("rpull fetched from the layer blob: %+v", g)
		}
	}
	if got := len(lazyMounts(t, root)); got != 1 {
		t.Errorf("%d lazy mounts under %s after rpull, want 1", got, root)
	}

	runStart := time.Now()
	out, err = ctr(t, sock, "run", "--rm", "--snapshotter", "lazyfs", ref, "lazyfs-test", "echo", "hello")
	if err != nil || out != "hello\n" {
		t.Fatalf("ctr run echo hello = %q, %v; want %q\nsnapshotter:\n%s", out, err, "hello\n", sn.log)
	}
	t.Logf("ctr run in %v", time.Since(runStart).Round(time.Millisecond))
	ranges := 0
	for _, g := range reg.BlobGets(t)[indexed:] {
		if g.Digest != digest.Digest(layer.Digest) || g.Method != http.MethodGet {
			continue
		}
		if g.Status == http.StatusPartialContent {
			ranges++
		} else {
			t.Errorf("layer blob request not a Range read: %+v", g)
		}
	}
	if ranges == 0 {
		t.Errorf("no Range reads of the layer: the program's bytes came from elsewhere?")
	}
	if !strings.Contains(sn.log.String(), "layer mounted lazily") {
		t.Errorf("snapshotter log does not say the layer was mounted lazily:\n%s", sn.log)
	}

	// A second image on the same base with one more layer, which has no
	// index: the base is the lazy snapshot already there, the top layer is
	// downloaded and unpacked by containerd on top of it (its whiteout
	// hides a file of the lazy layer).
	top := testutil.WriteLayer(t, []testutil.File{
		{Path: "etc/"}, {Path: "etc/.wh.hostname"}, {Path: "hello.txt", Data: []byte("from the top layer\n")},
	}, types.OCILayer)
	ref2, _ := testutil.PushImage(t, reg.Addr, "test/busybox-plus:latest", []testutil.Layer{layer, top},
		testutil.ImageConfig{Config: v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}})
	out, errOut, err = lazyfs(t, "rpull", "--address", sock, ref2)
	if err != nil || !strings.Contains(out, "1 of 2 layers mounted lazily") {
		t.Fatalf("lazyfs rpull %s = %q, %v; want 1 of 2 layers mounted lazily\n%s\nsnapshotter:\n%s", ref2, out, err, errOut, sn.log)
	}
	if !strings.Contains(sn.log.String(), "layer unpacked by containerd") {
		t.Errorf("snapshotter log does not say a layer was unpacked by containerd:\n%s", sn.log)
	}
	// Another namespace: containerd asks the snapshotter, which finds the
	// layer committed already.
	out, errOut, err = lazyfs(t, "rpull", "--address", sock, "--namespace", "other", ref)
	if err != nil || !strings.Contains(out, "1 of 1 layers mounted lazily") {
		t.Fatalf("lazyfs rpull --namespace other %s = %q, %v\n%s\nsnapshotter:\n%s", ref, out, err, errOut, sn.log)
	}
	if !strings.Contains(sn.log.String(), "layer already mounted lazily") {
		t.Errorf("snapshotter log does not say the layer was mounted already:\n%s", sn.log)
	}
	const script = "cat /hello.txt; test -e /etc/hostname || echo hostname gone"
	const want2 = "from the top layer\nhostname gone\n"
	out, err = ctr(t, sock, "run", "--rm", "--snapshotter", "lazyfs", ref2, "lazyfs-test-plus", "sh", "-c", script)
	if err != nil || out != want2 {
		t.Fatalf("ctr run %s = %q, %v; want %q\nsnapshotter:\n%s", ref2, out, err, want2, sn.log)
	}
	if got := len(lazyMounts(t, root)); got != 1 {
		t.Errorf("%d lazy mounts under %s with two images on one base, want 1", got, root)
	}

	// A restarted snapshotter mounts the layer again from its metadata,
	// and containerd's next containers run on it.
	if err := sn.stop(t); err != nil {
		t.Fatalf("lazyfs snapshotter exit after SIGTERM: %v\n%s", err, sn.log)
	}
	if m := lazyMounts(t, root); len(m) > 0 {
		t.Errorf("lazy mounts left after the snapshotter stopped: %q", m)
	}
	restart := time.Now()
	sn = startDaemon(t, "lazyfs snapshotter", lazyfsBin, "snapshotter", "--root", root, "--address", snapSock, "--background=off")
	if err := sn.waitSocket(t, snapSock, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, sn.log)
	}
	if !strings.Contains(sn.log.String(), "lazy layer mounted again") {
		t.Errorf("restarted snapshotter does not say it mounted the layer again:\n%s", sn.log)
	}
	// containerd's connection to the plugin comes back after its backoff.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := ctr(t, sock, "snapshots", "--snapshotter", "lazyfs", "ls")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd does not reach the restarted snapshotter: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err = ctr(t, sock, "run", "--rm", "--snapshotter", "lazyfs", ref, "lazyfs-test-2", "cat", "/etc/hostname")
	if err != nil || out != "lazyfs\n" {
		t.Fatalf("ctr run cat /etc/hostname after restart = %q, %v; want %q\nsnapshotter:\n%s", out, err, "lazyfs\n", sn.log)
	}
	out, err = ctr(t, sock, "run", "--rm", "--snapshotter", "lazyfs", ref2, "lazyfs-test-plus-2", "sh", "-c", script)
	if err != nil || out != want2 {
		t.Fatalf("ctr run %s after restart = %q, %v; want %q\nsnapshotter:\n%s", ref2, out, err, want2, sn.log)
	}
	t.Logf("snapshotter restarted and two containers ran in %v", time.Since(restart).Round(time.Millisecond))

	// Removing the images lets containerd's GC remove the snapshots, which
	// unmounts the layer.
	if out, err := ctr(t, sock, "images", "rm", "--sync", ref, ref2); err != nil {
		t.Fatalf("ctr images rm: %v\n%s", err, out)
	}
	if m := lazyMounts(t, root); len(m) != 1 {
		t.Errorf("lazy mounts with the image left in namespace other = %q, want 1", m)
	}
	if out, err := ctr(t, sock, "--namespace", "other", "images", "rm", "--sync", ref); err != nil {
		t.Fatalf("ctr images rm: %v\n%s", err, out)
	}
	if m := lazyMounts(t, root); len(m) > 0 {
		t.Errorf("lazy mounts left after the image was removed: %q\nsnapshotter:\n%s", m, sn.log)
	}
	if err := sn.stop(t); err != nil {
		t.Errorf("lazyfs snapshotter exit after SIGTERM: %v\n%s", err, sn.log)
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}
