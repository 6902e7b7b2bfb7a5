package cgroup

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree writes files (path relative to root → content), making their
// directories: a fake of what cgroupfs shows.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkTree fails t for each file whose content is not the expected one.
func checkTree(t *testing.T, root string, want map[string]string) {
	t.Helper()
	for p, w := range want {
		got, err := os.ReadFile(filepath.Join(root, p))
		if err != nil || string(got) != w {
			t.Errorf("%s = %q, %v, want %q", p, got, err, w)
		}
	}
}

const unlimitedV1 = "9223372036854771712"

// fakeV1 makes a v1 layout in a temporary directory, with the group
// "lazyrun/c1" already holding the files the kernel would give it (mkdir
// on cgroupfs makes them; here Create finds the directory and reuses it).
func fakeV1(t *testing.T, memsw bool) (string, Layout) {
	root := t.TempDir()
	files := map[string]string{
		"memory/memory.limit_in_bytes":            unlimitedV1,
		"memory/lazyrun/c1/memory.limit_in_bytes": unlimitedV1,
		"memory/lazyrun/c1/cgroup.procs":          "",
		"cpu/lazyrun/c1/cpu.cfs_period_us":        "100000",
		"cpu/lazyrun/c1/cpu.cfs_quota_us":         "-1",
		"cpu/lazyrun/c1/cgroup.procs":             "",
		"pids/lazyrun/c1/pids.max":                "max",
		"pids/lazyrun/c1/cgroup.procs":            "",
		"freezer/lazyrun/c1/freezer.state":        "THAWED",
		"freezer/lazyrun/c1/cgroup.procs":         "",
	}
	if memsw {
		files["memory/lazyrun/c1/memory.memsw.limit_in_bytes"] = unlimitedV1
	}
	writeTree(t, root, files)
	l := Layout{Controllers: map[string]string{}}
	for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
		l.Controllers[c] = filepath.Join(root, c)
	}
	return root, l
}

func TestCreateV1(t *testing.T) {
	root, l := fakeV1(t, true)
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("c1", Limits{Memory: 64 << 20, CPUQuota: 50000, Pids: 20})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{
		"memory/lazyrun/c1/memory.limit_in_bytes":       "67108864",
		"memory/lazyrun/c1/memory.memsw.limit_in_bytes": "67108864",
		"cpu/lazyrun/c1/cpu.cfs_period_us":              "100000",
		"cpu/lazyrun/c1/cpu.cfs_quota_us":               "50000",
		"pids/lazyrun/c1/pids.max":                      "20",
	})
	var want []string
	for _, c := range []string{"cpu", "freezer", "memory", "pids"} {
		want = append(want, filepath.Join(root, c, "lazyrun/c1"))
	}
	if got := g.Paths(); !slices.Equal(got, want) {
		t.Errorf("Paths() = %q, want %q", got, want)
	}

	if err := g.Add(4242); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"memory", "cpu", "pids", "freezer"} {
		checkTree(t, root, map[string]string{c + "/lazyrun/c1/cgroup.procs": "4242"})
	}
	writeTree(t, root, map[string]string{"memory/lazyrun/c1/cgroup.procs": "12\n7\n", "pids/lazyrun/c1/cgroup.procs": "7\n3\n"})
	if got, err := g.Procs(); err != nil || !slices.Equal(got, []int{3, 7, 12, 4242}) {
		t.Errorf("Procs() = %v, %v, want [3 7 12 4242]", got, err)
	}

	// Zero limits reset a reused group to unlimited.
	if _, err := m.Create("c1", Limits{}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{
		"memory/lazyrun/c1/memory.limit_in_bytes":       "-1",
		"memory/lazyrun/c1/memory.memsw.limit_in_bytes": "-1",
		"cpu/lazyrun/c1/cpu.cfs_quota_us":               "-1",
		"pids/lazyrun/c1/pids.max":                      "max",
	})
}

func TestNanoCPUs(t *testing.T) {
	root, l := fakeV1(t, true)
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("c1", Limits{NanoCPUs: 15e8}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{
		"cpu/lazyrun/c1/cpu.cfs_period_us": "100000",
		"cpu/lazyrun/c1/cpu.cfs_quota_us":  "150000",
	})
	for _, lim := range []Limits{{NanoCPUs: 1e9, CPUQuota: 1000}, {NanoCPUs: 1e9, CPUPeriod: 1000}, {NanoCPUs: 1e6}} {
		if _, err := m.Create("c1", lim); err == nil {
			t.Errorf("Create(%+v) succeeded", lim)
		}
	}
}

