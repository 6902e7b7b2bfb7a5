package fsops

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one path of the tree a Generator starts from.
type Entry struct {
	Path   string // slash-separated, relative to the root
	Mode   uint32 // st_mode; only the type bits are used
	Target string // of a symlink
	Size   int64  // of a regular file
	ID     uint64 // equal for the hard links of one inode
}

// ScanTree lists the tree under root, not following symlinks, for
// NewGenerator. Scan the tree the operations will start from (typically
// the merged lower layers): its paths become the Generator's "lower" ones.
func ScanTree(root string) ([]Entry, error) {
	type key struct{ dev, ino uint64 }
	ids := map[key]uint64{}
	var out []Entry
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		k := key{st.Dev, st.Ino}
		if _, ok := ids[k]; !ok {
			ids[k] = uint64(len(ids))
		}
		e := Entry{Path: filepath.ToSlash(rel), Mode: st.Mode, Size: st.Size, ID: ids[k]}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			if e.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

// pcgStream is the second PCG word: fixed, so that a seed alone names a
// sequence.
const pcgStream = 0x6c617a7966732d31 // "lazyfs-1"

// Generator produces a deterministic sequence of operations for a seed.
//
// It keeps a model of the namespace (paths, types, hard links and sizes)
// that follows the operations that succeeded, reported through Observe, so
// that most operations name paths that exist: about half of the paths it
// picks are ones the starting tree had (the lower layers: copy-up,
// whiteouts and opaque directories), recently removed paths are re-created
// often, and some paths are missing or have a non-directory parent on
// purpose. Names starting with ".wh." are never generated: they are
// ordinary names to overlayfs, but an OCI layer cannot carry them and a
// converted upper would turn them into whiteouts. Symlink targets are
// relative and stay inside the root where the link is made; Apply resolves
// every path inside the root anyway.
//
// The sequence depends only on the seed, the starting tree and the errnos
// passed to Observe. Not safe for concurrent use.
type Generator struct {
	rng   *rand.Rand
	m     *model
	names int // counter for unique names
}

// NewGenerator returns a Generator for seed over the tree start (see
// ScanTree).
func NewGenerator(seed uint64, start []Entry) *Generator {
	return &Generator{rng: rand.New(rand.NewPCG(seed, pcgStream)), m: newModel(start)}
}

// Generate returns n operations for seed, assuming each has the outcome the
// model predicts with plain POSIX rules. Check instead observes the real
// outcome on its first root, so its sequence can differ from this one
// after an operation whose outcome the model mispredicts (EXDEV from
// overlayfs, say).
func Generate(seed uint64, n int, start []Entry) []Op {
	g := NewGenerator(seed, start)
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = g.Next()
		g.Observe(ops[i], Result{Errno: g.m.predict(ops[i])})
	}
	return ops
}

// Observe tells g the outcome of op, the last one Next returned: the model
// takes in the effect of a successful operation.
func (g *Generator) Observe(op Op, r Result) {
	if r.Errno == 0 && !op.Kind.Probe() {
		g.m.apply(op)
	}
}

// weights are the relative frequencies of the kinds.
var weights = [numKinds]int{
	Create: 4, CreateTrunc: 5, Write: 9, Append: 4, Truncate: 5,
	Chmod: 4, Chown: 4, Utimens: 4, Setxattr: 5, Removexattr: 3,
	Mkdir: 6, Mknod: 3, Symlink: 4, Link: 4, Unlink: 6, Rmdir: 4, Rename: 10,
	Read: 5, Lstat: 7, Readlink: 2, Listxattr: 3, Getxattr: 2, Readdir: 4,
}

var totalWeight = func() int {
	t := 0
	for _, w := range weights {
		t += w
	}
	return t
}()

