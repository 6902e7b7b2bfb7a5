package fsops

import (
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSymlinks is how many symlinks one path walk follows before ELOOP,
// as in Linux.
const maxSymlinks = 40

// maxRemembered is how many removed paths the model keeps as candidates
// for re-creation.
const maxRemembered = 64

// inode is what hard links share.
type inode struct {
	size int64 // of a regular file
}

// node is one name in the model.
type node struct {
	typ    uint32 // unix.S_IFMT bits
	target string // of a symlink
	ino    *inode // shared by hard links; nil for directories
	lower  bool   // the name was there before the first operation
}

// model is the Generator's picture of the namespace: paths and types, no
// content or metadata. It is updated with the effects of the operations
// that succeeded, so it stays close to the real tree and most generated
// operations are meaningful.
type model struct {
	nodes   map[string]*node // by clean relative path; "." is the root
	keys    []string         // sorted keys of nodes but "."; nil when stale
	removed []string         // recently removed or renamed-away paths, oldest first
}

func newModel(start []Entry) *model {
	m := &model{nodes: map[string]*node{".": {typ: unix.S_IFDIR, lower: true}}}
	inodes := map[uint64]*inode{}
	for _, e := range start {
		p := path.Clean(e.Path)
		if p == "." {
			continue
		}
		n := &node{typ: e.Mode & unix.S_IFMT, target: e.Target, lower: true}
		if n.typ != unix.S_IFDIR {
			if inodes[e.ID] == nil {
				inodes[e.ID] = &inode{size: e.Size}
			}
			n.ino = inodes[e.ID]
		}
		m.nodes[p] = n
	}
	return m
}

// paths returns the model's paths but the root, sorted. The slice is
// shared.
func (m *model) paths() []string {
	if m.keys == nil {
		m.keys = make([]string, 0, len(m.nodes))
		for p := range m.nodes {
			if p != "." {
				m.keys = append(m.keys, p)
			}
		}
		slices.Sort(m.keys)
	}
	return m.keys
}

// below returns the paths strictly below dir, sorted.
func (m *model) below(dir string) []string {
	keys := m.paths()
	if dir == "." {
		return keys
	}
	lo, _ := slices.BinarySearch(keys, dir+"/")
	hi, _ := slices.BinarySearch(keys, dir+"0") // '0' follows '/'
	return keys[lo:hi]
}

func (m *model) hasChildren(dir string) bool { return len(m.below(dir)) > 0 }

func (m *model) add(p string, n *node) {
	m.nodes[p] = n
	m.keys = nil
}

// remove drops p and everything below it.
func (m *model) remove(p string) {
	for _, q := range slices.Clone(m.below(p)) {
		delete(m.nodes, q)
	}
	delete(m.nodes, p)
	m.keys = nil
	m.remember(p)
}

func (m *model) remember(p string) {
	m.removed = append(m.removed, p)
	if len(m.removed) > maxRemembered {
		m.removed = slices.Delete(m.removed, 0, len(m.removed)-maxRemembered)
	}
}

// take removes p and its subtree and returns them keyed by path relative
// to p ("" for p itself).
func (m *model) take(p string) map[string]*node {
	sub := map[string]*node{"": m.nodes[p]}
	for _, q := range slices.Clone(m.below(p)) {
		sub[strings.TrimPrefix(q, p)] = m.nodes[q]
		delete(m.nodes, q)
	}
	delete(m.nodes, p)
	m.keys = nil
	return sub
}

func (m *model) put(p string, sub map[string]*node) {
	for rel, n := range sub {
		m.nodes[p+rel] = n
	}
	m.keys = nil
}

// resolve walks p from the root as openat2(RESOLVE_IN_ROOT) would: symlinks
// are followed in every component, and in the last one only if follow; an
// absolute target starts again at the root and ".." stops at it. It returns
// the path p names (which need not exist), or an errno for a missing or
// non-directory parent or a loop.
func (m *model) resolve(p string, follow bool) (string, unix.Errno) {
	todo := strings.Split(p, "/")
	cur := "."
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		last := len(todo) == 0
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		n := m.nodes[next]
		switch {
		case n == nil && last:
			return next, 0
		case n == nil:
			return "", unix.ENOENT
		case n.typ == unix.S_IFLNK && (follow || !last):
			links++
			if links > maxSymlinks {
				return "", unix.ELOOP
			}
			if n.target == "" {
				return "", unix.ENOENT
			}
			if strings.HasPrefix(n.target, "/") {
				cur = "."
			}
			todo = append(strings.Split(n.target, "/"), todo...)
		case !last && n.typ != unix.S_IFDIR:
			return "", unix.ENOTDIR
		default:
			cur = next
		}
	}
	return cur, 0
}

// lookup resolves p and returns the node it names (nil if none).
func (m *model) lookup(p string, follow bool) (string, *node, unix.Errno) {
	q, e := m.resolve(p, follow)
	if e != 0 {
		return "", nil, e
	}
	return q, m.nodes[q], 0
}