func TestCreateV1WithoutSwapAccounting(t *testing.T) {
	root, l := fakeV1(t, false)
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("c1", Limits{Memory: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{"memory/lazyrun/c1/memory.limit_in_bytes": "1073741824"})
	if _, err := os.Stat(filepath.Join(root, "memory/lazyrun/c1/memory.memsw.limit_in_bytes")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("memory.memsw.limit_in_bytes was created: %v", err)
	}
}

func TestCreateV1MissingController(t *testing.T) {
	_, l := fakeV1(t, true)
	delete(l.Controllers, "pids")
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("c1", Limits{Pids: 10}); !errors.Is(err, ErrNoController) || !strings.Contains(err.Error(), "pids") {
		t.Errorf("Create(pids limit, no pids hierarchy) error %v, want %v naming pids", err, ErrNoController)
	}
	g, err := m.Create("c1", Limits{Memory: 64 << 20})
	if err != nil {
		t.Fatalf("Create(no pids limit, no pids hierarchy) error %v", err)
	}
	if got := len(g.Paths()); got != 3 {
		t.Errorf("Paths() has %d entries, want 3 (memory, cpu, freezer)", got)
	}
}

// TestCreateCleansUp runs Create on plain directories, where the limit
// files do not appear: it must fail and remove the group it made.
func TestCreateCleansUp(t *testing.T) {
	root := t.TempDir()
	l := Layout{Controllers: map[string]string{"memory": filepath.Join(root, "memory"), "pids": filepath.Join(root, "pids")}}
	m, err := New(Config{Layout: l, Parent: "a/b"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Create("c1", Limits{Memory: 64 << 20})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "memory.limit_in_bytes") {
		t.Errorf("Create() error %v, want one about the missing memory.limit_in_bytes", err)
	}
	for _, c := range []string{"memory", "pids"} {
		if _, err := os.Stat(filepath.Join(root, c, "a/b/c1")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s/a/b/c1 left behind: %v", c, err)
		}
	}
}

func TestGroupNames(t *testing.T) {
	_, l := fakeV1(t, true)
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "../c1", "a\x00b"} {
		if _, err := m.Create(name, Limits{}); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
		if _, err := m.Open(name); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
	}
	if _, err := New(Config{Layout: l, Parent: "/.."}); err == nil {
		t.Error(`New(Parent "/..") succeeded`)
	}
	if _, err := m.Create("c1", Limits{Memory: -1}); err == nil {
		t.Error("Create(negative memory) succeeded")
	}
}

func TestOpen(t *testing.T) {
	root, l := fakeV1(t, true)
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Open("c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(g.Paths()); got != 4 {
		t.Errorf("Open(c1).Paths() has %d entries, want 4", got)
	}
	if _, err := m.Open("c2"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(c2) error %v, want %v", err, fs.ErrNotExist)
	}
	_ = root
}

func TestStatsV1(t *testing.T) {
	root, l := fakeV1(t, true)
	writeTree(t, root, map[string]string{
		"memory/lazyrun/c1/memory.usage_in_bytes":     "1048576\n",
		"memory/lazyrun/c1/memory.max_usage_in_bytes": "2097152\n",
		"memory/lazyrun/c1/memory.oom_control":        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
		"pids/lazyrun/c1/pids.current":                "4\n",
	})
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Open("c1")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := g.Stats(); err != nil || got != (Stats{Memory: 1 << 20, MemoryPeak: 2 << 20, OOMKills: 3, Pids: 4}) {
		t.Errorf("Stats() = %+v, %v", got, err)
	}
}

// fakeV2 makes a v2 hierarchy in a temporary directory with the group
// "lazyrun/c1" already holding its files. avail lists the controllers
// that lazyrun offers its children.
func fakeV2(t *testing.T, avail string) (string, Layout) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"cgroup.controllers":             "cpuset cpu io memory hugetlb pids rdma misc\n",
		"cgroup.subtree_control":         "",
		"lazyrun/cgroup.controllers":     avail,
		"lazyrun/cgroup.subtree_control": "",
		"lazyrun/c1/cgroup.controllers":  "",
		"lazyrun/c1/cgroup.procs":        "",
		"lazyrun/c1/cgroup.freeze":       "0",
		"lazyrun/c1/cgroup.events":       "populated 0\nfrozen 0\n",
		"lazyrun/c1/cgroup.kill":         "",
		"lazyrun/c1/memory.max":          "max",
		"lazyrun/c1/memory.swap.max":     "max",
		"lazyrun/c1/cpu.max":             "max 100000",
		"lazyrun/c1/pids.max":            "max",
		"lazyrun/c1/memory.current":      "8192\n",
		"lazyrun/c1/memory.peak":         "16384\n",
		"lazyrun/c1/memory.events":       "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
		"lazyrun/c1/pids.current":        "2\n",
	})
	return root, Layout{Unified: root}
}