// Next returns the next operation.
func (g *Generator) Next() Op {
	r := g.rng.IntN(totalWeight)
	k := Kind(0)
	for ; r >= weights[k]; k++ {
		r -= weights[k]
	}
	op := Op{Kind: k}
	switch k {
	case Create:
		op.Path = g.choose(85, g.fresh, g.anyPath)
		op.Mode = g.perm(0o644)
	case CreateTrunc:
		op.Path = g.choose(50, g.fresh, g.filePath)
		op.Mode = g.perm(0o644)
		op.Len, op.Seed = g.length(), g.rng.Int64()
	case Write:
		op.Path = g.filePath()
		op.Off, op.Len, op.Seed = g.offset(op.Path), g.length(), g.rng.Int64()
	case Append:
		op.Path = g.filePath()
		op.Len, op.Seed = g.length(), g.rng.Int64()
	case Truncate:
		op.Path = g.filePath()
		op.Off = g.newSize(op.Path)
	case Chmod:
		op.Path = g.metaPath()
		op.Mode = g.perm(0o755)
	case Chown:
		op.Path = g.metaPath()
		op.UID, op.GID = g.id(), g.id()
	case Utimens:
		op.Path = g.metaPath()
		op.Atime, op.Mtime = g.time(), g.time()
	case Setxattr:
		op.Path = g.metaPath()
		op.Name, op.Value = g.xattrName(), g.xattrValue()
		op.Flags = []int{0, 0, 0, 0, unix.XATTR_CREATE, unix.XATTR_REPLACE}[g.rng.IntN(6)]
	case Removexattr:
		op.Path = g.metaPath()
		op.Name = g.xattrName()
	case Mkdir:
		op.Path = g.choose(85, g.fresh, g.anyPath)
		op.Mode = g.perm(0o755)
	case Mknod:
		op.Path = g.choose(90, g.fresh, g.anyPath)
		op.Mode, op.Dev = g.special()
	case Symlink:
		op.Path = g.choose(85, g.fresh, g.anyPath)
		op.Target = g.target(op.Path)
	case Link:
		op.Path = g.choose(90, g.nonDirPath, g.dirPath)
		op.To = g.choose(85, g.fresh, g.anyPath)
	case Unlink:
		op.Path = g.choose(85, g.nonDirPath, g.anyPath)
	case Rmdir:
		op.Path = g.rmdirPath()
	case Rename:
		g.rename(&op)
	case Read:
		op.Path = g.choose(85, g.filePath, g.anyPath)
	case Lstat, Listxattr:
		op.Path = g.metaPath()
	case Readlink:
		op.Path = g.choose(80, g.symlinkPath, g.anyPath)
	case Getxattr:
		op.Path = g.metaPath()
		op.Name = g.xattrName()
	case Readdir:
		op.Path = g.choose(85, g.dirOrRoot, g.anyPath)
	}
	return op
}

// choose returns a() with probability pct%, else b(); 5% of the time it
// returns a missing path instead.
func (g *Generator) choose(pct int, a, b func() string) string {
	switch r := g.rng.IntN(100); {
	case r < 5:
		return g.missing()
	case r < 5+pct*95/100:
		return a()
	}
	return b()
}

// pick returns a random existing path (not the root) for which ok holds,
// half the time among those the starting tree had; "" if there is none.
func (g *Generator) pick(ok func(p string, n *node) bool) string {
	var all, lower []string
	for _, p := range g.m.paths() {
		if n := g.m.nodes[p]; ok(p, n) {
			all = append(all, p)
			if n.lower {
				lower = append(lower, p)
			}
		}
	}
	if len(lower) > 0 && g.rng.IntN(2) == 0 {
		return lower[g.rng.IntN(len(lower))]
	}
	if len(all) == 0 {
		return ""
	}
	return all[g.rng.IntN(len(all))]
}

// pickOr is pick with fallback when nothing matches.
func (g *Generator) pickOr(ok func(string, *node) bool, fallback func() string) string {
	if p := g.pick(ok); p != "" {
		return p
	}
	return fallback()
}

func anyNode(string, *node) bool { return true }

func ofType(t uint32) func(string, *node) bool {
	return func(_ string, n *node) bool { return n.typ == t }
}

func (g *Generator) anyPath() string {
	if g.rng.IntN(40) == 0 {
		return "."
	}
	return g.pickOr(anyNode, g.missing)
}

// metaPath is the object of a metadata operation or probe: anything, the
// root now and then, sometimes through a symlinked directory.
func (g *Generator) metaPath() string {
	switch g.rng.IntN(20) {
	case 0:
		if p := g.viaSymlink(false); p != "" {
			return p
		}
	case 1:
		return g.missing()
	}
	return g.anyPath()
}

// filePath mostly names a regular file, sometimes a symlink or anything.
func (g *Generator) filePath() string {
	switch r := g.rng.IntN(100); {
	case r < 80:
		return g.pickOr(ofType(unix.S_IFREG), g.anyPath)
	case r < 88:
		return g.pickOr(ofType(unix.S_IFLNK), g.anyPath)
	case r < 92:
		if p := g.viaSymlink(false); p != "" {
			return p
		}
	case r < 96:
		return g.missing()
	}
	return g.anyPath()
}

func (g *Generator) nonDirPath() string {
	return g.pickOr(func(_ string, n *node) bool { return n.typ != unix.S_IFDIR }, g.anyPath)
}

func (g *Generator) dirPath() string { return g.pickOr(ofType(unix.S_IFDIR), g.anyPath) }

func (g *Generator) symlinkPath() string { return g.pickOr(ofType(unix.S_IFLNK), g.anyPath) }

