package fusefs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lazyfs/lazyfs/internal/fsops"
	"github.com/lazyfs/lazyfs/internal/testutil"
)

// stressSkips are filesystem stressors of stress-ng 0.15 that are not run on
// the writable mount, with why. None so far: stress-ng itself skips what the
// kernel lacks (exit 3), and the test names those.
var stressSkips = map[string]string{}

// TestCowStressNG runs every stress-ng stressor of the filesystem class for
// a second each with its files on the writable mount, as the containers
// issue asks. A stressor that fails here but passes on the upper's own
// file system is a lazyfs bug; one that fails on both is the machine's.
func TestCowStressNG(t *testing.T) {
	testutil.RequireFUSE(t, "FUSE")
	if testing.Short() {
		t.Skip("-short: stress-ng takes about a minute")
	}
	bin, err := exec.LookPath("stress-ng")
	if err != nil {
		if os.Getenv("LAZYFS_REQUIRE_FUSE") == "1" {
			t.Fatalf("stress-ng not installed (apt-get install stress-ng): %v", err)
		}
		t.Skipf("stress-ng not installed: %v", err)
	}
	out, err := exec.Command(bin, "--class", "filesystem?").CombinedOutput()
	if err != nil {
		t.Fatalf("stress-ng --class filesystem?: %v\n%s", err, out)
	}
	_, list, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
	if !ok {
		t.Fatalf("stress-ng --class filesystem? printed %q", out)
	}
	stressors := strings.Fields(list)

	idxs, src := buildIndexes(t, fsops.LayerTars(t), 64<<10)
	c := mountCow(t, idxs, src, "", Config{})
	onMount := filepath.Join(c.dir, "stress")
	must(t, os.Mkdir(onMount, 0o777))
	native := t.TempDir()

	run := func(dir, name string) (int, string) {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--"+name, "1", "--timeout", "1s", "--temp-path", dir)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			return -1, err.Error()
		}
		return 0, string(out)
	}
	var passed, skippedByUs, skippedByIt, machine []string
	for _, name := range stressors {
		if why, ok := stressSkips[name]; ok {
			skippedByUs = append(skippedByUs, fmt.Sprintf("%s (%s)", name, why))
			continue
		}
		code, out := run(onMount, name)
		switch code {
		case 0:
			passed = append(passed, name)
			continue
		case 3: // stress-ng: not enough resources, or not supported here
			skippedByIt = append(skippedByIt, name)
			continue
		}
		if nc, _ := run(native, name); nc != 0 {
			machine = append(machine, fmt.Sprintf("%s (exit %d here and %d on %s)", name, code, nc, native))
			continue
		}
		t.Errorf("stress-ng --%s fails on the writable mount (exit %d) but passes on the upper's file system:\n%s", name, code, out)
	}
	slices.Sort(skippedByIt)
	t.Logf("stress-ng filesystem class: %d stressors, %d passed, %d not run (%s), %d skipped by stress-ng (%s), %d fail on the host file system too (%s)",
		len(stressors), len(passed), len(skippedByUs), strings.Join(skippedByUs, "; "),
		len(skippedByIt), strings.Join(skippedByIt, ", "), len(machine), strings.Join(machine, ", "))
}