// predict is the model's guess at op's errno, with POSIX rules and no
// knowledge of overlayfs. Generate uses it to go on without a real tree.
func (m *model) predict(op Op) unix.Errno {
	switch op.Kind {
	case Create, Mkdir, Mknod, Symlink:
		_, n, e := m.lookup(op.Path, false)
		switch {
		case e != 0:
			return e
		case n != nil:
			return unix.EEXIST
		}
	case CreateTrunc, Write, Append, Truncate:
		_, n, e := m.lookup(op.Path, true)
		switch {
		case e != 0:
			return e
		case n == nil && op.Kind == CreateTrunc:
			return 0
		case n == nil:
			return unix.ENOENT
		case n.typ == unix.S_IFDIR:
			return unix.EISDIR
		}
	case Link:
		_, o, e := m.lookup(op.Path, false)
		switch {
		case e != 0:
			return e
		case o == nil:
			return unix.ENOENT
		case o.typ == unix.S_IFDIR:
			return unix.EPERM
		}
		_, n, e := m.lookup(op.To, false)
		switch {
		case e != 0:
			return e
		case n != nil:
			return unix.EEXIST
		}
	case Unlink, Rmdir:
		p, n, e := m.lookup(op.Path, false)
		switch {
		case e != 0:
			return e
		case n == nil:
			return unix.ENOENT
		case op.Kind == Unlink && n.typ == unix.S_IFDIR:
			return unix.EISDIR
		case op.Kind == Rmdir && n.typ != unix.S_IFDIR:
			return unix.ENOTDIR
		case op.Kind == Rmdir && p == ".":
			return unix.EBUSY
		case op.Kind == Rmdir && m.hasChildren(p):
			return unix.ENOTEMPTY
		}
	case Rename:
		return m.predictRename(op)
	}
	return 0
}

func (m *model) predictRename(op Op) unix.Errno {
	o, on, e := m.lookup(op.Path, false)
	if e != 0 {
		return e
	}
	if on == nil {
		return unix.ENOENT
	}
	n, nn, e := m.lookup(op.To, false)
	if e != 0 {
		return e
	}
	if o == "." || n == "." {
		return unix.EBUSY
	}
	within := func(p, dir string) bool { return strings.HasPrefix(p, dir+"/") }
	if op.Flags&unix.RENAME_EXCHANGE != 0 {
		switch {
		case nn == nil:
			return unix.ENOENT
		case within(n, o) || within(o, n):
			return unix.EINVAL
		}
		return 0
	}
	switch {
	case o == n:
		if op.Flags&unix.RENAME_NOREPLACE != 0 {
			return unix.EEXIST
		}
		return 0
	case on.typ == unix.S_IFDIR && within(n, o):
		return unix.EINVAL
	case nn == nil:
		return 0
	case op.Flags&unix.RENAME_NOREPLACE != 0:
		return unix.EEXIST
	case on.typ == unix.S_IFDIR && nn.typ != unix.S_IFDIR:
		return unix.ENOTDIR
	case on.typ != unix.S_IFDIR && nn.typ == unix.S_IFDIR:
		return unix.EISDIR
	case nn.typ == unix.S_IFDIR && m.hasChildren(n):
		return unix.ENOTEMPTY
	}
	return 0
}

// apply records the effect of op, which succeeded.
func (m *model) apply(op Op) {
	switch op.Kind {
	case Create, CreateTrunc, Write, Append, Truncate:
		p, n, e := m.lookup(op.Path, op.Kind != Create)
		if e != 0 {
			return
		}
		if n == nil {
			if op.Kind != Create && op.Kind != CreateTrunc {
				return
			}
			n = &node{typ: unix.S_IFREG, ino: &inode{}}
			m.add(p, n)
		}
		if n.typ != unix.S_IFREG {
			return
		}
		switch op.Kind {
		case CreateTrunc:
			n.ino.size = int64(op.Len)
		case Write:
			n.ino.size = max(n.ino.size, op.Off+int64(op.Len))
		case Append:
			n.ino.size += int64(op.Len)
		case Truncate:
			n.ino.size = op.Off
		}
	case Mkdir, Mknod, Symlink:
		p, n, e := m.lookup(op.Path, false)
		if e != 0 || n != nil {
			return
		}
		switch op.Kind {
		case Mkdir:
			m.add(p, &node{typ: unix.S_IFDIR})
		case Mknod:
			m.add(p, &node{typ: op.Mode & unix.S_IFMT, ino: &inode{}})
		case Symlink:
			m.add(p, &node{typ: unix.S_IFLNK, target: op.Target, ino: &inode{size: int64(len(op.Target))}})
		}
	case Link:
		_, o, e := m.lookup(op.Path, false)
		if e != 0 || o == nil {
			return
		}
		p, n, e := m.lookup(op.To, false)
		if e != 0 || n != nil {
			return
		}
		m.add(p, &node{typ: o.typ, target: o.target, ino: o.ino})
	case Unlink, Rmdir:
		if p, n, e := m.lookup(op.Path, false); e == 0 && n != nil && p != "." {
			m.remove(p)
		}
	case Rename:
		o, on, e := m.lookup(op.Path, false)
		if e != 0 || on == nil || o == "." {
			return
		}
		n, nn, e := m.lookup(op.To, false)
		if e != 0 || n == "." || o == n {
			return
		}
		if op.Flags&unix.RENAME_EXCHANGE != 0 {
			if nn == nil {
				return
			}
			a, b := m.take(o), m.take(n)
			m.put(o, b)
			m.put(n, a)
			return
		}
		if nn != nil && nn.ino != nil && nn.ino == on.ino {
			return // two names of one inode: rename does nothing
		}
		if nn != nil {
			m.take(n)
		}
		m.put(n, m.take(o))
		m.remember(o)
	}
}