func (g *Generator) dirOrRoot() string {
	if g.rng.IntN(8) == 0 {
		return "."
	}
	return g.pickOr(ofType(unix.S_IFDIR), func() string { return "." })
}

func (g *Generator) rmdirPath() string {
	empty := func(p string, n *node) bool { return n.typ == unix.S_IFDIR && !g.m.hasChildren(p) }
	full := func(p string, n *node) bool { return n.typ == unix.S_IFDIR && g.m.hasChildren(p) }
	switch r := g.rng.IntN(100); {
	case r < 50:
		return g.pickOr(empty, g.dirPath)
	case r < 85:
		return g.pickOr(full, g.dirPath)
	case r < 95:
		return g.nonDirPath()
	}
	return g.missing()
}

// viaSymlink names something through a symlink to a directory: an
// existing path below it, or with fresh a new name in it. It returns ""
// when the model has no such symlink.
func (g *Generator) viaSymlink(fresh bool) string {
	l := g.pick(func(p string, n *node) bool {
		if n.typ != unix.S_IFLNK {
			return false
		}
		_, t, e := g.m.lookup(p, true)
		return e == 0 && t != nil && t.typ == unix.S_IFDIR
	})
	if l == "" {
		return ""
	}
	dir, _, _ := g.m.lookup(l, true)
	if below := g.m.below(dir); len(below) > 0 && !fresh {
		return l + "/" + strings.TrimPrefix(below[g.rng.IntN(len(below))], dir+"/")
	}
	return l + "/" + g.name()
}

// fresh names something to create: a new name in an existing directory,
// often a recently removed path (over a whiteout, in overlayfs), sometimes
// through a symlinked directory.
func (g *Generator) fresh() string {
	switch r := g.rng.IntN(100); {
	case r < 30 && len(g.m.removed) > 0:
		return g.m.removed[g.rng.IntN(len(g.m.removed))]
	case r < 35:
		if p := g.viaSymlink(true); p != "" {
			return p
		}
	}
	return path.Join(g.dirOrRoot(), g.name())
}

// missing names something that does not exist, or whose parent does not
// or is not a directory.
func (g *Generator) missing() string {
	switch g.rng.IntN(3) {
	case 0:
		if f := g.pick(ofType(unix.S_IFREG)); f != "" {
			return f + "/" + g.name()
		}
	case 1:
		return "no-such-dir/" + g.name()
	}
	return path.Join(g.dirOrRoot(), "missing-"+strconv.Itoa(g.rng.IntN(1000)))
}

// namePool holds names that collide often.
var namePool = []string{"a", "b", "c", "x", "y", "file", "dir", "sub", "data", "etc", "bin", "old"}

func (g *Generator) name() string {
	switch r := g.rng.IntN(200); {
	case r < 100:
		return namePool[g.rng.IntN(len(namePool))]
	case r < 196:
		g.names++
		return "n" + strconv.Itoa(g.names)
	case r == 196:
		return "with space"
	case r == 197:
		return "ünïcödé"
	case r == 198:
		return strings.Repeat("L", 255) // the longest name
	}
	return strings.Repeat("M", 256) // ENAMETOOLONG
}

// target returns a symlink target for a link at p: relative and inside
// the root from where the link is made (a later rename may move it; Apply
// still resolves inside the root).
func (g *Generator) target(p string) string {
	dir := path.Dir(p)
	rel := func(base string, paths []string) string {
		q := paths[g.rng.IntN(len(paths))]
		if base == "." {
			return q
		}
		return strings.TrimPrefix(q, base+"/")
	}
	switch r := g.rng.IntN(100); {
	case r < 45:
		if below := g.m.below(dir); len(below) > 0 {
			return rel(dir, below)
		}
	case r < 55:
		return path.Base(p) // itself: ELOOP when followed
	case r < 70:
		if dir != "." {
			up := path.Dir(dir)
			if below := g.m.below(up); len(below) > 0 {
				return "../" + rel(up, below)
			}
		}
	}
	return g.name() // likely dangling
}

// perm returns common permissions, or random ones with setuid, setgid and
// sticky bits.
func (g *Generator) perm(common uint32) uint32 {
	if g.rng.IntN(3) == 0 {
		return common
	}
	return g.rng.Uint32N(0o10000)
}

