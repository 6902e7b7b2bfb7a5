package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoController is wrapped when a limit needs a controller that the
// machine does not offer (not mounted on v1, not available on v2).
var ErrNoController = errors.New("cgroup: controller not available")

// DefaultParent is the cgroup, relative to each hierarchy's root, under
// which groups are made when Config.Parent is empty.
const DefaultParent = "lazyrun"

// DefaultCPUPeriod is the CFS period used when Limits.CPUPeriod is 0:
// 100 ms, as docker's.
const DefaultCPUPeriod = 100000

// Config says where groups are made. The zero value detects the layout and
// uses DefaultParent.
type Config struct {
	// Layout is where the hierarchies are mounted; the zero value means
	// DetectLayout.
	Layout Layout
	// Parent is the cgroup under which groups are made, relative to the
	// root of each hierarchy (as docker's cgroupfs driver puts containers
	// under /docker): DefaultParent ("lazyrun") when empty. It is created
	// when missing and never removed.
	Parent string
	// Logger gets a warning when a group cannot be frozen before a kill;
	// nil means silent.
	Logger *slog.Logger
}

// Limits are a group's resource limits; zero fields mean no limit.
type Limits struct {
	// Memory is the most memory, in bytes, the group's processes may use.
	// Swap is limited to the same total, so none is used beyond it.
	Memory int64
	// NanoCPUs is the CPU time the group may use, in billionths of a CPU
	// (docker's --cpus): 5e8 is half a CPU, set as a CFS quota of 50000
	// per DefaultCPUPeriod. It excludes CPUQuota and CPUPeriod.
	NanoCPUs int64
	// CPUQuota is the CPU time, in microseconds, the group may use per
	// CPUPeriod (0: DefaultCPUPeriod); 50000 per 100000 is half a CPU.
	CPUQuota, CPUPeriod int64
	// Pids is the most processes (and threads) the group may hold; a fork
	// beyond it fails with EAGAIN.
	Pids int64
}

// Manager makes and finds groups in one layout, under one parent.
// Safe for concurrent use.
type Manager struct {
	layout Layout
	parent string
	log    *slog.Logger
}

// New returns a Manager for cfg, detecting the layout when cfg has none.
func New(cfg Config) (*Manager, error) {
	l := cfg.Layout
	if !l.V2() && len(l.Controllers) == 0 {
		var err error
		if l, err = DetectLayout(); err != nil {
			return nil, err
		}
	}
	parent := cfg.Parent
	if parent == "" {
		parent = DefaultParent
	}
	parent = filepath.Clean("/" + parent)
	if parent == "/" {
		return nil, fmt.Errorf("cgroup: parent %q: must name a cgroup below the root", cfg.Parent)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{layout: l, parent: parent[1:], log: log}, nil
}

// Create makes the group name with the default Config: New(Config{}) and
// Manager.Create. It keeps nothing between calls.
func Create(name string, lim Limits) (*Group, error) {
	m, err := New(Config{})
	if err != nil {
		return nil, err
	}
	return m.Create(name, lim)
}

// Remove is New(Config{}) and Manager.Remove.
func Remove(ctx context.Context, name string) error {
	m, err := New(Config{})
	if err != nil {
		return err
	}
	return m.Remove(ctx, name)
}

// Remove kills every process in the group name and deletes it
// (Group.Kill, then Group.Delete). A group that does not exist is already
// removed.
func (m *Manager) Remove(ctx context.Context, name string) error {
	g, err := m.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := g.Kill(ctx); err != nil {
		return err
	}
	return g.Delete(ctx)
}

// Layout returns the layout the Manager works in.
func (m *Manager) Layout() Layout { return m.layout }

// Group is one container's cgroup: a directory named after it under the
// parent, in each hierarchy used (v1) or in the unified one (v2).
// Its methods are safe for concurrent use.
type Group struct {
	name string
	v2   bool
	// dirs maps each controller to the group's directory in its hierarchy
	// (v1); on v2 the single entry "" is the group's directory.
	dirs map[string]string
	log  *slog.Logger
}

// Name returns the group's name.
func (g *Group) Name() string { return g.name }

// Paths returns the group's directories, one per hierarchy, sorted.
func (g *Group) Paths() []string {
	return slices.Compact(slices.Sorted(maps.Values(g.dirs)))
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("cgroup: invalid group name %q", name)
	}
	return nil
}

