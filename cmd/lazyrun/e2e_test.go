package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The end-to-end tests run the real lazyrun binary: it mounts a busybox
// image from Debian's docker-registry and runs real programs in real
// containers. This test process never touches the FUSE mounts itself.

var lazyrunBin string

func TestMain(m *testing.M) { os.Exit(testutil.RunWithBinary(m, "lazyrun", &lazyrunBin)) }

// env is a registry with a busybox image and a lazyrun root.
type env struct {
	root string
	ref  string
}

func newEnv(t *testing.T, cfg v1.Config) *env {
	t.Helper()
	testutil.RequireFUSE(t, "containers")
	reg := testutil.StartRegistry(t)
	layer := testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer)
	ref, _ := testutil.PushImage(t, reg.Addr, "busybox", []testutil.Layer{layer}, testutil.ImageConfig{Config: cfg})
	e := &env{root: t.TempDir(), ref: ref}
	t.Cleanup(func() {
		e.checkSupervisorLogs(t)
		if t.Failed() {
			e.debugSupervisors(t)
		}
		e.checkClean(t)
	})
	return e
}

// checkClean fails the test if a container of this root left a mount, a
// supervisor or a cgroup behind. Containers still recorded are removed
// first (rm -f), as a failed test may leave them running.
func (e *env) checkClean(t *testing.T) {
	t.Helper()
	ids := e.containerIDs()
	if len(ids) > 0 {
		// t.Context is done by now.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, lazyrunBin, append([]string{"--root", e.root, "rm", "-f"}, ids...)...).CombinedOutput()
		if err != nil {
			t.Errorf("rm -f of the containers left: %v\n%s", err, out)
		}
	}
	for _, l := range leftovers(e.root, ids) {
		t.Errorf("left behind: %s", l)
	}
}

// containerIDs are the containers recorded under the root now.
func (e *env) containerIDs() []string {
	ents, _ := os.ReadDir(filepath.Join(e.root, "containers"))
	var ids []string
	for _, d := range ents {
		if len(d.Name()) == 64 {
			ids = append(ids, d.Name())
		}
	}
	return ids
}

