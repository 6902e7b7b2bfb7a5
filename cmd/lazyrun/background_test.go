package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// waitSupervisorLog polls container id's supervisor.log until it holds
// line, at most 2 minutes, and returns the log.
func (e *env) waitSupervisorLog(t *testing.T, id, line string) []byte {
	t.Helper()
	p := filepath.Join(e.root, "containers", id, "supervisor.log")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(line)) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %q after 2 minutes:\n%s", p, line, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A container started without --background gets the default (idle): its
// supervisor fetches the whole image once the start is over, and says so
// once; `lazyrun images` then shows it all cached. With
// --background=off nothing is fetched but what the start read.
func TestRunBackgroundDefault(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	layers := []testutil.Layer{
		testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{{Path: "data/", Mode: 0o755}, {Path: "data/unread", Size: 4 << 20, Seed: 9}}, types.OCILayer),
	}
	ref, _ := testutil.PushImage(t, reg.Addr, "busybox-data", layers, testutil.ImageConfig{})
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() { e.checkSupervisorLogs(t); e.checkClean(t) })
	cmd := exec.Command(lazyrunBin, "--root", e.root, "run", "-d", "--name", "bg", e.ref, "sleep", "1000")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lazyrun run -d: %v", err)
	}
	id := strings.TrimSpace(string(out))
	log := e.waitSupervisorLog(t, id, "image fully fetched")
	if n := bytes.Count(log, []byte("image fully fetched")); n != 1 {
		t.Errorf("%d 'image fully fetched' lines, want 1:\n%s", n, log)
	}
	if images := e.mustRun(t, "images"); !strings.Contains(images, "100%") {
		t.Errorf("lazyrun images after the background fetch = %q, want the image 100%% cached", images)
	}
	e.mustRun(t, "rm", "-f", "bg")

	// off: a fresh root, the same start.
	off := &env{root: t.TempDir(), ref: e.ref}
	t.Cleanup(func() { off.checkSupervisorLogs(t); off.checkClean(t) })
	off.mustRun(t, "run", "--background=off", "--rm", e.ref, "true")
	if images := off.mustRun(t, "images"); strings.Contains(images, "100%") {
		t.Errorf("lazyrun images after a start with --background=off = %q, want the image partly cached", images)
	}
}
