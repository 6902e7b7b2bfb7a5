package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// podman from Debian's packages (4.3) is the second full-pull baseline. On
// this kind of machine it runs only with runc (crun 1.8 refuses cgroups v1
// hybrid) and with default ulimits no higher than the hard limits (no
// CAP_SYS_RESOURCE): its configuration is written into the work directory
// and given through CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF and
// CONTAINERS_STORAGE_CONF, so the machine's /etc/containers is not touched.

const podmanConf = `[containers]
default_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`

const podmanRegistries = `unqualified-search-registries = []

[[registry]]
location = "%s"
insecure = true
`

const podmanStorage = `[storage]
driver = "overlay"
graphroot = "%s"
runroot = "%s"
`

// podmanPolicy accepts any image: the registry is ours.
const podmanPolicy = `{"default": [{"type": "insecureAcceptAnything"}]}`

// setupPodman writes podman's configuration, or records in r.podmanErr why
// podman cannot be measured here.
func (r *runner) setupPodman(ctx context.Context) {
	if !r.wantMode(ModePodman) {
		return
	}
	if _, err := exec.LookPath("podman"); err != nil {
		r.podmanErr = fmt.Errorf("podman is not installed (apt-get install podman runc; scripts/bench.sh does)")
		return
	}
	if _, err := exec.LookPath("runc"); err != nil {
		r.podmanErr = fmt.Errorf("runc is not installed (podman's crun refuses this machine's cgroups)")
		return
	}
	dir := filepath.Join(r.cfg.WorkDir, "podman-conf")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.podmanErr = err
		return
	}
	var nofile, nproc syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile)
	_ = syscall.Getrlimit(7 /* RLIMIT_NPROC (Linux) */, &nproc)
	nf, np := min(nofile.Max, 1<<20), min(nproc.Max, 1<<20)
	files := map[string]string{
		"containers.conf": fmt.Sprintf(podmanConf, nf, nf, np, np),
		"registries.conf": fmt.Sprintf(podmanRegistries, r.proxy.Addr),
		"storage.conf":    fmt.Sprintf(podmanStorage, filepath.Join(dir, "unused-storage"), filepath.Join(dir, "unused-run")),
		"policy.json":     podmanPolicy,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			r.podmanErr = err
			return
		}
	}
	r.podmanEnv = []string{
		"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(dir, "registries.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
	}
	r.podmanPolicy = filepath.Join(dir, "policy.json")
	if out, err := exec.CommandContext(ctx, "podman", "--version").Output(); err == nil {
		r.res.Machine.Podman = strings.TrimSpace(string(out))
	}
}

func (r *runner) wantMode(m string) bool {
	for _, x := range r.cfg.Modes {
		if x == m {
			return true
		}
	}
	return false
}

// podman returns podman's argv with fresh storage under dir.
func (r *runner) podman(dir string, args ...string) []string {
	return append([]string{"podman",
		"--root", filepath.Join(dir, "storage"), "--runroot", filepath.Join(dir, "run"), "--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "overlay", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"}, args...)
}

// measurePodman pulls with podman into fresh storage and runs the command.
// If the first podman run fails (other than by the time limit), podman
// cannot run here: the later podman measurements are skipped, with the
// reason in the results.
func (r *runner) measurePodman(ctx context.Context, w Workload) (s Sample) {
	sc, err := newScratch(ctx, r.cfg.WorkDir, "podman", r.cfg.LoopSize)
	if err != nil {
		return Sample{Err: err.Error()}
	}
	defer r.closeScratch(sc)
	ref := r.ref(w.Image)
	pullLog := r.logPath(w.Name + "-podman-pull")
	r.measured(&s, requestsLog(pullLog), func(mark func(string)) error {
		dp, _, err := r.command(ctx, pullLog, r.podmanEnv,
			r.podman(sc.Dir, "pull", "-q", "--tls-verify=false", "--signature-policy", r.podmanPolicy, ref)...)
		mark("podman pull exited")
		s.Wall = dp
		if err != nil {
			return fmt.Errorf("podman pull: %w", err)
		}
		dr, out, err := r.command(ctx, r.logPath(w.Name+"-podman-run"), r.podmanEnv,
			append(r.podman(sc.Dir, "run", "--rm", "--network", "none", "--pull", "never", ref), w.Cmd...)...)
		mark("podman run exited")
		s.Wall += dr
		s.Phases = map[string]time.Duration{"pull": dp, "run": dr}
		return checkRun(w, out, err)
	})
	switch {
	case s.Err == "":
		r.podmanRan = true
	case !r.podmanRan && ctx.Err() == nil && !strings.Contains(s.Err, "deadline exceeded"):
		// Its very first run failed, not by the time limit: podman's own
		// setup (runtime, storage, cgroups) does not work here.
		r.podmanErr = fmt.Errorf("podman cannot run here: %s", s.Err)
	}
	return s
}
