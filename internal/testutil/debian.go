package testutil

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Debian roots and layers made from Debian's packages, for tests and
// benchmarks that need a real distribution image: apt, dpkg, python3, ….
// Building them takes a minute, so they are kept in a cache directory that
// outlives the test process.

const (
	// DebianSuite is the release DebianRoot bootstraps.
	DebianSuite = "bookworm"
	// DebianRequireEnv turns the skips of DebianRoot and DebianLayers (not
	// root, no debootstrap, no apt source for DebianSuite, mirror
	// unreachable) into failures when it is "1".
	DebianRequireEnv = "LAZYFS_REQUIRE_DEBIAN"
	// DebianMirrorEnv overrides the mirror, which is otherwise the first
	// enabled apt source (sources.list, sources.list.d/*.list and
	// deb822 *.sources) that carries DebianSuite's main component.
	DebianMirrorEnv = "LAZYFS_DEBIAN_MIRROR"
	// TestCacheEnv names the directory that keeps built roots and layers
	// between test runs; DefaultTestCache when unset.
	TestCacheEnv = "LAZYFS_TEST_CACHE"
	// DefaultTestCache is the cache directory when TestCacheEnv is unset.
	DefaultTestCache = "/var/cache/lazyfs-test"
)

// debianRecipe names the way roots and layers are built. Change it when
// that changes, so that entries built the old way are not used.
const debianRecipe = "lazyfs-debian-1"

// debianMirrorTimeout bounds the check that the mirror answers.
const debianMirrorTimeout = 20 * time.Second

// DebianRoot returns the root directory of a minimal Debian DebianSuite for
// the machine's architecture, built with `debootstrap --variant=minbase`
// from the machine's apt mirror, with extraPackages (if any) installed on
// top by `apt-get install --no-install-recommends` in a copy of that base
// root. The root is shared by every test and later runs: treat it as
// read-only (copy it, or use it as an overlayfs lower directory).
//
// Roots are cached under TestCacheEnv (default /var/cache/lazyfs-test) as
// debian-SUITE-ARCH-HASH, HASH covering the suite, the architecture, the
// sorted package names and the build recipe; a JSON file of the same name
// says what is in it, from which mirror, and how long it took. The first call
// builds (about 30 s for the base on a fast mirror, seconds more per package
// set); later calls, in any process, only stat the directory. Builds hold a
// file lock, so parallel test processes build an entry once, and are renamed
// into place when complete, so a killed build leaves nothing that is used.
// debootstrap and apt run in their own mount and PID namespaces: the mounts
// they need (proc, sys, dev) and any daemon a package starts end with them.
// Package scripts may not start services (policy-rc.d).
//
// Roots are cleaned as image builders do: no apt lists or .deb files, no
// /etc/hostname or /etc/resolv.conf, an empty /dev.
//
// Building needs root, debootstrap (scripts/install-deps.sh installs it) and
// the mirror; without them the test is skipped, or fails when
// LAZYFS_REQUIRE_DEBIAN=1. A cached root is returned without them.
func DebianRoot(t testing.TB, extraPackages ...string) string {
	t.Helper()
	s := newDebianSpec(t, extraPackages)
	dir := debianCacheDir(t)
	final := filepath.Join(dir, s.name())
	if _, err := os.Stat(final); err == nil {
		return final
	}
	if len(s.packages) > 0 {
		// The base first: its own cache entry, shared by every package set.
		DebianRoot(t)
	}
	b := newDebianBuilder(t)
	start := time.Now()
	built, err := cacheEntry(t.Logf, final, func(tmp string) error {
		if len(s.packages) == 0 {
			return b.bootstrap(t.Context(), s, tmp)
		}
		return b.install(t.Context(), filepath.Join(dir, s.base().name()), tmp, s.packages)
	})
	if err != nil {
		t.Fatalf("DebianRoot(%s): %v", strings.Join(s.packages, " "), err)
	}
	if built {
		took := time.Since(start)
		info := debianInfo{Suite: s.suite, Arch: s.arch, Recipe: debianRecipe, Mirror: b.mirror,
			Packages: s.packages, Built: start.UTC(), BuildSeconds: took.Seconds()}
		if err := writeJSONFile(final+".json", info); err != nil {
			t.Fatalf("DebianRoot: %v", err)
		}
		t.Logf("DebianRoot(%s): built %s from %s in %v", strings.Join(s.packages, " "), final, b.mirror, took.Round(100*time.Millisecond))
	}
	return final
}

