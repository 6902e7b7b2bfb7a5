package bench

import (
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/index"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// Image is one benchmark image: Debian bookworm minbase with Packages
// installed on top (testutil.DebianLayers: the base is layer 0 and the same
// blob in every image, the packages are layer 1), and Files, if any, as
// one more layer on top.
type Image struct {
	Name     string   // repository bench/NAME
	Packages []string // none: the base alone
	// Env is the config's environment after PATH (imagePath); native runs
	// get it too.
	Env []string
	// Files are put into the image as a gzip layer of their own (the
	// last), and into a directory that native runs stack above the
	// Debian root: path in the image (absolute) → content. Regular files,
	// mode 0644, root's, mtime testutil.DefaultModTime.
	Files map[string]string
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
	{Name: "go", Packages: []string{"golang-go"}, Env: goEnv, Files: map[string]string{"/hello.go": helloGo}},
}

// goEnv is the go image's environment: Debian's golang-go (bookworm: Go
// 1.19, which still ships the standard library's compiled packages in
// GOROOT/pkg, so `go run` compiles only the program) with the build cache
// and GOPATH in /tmp (the container's upper layer; the image has no
// writable HOME of its own to rely on) and no network: GOPROXY=off (a
// program outside a module, importing only the standard library, needs
// none; this makes sure it is never tried). GOTOOLCHAIN=local is ignored
// by 1.19 and keeps a later go from downloading a toolchain. GOFLAGS is
// left unset: -mod does not apply to a file outside a module.
var goEnv = []string{"HOME=/tmp", "GOPATH=/tmp/go", "GOCACHE=/tmp/go-cache", "GOPROXY=off", "GOTOOLCHAIN=local"}

// helloGo is /hello.go in the go image.
const helloGo = `package main

import "fmt"

func main() {
	fmt.Println("hello, world")
}
`

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
	{Name: "go-run", Image: "go", Cmd: []string{"go", "run", "/hello.go"}, Expect: "hello, world"},
}

// imagePath is the environment of every image and of native runs.
const imagePath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// builtImage is an image built from Debian's packages and pushed.
type builtImage struct {
	Image
	Root    string           // the unpacked root (testutil.DebianRoot): the native runs' lower directory
	Extra   string           // Image.Files as a tree (under the work directory), stacked above Root; "" when none
	Layers  []testutil.Layer // base first
	Ref     string           // REPO:TAG as the clients name it, without the registry
	Digest  string           // manifest digest
	Content int64            // bytes in the root's regular files
	Files   int              // regular files in the root
	Pushed  *testutil.PushedImage
	Config  v1.Config
	// Indexes are the layers' lazyfs indexes as pushed (base first), for
	// Need; nil when they could not be kept.
	Indexes []*index.Index
}

// BaseLayer is the digest of layer 0, shared by every image.
func (b *builtImage) BaseLayer() string { return b.Layers[0].Digest.String() }

// layerDigests are the layers' digests, base first.
func (b *builtImage) layerDigests() []string {
	var out []string
	for _, l := range b.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// Compressed is the sum of the layers' blob sizes.
func (b *builtImage) Compressed() int64 {
	var n int64
	for _, l := range b.Layers {
		n += l.Size
	}
	return n
}

// lowerDirs is the native runs' overlayfs lowerdir: Extra above Root.
func (b *builtImage) lowerDirs() string {
	if b.Extra != "" {
		return b.Extra + ":" + b.Root
	}
	return b.Root
}

// roots are the directories of the image's tree, uppermost first.
func (b *builtImage) roots() []string {
	if b.Extra != "" {
		return []string{b.Extra, b.Root}
	}
	return []string{b.Root}
}

// buildImage returns the image's root and layers, building them (cached in
// /var/cache/lazyfs-test, or LAZYFS_TEST_CACHE) when needed; Image.Files
// go into a tree under workDir and a layer in memory.
func buildImage(ctx context.Context, logf func(string, ...any), im Image, workDir string) (*builtImage, error) {
	b := &builtImage{Image: im, Ref: "bench/" + im.Name + ":latest"}
	err := withTB(ctx, logf, func(t testing.TB) {
		b.Root = testutil.DebianRoot(t, im.Packages...)
		b.Layers = testutil.DebianLayers(t, im.Packages...)
		if len(im.Files) > 0 {
			b.Layers = append(b.Layers, filesLayer(t, im.Files))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", im.Name, err)
	}
	if b.Files, b.Content, err = treeSize(b.Root); err != nil {
		return nil, fmt.Errorf("image %s: %w", im.Name, err)
	}
	if len(im.Files) > 0 {
		b.Extra = filepath.Join(workDir, "files-"+im.Name)
		if err := writeFiles(b.Extra, im.Files); err != nil {
			return nil, fmt.Errorf("image %s: %w", im.Name, err)
		}
		for _, c := range im.Files {
			b.Files++
			b.Content += int64(len(c))
		}
	}
	b.Config = v1.Config{Env: append([]string{imagePath}, im.Env...), Cmd: []string{"bash"}}
	return b, nil
}

// filesLayer returns files as a gzip layer (held in memory: they are small).
func filesLayer(t testing.TB, files map[string]string) testutil.Layer {
	var fs []testutil.File
	for _, p := range slices.Sorted(maps.Keys(files)) {
		fs = append(fs, testutil.File{Path: strings.TrimPrefix(p, "/"), Data: []byte(files[p])})
	}
	tarball := testutil.Tar(t, fs)
	blob := testutil.Gzip(t, tarball, gzip.DefaultCompression)
	return testutil.Layer{Blob: blob, MediaType: types.OCILayer, Digest: digest.FromBytes(blob), Size: int64(len(blob)),
		DiffID: digest.FromBytes(tarball)}
}

// writeFiles writes files into a new tree at dir, as filesLayer has them.
func writeFiles(dir string, files map[string]string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for p, c := range files {
		full := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+p)))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(full, testutil.DefaultModTime, testutil.DefaultModTime); err != nil {
			return err
		}
	}
	return nil
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