// Create makes the group name (a single path element, a container ID say)
// and sets its limits. Zero limits still make the group, so that every
// process of the container can be found and killed. A group left over under
// the same name is reused and its limits set anew. On failure nothing it
// created is left behind.
func (m *Manager) Create(name string, lim Limits) (*Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if lim.Memory < 0 || lim.NanoCPUs < 0 || lim.CPUQuota < 0 || lim.CPUPeriod < 0 || lim.Pids < 0 {
		return nil, fmt.Errorf("cgroup: create %s: negative limit in %+v", name, lim)
	}
	if lim.NanoCPUs > 0 {
		if lim.CPUQuota > 0 || lim.CPUPeriod > 0 {
			return nil, fmt.Errorf("cgroup: create %s: NanoCPUs and CPUQuota/CPUPeriod cannot both be set", name)
		}
		lim.CPUQuota, lim.CPUPeriod = lim.NanoCPUs*DefaultCPUPeriod/1e9, DefaultCPUPeriod
		if lim.CPUQuota < 1000 {
			return nil, fmt.Errorf("cgroup: create %s: %d nano CPUs is below the kernel's 1 ms quota", name, lim.NanoCPUs)
		}
	}
	if lim.CPUPeriod == 0 {
		lim.CPUPeriod = DefaultCPUPeriod
	}
	g := &Group{name: name, v2: m.layout.V2(), dirs: map[string]string{}, log: m.log}
	var created []string
	var err error
	if g.v2 {
		created, err = m.createV2(g, lim)
	} else {
		created, err = m.createV1(g, lim)
	}
	if err != nil {
		for _, dir := range slices.Backward(created) {
			_ = unix.Rmdir(dir) // best effort: err says what went wrong
		}
		return nil, fmt.Errorf("cgroup: create %s: %w", name, err)
	}
	return g, nil
}

// Open returns the existing group name, made by Create in this or another
// process. When it exists in no hierarchy the error wraps fs.ErrNotExist.
func (m *Manager) Open(name string) (*Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	g := &Group{name: name, v2: m.layout.V2(), dirs: map[string]string{}, log: m.log}
	if g.v2 {
		dir := filepath.Join(m.layout.Unified, m.parent, name)
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("cgroup: open %s: %w", name, err)
		}
		g.dirs[""] = dir
		return g, nil
	}
	for _, c := range controllers {
		mnt, ok := m.layout.Controllers[c]
		if !ok {
			continue
		}
		dir := filepath.Join(mnt, m.parent, name)
		if _, err := os.Stat(dir); err == nil {
			g.dirs[c] = dir
		}
	}
	if len(g.dirs) == 0 {
		return nil, fmt.Errorf("cgroup: open %s: %w", name, fs.ErrNotExist)
	}
	return g, nil
}

// createV1 makes the group in the memory, cpu, pids and freezer hierarchies
// that exist (a limit needs its own) and writes the limits. It returns the
// directories it created.
func (m *Manager) createV1(g *Group, lim Limits) ([]string, error) {
	need := map[string]bool{"memory": lim.Memory > 0, "cpu": lim.CPUQuota > 0, "pids": lim.Pids > 0}
	var created []string
	for _, c := range controllers {
		mnt, ok := m.layout.Controllers[c]
		if !ok {
			if need[c] {
				return created, fmt.Errorf("%w: %s (not mounted)", ErrNoController, c)
			}
			continue
		}
		dir := filepath.Join(mnt, m.parent, g.name)
		g.dirs[c] = dir
		if slices.Contains(created, dir) {
			continue // mounted together with an earlier controller
		}
		made, err := mkdirAll(filepath.Join(mnt, m.parent), g.name)
		if made {
			created = append(created, dir)
		}
		if err != nil {
			return created, err
		}
	}
	if len(g.dirs) == 0 {
		return nil, fmt.Errorf("%w: none of %v is mounted", ErrNoController, controllers)
	}
	if dir, ok := g.dirs["memory"]; ok {
		if err := setMemoryV1(dir, lim.Memory); err != nil {
			return created, err
		}
	}
	if dir, ok := g.dirs["cpu"]; ok {
		quota := int64(-1)
		if lim.CPUQuota > 0 {
			quota = lim.CPUQuota
		}
		if err := writeInt(dir, "cpu.cfs_period_us", lim.CPUPeriod); err != nil {
			return created, err
		}
		if err := writeInt(dir, "cpu.cfs_quota_us", quota); err != nil {
			return created, err
		}
	}
	if dir, ok := g.dirs["pids"]; ok {
		if err := writeFile(dir, "pids.max", maxOr(lim.Pids)); err != nil {
			return created, err
		}
	}
	return created, nil
}

