#!/usr/bin/env bash
# Runs every check and test of lazyfs: formatting, vet, staticcheck, the
# unit and integration tests (real registry, real FUSE mounts, as root),
# and a short run of every fuzz target. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="$PATH:$(go env GOPATH)/bin"
# Tests that need FUSE or the registry fail instead of skipping here.
export LAZYFS_REQUIRE_FUSE=1 LAZYFS_REQUIRE_REGISTRY=1 LAZYFS_REQUIRE_CGROUP=1 LAZYFS_REQUIRE_DEBIAN=1 LAZYFS_REQUIRE_CONTAINERD=1

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted"; exit 1; fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test -race"
go test -race -count=1 -timeout 25m ./...
echo "== fuzz (short)"
for target in $(go test -list '^Fuzz' ./... | grep -E '^(Fuzz|ok)' | awk '/^Fuzz/{f[n++]=$1} /^ok/{for(i=0;i<n;i++) print $2":"f[i]; n=0}'); do
	pkg=${target%%:*} name=${target##*:}
	go test -run='^$' -fuzz="^${name}\$" -fuzztime=10s "$pkg"
done
