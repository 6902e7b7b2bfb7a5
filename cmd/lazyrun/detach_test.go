package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Long-running containers: run -d, ps, logs, exec, stop, start, kill, rm,
// --restart, and what a killed supervisor leaves.

const loopScript = `echo started; while true; do sleep 1; done`

var fullID = regexp.MustCompile(`^[0-9a-f]{64}\n$`)

// runDetached runs `lazyrun run -d args...` and returns the container's ID.
func (e *env) runDetached(t *testing.T, args ...string) string {
	t.Helper()
	start := time.Now()
	out := e.mustRun(t, append([]string{"run", "-d"}, args...)...)
	if !fullID.MatchString(out) {
		t.Fatalf("run -d printed %q, want a full container ID", out)
	}
	t.Logf("run -d returned in %v", time.Since(start))
	return strings.TrimSpace(out)
}

// waitLog follows the container's log until a line equal to want has come
// count times, or fails after a minute.
func (e *env) waitLog(t *testing.T, container, want string, count int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, lazyrunBin, "--root", e.root, "logs", "-f", container)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stdout)
	seen := 0
	var got []string
	for sc.Scan() {
		got = append(got, sc.Text())
		if sc.Text() == want {
			if seen++; seen == count {
				return
			}
		}
	}
	t.Fatalf("logs -f %s ended after %q without %d lines %q", container, got, count, want)
}

// state reads a container's state.json.
func (e *env) state(t *testing.T, id string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "containers", id, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// psLine is the line of `ps` (args) that names the container, or "".
func (e *env) psLine(t *testing.T, name string, args ...string) string {
	t.Helper()
	for line := range strings.Lines(e.mustRun(t, append([]string{"ps"}, args...)...)) {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return line
		}
	}
	return ""
}

