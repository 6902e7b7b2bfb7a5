package fsops

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/testutil"
	"golang.org/x/sys/unix"
)

// Config says what Check does.
type Config struct {
	// Seed and N: N generated operations for Seed.
	Seed uint64
	N    int
	// Ops, when not nil, are applied instead of generated ones (to replay a
	// Mismatch's Ops, say).
	Ops []Op
	// Recent: mtimes at or after it were set by the clock while the
	// operations ran and are compared only as "recent". Zero means two
	// seconds before Check starts, which is right when the trees' own
	// times are older and no operation sets a time in the future.
	Recent time.Time
	// Compare tunes the comparison of the trees before and after the
	// operations. Check sets RecentSince to Recent.
	Compare testutil.CompareOptions
}

// Step numbers of a Mismatch that are not operations.
const (
	StepBefore = 0  // the trees differed before the first operation
	StepAfter  = -1 // every operation agreed, the final trees did not
)

// Mismatch is the first disagreement Check found.
type Mismatch struct {
	Seed  uint64
	Step  int // 1-based index of the operation, or StepBefore, StepAfter
	Op    Op  // the operation at Step
	Roots []string
	// Results are the roots' outcomes of Op, in the order of Roots.
	Results []Result
	// TreeDiffs are testutil.Diff's lines, for StepBefore and StepAfter,
	// from Roots[0] (want) to Roots[Other] (got).
	TreeDiffs []string
	Other     int
	// Ops are the operations applied, Op last: Config.Ops replays them.
	Ops    []Op
	Recent time.Time
}

// historyShown is how many operations before the failing one Error lists.
const historyShown = 15

func (m *Mismatch) Error() string {
	var b strings.Builder
	switch m.Step {
	case StepBefore, StepAfter:
		when := "before the first operation"
		if m.Step == StepAfter {
			when = fmt.Sprintf("after all %d operations", len(m.Ops))
		}
		fmt.Fprintf(&b, "seed %d: the trees differ %s (want %s, got %s):", m.Seed, when, m.Roots[0], m.Roots[m.Other])
		for i, d := range m.TreeDiffs {
			if i == 50 {
				fmt.Fprintf(&b, "\n\t… and %d more", len(m.TreeDiffs)-i)
				break
			}
			b.WriteString("\n\t" + d)
		}
	default:
		fmt.Fprintf(&b, "seed %d: step %d: %v:", m.Seed, m.Step, m.Op)
		for i, r := range m.Results {
			fmt.Fprintf(&b, "\n\t%s: %s", m.Roots[i], r.Format(m.Recent))
		}
	}
	if m.Step != StepBefore {
		ops := m.Ops
		if m.Step > 0 {
			ops = ops[:len(ops)-1]
		}
		first := max(0, len(ops)-historyShown)
		if first < len(ops) {
			fmt.Fprintf(&b, "\nthe last %d operations before it:", len(ops)-first)
		}
		for i := first; i < len(ops); i++ {
			fmt.Fprintf(&b, "\n\t%5d %v", i+1, ops[i])
		}
	}
	return b.String()
}

// Stats counts the outcomes on the first root, by kind and errno.
type Stats map[Kind]map[unix.Errno]int

func (s Stats) add(k Kind, e unix.Errno) {
	if s[k] == nil {
		s[k] = map[unix.Errno]int{}
	}
	s[k][e]++
}

// String lists each kind with its outcomes, most frequent first, e.g.
// "rename: ok 120, EXDEV 31, ENOENT 12".
func (s Stats) String() string {
	var lines []string
	for k := Kind(0); k < numKinds; k++ {
		if len(s[k]) == 0 {
			continue
		}
		errnos := make([]unix.Errno, 0, len(s[k]))
		for e := range s[k] {
			errnos = append(errnos, e)
		}
		slices.SortFunc(errnos, func(a, b unix.Errno) int {
			if s[k][a] != s[k][b] {
				return s[k][b] - s[k][a]
			}
			return int(a) - int(b)
		})
		parts := make([]string, len(errnos))
		for i, e := range errnos {
			parts[i] = Result{Errno: e}.String() + " " + fmt.Sprint(s[k][e])
		}
		lines = append(lines, k.String()+": "+strings.Join(parts, ", "))
	}
	return strings.Join(lines, "\n")
}