// DebianLayers returns the layers of a Debian image with packages: layer 0
// is the base root of DebianRoot as one gzip layer (real mtimes, as
// WriteLayerDir archives a tree), and, when packages are given, layer 1 holds
// what installing them changed (see WriteLayerDiff) between DebianRoot(t)
// and DebianRoot(t, packages...). Every image made this way shares layer 0:
// the same cached file, so the same blob digest, on every call and in every
// process. Layer files and their digests are cached beside the roots
// (NAME.layer/ and NAME.diff/), so later calls read no layer bytes. Path,
// MediaType, Digest, Size and DiffID are set; the files are shared and must
// not be modified.
func DebianLayers(t testing.TB, packages ...string) []Layer {
	t.Helper()
	s := newDebianSpec(t, packages)
	dir := debianCacheDir(t)
	baseName := s.base().name()
	baseRoot := DebianRoot(t)
	out := []Layer{cachedLayer(t, filepath.Join(dir, baseName+".layer"), func(tmp string) (layerRecord, error) {
		var rec layerRecord
		l, err := writeLayer(tmp, types.OCILayer, func(w io.Writer) error {
			cw := &countWriter{w: w}
			err := writeTarDir(cw, baseRoot)
			rec.TarSize = cw.n
			return err
		})
		rec.set(l)
		return rec, err
	})}
	if len(s.packages) == 0 {
		return out
	}
	root := DebianRoot(t, s.packages...)
	out = append(out, cachedLayer(t, filepath.Join(dir, s.name()+".diff"), func(tmp string) (layerRecord, error) {
		l, st, err := writeDiffLayer(baseRoot, root, tmp, types.OCILayer)
		rec := layerRecord{TarSize: st.tarSize, Changed: st.changed, Removed: st.removed}
		rec.set(l)
		return rec, err
	}))
	return out
}

// WriteLayerDiff writes the layer that turns the tree base into the tree
// extra, compressed as mt says, into a file under t.TempDir. It holds every
// path of extra that base lacks or that differs from base's in type,
// permission bits, owner, mtime, size, content, link target, device number
// or xattrs, with its parent directories (as extra has them), and a whiteout
// (DIR/.wh.NAME) for every path of base that extra lacks (not repeated below
// it). Paths are archived as TarDir archives them. A directory replaced by a
// non-directory is left to the new entry to replace; no opaque whiteouts are
// written. extra is normally a copy of base (cp -a) that was then changed.
func WriteLayerDiff(t testing.TB, base, extra string, mt types.MediaType) Layer {
	t.Helper()
	l, _, err := writeDiffLayer(base, extra, t.TempDir(), mt)
	if err != nil {
		t.Fatalf("WriteLayerDiff(%s, %s): %v", base, extra, err)
	}
	return l
}

// debianSpec is what a cached root is made of.
type debianSpec struct {
	suite, arch string
	packages    []string // sorted, unique
}

var debianPackageRe = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

func newDebianSpec(t testing.TB, packages []string) debianSpec {
	t.Helper()
	s := debianSpec{suite: DebianSuite, arch: debianArch(), packages: append([]string{}, packages...)}
	for _, p := range s.packages {
		if !debianPackageRe.MatchString(p) {
			t.Fatalf("Debian package %q: not a package name", p)
		}
	}
	slices.Sort(s.packages)
	s.packages = slices.Compact(s.packages)
	return s
}

func (s debianSpec) base() debianSpec { return debianSpec{suite: s.suite, arch: s.arch} }

// name is the cache entry's file name.
func (s debianSpec) name() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\nminbase\n%s\n", debianRecipe, s.suite, s.arch, strings.Join(s.packages, " "))
	return fmt.Sprintf("debian-%s-%s-%x", s.suite, s.arch, h.Sum(nil)[:6])
}

// debianArch is Debian's name for the machine's architecture.
func debianArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	}
	return runtime.GOARCH // amd64, arm64, riscv64, s390x, mips64le
}

// debianInfo is the JSON file beside a root.
type debianInfo struct {
	Suite        string    `json:"suite"`
	Arch         string    `json:"arch"`
	Recipe       string    `json:"recipe"`
	Mirror       string    `json:"mirror"`
	Packages     []string  `json:"packages"`
	Built        time.Time `json:"built"`
	BuildSeconds float64   `json:"buildSeconds"`
}

func debianCacheDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(TestCacheEnv)
	if dir == "" {
		dir = DefaultTestCache
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		debianSkipOrFail(t, "Debian roots: cache directory: %v (set %s)", err, TestCacheEnv)
	}
	return dir
}

// debianSkipOrFail skips t with the reason, or fails it when
// DebianRequireEnv is "1".
func debianSkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(DebianRequireEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, DebianRequireEnv)
	}
	t.Skip(msg)
}

// debianBuilder runs the programs that build roots.
type debianBuilder struct {
	mirror string
	tools  map[string]string // name → path
}

// newDebianBuilder finds the programs and the mirror, and checks that the
// mirror answers; it skips (or fails) t when something is missing.
func newDebianBuilder(t testing.TB) *debianBuilder {
	t.Helper()
	if os.Geteuid() != 0 {
		debianSkipOrFail(t, "Debian roots: building one needs root (debootstrap, chroot)")
	}
	b := &debianBuilder{tools: map[string]string{}}
	for _, name := range []string{"debootstrap", "unshare", "chroot", "cp"} {
		p, err := exec.LookPath(name)
		if err != nil {
			// Test environments often lack the sbin directories in PATH.
			for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					p = filepath.Join(dir, name)
					break
				}
			}
		}
		if p == "" {
			debianSkipOrFail(t, "Debian roots: %s not installed (apt-get install debootstrap, or scripts/install-deps.sh)", name)
		}
		b.tools[name] = p
	}
	b.mirror = os.Getenv(DebianMirrorEnv)
	if b.mirror == "" {
		mirrors, err := aptMirrors("/etc/apt", DebianSuite)
		if err != nil {
			debianSkipOrFail(t, "Debian roots: read apt sources: %v", err)
		}
		if len(mirrors) == 0 {
			debianSkipOrFail(t, "Debian roots: no enabled apt source in /etc/apt carries %s main (set %s)", DebianSuite, DebianMirrorEnv)
		}
		b.mirror = mirrors[0]
	}
	if err := probeMirror(t.Context(), b.mirror, DebianSuite); err != nil {
		debianSkipOrFail(t, "Debian roots: mirror unreachable: %v", err)
	}
	return b
}

// probeMirror checks that mirror serves the suite's Release file.
func probeMirror(ctx context.Context, mirror, suite string) error {
	u := strings.TrimSuffix(mirror, "/") + "/dists/" + suite + "/Release"
	if p, ok := strings.CutPrefix(u, "file://"); ok {
		_, err := os.Stat(p)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, debianMirrorTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment} // as wget and apt: proxies from the environment
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	msg := readErrBody(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, msg)
	}
	return nil
}

// env is the environment of debootstrap and apt: a fixed PATH and locale,
// no prompts, and the machine's proxy settings.
func (b *debianBuilder) env() []string {
	env := []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root",
		"LC_ALL=C",
		"DEBIAN_FRONTEND=noninteractive",
		"DEBCONF_NONINTERACTIVE_SEEN=true",
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "no_proxy", "ftp_proxy":
			env = append(env, kv)
		}
	}
	return env
}

// isolated returns a command that runs argv in new mount and PID
// namespaces (unshare): mounts made inside vanish when it ends, even when it
// is killed, and so does every process it started. It is killed when ctx
// ends or the test process dies. unshareArgs come before argv.
func (b *debianBuilder) isolated(ctx context.Context, unshareArgs []string, argv ...string) *exec.Cmd {
	args := []string{"--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"}
	args = append(append(append(args, unshareArgs...), "--"), argv...)
	cmd := exec.CommandContext(ctx, b.tools["unshare"], args...)
	cmd.Env = b.env()
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	return cmd
}

// runLogged runs cmd and returns an error with the end of its output.
func runLogged(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := out.Bytes()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, tail)
	}
	return nil
}

// bootstrap builds the base root of s at tmp.
func (b *debianBuilder) bootstrap(ctx context.Context, s debianSpec, tmp string) error {
	cmd := b.isolated(ctx, nil, b.tools["debootstrap"], "--variant=minbase", "--arch="+s.arch, s.suite, tmp, b.mirror)
	if err := runLogged(cmd); err != nil {
		return err
	}
	return cleanDebianRoot(tmp)
}

