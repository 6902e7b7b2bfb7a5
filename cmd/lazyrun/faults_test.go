package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The registry goes away while a container runs: what it already read
// keeps working, a read of data never fetched fails with EIO within the
// default --read-timeout (10 s), once the registry is back the same read
// succeeds in the same mount, and a container blocked on such a read still
// stops.
func TestRegistryGoneMidRun(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	// Files in layers of their own: reading one never reads ahead into
	// another.
	sums := map[string]string{}
	var ls []testutil.Layer
	ls = append(ls, testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer))
	for _, name := range []string{"a", "b", "c"} {
		dir := t.TempDir()
		data := make([]byte, 6<<20)
		rand.Read(data)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		sums[name] = hex.EncodeToString(sum[:])
		ls = append(ls, testutil.WriteLayerDir(t, dir, types.OCILayer))
	}
	ref, _ := testutil.PushImage(t, reg.Addr, "test/gone:v1", ls, testutil.ImageConfig{})
	pushIndexes(t, ref)
	relay := testutil.StartRelay(t, reg.Addr)
	e := &env{root: t.TempDir(), ref: relay.Addr + "/test/gone:v1"}
	t.Cleanup(func() { e.checkClean(t) })

	e.runDetached(t, "--name", "gone", e.ref, "sh", "-c", `sha256sum /a; echo started; while true; do sleep 1; done`)
	e.waitLog(t, "gone", "started", 1)
	relay.Stop()

	if out := e.mustRun(t, "exec", "gone", "sha256sum", "/a"); !strings.HasPrefix(out, sums["a"]) {
		t.Errorf("cached /a with the registry gone: %q, want %s", out, sums["a"])
	}
	start := time.Now()
	r := e.lazyrun(t, "", "exec", "gone", "sha256sum", "/b")
	took := time.Since(start)
	t.Logf("a read of uncached data with the registry gone failed after %v: exit %d, %s", took.Round(time.Millisecond), r.code, strings.TrimSpace(r.stderr))
	if r.code == 0 || !strings.Contains(r.stderr, "Input/output error") {
		t.Errorf("sha256sum /b with the registry gone = exit %d, %q; want an I/O error", r.code, r.stderr)
	}
	// The default --read-timeout is 10 s; an exec's own start adds little.
	if took > 15*time.Second {
		t.Errorf("the failing read took %v, want about the 10 s read timeout", took)
	}

	// Back: the same mount reads /b.
	relay.Restart(t)
	if out := e.mustRun(t, "exec", "gone", "sha256sum", "/b"); !strings.HasPrefix(out, sums["b"]) {
		t.Errorf("/b with the registry back: %q, want %s", out, sums["b"])
	}

	// Gone again: a process blocked on a read does not keep the container
	// from stopping.
	relay.Stop()
	blocked := exec.Command(lazyrunBin, "--root", e.root, "exec", "gone", "cat", "/c")
	if err := blocked.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- blocked.Wait() }()
	select {
	case err := <-ended:
		t.Fatalf("cat /c ended (%v) before the registry's absence could block it", err)
	case <-time.After(time.Second):
	}
	start = time.Now()
	e.mustRun(t, "stop", "-t", "1", "gone")
	<-ended
	t.Logf("stop with a read blocked on the registry took %v", time.Since(start).Round(time.Millisecond))
	e.mustRun(t, "rm", "gone")
}
