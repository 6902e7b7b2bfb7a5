package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeTB records failures instead of failing the real test. Fatalf and
// Skip end the goroutine, so run the code under test with runFake.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	errs    []string
	fatal   bool
	skipped bool
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	f.mu.Lock()
	f.fatal = true
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = true
	f.errs = append(f.errs, fmt.Sprint(args...))
	f.mu.Unlock()
	runtime.Goexit()
}

// runFake runs fn with a fakeTB wrapping t and returns it once fn ended.
func runFake(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, mknod, trusted xattrs)")
	}
}

// describe lists a tree one line per path, sorted, for comparing with
// hand-written expectations:
//
//	path type mode uid:gid mtime-seconds[.nanos] [content "…" | -> target | dev M:m] [nlink N] [xattr k=v…]
func describe(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		typ := map[uint32]string{unix.S_IFDIR: "dir", unix.S_IFREG: "file", unix.S_IFLNK: "symlink",
			unix.S_IFCHR: "char", unix.S_IFBLK: "block", unix.S_IFIFO: "fifo"}[st.Mode&unix.S_IFMT]
		line := fmt.Sprintf("%s %s %04o %d:%d %d", rel, typ, st.Mode&0o7777, st.Uid, st.Gid, st.Mtim.Sec)
		if typ == "symlink" {
			line = fmt.Sprintf("%s %s %d:%d %d", rel, typ, st.Uid, st.Gid, st.Mtim.Sec)
		}
		if st.Mtim.Nsec != 0 {
			line += fmt.Sprintf(".%09d", st.Mtim.Nsec)
		}
		switch typ {
		case "file":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %q", b)
			if st.Nlink > 1 {
				line += fmt.Sprintf(" nlink %d", st.Nlink)
			}
		case "symlink":
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		case "char", "block":
			line += fmt.Sprintf(" dev %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		xa, err := lxattrs(p)
		if err != nil {
			return err
		}
		var ks []string
		for k, v := range xa {
			ks = append(ks, k+"="+v)
		}
		sort.Strings(ks)
		for _, k := range ks {
			line += " xattr " + k
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatalf("describe(%s): %v", root, err)
	}
	return out
}

// diffLines reports the lines only in want and only in got.
func diffLines(want, got []string) string {
	in := func(a []string) map[string]bool {
		m := map[string]bool{}
		for _, s := range a {
			m[s] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, s := range want {
		if !g[s] {
			b.WriteString("\n- " + s)
		}
	}
	for _, s := range got {
		if !w[s] {
			b.WriteString("\n+ " + s)
		}
	}
	return b.String()
}
