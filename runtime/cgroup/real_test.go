package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// requireEnv turns "cgroups are not usable here" from a skip into a failure.
const requireEnv = "LAZYFS_REQUIRE_CGROUP"

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(requireEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, requireEnv)
	}
	t.Skip(msg)
}

// failOnWarn writes log records to the test's output and fails the test on
// a warning.
type failOnWarn struct {
	slog.Handler
	t *testing.T
}

func (h failOnWarn) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.t.Errorf("unexpected log: %s", r.Message)
	}
	return h.Handler.Handle(ctx, r)
}

// realManager returns a Manager on this machine's cgroups whose parent is
// private to the test and removed when it ends; the test fails if that
// leaves anything behind. It skips (or fails, under LAZYFS_REQUIRE_CGROUP=1)
// when the cgroup file system cannot be written.
func realManager(t *testing.T) *Manager {
	t.Helper()
	l, err := DetectLayout()
	if err != nil {
		skipOrFail(t, "cgroups: %v", err)
	}
	return managerIn(t, l)
}

// managerIn is realManager in the layout l.
func managerIn(t *testing.T, l Layout) *Manager {
	t.Helper()
	parent := fmt.Sprintf("lazyfs-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_"))
	var mounts []string
	if l.V2() {
		mounts = []string{l.Unified}
	} else {
		for _, c := range controllers {
			if mnt, ok := l.Controllers[c]; ok && !slices.Contains(mounts, mnt) {
				mounts = append(mounts, mnt)
			}
		}
	}
	if err := os.Mkdir(filepath.Join(mounts[0], parent), 0o755); err != nil {
		skipOrFail(t, "cgroup file system not writable: %v", err)
	}
	t.Cleanup(func() {
		for _, mnt := range mounts {
			dir := filepath.Join(mnt, parent)
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Errorf("left behind: %s: %v", dir, err)
			}
		}
	})
	log := slog.New(failOnWarn{slog.NewTextHandler(t.Output(), nil), t})
	m, err := New(Config{Layout: l, Parent: parent, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v, parent %s", l, parent)
	return m
}

// cleanupGroup kills and removes g when the test ends, whatever happened.
func cleanupGroup(t *testing.T, g *Group) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Kill(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := g.Delete(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestRealGroup(t *testing.T) {
	m := realManager(t)
	g, err := m.Create("c1", Limits{Memory: 64 << 20, CPUQuota: 50000, CPUPeriod: 100000, Pids: 20})
	if err != nil {
		t.Fatal(err)
	}
	cleanupGroup(t, g)

	want := map[string]string{} // file → content
	if l := m.Layout(); l.V2() {
		dir := filepath.Join(l.Unified, m.parent, "c1")
		want[filepath.Join(dir, "memory.max")] = "67108864"
		want[filepath.Join(dir, "cpu.max")] = "50000 100000"
		want[filepath.Join(dir, "pids.max")] = "20"
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			want[filepath.Join(dir, "memory.swap.max")] = "0"
		}
	} else {
		mem := filepath.Join(l.Controllers["memory"], m.parent, "c1")
		want[filepath.Join(mem, "memory.limit_in_bytes")] = "67108864"
		if _, err := os.Stat(filepath.Join(mem, "memory.memsw.limit_in_bytes")); err == nil {
			want[filepath.Join(mem, "memory.memsw.limit_in_bytes")] = "67108864"
		}
		cpu := filepath.Join(l.Controllers["cpu"], m.parent, "c1")
		want[filepath.Join(cpu, "cpu.cfs_quota_us")] = "50000"
		want[filepath.Join(cpu, "cpu.cfs_period_us")] = "100000"
		want[filepath.Join(l.Controllers["pids"], m.parent, "c1", "pids.max")] = "20"
	}
	for p, w := range want {
		if got := readTrim(t, p); got != w {
			t.Errorf("%s = %q, want %q", p, got, w)
		}
	}

	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := g.Add(pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if got, err := g.Procs(); err != nil || !slices.Equal(got, []int{pid}) {
		t.Errorf("Procs() = %v, %v, want [%d]", got, err, pid)
	}
	member := readTrim(t, fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(member, "\n") {
		// hierarchy-ID:controllers:path; each hierarchy the group uses must
		// show the group's path.
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if _, used := g.dirs[c]; (used || (f[1] == "" && g.v2)) && !strings.HasSuffix(f[2], "/"+m.parent+"/c1") {
				t.Errorf("/proc/%d/cgroup: %s, want the group's path for %q", pid, line, c)
			}
		}
	}
	// Memory is not checked: what sleep allocated before Add stays charged
	// to its old group on v1.
	if st, err := g.Stats(); err != nil || st.Pids != 1 {
		t.Errorf("Stats() = %+v, %v, want 1 process", st, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := g.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := cmd.Wait(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("sleep ended with %v, want SIGKILL", err)
	}
	if got, err := g.Procs(); err != nil || len(got) != 0 {
		t.Errorf("Procs() after Kill = %v, %v, want none", got, err)
	}
	if err := g.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range g.Paths() {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there after Delete: %v", p, err)
		}
	}
	if _, err := m.Open("c1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(c1) after Delete error %v, want %v", err, fs.ErrNotExist)
	}
}

// TestRealLimitChanges reuses a group with a higher then a lower memory
// limit: on v1 the kernel refuses a memory limit above the memory+swap
// limit, so the order of the writes matters.
func TestRealLimitChanges(t *testing.T) {
	m := realManager(t)
	for _, mem := range []int64{64 << 20, 256 << 20, 32 << 20, 0, 128 << 20} {
		g, err := m.Create("c1", Limits{Memory: mem})
		if err != nil {
			t.Fatalf("Create(memory %d) error %v", mem, err)
		}
		cleanupGroup(t, g)
		if st, err := g.Stats(); err != nil {
			t.Errorf("Stats() error %v", err)
		} else if st.Pids != 0 {
			t.Errorf("Stats().Pids = %d, want 0", st.Pids)
		}
	}
}

func TestRealDeleteBusy(t *testing.T) {
	m := realManager(t)
	g, err := m.Create("c1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cleanupGroup(t, g)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err = g.Delete(ctx)
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), g.Paths()[0]) || !strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)) {
		t.Errorf("Delete(busy) error %v, want EBUSY naming the directory and pid %d", err, cmd.Process.Pid)
	}
	if err := m.Remove(t.Context(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Open("c1"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(c1) after Remove error %v, want %v", err, fs.ErrNotExist)
	}
	if err := m.Remove(t.Context(), "c1"); err != nil {
		t.Errorf("Remove() again error %v", err)
	}
}

// TestRealPidsLimit runs a shell in a group limited to 5 processes that
// starts 10 background sleeps: the fifth fork must fail with EAGAIN.
func TestRealPidsLimit(t *testing.T) {
	shell, msg := []string{"busybox", "sh"}, "can't fork: Resource temporarily unavailable" // busybox prints strerror(EAGAIN)
	if _, err := exec.LookPath("busybox"); err != nil {
		shell, msg = []string{"dash"}, "Cannot fork"
		if _, err := exec.LookPath("dash"); err != nil {
			t.Skip("neither busybox nor dash: bash retries a failed fork for seconds")
		}
	}
	m := realManager(t)
	g, err := m.Create("c1", Limits{Pids: 5})
	if err != nil {
		t.Fatal(err)
	}
	cleanupGroup(t, g)

	const script = `read go
i=0
while [ $i -lt 10 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done
echo all started`
	cmd := exec.Command(shell[0], append(shell[1:], "-c", script)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	// Only now, inside the group, may the shell fork.
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if err == nil || !strings.Contains(out.String(), msg) || strings.Contains(out.String(), "all started") {
		t.Errorf("shell in a group of 5 = %v, output %q, want a failed fork: %q", err, out.String(), msg)
	}
	// The shell is gone (reaped); the four sleeps it could start remain.
	if procs, err := g.Procs(); err != nil || len(procs) != 4 {
		t.Errorf("Procs() = %v, %v, want the 4 sleeps", procs, err)
	}
}

// TestRealV2Hybrid runs the v2 code on the empty v2 hierarchy of a hybrid
// machine (at /sys/fs/cgroup/unified): it has no memory, cpu or pids
// controller, but groups, cgroup.kill and removal work as on v2.
func TestRealV2Hybrid(t *testing.T) {
	l, err := DetectLayout()
	if err != nil || l.V2() {
		t.Skip("not a v1 or hybrid machine: the v2 code runs in the other tests")
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var unified string
	for line := range strings.Lines(string(mi)) {
		if f := strings.Fields(line); len(f) > 8 && slices.Contains(f, "cgroup2") {
			unified = f[4]
		}
	}
	if unified == "" {
		t.Skip("no v2 hierarchy mounted next to the v1 ones")
	}
	m := managerIn(t, Layout{Unified: unified})
	if _, err := m.Create("c1", Limits{Pids: 5}); !errors.Is(err, ErrNoController) {
		t.Errorf("Create(pids limit) in %s error %v, want %v", unified, err, ErrNoController)
	}
	g, err := m.Create("c1", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cleanupGroup(t, g)
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if got, err := g.Procs(); err != nil || !slices.Equal(got, []int{cmd.Process.Pid}) {
		t.Errorf("Procs() = %v, %v, want [%d]", got, err, cmd.Process.Pid)
	}
	if err := g.Kill(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Error("sleep survived Kill")
	}
	if err := g.Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
}