// Check applies the same operations to every root in turn and compares the
// outcomes: it returns the first step where a root's Result differs from
// the first root's (Result.Same), or a difference between the trees
// before the first or after the last operation. The trees are compared
// with testutil.Diff from roots[0], with cfg.Compare: the mtime of
// something the operations changed is only compared as "recent"; atime and
// ctime, a directory's size and link count and inode numbers are never
// compared (hard-link groups are).
//
// The operations are generated from cfg.Seed over the tree roots[0] has
// at the start, with the Generator observing the outcomes on roots[0].
//
// A nil Mismatch means every step and the final trees agreed. The error is
// for a failure of the harness itself (a root that cannot be opened or
// scanned).
func Check(cfg Config, roots ...string) (*Mismatch, Stats, error) {
	if len(roots) < 2 {
		return nil, nil, fmt.Errorf("fsops: check needs two roots or more, got %d", len(roots))
	}
	if cfg.Recent.IsZero() {
		cfg.Recent = time.Now().Add(-2 * time.Second)
	}
	cfg.Compare.RecentSince = cfg.Recent
	mismatch := &Mismatch{Seed: cfg.Seed, Roots: roots, Recent: cfg.Recent}
	if bad, diffs, err := diffTrees(roots, cfg.Compare); err != nil {
		return nil, nil, err
	} else if len(diffs) > 0 {
		mismatch.Step, mismatch.Other, mismatch.TreeDiffs = StepBefore, bad, diffs
		return mismatch, nil, nil
	}

	fds := make([]int, len(roots))
	for i, root := range roots {
		fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(fds[:i])
			return nil, nil, fmt.Errorf("fsops: open root %s: %w", root, err)
		}
		fds[i] = fd
	}
	defer closeAll(fds)

	var g *Generator
	n := len(cfg.Ops)
	if cfg.Ops == nil {
		start, err := ScanTree(roots[0])
		if err != nil {
			return nil, nil, fmt.Errorf("fsops: scan %s: %w", roots[0], err)
		}
		g, n = NewGenerator(cfg.Seed, start), cfg.N
	}
	stats := Stats{}
	results := make([]Result, len(roots))
	for step := 1; step <= n; step++ {
		var op Op
		if g != nil {
			op = g.Next()
		} else {
			op = cfg.Ops[step-1]
		}
		mismatch.Ops = append(mismatch.Ops, op)
		for i, fd := range fds {
			results[i] = apply(fd, op)
		}
		for _, r := range results[1:] {
			if !r.Same(results[0], cfg.Recent) {
				mismatch.Step, mismatch.Op, mismatch.Results = step, op, results
				return mismatch, stats, nil
			}
		}
		stats.add(op.Kind, results[0].Errno)
		if g != nil {
			g.Observe(op, results[0])
		}
	}

	if bad, diffs, err := diffTrees(roots, cfg.Compare); err != nil {
		return nil, stats, err
	} else if len(diffs) > 0 {
		mismatch.Step, mismatch.Other, mismatch.TreeDiffs = StepAfter, bad, diffs
		return mismatch, stats, nil
	}
	return nil, stats, nil
}

// diffTrees compares roots[0] with each other root and returns the first
// that differs, with the differences.
func diffTrees(roots []string, o testutil.CompareOptions) (int, []string, error) {
	for i, root := range roots[1:] {
		diffs, err := testutil.Diff(roots[0], root, o)
		if err != nil {
			return i + 1, nil, fmt.Errorf("fsops: compare %s with %s: %w", roots[0], root, err)
		}
		if len(diffs) > 0 {
			return i + 1, diffs, nil
		}
	}
	return 0, nil, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Run is Check with n operations for seed that fails t on a mismatch,
// printing the seed, the step, the operation and each root's outcome (or
// the tree differences). It logs the outcome counts with -v.
func Run(t testing.TB, seed uint64, n int, roots ...string) {
	t.Helper()
	RunConfig(t, Config{Seed: seed, N: n}, roots...)
}

// RunConfig is Run with a Config.
func RunConfig(t testing.TB, cfg Config, roots ...string) {
	t.Helper()
	m, stats, err := Check(cfg, roots...)
	if err != nil {
		t.Fatalf("fsops.Check(seed %d): %v", cfg.Seed, err)
	}
	if m != nil {
		t.Fatalf("fsops.Check: %v", m)
	}
	if testing.Verbose() {
		t.Logf("seed %d: %d operations agreed on %d roots; outcomes on %s:\n%v", cfg.Seed, max(cfg.N, len(cfg.Ops)), len(roots), roots[0], stats)
	}
}
