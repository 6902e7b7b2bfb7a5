package testutil

import (
	"fmt"
	"os"
	"testing"
)

// RequireEnv is the environment variable that turns a missing dependency
// (docker-registry, busybox, pigz) from a skip into a failure.
const RequireEnv = "LAZYFS_REQUIRE_REGISTRY"

// skipOrFail skips t with the reason, or fails it when RequireEnv is "1".
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s (%s=1)", msg, RequireEnv)
	}
	t.Skip(msg)
}