// installScript runs in the chroot with the packages as arguments.
const installScript = `apt-get -q update
apt-get -q -y install --no-install-recommends "$@"
apt-get clean`

// mountScript runs outside the chroot, in the namespaces of isolated: $1
// is the root, the rest the command to run in it.
const mountScript = `root=$1; shift
mount --rbind /dev "$root/dev"
if [ -e /etc/resolv.conf ]; then mount --bind /etc/resolv.conf "$root/etc/resolv.conf"; fi
exec chroot "$root" "$@"`

// install copies the root base to tmp and installs packages in the copy.
func (b *debianBuilder) install(ctx context.Context, base, tmp string, packages []string) error {
	if err := runLogged(exec.CommandContext(ctx, b.tools["cp"], "-a", "--reflink=auto", base, tmp)); err != nil {
		return err
	}
	policy := filepath.Join(tmp, "usr/sbin/policy-rc.d")
	if err := os.WriteFile(policy, []byte("#!/bin/sh\n# lazyfs testutil: no services while building\nexit 101\n"), 0o755); err != nil {
		return err
	}
	// A mount point for the machine's resolv.conf; cleanDebianRoot removes it.
	if err := os.WriteFile(filepath.Join(tmp, "etc/resolv.conf"), nil, 0o644); err != nil {
		return err
	}
	argv := append([]string{"/bin/sh", "-ec", mountScript, "sh", tmp, "/bin/sh", "-ec", installScript, "sh"}, packages...)
	if err := runLogged(b.isolated(ctx, []string{"--mount-proc=" + filepath.Join(tmp, "proc")}, argv...)); err != nil {
		return err
	}
	if err := os.Remove(policy); err != nil {
		return err
	}
	return cleanDebianRoot(tmp)
}

// cleanDebianRoot removes from a built root what image builders remove:
// downloaded packages and lists, apt's binary caches, the machine's
// hostname and resolver configuration, and device nodes.
func cleanDebianRoot(root string) error {
	var remove []string
	for _, pattern := range []string{
		"var/cache/apt/*.bin",
		"var/cache/apt/archives/*.deb",
		"var/cache/apt/archives/partial/*",
		"var/lib/apt/lists/*",
		"dev/*",
	} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return err
		}
		remove = append(remove, m...)
	}
	remove = append(remove, filepath.Join(root, "etc/hostname"), filepath.Join(root, "etc/resolv.conf"))
	for _, p := range remove {
		if n := filepath.Base(p); n == "lock" || n == "partial" {
			continue // apt's own, in every image
		}
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return nil
}

// cacheEntry makes sure the file or directory final exists. If it does
// not, it takes final's lock (final+".lock", flock, blocking), checks
// again, removes what killed builds left (final+".tmp-*"), has build create
// a fresh path beside final and renames that to final. It returns whether
// build ran. logf hears when it waits for another process's build.
func cacheEntry(logf func(string, ...any), final string, build func(tmp string) error) (bool, error) {
	if _, err := os.Lstat(final); err == nil {
		return false, nil
	}
	lf, err := os.OpenFile(final+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, err
	}
	defer lf.Close() // unlocks
	if err := flock(lf, unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		logf("waiting for another build of %s", final)
		start := time.Now()
		err = flock(lf, unix.LOCK_EX)
		logf("waited %v for %s", time.Since(start).Round(time.Millisecond), final)
		if err != nil {
			return false, err
		}
	} else if err != nil {
		return false, err
	}
	if _, err := os.Lstat(final); err == nil {
		return false, nil // built while we waited
	}
	stale, err := filepath.Glob(final + ".tmp-*")
	if err != nil {
		return false, err
	}
	for _, p := range stale {
		if err := removeUnmounted(p); err != nil {
			return false, fmt.Errorf("remove a killed build: %w", err)
		}
	}
	tmp := final + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := build(tmp); err != nil {
		return true, err
	}
	return true, os.Rename(tmp, final)
}

func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// removeUnmounted removes p and everything below it, unless something is
// mounted there: RemoveAll would then delete the mounted files.
func removeUnmounted(p string) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return err
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(mi)) {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == abs || strings.HasPrefix(f[4], abs+"/")) {
			return fmt.Errorf("%s is mounted: unmount it, then remove %s", f[4], abs)
		}
	}
	return os.RemoveAll(abs)
}

