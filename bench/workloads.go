package bench

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// Image is one benchmark image: Debian bookworm minbase with Packages
// installed on top (testutil.DebianLayers: the base is layer 0 and the same
// blob in every image, the packages are layer 1).
type Image struct {
	Name     string   // repository bench/NAME
	Packages []string // none: the base alone
}

// Workload is a real start-up command on an image; it succeeded when it
// exits 0 and its standard output contains Expect.
type Workload struct {
	Name   string
	Image  string
	Cmd    []string
	Expect string
}

// Images are the images the workloads run on.
var Images = []Image{
	{Name: "minbase"},
	{Name: "python3", Packages: []string{"python3"}},
	{Name: "nginx", Packages: []string{"nginx"}},
	{Name: "gcc", Packages: []string{"build-essential"}},
}

// nginxOneRequest starts nginx (it daemonizes once its socket listens),
// sends it one request over bash's /dev/tcp and prints the status line.
// The container ends with the script, and nginx with it (PID namespace).
const nginxOneRequest = `nginx && exec 3<>/dev/tcp/127.0.0.1/80 && printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3 && IFS= read -r line <&3 && echo "$line"`

// gccHello compiles, links and runs a C program.
const gccHello = `printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >/tmp/h.c && gcc -O2 -o /tmp/h /tmp/h.c && /tmp/h`

// Workloads are the default start-up commands.
var Workloads = []Workload{
	{Name: "minbase", Image: "minbase", Cmd: []string{"dpkg", "-l"}, Expect: "ii  bash"},
	{Name: "python3", Image: "python3", Cmd: []string{"python3", "-c", "print(1)"}, Expect: "1"},
	{Name: "nginx", Image: "nginx", Cmd: []string{"bash", "-c", nginxOneRequest}, Expect: "200 OK"},
	{Name: "gcc-version", Image: "gcc", Cmd: []string{"gcc", "--version"}, Expect: "gcc (Debian"},
	{Name: "gcc-hello", Image: "gcc", Cmd: []string{"sh", "-c", gccHello}, Expect: "hello"},
}

// imagePath is the environment of every image and of native runs.
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// builtImage is an image built from Debian's packages and pushed.
type builtImage struct {
	Image
	Root    string           // the unpacked root (testutil.DebianRoot): the native runs' lower directory
	Layers  []testutil.Layer // base first
	Ref     string           // REPO:TAG as the clients name it, without the registry
	Digest  string           // manifest digest
	Content int64            // bytes in the root's regular files
	Files   int              // regular files in the root
	Pushed  *testutil.PushedImage
	Config  v1.Config
}

// BaseLayer is the digest of layer 0, shared by every image.
func (b *builtImage) BaseLayer() string { return b.Layers[0].Digest.String() }

// Compressed is the sum of the layers' blob sizes.
func (b *builtImage) Compressed() int64 {
	var n int64
	for _, l := range b.Layers {
		n += l.Size
	}
	return n
}

// buildImage returns the image's root and layers, building them (cached in
// /var/cache/lazyfs-test, or LAZYFS_TEST_CACHE) when needed.
func buildImage(ctx context.Context, logf func(string, ...any), im Image) (*builtImage, error) {
	b := &builtImage{Image: im, Ref: "bench/" + im.Name + ":latest"}
	err := withTB(ctx, logf, func(t testing.TB) {
		b.Root = testutil.DebianRoot(t, im.Packages...)
		b.Layers = testutil.DebianLayers(t, im.Packages...)
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", im.Name, err)
	}
	b.Files, b.Content, err = treeSize(b.Root)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", im.Name, err)
	}
	b.Config = v1.Config{Env: []string{imagePath}, Cmd: []string{"bash"}}
	return b, nil
}

// push pushes the image to the registry at reg (host:port, plain HTTP).
func (b *builtImage) push(ctx context.Context, logf func(string, ...any), reg string) error {
	return withTB(ctx, logf, func(t testing.TB) {
		b.Pushed = testutil.PushImageInfo(t, reg, b.Ref, b.Layers, testutil.ImageConfig{Config: b.Config})
		b.Digest = b.Pushed.Digest.String()
	})
}

// treeSize counts the regular files under root and their bytes.
func treeSize(root string) (files int, bytes int64, err error) {
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes, err
}

// selectWorkloads returns the named workloads (all when names is empty).
func selectWorkloads(names []string) ([]Workload, error) {
	if len(names) == 0 {
		return Workloads, nil
	}
	var out []Workload
	for _, n := range names {
		found := false
		for _, w := range Workloads {
			if w.Name == n {
				out = append(out, w)
				found = true
			}
		}
		if !found {
			var known []string
			for _, w := range Workloads {
				known = append(known, w.Name)
			}
			return nil, fmt.Errorf("workload %q: not one of %s", n, strings.Join(known, ", "))
		}
	}
	return out, nil
}

// imageByName finds an image definition.
func imageByName(name string) (Image, bool) {
	for _, im := range Images {
		if im.Name == name {
			return im, true
		}
	}
	return Image{}, false
}