// setMemoryV1 sets memory.limit_in_bytes and, where swap is accounted,
// memory.memsw.limit_in_bytes to the same value (no swap beyond the
// limit). The kernel wants memsw >= memory at every moment, so a limit
// going up sets memsw first, as runc does.
func setMemoryV1(dir string, limit int64) error {
	if limit == 0 {
		limit = -1
	}
	memsw := true
	if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); errors.Is(err, fs.ErrNotExist) {
		memsw = false
	}
	order := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	if cur, err := readInt(dir, "memory.limit_in_bytes"); err == nil && (limit == -1 || limit > cur) {
		slices.Reverse(order)
	}
	for _, f := range order {
		if f == "memory.memsw.limit_in_bytes" && !memsw {
			continue
		}
		if err := writeInt(dir, f, limit); err != nil {
			return err
		}
	}
	return nil
}

// createV2 makes the group in the unified hierarchy, after enabling the
// memory, cpu and pids controllers (those available) in the cgroups above
// it, and writes the limits. It returns the directories it created.
func (m *Manager) createV2(g *Group, lim Limits) ([]string, error) {
	root := m.layout.Unified
	need := map[string]bool{"memory": lim.Memory > 0, "cpu": lim.CPUQuota > 0, "pids": lim.Pids > 0}
	var created []string
	dir := root
	elems := append(strings.Split(m.parent, "/"), g.name)
	for i, elem := range elems {
		avail, err := readFile(dir, "cgroup.controllers")
		if err != nil {
			return created, err
		}
		var enable []string
		for _, c := range []string{"cpu", "memory", "pids"} {
			switch {
			case slices.Contains(strings.Fields(avail), c):
				enable = append(enable, "+"+c)
			case need[c]:
				return created, fmt.Errorf("%w: %s (not in %s)", ErrNoController, c, filepath.Join(dir, "cgroup.controllers"))
			}
		}
		if len(enable) > 0 {
			if err := writeFile(dir, "cgroup.subtree_control", strings.Join(enable, " ")); err != nil {
				return created, err
			}
		}
		made, err := mkdirAll(dir, elem)
		dir = filepath.Join(dir, elem)
		if made && i == len(elems)-1 {
			created = append(created, dir) // only the group itself: parents are shared
		}
		if err != nil {
			return created, err
		}
	}
	g.dirs[""] = dir
	set := func(file, value string, needed bool) error {
		err := writeFile(dir, file, value)
		if errors.Is(err, fs.ErrNotExist) && !needed {
			return nil
		}
		return err
	}
	if err := set("memory.max", maxOr(lim.Memory), need["memory"]); err != nil {
		return created, err
	}
	swap := "max"
	if lim.Memory > 0 {
		swap = "0"
	}
	if err := set("memory.swap.max", swap, false); err != nil {
		return created, err
	}
	quota := "max"
	if lim.CPUQuota > 0 {
		quota = strconv.FormatInt(lim.CPUQuota, 10)
	}
	if err := set("cpu.max", quota+" "+strconv.FormatInt(lim.CPUPeriod, 10), need["cpu"]); err != nil {
		return created, err
	}
	if err := set("pids.max", maxOr(lim.Pids), need["pids"]); err != nil {
		return created, err
	}
	return created, nil
}

// Add moves the process pid, with all its threads, into the group, in
// every hierarchy.
func (g *Group) Add(pid int) error {
	for _, dir := range g.Paths() {
		if err := writeFile(dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("cgroup: add %d to %s: %w", pid, g.name, err)
		}
	}
	return nil
}

