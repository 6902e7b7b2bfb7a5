package lazyfs_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowed lists, per package, the packages of this module it may import:
// the arrows of docs/architecture.md. A new arrow must be added here on purpose.
var allowed = map[string][]string{
	"index":                  {"index/internal/inflate"},
	"index/internal/inflate": {},
	"fetch":                  {},
	"cache":                  {"index"},
	"fusefs":                 {"index"},
	"unpack":                 {"index"},
	"layers":                 {"index", "fetch", "cache"},
	"metrics":                {"cache"},
	"snapshotter":            {"index", "fetch", "cache", "fusefs", "layers", "metrics"},
	"runtime":                {"fusefs", "fetch", "index", "layers", "cache", "unpack", "runtime/spec", "runtime/cgroup"},
	"runtime/spec":           {},
	"runtime/cgroup":         {},
	"bench":                  nil, // anything
	"bench/cmd/lazybench":    nil,
	"bench/cmd/fsprobe":      {}, // the standard library only: it runs inside the containers
	"cmd/lazyfs":             nil,
	"cmd/lazyrun":            nil,
	"internal/cli":           {"cache", "fetch", "layers"},
	"internal/fsops":         nil,
	"internal/testutil":      nil,
	"internal/registrylog":   {},
}

func TestImportArrows(t *testing.T) {
	const module = "github.com/lazyfs/lazyfs"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		if pkg == "" {
			continue
		}
		may, known := allowed[pkg]
		if !known {
			t.Errorf("package %s is not in the import rules: add it to allowed", pkg)
			continue
		}
		if may == nil {
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module+"/")
			if ours && !slices.Contains(may, dep) {
				t.Errorf("%s imports %s: not an allowed arrow", pkg, dep)
			}
		}
	}
}
