package bench

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/lazyfs/lazyfs/internal/testutil"
)

// The memory section (issue 7: a daemon serving an image of 100 000 files
// stays under 150 MiB): the resident memory of `lazyfs mount` and of a
// lazyrun supervisor serving the image memImage, minbase plus one layer of
// memFiles small files, after the mount and after a stat walk of every
// file. The layer is generated deterministically into the work directory
// on each run (a few seconds), never kept in git.
const (
	memImage    = "many"
	memFiles    = 100000 // /many/dNNNN/fNNNNNN, 100 to a directory
	memFileMax  = 1024   // a file holds 0..memFileMax bytes
	memBarBytes = 150 << 20
)

// MemResult is one measurement of the memory section.
type MemResult struct {
	What string // "lazyfs mount", "lazyrun supervisor"
	// RSS after the mount is ready (1 s later, so that start-up garbage
	// has had a chance to go), after the stat walk, and the peak
	// (VmHWM); RssAnon is the part that is not file-backed (the heap).
	Mounted, Walked, Peak   int64
	MountedAnon, WalkedAnon int64
	Entries                 int    // lines the walk printed
	Err                     string `json:",omitempty"`
}

// MemSection is the memory section's results.
type MemSection struct {
	Ref        string
	Files      int   // regular files in the generated layer
	LayerBytes int64 // its compressed size
	Walk       string
	Samples    []MemResult
	Skipped    string `json:",omitempty"`
}

// memWalk is the stat walk: an lstat of every file, in the mount.
const memWalk = `find "$1" -xdev -printf '%s\n' | wc -l`

// setupMem generates the layer and adds the image to r.images.
func (r *runner) setupMem(ctx context.Context) error {
	p := filepath.Join(r.cfg.WorkDir, "many-layer.tar.gz")
	if err := writeManyLayer(p); err != nil {
		return fmt.Errorf("image %s: %w", memImage, err)
	}
	l := testutil.Layer{Path: p, MediaType: types.OCILayer}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	dg := digest.Canonical.Digester()
	if l.Size, err = io.Copy(dg.Hash(), f); err != nil {
		return err
	}
	l.Digest = dg.Digest()
	b := &builtImage{Image: Image{Name: memImage}, Ref: "bench/" + memImage + ":latest"}
	err = withTB(ctx, r.logf, func(t testing.TB) {
		b.Root = testutil.DebianRoot(t)
		b.Layers = append(testutil.DebianLayers(t), l)
	})
	if err != nil {
		return fmt.Errorf("image %s: %w", memImage, err)
	}
	b.Config.Env, b.Config.Cmd = []string{imagePath}, []string{"bash"}
	r.images[memImage] = b
	return nil
}