// Procs returns the processes in the group, in any of its hierarchies,
// sorted. Processes that have exited but wait to be reaped are not listed;
// a deleted group has none.
func (g *Group) Procs() ([]int, error) {
	var pids []int
	for _, dir := range g.Paths() {
		s, err := readFile(dir, "cgroup.procs")
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted: no process there
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup: procs of %s: %w", g.name, err)
		}
		for f := range strings.FieldsSeq(s) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("cgroup: procs of %s: %s: %w", g.name, filepath.Join(dir, "cgroup.procs"), err)
			}
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// Kill sends SIGKILL to every process in the group and returns once the
// group is empty. On v2 it writes cgroup.kill where the kernel has it;
// otherwise it freezes the group (when it can) so that no process forks
// while it is being killed, signals each process, thaws it, and repeats
// until none is left. If ctx ends first it returns an error wrapping
// ctx.Err() that says how many processes are left. Killing an empty or
// deleted group succeeds at once.
func (g *Group) Kill(ctx context.Context) error {
	if g.v2 {
		err := writeFile(g.dirs[""], "cgroup.kill", "1")
		if err == nil {
			return g.waitEmpty(ctx, "kill")
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("cgroup: kill %s: %w", g.name, err)
		}
	}
	var b backoff
	for {
		pids, err := g.Procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		frozen := g.freeze(ctx)
		if frozen {
			if pids, err = g.Procs(); err != nil {
				g.thaw()
				return err
			}
		}
		for _, pid := range pids {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				g.log.Warn("cgroup: kill", "op", "kill", "path", g.name, "pid", pid, "err", err)
			}
		}
		if frozen {
			g.thaw()
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("cgroup: kill %s: %w (%d processes left)", g.name, err, len(pids))
		}
	}
}

// waitEmpty waits until the group holds no process.
func (g *Group) waitEmpty(ctx context.Context, op string) error {
	var b backoff
	for {
		pids, err := g.Procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if err := b.wait(ctx); err != nil {
			return fmt.Errorf("cgroup: %s %s: %w (%d processes left)", op, g.name, err, len(pids))
		}
	}
}

// freezeTimeout bounds how long Kill waits for a group to freeze: a task
// blocked in an uninterruptible wait (a FUSE request, say) can keep a v1
// group FREEZING for ever.
const freezeTimeout = 500 * time.Millisecond

// freeze freezes the group and reports whether it is frozen. It thaws it
// again and reports false when it does not freeze within freezeTimeout or
// the group cannot be frozen at all.
func (g *Group) freeze(ctx context.Context) bool {
	var dir, file, on, check, want string
	if g.v2 {
		dir, file, on, check, want = g.dirs[""], "cgroup.freeze", "1", "cgroup.events", "frozen 1"
	} else if d, ok := g.dirs["freezer"]; ok {
		dir, file, on, check, want = d, "freezer.state", "FROZEN", "freezer.state", "FROZEN"
	} else {
		return false
	}
	if err := writeFile(dir, file, on); err != nil {
		g.log.Warn("cgroup: cannot freeze before killing", "op", "freeze", "path", dir, "err", err)
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, freezeTimeout)
	defer cancel()
	var b backoff
	for {
		s, err := readFile(dir, check)
		if err == nil && slices.Contains(strings.Split(s, "\n"), want) {
			return true
		}
		if b.wait(ctx) != nil {
			g.log.Warn("cgroup: group did not freeze; killing it unfrozen", "op", "freeze", "path", dir, "dur", freezeTimeout)
			g.thaw()
			return false
		}
	}
}

func (g *Group) thaw() {
	var err error
	if g.v2 {
		err = writeFile(g.dirs[""], "cgroup.freeze", "0")
	} else if dir, ok := g.dirs["freezer"]; ok {
		err = writeFile(dir, "freezer.state", "THAWED")
	}
	if err != nil {
		g.log.Warn("cgroup: thaw", "op", "thaw", "path", g.name, "err", err)
	}
}

// deleteTimeout bounds how long Delete waits for processes to drain.
const deleteTimeout = 2 * time.Second

