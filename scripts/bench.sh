#!/usr/bin/env bash
# Runs the lazy-start benchmark (bench/cmd/lazybench; see bench/README.md):
# installs what it needs, builds it, and runs it with the given flags, e.g.
#
#   scripts/bench.sh                                  # defaults: 100 Mbit/s, 20 ms RTT, 5 runs
#   scripts/bench.sh -rate 1gbit -rtt 2ms -runs 3
#   scripts/bench.sh -unshaped -workloads python3,nginx -scale ""
#
# Results go to bench/results/DATE-HOST/ (results.md, chart.png,
# machine.txt, results.json, logs/). Run as root: it makes a network
# namespace, loop file systems and FUSE mounts, and removes them at the end
# (also on Ctrl-C).
set -euo pipefail

cd "$(dirname "$0")/.."
log() { printf 'bench.sh: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
	log "run as root (network namespace, tc, mounts)"
	exit 1
fi

# docker-registry, debootstrap, fuse3, ... (the tests' dependencies).
scripts/install-deps.sh

# What the benchmark adds: podman and runc (the second full-pull baseline),
# strace (bytes the command opens), iproute2 (ip, tc), e2fsprogs and
# util-linux (loop file systems, unshare).
declare -A probe=([podman]=podman [runc]=runc [strace]=strace [iproute2]=tc [e2fsprogs]=mkfs.ext4 [util-linux]=unshare)
missing=()
for pkg in "${!probe[@]}"; do
	command -v "${probe[$pkg]}" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "${probe[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
export PATH=$PATH:/usr/sbin:/sbin

bin=$(mktemp -d /tmp/lazybench-bin.XXXXXX)
trap 'rm -rf "$bin"' EXIT
log "building lazybench, lazyrun, lazyfs and fsprobe"
go build -o "$bin/" ./bench/cmd/lazybench ./cmd/lazyrun ./cmd/lazyfs
# fsprobe runs inside the containers of the file-system section: static.
CGO_ENABLED=0 go build -o "$bin/" ./bench/cmd/fsprobe
"$bin/lazybench" -bin "$bin" "$@"
