package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The walk-through a docker user starts with, on nginx from Debian's
// packages, never pulled: run -d -p, a page through the published port,
// exec ps aux, the request in logs, stop within the timeout, start, rm, and
// nothing left behind.
func TestNginxWalkThrough(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	layers := testutil.DebianLayers(t, "nginx", "procps")
	// As the official image: the logs go to the container's output.
	logs := t.TempDir()
	if err := os.MkdirAll(filepath.Join(logs, "var/log/nginx"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"access.log": "/dev/stdout", "error.log": "/dev/stderr"} {
		if err := os.Symlink(target, filepath.Join(logs, "var/log/nginx", name)); err != nil {
			t.Fatal(err)
		}
	}
	layers = append(layers, testutil.WriteLayerDir(t, logs, types.OCILayer))
	reg := testutil.StartRegistry(t)
	img := testutil.PushImageInfo(t, reg.Addr, "debian/nginx", layers, testutil.ImageConfig{Config: v1.Config{
		Env:          []string{debianPath},
		Cmd:          []string{"nginx", "-g", "daemon off;"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}},
		StopSignal:   "SIGQUIT",
	}})
	pushIndexes(t, img.Ref)
	e := &env{root: t.TempDir(), ref: img.Ref}
	t.Cleanup(func() { e.checkClean(t) })
	t.Cleanup(func() { e.checkSupervisorLogs(t) })

	id := e.runDetached(t, "-p", "127.0.0.1::80", "--name", "web", e.ref)
	get := func(t *testing.T) {
		t.Helper()
		addr := strings.TrimSpace(e.mustRun(t, "port", "web", "80"))
		var resp *http.Response
		var err error
		// nginx listens a moment after its start was reported.
		for deadline := time.Now().Add(30 * time.Second); ; {
			if resp, err = http.Get("http://" + addr + "/"); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("GET through the published port %s: %v", addr, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Welcome to nginx") {
			t.Fatalf("GET %s = %s\n%s", addr, resp.Status, body)
		}
	}
	get(t)
	if line := e.psLine(t, "web"); !strings.Contains(line, "127.0.0.1:") || !strings.Contains(line, "->80/tcp") {
		t.Errorf("ps does not show the published port: %q", line)
	}

	ps := e.mustRun(t, "exec", "web", "ps", "aux")
	if !strings.Contains(ps, "nginx: master process") || !strings.Contains(ps, "nginx: worker process") {
		t.Errorf("exec ps aux shows no nginx master and worker:\n%s", ps)
	}
	// The master is the container's PID 1's child; the init is PID 1.
	if !strings.Contains(ps, "www-data") {
		t.Errorf("exec ps aux shows no worker running as www-data:\n%s", ps)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(e.mustRun(t, "logs", "web"), `"GET / HTTP/1.1" 200`) {
		if time.Now().After(deadline) {
			t.Fatalf("logs web has no line for the request:\n%s", e.mustRun(t, "logs", "web"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	start := time.Now()
	e.mustRun(t, "stop", "web")
	took := time.Since(start)
	t.Logf("stop (SIGQUIT, nginx's graceful shutdown) took %v", took)
	if took > 10*time.Second {
		t.Errorf("stop took %v: nginx did not end on its StopSignal within the timeout", took)
	}
	if line := e.psLine(t, "web", "-a"); !strings.Contains(line, "Exited (0)") {
		t.Errorf("ps -a after stop: %q, want Exited (0)", line)
	}

	e.mustRun(t, "start", "web")
	get(t)
	e.mustRun(t, "stop", "web")
	e.mustRun(t, "rm", "web")
	if l := leftovers(e.root, []string{id}); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
}