// layerRecord is layer.json in a cached layer directory.
type layerRecord struct {
	MediaType types.MediaType `json:"mediaType"`
	Digest    string          `json:"digest"`
	Size      int64           `json:"size"`
	DiffID    string          `json:"diffID"`
	TarSize   int64           `json:"tarSize"`
	Changed   int             `json:"changed,omitempty"` // diff layers: paths added or changed
	Removed   int             `json:"removed,omitempty"` // diff layers: whiteouts
}

func (r *layerRecord) set(l Layer) {
	r.MediaType, r.Digest, r.Size, r.DiffID = l.MediaType, l.Digest.String(), l.Size, l.DiffID.String()
}

// cachedLayer returns the layer cached in the directory final
// (layer.tar.gz and layer.json), made by write (into a file under the
// temporary directory it is given) if it is not there yet.
func cachedLayer(t testing.TB, final string, write func(tmp string) (layerRecord, error)) Layer {
	t.Helper()
	start := time.Now()
	built, err := cacheEntry(t.Logf, final, func(tmp string) error {
		if err := os.Mkdir(tmp, 0o755); err != nil {
			return err
		}
		rec, err := write(tmp)
		if err != nil {
			return err
		}
		// write's file is the only one besides what it may have cleaned up.
		m, err := filepath.Glob(filepath.Join(tmp, "layer-*"))
		if err != nil || len(m) != 1 {
			return fmt.Errorf("layer files written: %v, %v", m, err)
		}
		if err := os.Rename(m[0], filepath.Join(tmp, "layer.tar.gz")); err != nil {
			return err
		}
		return writeJSONFile(filepath.Join(tmp, "layer.json"), rec)
	})
	if err != nil {
		t.Fatalf("Debian layer %s: %v", final, err)
	}
	b, err := os.ReadFile(filepath.Join(final, "layer.json"))
	if err != nil {
		t.Fatalf("Debian layer: %v", err)
	}
	var rec layerRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("Debian layer %s/layer.json: %v (remove %s)", final, err, final)
	}
	l := Layer{Path: filepath.Join(final, "layer.tar.gz"), MediaType: rec.MediaType, Size: rec.Size}
	if l.Digest, err = digest.Parse(rec.Digest); err == nil {
		l.DiffID, err = digest.Parse(rec.DiffID)
	}
	if err != nil {
		t.Fatalf("Debian layer %s/layer.json: %v (remove %s)", final, err, final)
	}
	if fi, err := os.Stat(l.Path); err != nil || fi.Size() != l.Size {
		t.Fatalf("Debian layer %s: %v, want %d bytes (remove %s)", l.Path, err, l.Size, final)
	}
	if built {
		t.Logf("Debian layer %s: %s, %.1f MB gzip of a %.1f MB tar, %d changed and %d removed paths, built in %v",
			filepath.Base(final), l.Digest, float64(l.Size)/1e6, float64(rec.TarSize)/1e6, rec.Changed, rec.Removed,
			time.Since(start).Round(100*time.Millisecond))
	}
	return l
}

// writeJSONFile writes v as JSON to a temporary file beside p and renames
// it to p.
func writeJSONFile(p string, v any) error {
	b, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		return err
	}
	tmp := p + ".tmp-" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// aptMirrors returns the URIs of the enabled binary ("deb") apt sources
