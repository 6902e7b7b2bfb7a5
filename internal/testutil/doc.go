// Package testutil holds the helpers that lazyfs tests share: a real
// registry (Debian's docker-registry) started per test, if asked behind
// token auth with a token server of its own (TokenServer) or with blob
// storage it redirects blob reads to (BlobStore), a fault-injecting
// reverse proxy in front of it, layer and image builders that push with plain
// HTTP, a minimal busybox root, a reference unpacker with OCI layer semantics
// and a tree comparison for differential tests.
//
// Only _test.go files import it. Every helper takes a testing.TB, fails the
// test itself instead of returning errors, and undoes what it did through
// t.Cleanup: processes are killed and waited for, listeners closed,
// temporary files live under t.TempDir.
//
// Helpers that need something from the machine skip the test when it is
// missing (naming what is missing) unless LAZYFS_REQUIRE_REGISTRY=1, which
// CI sets, turns the skip into a failure. scripts/install-deps.sh installs
// everything they use.
//
// Images are pushed with the registry API over net/http rather than with
// go-containerregistry's remote package: remote pulls in docker/cli through
// authn, which go.mod does not carry. The ggcr v1 types describe manifests and
// configs, so what is pushed is what ggcr would parse.
package testutil
