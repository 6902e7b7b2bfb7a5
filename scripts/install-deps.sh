#!/usr/bin/env bash
# Installs what lazyfs's tests, benchmarks and scripts need on a Debian
# (bookworm) machine: Debian's docker-registry, fuse3, busybox-static, pigz,
# zstd, skopeo (scripts/demo.sh copies images with it), containerd (the
# snapshotter's integration test starts its own; its runc comes along) and
# debootstrap (testutil.DebianRoot builds Debian images from Debian's packages,
# cached in /var/cache/lazyfs-test) and stress-ng (fusefs' copy-on-write
# stress test) from apt, and
# staticcheck with `go install`. Run as root. Idempotent:
# when everything is there it only checks and exits.
#
# Debian's docker-registry package starts a system registry on port 5000 when
# it is installed; this script keeps it from starting (policy-rc.d) and stops
# and disables it if it runs anyway: tests and scripts/registry.sh always start
# their own registry on a free port.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }

# Each entry: package, then the file or command that shows it is installed.
declare -A probe=(
	[docker-registry]=/usr/bin/docker-registry
	[fuse3]=fusermount3
	[busybox-static]=busybox-static
	[pigz]=pigz
	[zstd]=zstd
	[skopeo]=skopeo
	[containerd]=/usr/bin/containerd
	[debootstrap]=/usr/sbin/debootstrap
	[stress-ng]=stress-ng
)

have() {
	local pkg=$1 what=${probe[$1]}
	case $what in
	/*) [ -x "$what" ] ;;
	busybox-static)
		# The dynamic busybox package also provides /bin/busybox: ask dpkg.
		[ -x /bin/busybox ] &&
			dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'
		;;
	*) command -v "$what" >/dev/null 2>&1 ;;
	esac
}

missing=()
for pkg in docker-registry fuse3 busybox-static pigz zstd skopeo containerd debootstrap stress-ng; do
	have "$pkg" || missing+=("$pkg")
done

if [ "$(id -u)" != 0 ] && [ ${#missing[@]} -gt 0 ]; then
	log "missing ${missing[*]}; run as root to install"
	exit 1
fi

# Stops a docker-registry that runs from the system configuration (the
# package's service), by the PIDs of exactly those processes.
stop_system_registry() {
	if [ -x /etc/init.d/docker-registry ]; then
		service docker-registry stop >/dev/null 2>&1 || true
		update-rc.d docker-registry disable >/dev/null 2>&1 || true
	fi
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl disable --now docker-registry >/dev/null 2>&1 || true
	fi
	local p pids=()
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/exe" 2>/dev/null)" = /usr/bin/docker-registry ] || continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q '/etc/docker/registry/config.yml' || continue
		pids+=("${p#/proc/}")
	done
	if [ ${#pids[@]} -gt 0 ]; then
		log "stopping the system docker-registry (pid ${pids[*]})"
		kill "${pids[@]}" 2>/dev/null || true
	fi
}

if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	# Keep package scripts from starting services (Debian's policy-rc.d).
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
	for pkg in "${missing[@]}"; do
		have "$pkg" || { log "$pkg still missing after apt-get install"; exit 1; }
	done
fi
if [ "$(id -u)" = 0 ]; then
	stop_system_registry
fi

# staticcheck, into GOBIN (or GOPATH/bin).
if ! command -v go >/dev/null 2>&1; then
	log "go is not on PATH: install the Go toolchain first"
	exit 1
fi
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
if ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$gobin/staticcheck" ]; then
	log "installing staticcheck into $gobin"
	(
		cd /
		GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@latest ||
			GOFLAGS= GOPROXY=https://proxy.golang.org go install honnef.co/go/tools/cmd/staticcheck@latest
	)
fi
case ":$PATH:" in
*":$gobin:"*) ;;
*) command -v staticcheck >/dev/null 2>&1 || log "note: add $gobin to PATH for staticcheck" ;;
esac

log "all present"