// under etcApt (normally /etc/apt) that carry suite with component main, in
// the order apt reads them: sources.list, then sources.list.d/*.list and
// *.sources (deb822) in lexical order of file name.
func aptMirrors(etcApt, suite string) ([]string, error) {
	files := []string{filepath.Join(etcApt, "sources.list")}
	ents, err := os.ReadDir(filepath.Join(etcApt, "sources.list.d"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents { // ReadDir sorts by name
		if n := e.Name(); strings.HasSuffix(n, ".list") || strings.HasSuffix(n, ".sources") {
			files = append(files, filepath.Join(etcApt, "sources.list.d", n))
		}
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822Sources(string(b))
		} else {
			srcs = parseOneLineSources(string(b))
		}
		for _, s := range srcs {
			if s.enabled && slices.Contains(s.types, "deb") && slices.Contains(s.suites, suite) && slices.Contains(s.components, "main") {
				for _, u := range s.uris {
					if !slices.Contains(out, u) {
						out = append(out, u)
					}
				}
			}
		}
	}
	return out, nil
}

type aptSource struct {
	enabled                         bool
	types, uris, suites, components []string
}

// parseOneLineSources parses the one-line format of sources.list:
// "deb [ options ] uri suite component...", # comments.
func parseOneLineSources(text string) []aptSource {
	var out []aptSource
	for line := range strings.Lines(text) {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		i := 1
		if strings.HasPrefix(f[1], "[") {
			for i < len(f) && !strings.HasSuffix(f[i], "]") {
				i++
			}
			i++
		}
		if len(f) < i+2 {
			continue
		}
		out = append(out, aptSource{enabled: true, types: f[:1], uris: f[i : i+1], suites: f[i+1 : i+2], components: f[i+2:]})
	}
	return out
}

// parseDeb822Sources parses deb822 .sources stanzas (Types, URIs, Suites,
// Components, Enabled; field names case-insensitive; continuation lines
// start with a space or tab; lines starting with # are comments).
func parseDeb822Sources(text string) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	last := ""
	flush := func() {
		if len(fields) > 0 {
			out = append(out, aptSource{
				enabled:    !strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no"),
				types:      strings.Fields(fields["types"]),
				uris:       strings.Fields(fields["uris"]),
				suites:     strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]),
			})
		}
		fields, last = map[string]string{}, ""
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}

// diffStats counts what writeDiffLayer wrote.
type diffStats struct {
	changed, removed int
	tarSize          int64
}

// writeDiffLayer writes the layer WriteLayerDiff describes into a new file
// under tmp. It lays the layer out first as a tree under tmp (hard links
// to extra's files, copies of its directories, symlinks and devices, empty
// whiteout files) and archives that with writeTarDir; so tmp must be on
// extra's file system.
func writeDiffLayer(base, extra, tmp string, mt types.MediaType) (Layer, diffStats, error) {
	changed, removed, err := treeChanges(base, extra)
	if err != nil {
		return Layer{}, diffStats{}, err
	}
	tree, err := os.MkdirTemp(tmp, "diff-")
	if err != nil {
		return Layer{}, diffStats{}, err
	}
	defer os.RemoveAll(tree)
	if err := makeDiffTree(extra, tree, changed, removed); err != nil {
		return Layer{}, diffStats{}, err
	}
	st := diffStats{changed: len(changed), removed: len(removed)}
	l, err := writeLayer(tmp, mt, func(w io.Writer) error {
		cw := &countWriter{w: w}
		err := writeTarDir(cw, tree)
		st.tarSize = cw.n
		return err
	})
	return l, st, err
}