// Delete removes the group's directories. A group still holding processes
// cannot be removed: Delete retries for a short while (up to 2 s, or until
// ctx ends) as processes that were just killed drain away, then fails
// naming the directory and what is left in it. Removing a group that is
// already gone succeeds. Kill first to empty it.
func (g *Group) Delete(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	var errs []error
	for _, dir := range g.Paths() {
		var b backoff
		for {
			err := unix.Rmdir(dir)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", dir, err))
				break
			}
			if werr := b.wait(ctx); werr != nil {
				procs, _ := readFile(dir, "cgroup.procs")
				errs = append(errs, fmt.Errorf("cgroup: remove %s: %w: processes still in it: [%s]", dir, err, strings.Join(strings.Fields(procs), " ")))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Stats are a group's current usage; fields whose controller is absent
// are zero.
type Stats struct {
	Memory     int64 // bytes in use now, page cache included
	MemoryPeak int64 // the most bytes in use so far (where the kernel keeps it)
	OOMKills   int64 // processes killed for exceeding the memory limit
	Pids       int64 // processes and threads, zombies included
}

// PidsMaxFile is the path of the file that holds the group's pids limit,
// "" when there is no pids controller: for a container's init that sets
// the limit itself, from a file it opened before leaving the host's mount
// namespace, once it knows how many threads of its own to add.
func (g *Group) PidsMaxFile() string {
	dir := g.dirs["pids"]
	if g.v2 {
		dir = g.dirs[""]
	}
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, "pids.max")
}

// Stats reads the group's memory and process counts.
func (g *Group) Stats() (Stats, error) {
	var s Stats
	var err error
	read := func(dir, file string, to *int64) {
		if err != nil || dir == "" {
			return
		}
		v, rerr := readInt(dir, file)
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("cgroup: stats of %s: %w", g.name, rerr)
		}
		*to = v
	}
	if g.v2 {
		dir := g.dirs[""]
		read(dir, "memory.current", &s.Memory)
		read(dir, "memory.peak", &s.MemoryPeak)
		read(dir, "pids.current", &s.Pids)
		s.OOMKills = keyed(dir, "memory.events", "oom_kill")
	} else {
		read(g.dirs["memory"], "memory.usage_in_bytes", &s.Memory)
		read(g.dirs["memory"], "memory.max_usage_in_bytes", &s.MemoryPeak)
		read(g.dirs["pids"], "pids.current", &s.Pids)
		if dir := g.dirs["memory"]; dir != "" {
			s.OOMKills = keyed(dir, "memory.oom_control", "oom_kill")
		}
	}
	return s, err
}

// keyed reads the value of key in a flat-keyed file ("key value" lines),
// 0 when absent.
func keyed(dir, file, key string) int64 {
	s, err := readFile(dir, file)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == key {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// maxOr returns "max" for no limit (0), else n.
func maxOr(n int64) string {
	if n <= 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

// mkdirAll makes parent and then parent/elem, and reports whether it made
// parent/elem (false when it existed).
func mkdirAll(parent, elem string) (bool, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return false, err
	}
	err := os.Mkdir(filepath.Join(parent, elem), 0o755)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

// writeFile writes value to the existing interface file dir/file in one
// write, as cgroupfs wants; it never creates the file.
func writeFile(dir, file, value string) error {
	p := filepath.Join(dir, file)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, p, err)
	}
	return nil
}

func writeInt(dir, file string, n int64) error {
	return writeFile(dir, file, strconv.FormatInt(n, 10))
}

func readFile(dir, file string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	return string(b), err
}

// readInt reads a file holding one integer, or "max" (read as MaxInt64).
func readInt(dir, file string) (int64, error) {
	s, err := readFile(dir, file)
	if err != nil {
		return 0, err
	}
	s = strings.TrimSpace(s)
	if s == "max" {
		return 1<<63 - 1, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, file), err)
	}
	return n, nil
}

// backoff waits 1 ms, then twice as long each time, up to 50 ms.
type backoff struct{ d time.Duration }

func (b *backoff) wait(ctx context.Context) error {
	b.d = min(max(2*b.d, time.Millisecond), 50*time.Millisecond)
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
