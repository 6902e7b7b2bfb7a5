package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The end-to-end tests run the real lazyfs binary against Debian's
// docker-registry and read its mounts from this process, which does not
// serve them (no FUSE self-deadlock possible).

var lazyfsBin string

func TestMain(m *testing.M) { os.Exit(testutil.RunWithBinary(m, "lazyfs", &lazyfsBin)) }

// lazyfs runs one lazyfs command to completion.
func lazyfs(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lazyfsBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func mustLazyfs(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := lazyfs(t, args...)
	if err != nil {
		t.Fatalf("lazyfs %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// mounted is a running `lazyfs mount`.
type mounted struct {
	dir    string
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer // read while the process writes it
	exited chan error
}

func isMountPoint(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// mount starts `lazyfs mount` and returns once dir is a mount point.
func mount(t *testing.T, root, ref string, extra ...string) *mounted {
	t.Helper()
	testutil.RequireFUSE(t, "FUSE")
	dir := t.TempDir()
	args := []string{"mount", "--root", root}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--background") }) {
		// Tests count what reads fetch: nothing in the background unless asked.
		args = append(args, "--background=off")
	}
	args = append(args, extra...)
	cmd := exec.Command(lazyfsBin, append(args, ref, dir)...)
	m := &mounted{dir: dir, cmd: cmd, stderr: &testutil.SyncBuffer{}, exited: make(chan error, 1)}
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if isMountPoint(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		cmd.Process.Kill()
	})
	deadline := time.After(60 * time.Second)
	for !isMountPoint(dir) {
		select {
		case err := <-m.exited:
			t.Fatalf("lazyfs mount exited before mounting: %v\n%s", err, m.stderr)
		case <-deadline:
			t.Fatalf("lazyfs mount: %s not mounted after 60 s\n%s", dir, m.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return m
}

// stop sends SIGTERM and expects a clean exit with the fetch report.
func (m *mounted) stop(t *testing.T) string {
	t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.exited:
		if err != nil {
			t.Errorf("lazyfs mount exit after SIGTERM: %v, want 0\n%s", err, m.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("lazyfs mount did not exit 30 s after SIGTERM\n%s", m.stderr)
	}
	if isMountPoint(m.dir) {
		t.Errorf("%s still mounted after lazyfs mount exited", m.dir)
	}
	if !strings.Contains(m.stderr.String(), "fetched") {
		t.Errorf("lazyfs mount did not report what it fetched:\n%s", m.stderr)
	}
	return m.stderr.String()
}

// differentialImages are images whose lazy mount must equal a reference
// unpack of their layers.
func differentialImages(t *testing.T) map[string][]testutil.Layer {
	long := strings.Repeat("a-rather-long-directory-name/", 6) + "and-a-file-name-past-100-bytes.txt"
	base := []testutil.File{
		{Path: "etc/", Mode: 0o755},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "etc/old", Data: []byte("to be deleted")},
		{Path: "etc/replaced", Data: []byte("a file, later a directory")},
		{Path: "opaque/", Mode: 0o750, UID: 5, GID: 6},
		{Path: "opaque/lower", Data: []byte("hidden by the opaque marker")},
		{Path: "opaque/sub/", Mode: 0o700},
		{Path: "dir-then-file/", Mode: 0o755},
		{Path: "dir-then-file/child", Data: []byte("gone with its dir")},
		{Path: "usr/bin/", Mode: 0o755},
		{Path: "usr/bin/tool", Mode: 0o4755, Data: []byte("#!/bin/sh\necho tool\n")},
		{Path: "usr/bin/tool-link", Type: tar.TypeLink, Linkname: "usr/bin/tool"},
		{Path: "usr/bin/tool-sym", Type: tar.TypeSymlink, Linkname: "tool"},
		{Path: "bin", Type: tar.TypeSymlink, Linkname: "usr/bin"}, // merged /usr
		{Path: "usr/share/zeros", Size: 0, Data: make([]byte, 3<<20)},
		{Path: "usr/share/empty", Data: []byte{}},
		{Path: "usr/share/pattern", Size: 5<<20 + 17, Seed: 7},
		{Path: long, Data: []byte("long name")},
		{Path: "dev/", Mode: 0o755},
		{Path: "dev/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Path: "dev/sda", Type: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660},
		{Path: "run/fifo", Type: tar.TypeFifo},
		{Path: "xattrs", Data: []byte("x"), Xattrs: map[string]string{"user.one": "1", "trusted.two": "2"}},
		{Path: "tmp/", Mode: 0o1777},
		{Path: "owned", UID: 1000, GID: 1000, Mode: 0o600, Data: []byte("mine"), ModTime: time.Unix(1234567890, 987654321)},
	}
	upper := []testutil.File{
		{Path: "etc/.wh.old"},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/ash\n")},
		{Path: "etc/replaced/", Mode: 0o755},
		{Path: "etc/replaced/now-a-dir", Data: []byte("inside")},
		{Path: "opaque/", Mode: 0o755},
		{Path: "opaque/.wh..wh..opq"},
		{Path: "opaque/upper", Data: []byte("visible")},
		{Path: "dir-then-file", Data: []byte("a file now")},
		{Path: "usr/share/zeros", Mode: 0o600, Data: []byte("shrunk")},
	}
	top := []testutil.File{
		{Path: "usr/bin/.wh.tool-sym"},
		{Path: "added/in/three/levels", Data: bytes.Repeat([]byte("three "), 100000)},
		{Path: "bin/through-the-link", Data: []byte("lands in usr/bin")},
	}
	topTar := testutil.Tar(t, top)
	images := map[string][]testutil.Layer{
		"busybox": {testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)},
		"three layers: gzip, tar, gzip members": {
			{Blob: testutil.Gzip(t, testutil.Tar(t, base), 6)},
			{Blob: testutil.Tar(t, upper)},
			{Blob: testutil.GzipMembers(t, topTar, 4)},
		},
	}
	if sparse := gnuSparseLayers(t); sparse != nil {
		images["gnu sparse files"] = sparse
	}
	return images
}

// gnuSparseLayers makes two layers with GNU tar --sparse, PAX 1.0 and the
// old GNU form, from files with holes as `tar -S` writes them; nil without
// GNU tar.
func gnuSparseLayers(t *testing.T) []testutil.Layer {
	t.Helper()
	if out, err := exec.Command("tar", "--version").Output(); err != nil || !strings.Contains(string(out), "GNU tar") {
		t.Logf("no GNU tar: the sparse image is left out")
		return nil
	}
	var layers []testutil.Layer
	for _, format := range []string{"posix", "gnu"} {
		dir := filepath.Join(t.TempDir(), format)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		write := func(name string, size int64, at ...int64) {
			f, err := os.Create(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.Truncate(size); err != nil {
				t.Fatal(err)
			}
			for _, off := range at {
				if _, err := fmt.Fprintf(io.NewOffsetWriter(f, off), "data at %d\n", off); err != nil {
					t.Fatal(err)
				}
			}
		}
		write("holes", 48<<20, 0, 5<<20+3, 20<<20, 48<<20-12)
		write("ends-in-hole", 16<<20, 1<<20)
		write("all-hole", 8<<20)
		out, err := exec.Command("tar", "--sparse", "--format="+format, "--owner=0", "--group=0",
			"-C", filepath.Dir(dir), "-cf", "-", format).Output()
		if err != nil {
			t.Fatalf("tar --sparse --format=%s: %v", format, err)
		}
		layers = append(layers, testutil.Layer{Blob: testutil.Gzip(t, out, 6)})
	}
	return layers
}

func TestMountMatchesReferenceUnpack(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	reg := testutil.StartRegistry(t)
	for name, layers := range differentialImages(t) {
		t.Run(name, func(t *testing.T) {
			repo := "test/" + strings.NewReplacer(" ", "-", ":", "", ",", "").Replace(name) + ":v1"
			ref, _ := testutil.PushImage(t, reg.Addr, repo, layers, testutil.ImageConfig{})
			want := t.TempDir()
			testutil.UnpackLayers(t, want, layers)

			root := t.TempDir()
			mustLazyfs(t, "index", "--push", "--root", root, "--span", "262144", ref)
			// A fresh root: the index must come from the registry.
			fresh := t.TempDir()
			out := mustLazyfs(t, "inspect", "--root", fresh, ref)
			if !strings.Contains(out, "registry") || strings.Contains(out, "none in the registry") {
				t.Errorf("lazyfs inspect after index --push does not show the registry index:\n%s", out)
			}
			m := mount(t, fresh, ref)
			testutil.CompareTreesWith(t, want, m.dir, testutil.CompareOptions{IgnoreRootMeta: true})
			m.stop(t)
		})
	}
}

// pushLargeImage pushes one gzip layer with a 32 MiB incompressible file and
// a small one, through a fault proxy, and returns the proxied reference.
func pushLargeImage(t *testing.T) (ref string, proxy *testutil.FaultProxy, small []byte) {
	t.Helper()
	reg := testutil.StartRegistry(t)
	small = []byte("just a few bytes\n")
	layer := testutil.WriteLayer(t, []testutil.File{
		{Path: "big/random", Size: 32 << 20, Seed: 42},
		{Path: "small", Data: small},
	}, types.OCILayer)
	testutil.PushImage(t, reg.Addr, "test/large:v1", []testutil.Layer{layer}, testutil.ImageConfig{})
	proxy = testutil.NewFaultProxy(t, reg.Addr)
	return proxy.Addr + "/test/large:v1", proxy, small
}

func TestSmallReadFetchesLittle(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ref, proxy, small := pushLargeImage(t)
	root := t.TempDir()
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)

	proxy.ClearStats()
	m := mount(t, root, ref)
	got, err := os.ReadFile(filepath.Join(m.dir, "small"))
	if err != nil || !bytes.Equal(got, small) {
		t.Fatalf("ReadFile(small) = %q, %v; want %q", got, err, small)
	}
	st := proxy.Stats()
	// Indexes and manifests are not blobs of the layer; the layer's bytes are
	// what a lazy read must keep small.
	var layerBytes int64
	for _, b := range st.Blobs {
		if b.Bytes > layerBytes {
			layerBytes = b.Bytes
		}
	}
	t.Logf("reading a %d-byte file of a 32 MiB layer fetched %d bytes of blobs in %d blob requests", len(small), st.BlobBytes, st.BlobRequests)
	if layerBytes > 3<<20 {
		t.Errorf("reading a %d-byte file fetched %d bytes of one blob; want under 3 MiB of the 32 MiB layer", len(small), layerBytes)
	}
	report := m.stop(t)
	if !strings.Contains(report, "requests") {
		t.Errorf("report lacks request count: %s", report)
	}
}

func TestRegistryFaults(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	ref, proxy, _ := pushLargeImage(t)
	mustLazyfs(t, "index", "--push", "--root", t.TempDir(), ref)
	wantBig := make([]byte, 32<<20)
	testutil.PatternAt(42, 0, wantBig)

	for _, tc := range []struct {
		name    string
		inject  func()
		wantEIO bool
		args    []string
	}{
		{"a few 500s are retried", func() { proxy.Fail(500, 2) }, false, nil},
		{"a reset is retried", func() { proxy.Reset(1) }, false, nil},
		{"a stall is cut by the deadline and retried", func() { proxy.Stall(1, time.Minute) }, false, nil},
		{"a short body is retried", func() { proxy.Short(1) }, false, nil},
		{"a corrupted body is fetched again", func() { proxy.Corrupt(1) }, false, nil},
		{"endless 503s end in EIO", func() { proxy.Fail(503, 1000) }, true, nil},
		{"endless corruption ends in EIO", func() { proxy.Corrupt(1000) }, true, nil},
		{"an endless stall ends in EIO at the read timeout", func() { proxy.Stall(1000, time.Minute) }, true,
			[]string{"--fetch-timeout", "8s", "--retries", "1", "--read-timeout", "3s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts cold: its own root, so nothing is cached.
			args := tc.args
			if args == nil {
				args = []string{"--fetch-timeout", "2s", "--retries", "3"}
			}
			m := mount(t, t.TempDir(), ref, args...)
			proxy.ClearFaults()
			tc.inject()
			start := time.Now()
			f, err := os.Open(filepath.Join(m.dir, "big/random"))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64<<10)
			const off = 20 << 20
			n, err := f.ReadAt(buf, off)
			f.Close()
			took := time.Since(start)
			proxy.ClearFaults()
			if tc.wantEIO {
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("read under %s = %d bytes, %v; want EIO", tc.name, n, err)
				}
			} else if err != nil && err != io.EOF {
				t.Errorf("read under %s: %v", tc.name, err)
			}
			if err == nil && !bytes.Equal(buf, wantBig[off:off+len(buf)]) {
				t.Fatalf("read under %s returned wrong bytes", tc.name)
			}
			// The timeout bounds each frame a read waits for; a read the
			// kernel made 1 MiB long spans at most two.
			if tc.args != nil && took > 7*time.Second {
				t.Errorf("read under %s took %v; want EIO at the 3 s read timeout per frame", tc.name, took)
			}
			if took > 30*time.Second {
				t.Errorf("read under %s took %v; want a bounded failure or success", tc.name, took)
			}
			if tc.wantEIO {
				// The failure is not remembered: the same read works once the
				// registry does. A fetch stuck on a stalled connection goes on
				// until its own deadline (--fetch-timeout), so that case may
				// take a few reads.
				deadline := time.Now().Add(45 * time.Second)
				for {
					f, err := os.Open(filepath.Join(m.dir, "big/random"))
					if err != nil {
						t.Fatal(err)
					}
					_, err = f.ReadAt(buf, off)
					f.Close()
					if err == nil && bytes.Equal(buf, wantBig[off:off+len(buf)]) {
						break
					}
					if err == nil || tc.args == nil || time.Now().After(deadline) {
						t.Errorf("read after the registry recovered: %v", err)
						break
					}
				}
			}
			m.stop(t)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"mount", "onlyref"}, 2, "takes an image reference and a mount point"},
		{[]string{"nosuchcommand"}, 2, "unknown command"},
		{[]string{"index", "--nosuchflag", "x"}, 2, "unknown flag"},
		{[]string{"mount", "--background", "sometimes", "ref", "/"}, 2, `--background "sometimes": want off, idle or full`},
		{[]string{"snapshotter", "--root", "ROOT", "--background", "on"}, 2, `--background "on"`},
		{[]string{"inspect", "--root", "ROOT", "--retries", "0", "127.0.0.1:1/no/such:image"}, 1, "127.0.0.1:1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := slices.Clone(tc.args)
			if i := slices.Index(args, "ROOT"); i >= 0 {
				args[i] = t.TempDir()
			}
			_, stderr, err := lazyfs(t, args...)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tc.code {
				t.Errorf("lazyfs %v exit = %v, want code %d", tc.args, err, tc.code)
			}
			if !strings.Contains(stderr, tc.msg) {
				t.Errorf("lazyfs %v stderr = %q, want it to mention %q", tc.args, stderr, tc.msg)
			}
		})
	}
}

// TestMountLargeImage is the differential test at size: one layer with a
// 1 GiB file, another with 50 000 small files in 500 directories.
func TestMountLargeImage(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	if testing.Short() {
		t.Skip("-short: skips the 1 GiB layer")
	}
	reg := testutil.StartRegistry(t)
	var small []testutil.File
	for d := range 500 {
		dir := fmt.Sprintf("usr/share/pkg%03d/", d)
		small = append(small, testutil.File{Path: dir})
		for f := range 100 {
			small = append(small, testutil.File{Path: fmt.Sprintf("%sfile%03d", dir, f), Size: int64(f * 37), Seed: int64(d*100 + f)})
		}
	}
	layers := []testutil.Layer{
		testutil.WriteLayer(t, []testutil.File{{Path: "opt/big.bin", Size: 1 << 30, Seed: 3}}, types.OCILayer),
		testutil.WriteLayer(t, small, types.OCILayer),
	}
	ref, _ := testutil.PushImage(t, reg.Addr, "test/large:v1", layers, testutil.ImageConfig{})
	want := t.TempDir()
	testutil.UnpackLayers(t, want, layers)

	root := t.TempDir()
	start := time.Now()
	mustLazyfs(t, "index", "--root", root, ref)
	t.Logf("indexed 1 GiB + 50 000 files in %v", time.Since(start))
	start = time.Now()
	m := mount(t, root, ref)
	t.Logf("mounted in %v", time.Since(start))
	start = time.Now()
	testutil.CompareTreesWith(t, want, m.dir, testutil.CompareOptions{IgnoreRootMeta: true})
	t.Logf("compared both trees in %v", time.Since(start))
	report := m.stop(t)
	t.Logf("%s", report[strings.LastIndex(strings.TrimSpace(report), "\n")+1:])
}