// writeManyLayer writes memFiles files of 0..memFileMax bytes
// (testutil.PatternAt contents, sizes from fsSize) in directories of 100
// as a gzip layer.
func writeManyLayer(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := gzip.NewWriter(bw)
	tw := tar.NewWriter(zw)
	mtime := testutil.DefaultModTime
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "many/", Mode: 0o755, ModTime: mtime}); err != nil {
		return err
	}
	for i := range memFiles {
		dir := fmt.Sprintf("many/d%04d/", i/100)
		if i%100 == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: mtime}); err != nil {
				return err
			}
		}
		n := fsSize("many", i, memFileMax)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%sf%06d", dir, i), Mode: 0o644, Size: n, ModTime: mtime}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, testutil.PatternReader(int64(200000+i), n)); err != nil {
			return err
		}
	}
	for _, c := range []io.Closer{tw, zw} {
		if err := c.Close(); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// measureMem takes -runs samples of each daemon's memory.
func (r *runner) measureMem(ctx context.Context) {
	b := r.images[memImage]
	ms := &MemSection{Ref: b.Ref, Files: memFiles, LayerBytes: b.Layers[len(b.Layers)-1].Size,
		Walk: strings.Replace(memWalk, `"$1"`, "MOUNT", 1)}
	r.res.Mem = ms
	for i := range r.cfg.Runs {
		for _, fn := range []func(context.Context) MemResult{r.memLazyfs, r.memSupervisor} {
			if ctx.Err() != nil {
				return
			}
			m := fn(ctx)
			ms.Samples = append(ms.Samples, m)
			if m.Err != "" {
				r.logf("run %d/%d memory, %s: FAILED: %s", i+1, r.cfg.Runs, m.What, m.Err)
				continue
			}
			r.logf("run %d/%d memory, %s: RSS %s mounted, %s after a stat walk of %d entries (anonymous %s, %s), peak %s",
				i+1, r.cfg.Runs, m.What, mib(m.Mounted), mib(m.Walked), m.Entries, mib(m.MountedAnon), mib(m.WalkedAnon), mib(m.Peak))
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// memLazyfs measures `lazyfs mount` of the image on a fresh root.
func (r *runner) memLazyfs(ctx context.Context) (m MemResult) {
	m.What = "lazyfs mount"
	sc, err := newScratch(ctx, r.cfg.WorkDir, "mem", 0)
	if err != nil {
		m.Err = err.Error()
		return m
	}
	defer r.closeScratch(sc)
	root, mnt := filepath.Join(sc.Dir, "lazyfs"), filepath.Join(sc.Dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		m.Err = err.Error()
		return m
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	logf, err := os.Create(r.logPath("mem-lazyfs"))
	if err != nil {
		m.Err = err.Error()
		return m
	}
	defer logf.Close()
	lazyfs := filepath.Join(r.cfg.BinDir, "lazyfs")
	cmd := exec.CommandContext(ctx, lazyfs, "--root", root, "mount", r.ref(memImage), mnt)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		m.Err = err.Error()
		return m
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if err := exec.Command(lazyfs, "umount", mnt).Run(); err != nil {
			_ = cmd.Cancel()
		}
		<-done
	}()
	for {
		ok, err := isMountPoint(mnt)
		if err != nil {
			m.Err = err.Error()
			return m
		}
		if ok {
			break
		}
		select {
		case err := <-done:
			done <- err
			m.Err = fmt.Sprintf("lazyfs mount exited: %v", err)
			return m
		case <-ctx.Done():
			m.Err = ctx.Err().Error()
			return m
		case <-time.After(mountPoll):
		}
	}
	if err := r.memWalk(ctx, &m, cmd.Process.Pid, mnt); err != nil {
		m.Err = err.Error()
	}
	return m
}

// memSupervisor measures the supervisor of `lazyrun run -d` of the image
// (a shell that waits), the walk made from the host in its lower mount.
func (r *runner) memSupervisor(ctx context.Context) (m MemResult) {
	m.What = "lazyrun supervisor"
	sc, err := newScratch(ctx, r.cfg.WorkDir, "mem", 0)
	if err != nil {
		m.Err = err.Error()
		return m
	}
	defer r.closeScratch(sc)
	root := filepath.Join(sc.Dir, "lazyfs")
	_, out, err := r.command(ctx, r.logPath("mem-lazyrun"), nil,
		r.lazyrun(root, "run", "-d", "--net", "none", "--prefetch=false", r.ref(memImage), "sleep", "600")...)
	if err != nil {
		m.Err = err.Error()
		return m
	}
	id := strings.TrimSpace(out)
	defer r.command(context.WithoutCancel(ctx), r.logPath("mem-lazyrun-rm"), nil, r.lazyrun(root, "rm", "-f", id)...) //nolint:errcheck // logged; the scratch's clean-up follows
	data, err := os.ReadFile(filepath.Join(root, "containers", id, "state.json"))
	if err != nil {
		m.Err = err.Error()
		return m
	}
	var st struct {
		SupervisorPid int `json:"supervisorPid"`
	}
	if err := json.Unmarshal(data, &st); err != nil || st.SupervisorPid == 0 {
		m.Err = fmt.Sprintf("state.json of %s: no supervisor PID (%v)", id, err)
		return m
	}
	if err := r.memWalk(ctx, &m, st.SupervisorPid, filepath.Join(root, "containers", id, "lower")); err != nil {
		m.Err = err.Error()
	}
	return m
}

// memWalk reads pid's memory a second after the mount at dir is up,
// walks dir, and reads it again.
func (r *runner) memWalk(ctx context.Context, m *MemResult, pid int, dir string) error {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	st, err := procStatus(pid)
	if err != nil {
		return err
	}
	m.Mounted, m.MountedAnon = st["VmRSS"], st["RssAnon"]
	_, out, err := r.command(ctx, r.logPath("mem-walk"), nil, "sh", "-c", memWalk, "sh", dir)
	if err != nil {
		return err
	}
	if m.Entries, err = strconv.Atoi(strings.TrimSpace(out)); err != nil {
		return fmt.Errorf("walk printed %q", out)
	}
	if m.Entries < memFiles {
		return fmt.Errorf("walk of %s saw %d entries, want at least %d", dir, m.Entries, memFiles)
	}
	if st, err = procStatus(pid); err != nil {
		return err
	}
	m.Walked, m.WalkedAnon, m.Peak = st["VmRSS"], st["RssAnon"], st["VmHWM"]
	return nil
}

// procStatus reads the kB fields of /proc/PID/status, in bytes.
func procStatus(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	return parseProcStatus(string(data))
}

func parseProcStatus(s string) (map[string]int64, error) {
	out := map[string]int64{}
	for line := range strings.Lines(s) {
		k, v, ok := strings.Cut(line, ":")
		f := strings.Fields(v)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc status %s: %w", k, err)
		}
		out[k] = n << 10
	}
	if _, ok := out["VmRSS"]; !ok {
		return nil, errors.New("/proc status: no VmRSS")
	}
	return out, nil
}

// markdown renders the memory section.
func (ms *MemSection) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "## Memory of a daemon serving %d files\n\n", ms.Files)
	fmt.Fprintf(b, "Image %s: minbase plus one generated gzip layer of %d files of 0–%d bytes in directories of 100 (%s compressed). "+
		"Resident memory (VmRSS; RssAnon, the heap and other anonymous memory, in brackets) of the serving process 1 s after its mount is up and after a stat walk of the mount (`%s`); peak VmHWM. Bar: under 150 MiB.\n\n",
		ms.Ref, ms.Files, memFileMax, mb(ms.LayerBytes), ms.Walk)
	if ms.Skipped != "" {
		fmt.Fprintf(b, "Not measured: %s\n\n", mdEscape(ms.Skipped))
		return
	}
	b.WriteString("| process | mounted | after the walk | peak | entries walked | bar |\n|---|---|---|---|---|---|\n")
	for _, what := range []string{"lazyfs mount", "lazyrun supervisor"} {
		var mounted, walked, peak, mAnon, wAnon []int64
		entries, failed, firstErr := 0, 0, ""
		for _, s := range ms.Samples {
			if s.What != what {
				continue
			}
			if s.Err != "" {
				if failed++; firstErr == "" {
					firstErr = s.Err
				}
				continue
			}
			mounted, walked, peak = append(mounted, s.Mounted), append(walked, s.Walked), append(peak, s.Peak)
			mAnon, wAnon = append(mAnon, s.MountedAnon), append(wAnon, s.WalkedAnon)
			entries = s.Entries
		}
		if len(mounted) == 0 {
			fmt.Fprintf(b, "| %s | failed: %s | | | | |\n", what, mdEscape(firstErr))
			continue
		}
		bar := "met"
		if median(peak) >= memBarBytes {
			bar = "missed"
		}
		fmt.Fprintf(b, "| %s | %s (%s) | %s (%s) | %s | %d | %s |\n", what, mib(median(mounted)), mib(median(mAnon)),
			mib(median(walked)), mib(median(wAnon)), mib(median(peak)), entries, bar)
	}
	b.WriteString("\n")
}
