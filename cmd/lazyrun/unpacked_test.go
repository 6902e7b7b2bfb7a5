package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// mountsOf returns the mounts of process pid as mount point → "fstype
// super-options".
func mountsOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && i+3 < len(f) {
				out[f[4]] = f[i+1] + " " + f[i+3]
			}
		}
	}
	return out
}

// containerConfig reads a container's config.json.
func (e *env) containerConfig(t *testing.T, id string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "containers", id, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPullUnpackedRun pulls an image of 42 layers (busybox, one of files
// and hard links, one of whiteouts and an opaque directory, 39 small ones:
// their lower directories are well over the page mount(2) takes), stops
// the registry, and runs it: the container's root is a kernel overlay over
// the unpacked layers, its supervisor has no FUSE mount, the image's files,
// whiteouts and hard links are as the layers say, and a commit of what the
// container changed runs elsewhere. A pull with --unpack=false still runs
// over FUSE.
func TestPullUnpackedRun(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	ls := []testutil.Layer{
		testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{
			{Path: "data/"}, {Path: "data/a", Data: []byte("a\n")}, {Path: "data/big", Size: 3<<20 + 5, Seed: 9},
			{Path: "data/h1", Data: []byte("linked\n")}, {Path: "data/h2", Type: tar.TypeLink, Linkname: "data/h1"},
			{Path: "opq/"}, {Path: "opq/old", Data: []byte("old")}, {Path: "gone", Data: []byte("gone")},
			{Path: "suid", Data: []byte("#!/bin/sh\n"), Mode: 0o4755, UID: 1000},
		}, types.OCILayer),
		testutil.WriteLayer(t, []testutil.File{
			{Path: ".wh.gone"}, {Path: "opq/"}, {Path: "opq/.wh..wh..opq"}, {Path: "opq/new", Data: []byte("new")},
		}, types.OCILayer),
	}
	for i := range 39 {
		ls = append(ls, testutil.WriteLayer(t, []testutil.File{
			{Path: "layers/"}, {Path: fmt.Sprintf("layers/%02d", i), Data: fmt.Appendf(nil, "%d\n", i)},
		}, types.DockerLayer))
	}
	testutil.PushImage(t, reg.Addr, "many:v1", ls, testutil.ImageConfig{})
	relay := testutil.StartRelay(t, reg.Addr)
	e := &env{root: t.TempDir(), ref: relay.Addr + "/many:v1"}
	t.Cleanup(func() {
		e.checkSupervisorLogs(t)
		e.checkClean(t)
	})

	out := e.mustRun(t, "pull", e.ref)
	if n := strings.Count(out, ": Unpacked ("); n != len(ls) {
		t.Fatalf("pull unpacked %d layers, want %d:\n%s", n, len(ls), out)
	}
	if out := e.mustRun(t, "pull", e.ref); strings.Count(out, ": Already unpacked\n") != len(ls) {
		t.Errorf("second pull:\n%s\nwant every layer already unpacked", out)
	}
	relay.Stop()

	id := e.runDetached(t, "--name", "u", e.ref, "sleep", "300")
	st := e.state(t, id)
	sup, init := int(st["supervisorPid"].(float64)), int(st["pid"].(float64))
	for mp, m := range mountsOf(t, sup) {
		if strings.HasPrefix(mp, e.root) && strings.HasPrefix(m, "fuse") {
			t.Errorf("the supervisor has a FUSE mount at %s: %s", mp, m)
		}
	}
	top := filepath.Join(e.root, "layers", "sha256", ls[len(ls)-1].Digest.Encoded())
	bottom := filepath.Join(e.root, "layers", "sha256", ls[0].Digest.Encoded())
	if root := mountsOf(t, init)["/"]; !strings.HasPrefix(root, "overlay ") || !strings.Contains(root, top) || !strings.Contains(root, bottom) {
		t.Errorf("the container's / is %.300q…; want an overlay over %s … %s", root, top, bottom)
	}
	if c := e.containerConfig(t, id); c["lower"] != "unpacked" {
		t.Errorf("config.json lower = %v, want unpacked", c["lower"])
	}
	e.waitSupervisorLog(t, id, "image on its unpacked layers")

	check := `set -e
cat /data/a /opq/new; echo
ls /opq
test ! -e /gone && test ! -e /opq/old && echo whited-out
test "$(stat -c %i /data/h1)" = "$(stat -c %i /data/h2)" && stat -c %h /data/h2
stat -c '%a %u' /suid
ls /layers | wc -l
cat /layers/38
wc -c < /data/big`
	want := "a\nnew\nnew\nwhited-out\n2\n4755 1000\n39\n38\n" + fmt.Sprint(3<<20+5) + "\n"
	if got := e.mustRun(t, "exec", "u", "sh", "-c", check); got != want {
		t.Errorf("exec in the container:\n%s\nwant\n%s", got, want)
	}
	e.mustRun(t, "exec", "u", "sh", "-c", "echo written > /new && rm /data/a && rm -r /opq && echo x > /layers/00")
	e.mustRun(t, "stop", "-t", "1", "u")

	// The commit pushes the base image's layers too: from the registry.
	relay.Restart(t)
	newRef := reg.Addr + "/committed:v1"
	e.mustRun(t, "commit", "u", newRef)
	fresh := &env{root: t.TempDir(), ref: newRef}
	t.Cleanup(func() { fresh.checkClean(t) })
	r := fresh.lazyrun(t, "", "run", "--rm", newRef, "sh", "-c",
		"cat /new /layers/00 /data/h1; test ! -e /data/a && test ! -e /opq && test ! -e /gone && echo gone")
	if want := "written\nx\nlinked\ngone\n"; r.code != 0 || r.stdout != want {
		t.Errorf("run of the commit = exit %d\n%s\nwant\n%s\nstderr: %s", r.code, r.stdout, want, r.stderr)
	}

	// Without --unpack the image runs over FUSE, as before.
	lazy := &env{root: t.TempDir(), ref: reg.Addr + "/many:v1"}
	t.Cleanup(func() { lazy.checkClean(t) })
	if out := lazy.mustRun(t, "pull", "--unpack=false", lazy.ref); strings.Contains(out, "Unpacked") {
		t.Errorf("pull --unpack=false unpacked:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(lazy.root, "layers")); !os.IsNotExist(err) {
		t.Errorf("pull --unpack=false made %s/layers: %v", lazy.root, err)
	}
	lazy.mustRun(t, "run", "--name", "l", lazy.ref, "true")
	lid := lazy.containerIDs()[0]
	if c := lazy.containerConfig(t, lid); c["lower"] != "lazy" {
		t.Errorf("config.json lower after pull --unpack=false = %v, want lazy", c["lower"])
	}
	start := time.Now()
	lazy.mustRun(t, "rm", "l")
	t.Logf("rm: %v", time.Since(start))
}
