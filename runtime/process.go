package runtime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lazyfs/lazyfs/runtime/spec"
)

// Network modes.
const (
	NetHost = "host" // the host's network namespace (the default)
	NetNone = "none" // a namespace of its own with only loopback
)

// Spec is what a container was asked to run with: docker run's flags, kept
// in config.json so a container can be inspected and started again.
type Spec struct {
	// Process decides the program, its environment, user, working
	// directory and mounts. Its Env is already resolved against the
	// caller's environment (spec.UserEnv) and its EnvFiles read, so a
	// restart sees the same values.
	Process     spec.Options `json:"process"`
	Net         string       `json:"net,omitempty"`
	Interactive bool         `json:"interactive,omitempty"`
	Memory      int64        `json:"memory,omitempty"`    // bytes; 0 = unlimited
	NanoCPUs    int64        `json:"nanoCpus,omitempty"`  // billionths of a CPU; 0 = unlimited
	PidsLimit   int64        `json:"pidsLimit,omitempty"` // 0 = unlimited
	Remove      bool         `json:"remove,omitempty"`    // --rm
}

// lookPath finds a program as the container's shell would, in the PATH of
// the container's environment, and returns the exit code docker gives when
// it cannot: 127 when it does not exist, 126 when it cannot be executed.
func lookPath(name string, env []string) (string, int, error) {
	check := func(p string) error {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			return fmt.Errorf("is a directory: %w", syscall.EACCES)
		}
		if fi.Mode()&0o111 == 0 {
			return fmt.Errorf("permission denied: %w", syscall.EACCES)
		}
		return nil
	}
	if strings.Contains(name, "/") {
		if err := check(name); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", ExitNotFound, fmt.Errorf("exec: %q: no such file or directory", name)
			}
			return "", ExitCannotRun, fmt.Errorf("exec: %q: %w", name, err)
		}
		return name, 0, nil
	}
	path := spec.DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	var denied error
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		err := check(p)
		if err == nil {
			return p, 0, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && denied == nil {
			denied = fmt.Errorf("exec: %q: %w", p, err)
		}
	}
	if denied != nil {
		return "", ExitCannotRun, denied
	}
	return "", ExitNotFound, fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}