func TestCreateV2(t *testing.T) {
	root, l := fakeV2(t, "cpu memory pids\n")
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Create("c1", Limits{Memory: 64 << 20, CPUQuota: 50000, CPUPeriod: 100000, Pids: 20})
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{
		"cgroup.subtree_control":         "+cpu +memory +pids",
		"lazyrun/cgroup.subtree_control": "+cpu +memory +pids",
		"lazyrun/c1/memory.max":          "67108864",
		"lazyrun/c1/memory.swap.max":     "0",
		"lazyrun/c1/cpu.max":             "50000 100000",
		"lazyrun/c1/pids.max":            "20",
	})
	if got, want := g.Paths(), []string{filepath.Join(root, "lazyrun/c1")}; !slices.Equal(got, want) {
		t.Errorf("Paths() = %q, want %q", got, want)
	}
	if err := g.Add(4242); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{"lazyrun/c1/cgroup.procs": "4242"})
	writeTree(t, root, map[string]string{"lazyrun/c1/cgroup.procs": ""})
	if got, err := g.Stats(); err != nil || got != (Stats{Memory: 8192, MemoryPeak: 16384, OOMKills: 1, Pids: 2}) {
		t.Errorf("Stats() = %+v, %v", got, err)
	}
	if err := g.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{"lazyrun/c1/cgroup.kill": "1"})

	if _, err := m.Create("c1", Limits{}); err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, map[string]string{
		"lazyrun/c1/memory.max":      "max",
		"lazyrun/c1/memory.swap.max": "max",
		"lazyrun/c1/cpu.max":         "max 100000",
		"lazyrun/c1/pids.max":        "max",
	})
}

func TestCreateV2MissingController(t *testing.T) {
	root, l := fakeV2(t, "cpu pids\n")
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("c1", Limits{Memory: 64 << 20}); !errors.Is(err, ErrNoController) || !strings.Contains(err.Error(), "memory") {
		t.Errorf("Create(memory limit) error %v, want %v naming memory", err, ErrNoController)
	}
	if _, err := m.Create("c1", Limits{Pids: 3}); err != nil {
		t.Errorf("Create(pids limit) error %v", err)
	}
	checkTree(t, root, map[string]string{"lazyrun/cgroup.subtree_control": "+cpu +pids", "lazyrun/c1/pids.max": "3"})
}

func TestDeleteFake(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"pids/lazyrun/full/pids.max": "max"})
	if err := os.MkdirAll(filepath.Join(root, "memory/lazyrun/empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := Layout{Controllers: map[string]string{"memory": filepath.Join(root, "memory"), "pids": filepath.Join(root, "pids")}}
	m, err := New(Config{Layout: l})
	if err != nil {
		t.Fatal(err)
	}
	g, err := m.Open("empty")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Delete(t.Context()); err != nil {
		t.Errorf("Delete(empty) error %v", err)
	}
	if err := g.Delete(t.Context()); err != nil {
		t.Errorf("Delete(empty) again error %v", err)
	}
	g, err = m.Open("full")
	if err != nil {
		t.Fatal(err)
	}
	// A plain directory with files is ENOTEMPTY, not cgroupfs' EBUSY: no retry.
	if err := g.Delete(t.Context()); err == nil || !strings.Contains(err.Error(), filepath.Join(root, "pids/lazyrun/full")) {
		t.Errorf("Delete(full) error %v, want one naming the directory", err)
	}
}