// special returns the mode and device of a Mknod: fifos mostly, character
// and block devices with numbers no driver has here (240-254 are for local
// use), sockets, regular files, and now and then the 0/0 character device
// that is overlayfs' whiteout.
func (g *Generator) special() (uint32, uint64) {
	perm := g.rng.Uint32N(0o1000)
	dev := unix.Mkdev(240+g.rng.Uint32N(15), g.rng.Uint32N(4))
	switch r := g.rng.IntN(100); {
	case r < 50:
		return unix.S_IFIFO | perm, 0
	case r < 70:
		return unix.S_IFCHR | perm, dev
	case r < 85:
		return unix.S_IFBLK | perm, dev
	case r < 90:
		return unix.S_IFSOCK | perm, 0
	case r < 95:
		return unix.S_IFREG | perm, 0
	}
	return unix.S_IFCHR | perm, 0
}

// ids are owners to chown to: -1 (unchanged), common ones and ones no
// passwd names.
var ids = []int{-1, -1, 0, 1, 1000, 65534, 70000, 123456789}

func (g *Generator) id() int { return ids[g.rng.IntN(len(ids))] }

// time returns a timestamp for utimensat: explicit ones (from 1963 to
// 2020, with nanoseconds) mostly, so they are never "recent"; UTIME_NOW
// and UTIME_OMIT sometimes.
func (g *Generator) time() unix.Timespec {
	switch g.rng.IntN(10) {
	case 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	case 1:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	return unix.Timespec{Sec: g.rng.Int64N(1_800_000_000) - 200_000_000, Nsec: g.rng.Int64N(1e9)}
}

// offset returns where to write into the file at p: mostly inside or just
// past its end, sometimes far past it (a sparse file), rarely negative.
func (g *Generator) offset(p string) int64 {
	size := g.size(p)
	switch r := g.rng.IntN(100); {
	case r < 1:
		return -1
	case r < 15:
		return size
	case r < 22:
		return 1<<20 + g.rng.Int64N(1<<12)
	}
	return g.rng.Int64N(size + 64)
}

func (g *Generator) newSize(p string) int64 {
	size := g.size(p)
	switch r := g.rng.IntN(100); {
	case r < 2:
		return -1
	case r < 17:
		return 0
	case r < 47:
		return size / 2
	case r < 57:
		return 1<<20 + g.rng.Int64N(1<<12)
	}
	return size + g.rng.Int64N(8192)
}

// size is the model's size of the file p names, 0 if it is not one.
func (g *Generator) size(p string) int64 {
	if _, n, e := g.m.lookup(p, true); e == 0 && n != nil && n.ino != nil {
		return n.ino.size
	}
	return 0
}

func (g *Generator) length() int {
	switch r := g.rng.IntN(100); {
	case r < 5:
		return 0
	case r < 10:
		return 1 + g.rng.IntN(64<<10)
	}
	return 1 + g.rng.IntN(4096)
}

var xattrNames = []string{"user.a", "user.b", "user.c", "user.mime_type", "user.with.dots.in.it"}

func (g *Generator) xattrName() string { return xattrNames[g.rng.IntN(len(xattrNames))] }

func (g *Generator) xattrValue() string {
	switch r := g.rng.IntN(100); {
	case r < 5:
		return ""
	case r < 8:
		b := make([]byte, 1000)
		for i := range b {
			b[i] = byte(g.rng.IntN(256))
		}
		return string(b)
	}
	return "v" + strconv.Itoa(g.rng.IntN(1000))
}

// rename fills in a Rename: files and directories (lower ones half the
// time), to a new name, over a file, over an empty or non-empty directory,
// into its own subdirectory, onto itself; with RENAME_NOREPLACE or
// RENAME_EXCHANGE now and then.
func (g *Generator) rename(op *Op) {
	switch r := g.rng.IntN(100); {
	case r < 8:
		op.Flags = unix.RENAME_NOREPLACE
	case r < 16:
		op.Flags = unix.RENAME_EXCHANGE
	}
	dir := g.rng.IntN(2) == 0
	if dir {
		op.Path = g.choose(95, g.dirPath, g.anyPath)
	} else {
		op.Path = g.choose(95, g.nonDirPath, g.anyPath)
	}
	_, src, _ := g.m.lookup(op.Path, false)
	isDir := func(_ string, n *node) bool { return n.typ == unix.S_IFDIR }
	sameType := func(p string, n *node) bool { return src != nil && isDir(p, n) == isDir(p, src) }
	otherType := func(p string, n *node) bool { return src != nil && isDir(p, n) != isDir(p, src) }
	switch r := g.rng.IntN(100); {
	case r < 40:
		op.To = g.fresh()
	case r < 65:
		op.To = g.pickOr(sameType, g.fresh)
	case r < 75:
		op.To = g.pickOr(otherType, g.fresh)
	case r < 85 && dir:
		op.To = op.Path + "/" + g.name() // into itself: EINVAL
	case r < 88:
		op.To = op.Path
	default:
		op.To = g.anyPath()
	}
}