func TestDetachedLifecycle(t *testing.T) {
	e := newEnv(t, v1.Config{Env: []string{"PATH=/bin", "IMAGE_VAR=img"}})
	id := e.runDetached(t, "--name", "web", e.ref, "sh", "-c", loopScript)

	line := e.psLine(t, "web")
	if !strings.HasPrefix(line, id[:12]) || !strings.Contains(line, "Up ") || !strings.Contains(line, `"sh -c 'echo started`) && !strings.Contains(line, `"sh -c echo started`) {
		t.Errorf("ps does not show web up:\n%s", line)
	}
	e.waitLog(t, "web", "started", 1)
	if out := e.mustRun(t, "logs", "web"); out != "started\n" {
		t.Errorf("logs web = %q, want \"started\\n\"", out)
	}

	t.Run("exec", func(t *testing.T) {
		start := time.Now()
		out := e.mustRun(t, "exec", "web", "cat", "/proc/1/cmdline")
		t.Logf("exec cat took %v", time.Since(start))
		if !strings.HasPrefix(out, "lazyrun-init\x00") {
			t.Errorf("exec cat /proc/1/cmdline = %q, want the container's init", out)
		}
		ps := e.mustRun(t, "exec", "web", "ps")
		for _, want := range []string{"lazyrun-init", "sh -c " + loopScript, "sleep 1", " ps"} {
			if !strings.Contains(ps, want) {
				t.Errorf("exec ps lacks %q:\n%s", want, ps)
			}
		}
		// Its own PID namespace: ps runs as a process of the container.
		if out := e.mustRun(t, "exec", "web", "sh", "-c", "echo $$; readlink /proc/self"); len(strings.Fields(out)) != 2 || strings.Fields(out)[0] != strings.Fields(out)[1] {
			t.Errorf("exec's PID and /proc/self differ: %q", out)
		}
		if r := e.lazyrun(t, "", "exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3"); r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
			t.Errorf("exec exit 3 = %d, %q, %q; want 3, out, err", r.code, r.stdout, r.stderr)
		}
		out = e.mustRun(t, "exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", "web", "sh", "-c", "echo $FOO $IMAGE_VAR; pwd; id -u; id -g")
		if out != "bar img\n/tmp\n1000\n1000\n" {
			t.Errorf("exec -e -w -u = %q", out)
		}
		if r := e.lazyrun(t, "echo from stdin\nexit 4\n", "exec", "-i", "web", "sh"); r.code != 4 || r.stdout != "from stdin\n" {
			t.Errorf("exec -i = %d, %q; want 4, from stdin", r.code, r.stdout)
		}
		if r := e.lazyrun(t, "", "exec", "web", "no-such-program"); r.code != 127 {
			t.Errorf("exec no-such-program = exit %d, %q; want 127", r.code, r.stderr)
		}
		if r := e.lazyrun(t, "", "exec", "-u", "nosuchuser", "web", "true"); r.code != 126 || !strings.Contains(r.stderr, "nosuchuser") {
			t.Errorf("exec -u nosuchuser = exit %d, %q; want 126", r.code, r.stderr)
		}
		e.mustRun(t, "exec", "web", "sh", "-c", "echo kept > /kept.txt")
		// The exec'd processes are gone: only init, sh and sleep are left.
		// (echo and the glob are the shell's own: no process of their own.)
		if out := e.mustRun(t, "exec", "web", "sh", "-c", "set -- /proc/[0-9]*; echo $#"); out != "4\n" {
			t.Errorf("processes in the container while exec runs = %s, want 4 (init, sh, sleep, this sh)", out)
		}
	})

	start := time.Now()
	if out := e.mustRun(t, "stop", "web"); out != "web\n" {
		t.Errorf("stop printed %q", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v", d)
	}
	t.Logf("stop took %v", time.Since(start))
	// sh ends with the SIGTERM: 128+15.
	if line := e.psLine(t, "web", "-a"); !strings.Contains(line, "Exited (143)") {
		t.Errorf("ps -a after stop:\n%s", line)
	}
	if line := e.psLine(t, "web"); line != "" {
		t.Errorf("ps lists a stopped container:\n%s", line)
	}
	if r := e.lazyrun(t, "", "exec", "web", "true"); r.code != 1 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("exec in a stopped container = %d, %q; want 1, is not running", r.code, r.stderr)
	}
	if out := e.mustRun(t, "stop", "web"); out != "web\n" {
		t.Errorf("stop of a stopped container printed %q", out)
	}

	// Started again: the same upper layer, the log goes on.
	start = time.Now()
	if out := e.mustRun(t, "start", "web"); out != "web\n" {
		t.Errorf("start printed %q", out)
	}
	t.Logf("start returned in %v", time.Since(start))
	if line := e.psLine(t, "web"); !strings.Contains(line, "Up ") {
		t.Errorf("ps after start:\n%s", line)
	}
	if out := e.mustRun(t, "exec", "web", "cat", "/kept.txt"); out != "kept\n" {
		t.Errorf("a file written before the stop = %q, want kept", out)
	}
	e.waitLog(t, "web", "started", 2)

	if out := e.mustRun(t, "kill", "web"); out != "web\n" {
		t.Errorf("kill printed %q", out)
	}
	if line := e.psLine(t, "web", "-a"); !strings.Contains(line, "Exited (137)") {
		t.Errorf("ps -a after kill:\n%s", line)
	}
	if r := e.lazyrun(t, "", "kill", "web"); r.code != 1 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("kill of a stopped container = %d, %q", r.code, r.stderr)
	}
	if out := e.mustRun(t, "logs", "--tail", "1", "-t", "web"); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT[0-9:.]+Z started\n$`).MatchString(out) {
		t.Errorf("logs --tail 1 -t = %q", out)
	}
	e.mustRun(t, "rm", "web")
	if l := leftovers(e.root, []string{id}); len(l) > 0 {
		t.Errorf("left after rm: %v", l)
	}
}

func TestDetachedOutputAndErrors(t *testing.T) {
	e := newEnv(t, v1.Config{})
	// stdout and stderr are kept apart, a line without its newline too.
	e.runDetached(t, "--name", "out", e.ref, "sh", "-c", `echo one; echo two >&2; printf three`)
	e.waitLog(t, "out", "one", 1)
	r := e.lazyrun(t, "", "logs", "-f", "out") // ends when the container has
	if r.code != 0 || r.stdout != "one\nthree" || r.stderr != "two\n" {
		t.Errorf("logs = %d, %q, %q; want one and three on stdout, two on stderr", r.code, r.stdout, r.stderr)
	}
	if line := e.psLine(t, "out", "-a"); !strings.Contains(line, "Exited (0)") {
		t.Errorf("ps -a:\n%s", line)
	}
	// A foreground run keeps its output too.
	e.mustRun(t, "run", "--name", "fg", e.ref, "echo", "foreground")
	if out := e.mustRun(t, "logs", "fg"); out != "foreground\n" {
		t.Errorf("logs of a foreground run = %q", out)
	}
	// A program that cannot start: the error and docker's exit code.
	r = e.lazyrun(t, "", "run", "-d", "--name", "bad", e.ref, "no-such-program")
	if r.code != 127 || !strings.Contains(r.stderr, "no-such-program") || r.stdout != "" {
		t.Errorf("run -d no-such-program = %d, %q, %q; want 127", r.code, r.stdout, r.stderr)
	}
	// --rm with -d: gone once it exits.
	id := e.runDetached(t, "--rm", e.ref, "true")
	e.lazyrun(t, "", "logs", "-f", id)
	if _, err := os.Stat(filepath.Join(e.root, "containers", id)); !os.IsNotExist(err) {
		t.Errorf("run -d --rm: container still there: %v", err)
	}
	if r := e.lazyrun(t, "", "run", "--rm", "--restart=always", e.ref, "true"); r.code != 125 {
		t.Errorf("run --rm --restart=always = exit %d; want 125", r.code)
	}
}

// A program that ignores SIGTERM is killed after stop's timeout.
func TestStopTimeout(t *testing.T) {
	e := newEnv(t, v1.Config{})
	e.runDetached(t, "--name", "stubborn", e.ref, "sh", "-c", `trap "" TERM; `+loopScript)
	e.waitLog(t, "stubborn", "started", 1)
	start := time.Now()
	e.mustRun(t, "stop", "-t", "1", "stubborn")
	d := time.Since(start)
	t.Logf("stop -t 1 of a program that ignores SIGTERM took %v", d)
	if d < time.Second || d > 6*time.Second {
		t.Errorf("stop -t 1 took %v, want a little over 1 s", d)
	}
	if line := e.psLine(t, "stubborn", "-a"); !strings.Contains(line, "Exited (137)") {
		t.Errorf("ps -a after stop -t 1:\n%s", line)
	}
}

func TestRestartPolicy(t *testing.T) {
	e := newEnv(t, v1.Config{})
	// on-failure:2 runs it three times in all, then gives up.
	e.runDetached(t, "--name", "flaky", "--restart", "on-failure:2", e.ref, "sh", "-c", "echo run; exit 3")
	r := e.lazyrun(t, "", "logs", "-f", "flaky")
	if r.stdout != "run\nrun\nrun\n" {
		t.Errorf("on-failure:2 ran %q, want three runs", r.stdout)
	}
	if line := e.psLine(t, "flaky", "-a"); !strings.Contains(line, "Exited (3)") {
		t.Errorf("ps -a:\n%s", line)
	}
	id := strings.Fields(e.psLine(t, "flaky", "-a"))[0]
	ids := e.containerIDs()
	for _, full := range ids {
		if strings.HasPrefix(full, id) {
			if n := e.state(t, full)["restartCount"]; n != float64(2) {
				t.Errorf("restartCount = %v, want 2", n)
			}
		}
	}

	// always restarts until stop, which ends it for good.
	e.runDetached(t, "--name", "always", "--restart=always", e.ref, "sh", "-c", "echo run; exit 0")
	e.waitLog(t, "always", "run", 3)
	e.mustRun(t, "stop", "always")
	line := e.psLine(t, "always", "-a")
	if !strings.Contains(line, "Exited (0)") {
		t.Errorf("ps -a after stopping a container that restarts:\n%s", line)
	}
	if e.psLine(t, "always") != "" {
		t.Errorf("stopped container still listed by ps")
	}
}

// Ten containers of one image at once, then stopped and removed: nothing
// is left of them.
func TestManyDetached(t *testing.T) {
	e := newEnv(t, v1.Config{})
	fdsBefore := openFDs(t)
	const n = 10
	ids := make([]string, n)
	errs := make([]string, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.Command(lazyrunBin, "--root", e.root, "run", "-d", "--name", fmt.Sprintf("c%d", i), e.ref, "sh", "-c", loopScript)
			out, err := cmd.Output()
			if err != nil || !fullID.Match(out) {
				errs[i] = fmt.Sprintf("run -d c%d: %v %q", i, err, out)
			}
			ids[i] = strings.TrimSpace(string(out))
		})
	}
	wg.Wait()
	t.Logf("%d containers started at once in %v", n, time.Since(start))
	for _, e := range errs {
		if e != "" {
			t.Fatal(e)
		}
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("c%d", i)
		if line := e.psLine(t, names[i]); !strings.Contains(line, "Up ") {
			t.Errorf("ps does not show %s up: %q", names[i], line)
		}
		e.waitLog(t, names[i], "started", 1)
	}
	start = time.Now()
	if out := e.mustRun(t, append([]string{"stop"}, names...)...); out != strings.Join(names, "\n")+"\n" {
		t.Errorf("stop printed %q", out)
	}
	t.Logf("stopping %d took %v", n, time.Since(start))
	e.mustRun(t, append([]string{"rm"}, names...)...)
	if l := leftovers(e.root, ids); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}
	if cs := e.containerIDs(); len(cs) != 0 {
		t.Errorf("%d containers still recorded", len(cs))
	}
	if fds := openFDs(t); fds != fdsBefore {
		t.Errorf("the test process has %d open files, had %d", fds, fdsBefore)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A supervisor killed with SIGKILL: ps says dead, rm -f cleans up.
func TestSupervisorKilled(t *testing.T) {
	e := newEnv(t, v1.Config{})
	id := e.runDetached(t, "--name", "orphan", e.ref, "sh", "-c", loopScript)
	e.waitLog(t, "orphan", "started", 1)
	st := e.state(t, id)
	sup, _ := st["supervisorPid"].(float64)
	initPid, _ := st["pid"].(float64)
	if sup <= 0 || initPid <= 0 {
		t.Fatalf("state.json = %v, want the supervisor's and the init's PID", st)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", int(sup))); err != nil || !strings.HasPrefix(string(b), "lazyrun-supervisor\x00") {
		t.Fatalf("process %d is not the supervisor: %q, %v", int(sup), b, err)
	}
	pidfd, err := pidfdOpen(int(sup))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(int(sup), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitExit(t, pidfd)
	// The lock went with it: ps tells the truth.
	if line := e.psLine(t, "orphan", "-a"); !strings.Contains(line, "Dead") {
		t.Errorf("ps -a after the supervisor was killed:\n%s", line)
	}
	if line := e.psLine(t, "orphan"); line != "" {
		t.Errorf("ps lists a dead container:\n%s", line)
	}
	if r := e.lazyrun(t, "", "rm", "orphan"); r.code != 0 {
		// docker removes a dead container without -f; so do we.
		t.Errorf("rm of a dead container = %d, %s", r.code, r.stderr)
	}
	if l := leftovers(e.root, []string{id}); len(l) > 0 {
		t.Errorf("left behind: %v", l)
	}

	// Killed again, then started afresh rather than removed.
	id = e.runDetached(t, "--name", "again", e.ref, "sh", "-c", "touch /mark; "+loopScript)
	e.waitLog(t, "again", "started", 1)
	sup, _ = e.state(t, id)["supervisorPid"].(float64)
	pidfd, err = pidfdOpen(int(sup))
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(int(sup), syscall.SIGKILL)
	waitExit(t, pidfd)
	e.mustRun(t, "start", "again")
	if out := e.mustRun(t, "exec", "again", "ls", "/mark"); out != "/mark\n" {
		t.Errorf("after start of a dead container: %q", out)
	}
	e.mustRun(t, "rm", "-f", "again")
	if l := leftovers(e.root, []string{id}); len(l) > 0 {
		t.Errorf("left behind after rm -f: %v", l)
	}

	// A supervisor that hangs (stopped here) still holds the lock: ps says
	// up, rm -f kills it and cleans up.
	id = e.runDetached(t, "--name", "hung", e.ref, "sh", "-c", loopScript)
	e.waitLog(t, "hung", "started", 1)
	sup, _ = e.state(t, id)["supervisorPid"].(float64)
	if err := syscall.Kill(int(sup), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e.mustRun(t, "rm", "-f", "hung")
	t.Logf("rm -f of a hung supervisor took %v", time.Since(start))
	if l := leftovers(e.root, []string{id}); len(l) > 0 {
		t.Errorf("left behind after rm -f of a hung supervisor: %v", l)
	}
}

func pidfdOpen(pid int) (int, error) { return unix.PidfdOpen(pid, 0) }

// waitExit waits until the process of pidfd has exited (it is not ours to
// reap), then closes pidfd.
func waitExit(t *testing.T, pidfd int) {
	t.Helper()
	defer unix.Close(pidfd)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 10_000); err != nil || n != 1 {
		t.Fatalf("process did not exit: %d, %v", n, err)
	}
}

// exec -it gets a terminal of the container's own devpts, with the
// caller's size, and the caller's terminal is relayed.
func TestExecTerminal(t *testing.T) {
	e := newEnv(t, v1.Config{})
	e.runDetached(t, "--name", "box", e.ref, "sh", "-c", loopScript)
	code, got := onTerminal(t, "tty; stty size; exit 6\n", "--root", e.root, "exec", "-it", "box", "sh")
	if code != 6 {
		t.Errorf("lazyrun exec -it sh with exit 6: exit %d", code)
	}
	for _, want := range []string{"/dev/pts/0", "33 101"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, got)
		}
	}
	e.mustRun(t, "rm", "-f", "box")
}

// The process serving the container's files (its supervisor) killed while
// the container writes: every write that returned is in the upper layer,
// ps says the container is dead, and a start mounts the same upper again.
// With --cow=fuse the writes pass through the killed process itself.
func TestSupervisorKilledDuringWrites(t *testing.T) {
	e := newEnv(t, v1.Config{})
	for _, cow := range []string{"overlay", "fuse"} {
		t.Run(cow, func(t *testing.T) {
			name := "writer-" + cow
			// A number is printed once the file that holds it was written.
			// Started again, the program only waits: the check below reads
			// what the first run wrote, not files being written anew.
			id := e.runDetached(t, "--cow", cow, "--name", name, e.ref, "sh", "-c",
				`[ -e /data/f1 ] && exec sleep 1000; mkdir -p /data; i=0; while :; do i=$((i+1)); echo "line $i" > /data/f$i; echo $i; done`)
			e.waitLog(t, name, "200", 1)
			sup, _ := e.state(t, id)["supervisorPid"].(float64)
			pidfd, err := pidfdOpen(int(sup))
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Kill(int(sup), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			waitExit(t, pidfd)
			if line := e.psLine(t, name, "-a"); !strings.Contains(line, "Dead") {
				t.Errorf("ps -a after the supervisor was killed: %q, want Dead", line)
			}
			logged := 0
			for line := range strings.Lines(e.mustRun(t, "logs", name)) {
				n, err := strconv.Atoi(strings.TrimSpace(line))
				if err != nil {
					t.Fatalf("log line %q", line)
				}
				logged = max(logged, n)
			}
			upper := filepath.Join(e.root, "containers", id, "upper", "data")
			for i := 1; i <= logged; i++ {
				b, err := os.ReadFile(filepath.Join(upper, fmt.Sprintf("f%d", i)))
				if want := fmt.Sprintf("line %d\n", i); err != nil || string(b) != want {
					t.Fatalf("write %d of %d that returned: upper has %q, %v; want %q", i, logged, b, err, want)
				}
			}
			t.Logf("%d writes returned before the kill; all %d are in the upper layer", logged, logged)

			// Started again: the same upper, through a new mount.
			e.mustRun(t, "start", name)
			check := fmt.Sprintf(`for i in $(seq 1 %d); do [ "$(cat /data/f$i)" = "line $i" ] || echo bad $i; done; echo checked`, logged)
			if out := e.mustRun(t, "exec", name, "sh", "-c", check); out != "checked\n" {
				t.Errorf("after start, the container sees: %q", out)
			}
			e.mustRun(t, "rm", "-f", name)
			if l := leftovers(e.root, []string{id}); len(l) > 0 {
				t.Errorf("left behind after rm -f: %v", l)
			}
		})
	}
}

// A mount namespace that receives the host's mounts (a slave one, as `ip
// netns exec` and systemd services with PrivateTmp make, on a host whose /
// is shared) gets no copy of the container's image mount: the container's
// directory is a private mount.
func TestSlaveNamespaceDoesNotHoldImage(t *testing.T) {
	e := newEnv(t, v1.Config{})
	// The root on a shared mount, as / is under systemd (it is private on
	// these machines).
	if err := unix.Mount(e.root, e.root, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(e.root, unix.MNT_DETACH) })
	if err := unix.Mount("", e.root, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("unshare", "--mount", "--propagation", "slave", "sleep", "120")
	if err := holder.Start(); err != nil {
		t.Skipf("unshare: %v", err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	time.Sleep(200 * time.Millisecond) // unshare has made the namespace
	id := e.runDetached(t, "--name", "shy", e.ref, "sh", "-c", loopScript)
	e.waitLog(t, "shy", "started", 1)
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", holder.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), filepath.Join(e.root, "containers", id, "lower")) {
		t.Errorf("the slave namespace has a copy of the image mount")
	}
	start := time.Now()
	e.mustRun(t, "stop", "shy")
	e.mustRun(t, "rm", "shy")
	t.Logf("stop and rm took %v", time.Since(start))
	e.checkSupervisorLogs(t)
}