// treeChanges returns, in lexical order, the slash-separated relative
// paths of extra that base lacks or that differ from base's (see
// WriteLayerDiff), and the paths of base that extra lacks (not those below
// a removed directory, nor those below a directory that extra replaced by a
// non-directory).
func treeChanges(base, extra string) (changed, removed []string, err error) {
	err = filepath.WalkDir(extra, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == extra {
			return err
		}
		rel, err := filepath.Rel(extra, p)
		if err != nil {
			return err
		}
		var es, bs unix.Stat_t
		if err := unix.Lstat(p, &es); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		bp := filepath.Join(base, rel)
		switch err := unix.Lstat(bp, &bs); {
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			changed = append(changed, filepath.ToSlash(rel))
			return nil
		case err != nil:
			return &os.PathError{Op: "lstat", Path: bp, Err: err}
		}
		same, err := sameNode(bp, p, &bs, &es)
		if err != nil {
			return err
		}
		if !same {
			changed = append(changed, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == base {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		ep := filepath.Join(extra, rel)
		var es unix.Stat_t
		switch err := unix.Lstat(ep, &es); {
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			removed = append(removed, filepath.ToSlash(rel))
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		case err != nil:
			return &os.PathError{Op: "lstat", Path: ep, Err: err}
		}
		if d.IsDir() && es.Mode&unix.S_IFMT != unix.S_IFDIR {
			return filepath.SkipDir // the non-directory replaces it
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return changed, removed, nil
}

// sameNode reports whether the paths bp and ep, whose lstat results are bs
// and es, hold the same entry (see WriteLayerDiff).
func sameNode(bp, ep string, bs, es *unix.Stat_t) (bool, error) {
	if bs.Mode != es.Mode || bs.Uid != es.Uid || bs.Gid != es.Gid || bs.Mtim != es.Mtim {
		return false, nil
	}
	switch es.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if bs.Size != es.Size {
			return false, nil
		}
		if same, err := sameContent(bp, ep); err != nil || !same {
			return false, err
		}
	case unix.S_IFLNK:
		bl, err := os.Readlink(bp)
		if err != nil {
			return false, err
		}
		el, err := os.Readlink(ep)
		if err != nil || bl != el {
			return false, err
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if bs.Rdev != es.Rdev {
			return false, nil
		}
	}
	bx, err := lxattrs(bp)
	if err != nil {
		return false, err
	}
	ex, err := lxattrs(ep)
	if err != nil {
		return false, err
	}
	return maps.Equal(bx, ex), nil
}

// sameContent reports whether the files a and b hold the same bytes.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		doneA := errors.Is(erra, io.EOF) || errors.Is(erra, io.ErrUnexpectedEOF)
		doneB := errors.Is(errb, io.EOF) || errors.Is(errb, io.ErrUnexpectedEOF)
		switch {
		case erra != nil && !doneA:
			return false, erra
		case errb != nil && !doneB:
			return false, errb
		case doneA || doneB:
			return doneA == doneB, nil
		}
	}
}

// makeDiffTree lays out under dst the changed paths of extra (see
// treeChanges) with their parent directories, and an empty DIR/.wh.NAME for
// each removed path. Regular files are hard links to extra's; directories,
// symlinks, devices and fifos are made anew with extra's owner, mode,
// xattrs and times. Whiteouts get their directory's mtime.
func makeDiffTree(extra, dst string, changed, removed []string) error {
	made := map[string]bool{".": true}
	var meta []string // made paths that need extra's metadata, parents first
	var mkdirs func(rel string) error
	mkdirs = func(rel string) error {
		if made[rel] {
			return nil
		}
		if err := mkdirs(path.Dir(rel)); err != nil {
			return err
		}
		if err := os.Mkdir(filepath.Join(dst, rel), 0o700); err != nil {
			return err
		}
		made[rel] = true
		meta = append(meta, rel)
		return nil
	}
	for _, rel := range changed {
		if err := mkdirs(path.Dir(rel)); err != nil {
			return err
		}
		src, p := filepath.Join(extra, rel), filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(src, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: src, Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := mkdirs(rel); err != nil {
				return err
			}
			continue
		case unix.S_IFREG:
			if err := os.Link(src, p); err != nil {
				return err
			}
			continue
		case unix.S_IFLNK:
			target, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
			if err := unix.Mknod(p, st.Mode, int(st.Rdev)); err != nil {
				return &os.PathError{Op: "mknod", Path: p, Err: err}
			}
		default:
			continue // a socket: not archived
		}
		meta = append(meta, rel)
	}
	for _, rel := range removed {
		dir := path.Dir(rel)
		if err := mkdirs(dir); err != nil {
			return err
		}
		wh := filepath.Join(dst, dir, ".wh."+path.Base(rel))
		if err := os.WriteFile(wh, nil, 0o644); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(extra, dir), &st); err != nil {
			return err
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, wh, []unix.Timespec{st.Mtim, st.Mtim}, 0); err != nil {
			return &os.PathError{Op: "utimes", Path: wh, Err: err}
		}
	}
	// Metadata last, so that adding entries does not change a directory's
	// mtime after it was set.
	for _, rel := range slices.Backward(meta) {
		if err := copyMeta(filepath.Join(extra, rel), filepath.Join(dst, rel)); err != nil {
			return err
		}
	}
	return nil
}

// copyMeta gives dst the owner, permission bits, xattrs and times of src
// (not following symlinks).
func copyMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: src, Err: err}
	}
	if err := unix.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return &os.PathError{Op: "lchown", Path: dst, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Fchmodat(unix.AT_FDCWD, dst, st.Mode&0o7777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	xa, err := lxattrs(src)
	if err != nil {
		return err
	}
	for k, v := range xa {
		if err := unix.Lsetxattr(dst, k, []byte(v), 0); err != nil {
			return &os.PathError{Op: "lsetxattr " + k, Path: dst, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: dst, Err: err}
	}
	return nil
}