// leftovers lists what containers of root, among them ids, left on the
// machine: mounts under root (unmounted here, so one test's leak does not
// fail the next), processes whose command line names root (supervisors),
// and cgroups named after the containers (which exist while a process of
// the container does).
func leftovers(root string, ids []string) []string {
	var out []string
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for line := range strings.Lines(string(mi)) {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], root) {
				out = append(out, "mount "+f[4])
				syscall.Unmount(f[4], syscall.MNT_DETACH)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(root)) {
			out = append(out, fmt.Sprintf("process %s: %q", filepath.Base(filepath.Dir(p)), bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	for _, id := range ids {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/lazyrun/" + id)
		more, _ := filepath.Glob("/sys/fs/cgroup/lazyrun/" + id)
		for _, d := range append(dirs, more...) {
			out = append(out, "cgroup "+d)
		}
	}
	return out
}

// checkSupervisorLogs fails the test if a supervisor of the root logged a
// warning or an error, and shows every supervisor's log when it failed.
func (e *env) checkSupervisorLogs(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(e.root, "containers", "*", "supervisor.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil || len(b) == 0 {
			continue
		}
		if bytes.Contains(b, []byte("level=WARN")) || bytes.Contains(b, []byte("level=ERROR")) || bytes.Contains(b, []byte("DATA RACE")) {
			t.Errorf("a supervisor complained")
		}
		if t.Failed() {
			t.Logf("%s:\n%s", l, b)
		}
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// lazyrun runs one lazyrun command to completion with the env's root.
func (e *env) lazyrun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if len(args) > 0 && args[0] == "run" && !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--background") }) {
		// Tests count what a start fetches: nothing in the background unless asked.
		args = append([]string{"run", "--background=off"}, args[1:]...)
	}
	cmd := exec.CommandContext(ctx, lazyrunBin, append([]string{"--root", e.root}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("lazyrun %s: %v", strings.Join(args, " "), err)
	}
	return r
}

func (e *env) mustRun(t *testing.T, args ...string) string {
	t.Helper()
	r := e.lazyrun(t, "", args...)
	if r.code != 0 {
		t.Fatalf("lazyrun %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestRunBusybox(t *testing.T) {
	e := newEnv(t, v1.Config{Env: []string{"IMAGE_VAR=from-image", "PATH=/bin"}, Cmd: []string{"sh"}})

	t.Run("output and exit code", func(t *testing.T) {
		r := e.lazyrun(t, "", "run", "--rm", e.ref, "sh", "-c", "echo hello; echo oops >&2; exit 3")
		if r.code != 3 || r.stdout != "hello\n" || !strings.Contains(r.stderr, "oops") {
			t.Fatalf("run = exit %d, stdout %q, stderr %q; want 3, \"hello\\n\", oops", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("config and flags", func(t *testing.T) {
		out := e.mustRun(t, "run", "--rm", "-e", "FOO=bar", "-w", "/tmp/work", "-u", "1000:1000",
			"--hostname", "box", e.ref, "sh", "-c", `echo $FOO $IMAGE_VAR; pwd; id -u; id -g; hostname; cat /etc/hostname; grep PPid /proc/$$/status`)
		want := "bar from-image\n/tmp/work\n1000\n1000\nbox\nbox\nPPid:\t1\n"
		if out != want {
			t.Errorf("output = %q, want %q", out, want)
		}
	})
	t.Run("image command and stdin", func(t *testing.T) {
		r := e.lazyrun(t, "echo from stdin\nexit 7\n", "run", "--rm", "-i", e.ref)
		if r.code != 7 || r.stdout != "from stdin\n" {
			t.Errorf("run -i = exit %d, stdout %q; want 7, \"from stdin\\n\"", r.code, r.stdout)
		}
	})
	t.Run("namespaces and mounts", func(t *testing.T) {
		out := e.mustRun(t, "run", "--rm", "--net=none", e.ref, "sh", "-c",
			`cat /proc/1/cmdline | tr '\0' ' '; echo; ls /sys/class/net; ls /dev | tr '\n' ' '; echo; `+
				`touch /sys/x 2>/dev/null || echo sys read-only; grep -c . /etc/hosts >/dev/null && echo hosts`)
		for _, want := range []string{"lazyrun-init", "\nlo\n", "null", "pts", "shm", "urandom", "sys read-only", "hosts"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("not found", func(t *testing.T) {
		r := e.lazyrun(t, "", "run", "--rm", e.ref, "no-such-program")
		if r.code != 127 || !strings.Contains(r.stderr, "no-such-program") {
			t.Errorf("run no-such-program = exit %d, stderr %q; want 127 naming it", r.code, r.stderr)
		}
		r = e.lazyrun(t, "", "run", "--rm", e.ref, "/etc/passwd")
		if r.code != 126 {
			t.Errorf("run /etc/passwd = exit %d, stderr %q; want 126", r.code, r.stderr)
		}
		r = e.lazyrun(t, "", "run", "--rm", "-u", "nosuchuser", e.ref, "true")
		if r.code != 125 || !strings.Contains(r.stderr, "nosuchuser") {
			t.Errorf("run -u nosuchuser = exit %d, stderr %q; want 125 naming the user", r.code, r.stderr)
		}
		r = e.lazyrun(t, "", "run", "--bogus-flag", e.ref)
		if r.code != 125 {
			t.Errorf("run --bogus-flag = exit %d; want 125", r.code)
		}
	})
}

// Both copy-on-write modes leave the same upper directory.
func TestRunWritesUpperAndLifecycle(t *testing.T) {
	e := newEnv(t, v1.Config{})
	for _, cow := range []string{"overlay", "fuse"} {
		t.Run(cow, func(t *testing.T) { testRunWritesUpper(t, e, cow) })
	}
}

func testRunWritesUpper(t *testing.T, e *env, cow string) {
	script := `set -e
echo new > /tmp/new.txt
mkdir -p /data/sub && echo deep > /data/sub/f
mv /tmp/new.txt /tmp/renamed.txt
rm /var/fifo
echo changed >> /etc/passwd
ls /tmp
grep -E '^[^ ]+ / ' /proc/mounts | grep -c nosuid || true`
	r := e.lazyrun(t, "", "run", "--cow", cow, "--name", "writer", e.ref, "sh", "-c", script)
	// The root honours setuid bits in both modes: no nosuid on /.
	if r.code != 0 || r.stdout != "renamed.txt\n0\n" {
		t.Fatalf("run = exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	ps := e.mustRun(t, "ps", "-a")
	if !strings.Contains(ps, "writer") || !strings.Contains(ps, "Exited (0)") {
		t.Errorf("ps -a does not list the exited container:\n%s", ps)
	}
	if ps := e.mustRun(t, "ps"); strings.Contains(ps, "writer") {
		t.Errorf("ps lists an exited container:\n%s", ps)
	}
	// The upper layer is in overlayfs' format: a deleted lower file is a
	// 0/0 character device.
	ids, err := filepath.Glob(filepath.Join(e.root, "containers", "*", "upper"))
	if err != nil || len(ids) != 1 {
		t.Fatalf("upper dirs = %v, %v; want one", ids, err)
	}
	upper := ids[0]
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "var/fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper var/fifo = mode %o rdev %d (%v); want a 0/0 whiteout", st.Mode, st.Rdev, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "tmp/renamed.txt")); err != nil || string(b) != "new\n" {
		t.Errorf("upper tmp/renamed.txt = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(upper, "etc/passwd")); err != nil || !strings.HasSuffix(string(b), "changed\n") || !strings.HasPrefix(string(b), "root:") {
		t.Errorf("upper etc/passwd (copied up) = %q, %v", b, err)
	}
	for _, f := range []string{"etc/hosts", "etc/resolv.conf", "proc", "dev"} {
		if _, err := os.Lstat(filepath.Join(upper, f)); err == nil {
			t.Errorf("upper has %s: the init layer leaked into the container's changes", f)
		}
	}
	if r := e.lazyrun(t, "", "run", "--name", "writer", e.ref, "true"); r.code != 125 || !strings.Contains(r.stderr, "already in use") {
		t.Errorf("a second container named writer: exit %d, stderr %q; want 125 and a conflict", r.code, r.stderr)
	}
	if out := e.mustRun(t, "rm", "writer"); out != "writer\n" {
		t.Errorf("rm writer printed %q", out)
	}
	if _, err := os.Stat(filepath.Dir(upper)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("container directory still there after rm: %v", err)
	}
	if r := e.lazyrun(t, "", "rm", "writer"); r.code != 1 || !strings.Contains(r.stderr, "no such container") {
		t.Errorf("rm of a removed container: exit %d, stderr %q; want 1, no such container", r.code, r.stderr)
	}
}

func TestRunVolumes(t *testing.T) {
	e := newEnv(t, v1.Config{Volumes: map[string]struct{}{"/var/log": {}}})
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "in.txt"), []byte("from host\n"), 0o644)
	ro := t.TempDir()
	out := e.mustRun(t, "run", "--rm", "-v", host+":/mnt/host", "-v", ro+":/mnt/ro:ro", e.ref, "sh", "-c",
		`cat /mnt/host/in.txt; echo out > /mnt/host/out.txt; touch /mnt/ro/x 2>/dev/null || echo read-only; grep -c /var/log /proc/mounts`)
	if out != "from host\nread-only\n1\n" {
		t.Errorf("output = %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(host, "out.txt")); err != nil || string(b) != "out\n" {
		t.Errorf("host sees %q, %v; want the container's write", b, err)
	}
	// --rm removed the anonymous volume of /var/log too.
	if vols, _ := os.ReadDir(filepath.Join(e.root, "volumes")); len(vols) != 0 {
		t.Errorf("volumes left after --rm: %d", len(vols))
	}
}

func TestRunLimits(t *testing.T) {
	e := newEnv(t, v1.Config{})
	out := e.mustRun(t, "run", "--rm", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5", e.ref, "sh", "-c", "cat /proc/self/cgroup")
	if !strings.Contains(out, "/lazyrun/") {
		t.Errorf("the container is not in a lazyrun cgroup:\n%s", out)
	}
	// More processes than the limit cannot start.
	// The limit is the program's (the init's own threads are added to it):
	// sh and 4 sleeps fit in 5; 8 more do not.
	r := e.lazyrun(t, "", "run", "--rm", "--pids-limit", "5", e.ref, "sh", "-c",
		`for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; echo started`)
	if !strings.Contains(r.stderr, "can't fork") {
		t.Errorf("pids-limit 5: sh started 8 more processes: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
	r = e.lazyrun(t, "", "run", "--rm", "--pids-limit", "5", e.ref, "sh", "-c",
		`for i in 1 2 3 4; do sleep 2 & done; echo ok`)
	if r.code != 0 || r.stdout != "ok\n" {
		t.Errorf("pids-limit 5: sh could not start 4 processes: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}

func TestRunSignalStopsContainer(t *testing.T) {
	e := newEnv(t, v1.Config{})
	cmd := exec.Command(lazyrunBin, "--root", e.root, "run", "--rm", e.ref, "sh", "-c", "echo ready; sleep 1000")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		t.Fatalf("container did not start: %q, %v, %s", line, err, stderr.String())
	}
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	var ee *exec.ExitError
	// sh as the program (PID 2 under our init) dies of SIGTERM: 128+15.
	if !errors.As(err, &ee) || ee.ExitCode() != 143 {
		t.Errorf("lazyrun after SIGTERM: %v; want exit 143\n%s", err, stderr.String())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopping took %v", d)
	}
	if cs, _ := os.ReadDir(filepath.Join(e.root, "containers")); len(cs) != 0 {
		t.Errorf("--rm left %d containers", len(cs))
	}
}

// With -it the container gets a terminal with the caller's window size, and
// lazyrun relays it. The terminal is allocated on the host and bound on the
// container's /dev/console (runc allocates it in the container's devpts, so
// docker's `tty` says /dev/pts/0).
func TestRunTerminal(t *testing.T) {
	e := newEnv(t, v1.Config{})
	code, got := onTerminal(t, "tty; stty size; exit 5\n", "--root", e.root, "run", "--rm", "-it", e.ref, "sh")
	if code != 5 {
		t.Errorf("lazyrun run -it sh with exit 5: exit %d", code)
	}
	if strings.Contains(got, "not a tty") {
		t.Errorf("the container has no terminal:\n%q", got)
	}
	for _, want := range []string{"/dev/console", "33 101"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got)
		}
	}
}

// onTerminal runs lazyrun with args on a new 33x101 terminal (its
// controlling terminal, in a session of its own), types input, and returns
// its exit code and all the terminal showed.
func onTerminal(t *testing.T, input string, args ...string) (int, string) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(lazyrunBin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	if _, err := ptmx.WriteString(input); err != nil {
		t.Fatal(err)
	}
	out := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, ptmx) // ends with EIO once lazyrun and the container are gone
		out <- b.String()
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("lazyrun %s did not exit", strings.Join(args, " "))
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), <-out
}

// debugSupervisors shows, for each container whose supervisor still runs,
// where its threads wait, what its cgroup holds, and every process that
// waits in the kernel: what a failed test needs to tell a hang.
func (e *env) debugSupervisors(t *testing.T) {
	for _, id := range e.containerIDs() {
		b, err := os.ReadFile(filepath.Join(e.root, "containers", id, "state.json"))
		if err != nil {
			continue
		}
		var st struct {
			SupervisorPid, Pid int
		}
		json.Unmarshal(b, &st)
		if st.SupervisorPid <= 0 || syscall.Kill(st.SupervisorPid, 0) != nil {
			continue
		}
		script := fmt.Sprintf(`for t in /proc/%[1]d/task/*; do echo "$t $(cat $t/wchan) $(cut -d' ' -f3 $t/stat)"; cat $t/stack; done
ls -l /proc/%[1]d/fd
for c in /sys/fs/cgroup/*/lazyrun/%[2]s; do echo $c: $(cat $c/cgroup.procs); done
ps -eo pid,ppid,stat,wchan:32,args | awk '$3 !~ /^[SRI]/ || /lazyrun/'
for p in $(ps -eo pid,stat | awk '$2 ~ /^D/ {print $1}'); do echo "stack of $p:"; cat /proc/$p/stack; done`, st.SupervisorPid, id)
		out, _ := exec.Command("sh", "-c", script).CombinedOutput()
		t.Logf("container %s: state %s\n%s", id[:12], b, out)
	}
}

// TestRunRootfs runs containers on an unpacked directory (--rootfs, as
// podman does): the directory is the lower layer, never written to.
func TestRunRootfs(t *testing.T) {
	testutil.RequireFUSE(t, "containers")
	e := &env{root: t.TempDir()}
	t.Cleanup(func() { e.checkSupervisorLogs(t); e.checkClean(t) })
	dir := testutil.BusyboxRoot(t)
	before := filepath.Join(t.TempDir(), "before")
	if out, err := exec.Command("cp", "-a", dir, before).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}

	out := e.mustRun(t, "run", "--rm", "--rootfs", "--net", "none", "--hostname", "onroot", dir,
		"sh", "-c", `echo $PATH; hostname; echo x > /etc/new; rm /etc/passwd; cat /etc/new; ls /etc/passwd 2>&1; true`)
	if want := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nonroot\nx\nls: /etc/passwd: No such file or directory\n"; out != want {
		t.Errorf("run --rootfs = %q, want %q", out, want)
	}
	testutil.CompareTrees(t, before, dir) // the container wrote nothing there

	id := strings.TrimSpace(e.mustRun(t, "run", "--rootfs", "--name", "onroot", dir, "true"))
	if id != "" {
		t.Errorf("run --rootfs in the foreground printed %q", id)
	}
	if ps := e.mustRun(t, "ps", "-a"); !strings.Contains(ps, dir) || !strings.Contains(ps, "onroot") {
		t.Errorf("ps -a does not show the container on %s:\n%s", dir, ps)
	}
	if r := e.lazyrun(t, "", "commit", "onroot", "127.0.0.1:1/x"); r.code == 0 || !strings.Contains(r.stderr, "--rootfs") {
		t.Errorf("commit of a --rootfs container = exit %d, %q; want a failure naming --rootfs", r.code, r.stderr)
	}
	e.mustRun(t, "rm", "onroot")
	for _, args := range [][]string{
		{"run", "--rm", "--rootfs", filepath.Join(dir, "nope"), "true"},
		{"run", "--rm", "--rootfs", "--cow", "fuse", dir, "true"},
		{"run", "--rm", "--rootfs", filepath.Join(dir, "etc/passwd"), "true"},
	} {
		if r := e.lazyrun(t, "", args...); r.code != 125 || r.stderr == "" {
			t.Errorf("lazyrun %s = exit %d, %q; want 125 and an error", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// TestRunPullPolicy: as docker run, a recorded image runs without asking
// the registry, --pull=always follows a moved tag, --pull=never needs the
// image recorded.
func TestRunPullPolicy(t *testing.T) {
	e := newEnv(t, v1.Config{Cmd: []string{"cat", "/version"}})
	reg, _ := strings.CutSuffix(e.ref, "/busybox:latest")
	push := func(version string) {
		layers := []testutil.Layer{
			testutil.WriteLayerDir(t, testutil.BusyboxRoot(t), types.OCILayer),
			testutil.WriteLayer(t, []testutil.File{{Path: "version", Data: []byte(version + "\n")}}, types.OCILayer),
		}
		testutil.PushImage(t, reg, "moving", layers, testutil.ImageConfig{Config: v1.Config{Cmd: []string{"cat", "/version"}}})
	}
	ref := reg + "/moving"
	if r := e.lazyrun(t, "", "run", "--rm", "--pull=never", ref); r.code != 125 || !strings.Contains(r.stderr, "no such image") {
		t.Errorf("run --pull=never of an unknown image = exit %d, %q; want 125, no such image", r.code, r.stderr)
	}
	push("one")
	if out := e.mustRun(t, "run", "--rm", ref); out != "one\n" {
		t.Errorf("first run = %q, want one", out)
	}
	push("two")
	for _, args := range [][]string{{"run", "--rm", ref}, {"run", "--rm", "--pull=never", ref}} {
		if out := e.mustRun(t, args...); out != "one\n" {
			t.Errorf("lazyrun %s after the tag moved = %q, want the recorded image's one", strings.Join(args, " "), out)
		}
	}
	if out := e.mustRun(t, "run", "--rm", "--pull=always", ref); out != "two\n" {
		t.Errorf("run --pull=always = %q, want two", out)
	}
	if out := e.mustRun(t, "run", "--rm", ref); out != "two\n" {
		t.Errorf("run after --pull=always = %q, want two", out)
	}
	if r := e.lazyrun(t, "", "run", "--rm", "--pull=sometimes", ref); r.code != 125 || !strings.Contains(r.stderr, "sometimes") {
		t.Errorf("run --pull=sometimes = exit %d, %q; want 125 naming it", r.code, r.stderr)
	}
}
