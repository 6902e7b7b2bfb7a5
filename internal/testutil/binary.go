package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// FUSEEnv is the environment variable that turns "FUSE (or root) is not
// usable here" from a skip into a failure when set to "1"; .ci/run sets it.
const FUSEEnv = "LAZYFS_REQUIRE_FUSE"

// RequireFUSE skips t unless it runs as root with /dev/fuse present (what
// a FUSE mount, and so a container, needs), or fails it when FUSEEnv is
// "1". what names what needs them, for the message ("FUSE", "containers").
func RequireFUSE(t testing.TB, what string) {
	t.Helper()
	_, err := os.Stat("/dev/fuse")
	if err == nil && os.Geteuid() == 0 {
		return
	}
	if err == nil {
		err = fmt.Errorf("euid %d", os.Geteuid())
	}
	if os.Getenv(FUSEEnv) == "1" {
		t.Fatalf("%s: need root and /dev/fuse: %v (%s=1)", what, err, FUSEEnv)
	}
	t.Skipf("%s: need root and /dev/fuse: %v", what, err)
}

// RunWithBinary is the body of a TestMain for the tests of a command that
// run the real binary: it builds the main package in the current directory
// (the package under test) into a temporary directory, sets *bin to its
// path, runs the tests and removes the directory. It returns the exit code
// for os.Exit: m.Run's, or 1 when the build failed (the compiler's output
// is on stderr).
func RunWithBinary(m *testing.M, name string, bin *string) int {
	dir, err := os.MkdirTemp("", name+"-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	*bin = filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", *bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "build %s: %v\n", name, err)
		return 1
	}
	return m.Run()
}
