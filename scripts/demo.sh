#!/usr/bin/env bash
# The main job end to end: start a local registry, put a real image in it,
# index it, and run a container from it lazily with lazyrun; then mount it
# with lazyfs to browse it.
# Run as root on Debian. Everything lives under ${DEMO_DIR:-/tmp/lazyfs-demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
demo=${DEMO_DIR:-/tmp/lazyfs-demo}

scripts/install-deps.sh
command -v skopeo >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y skopeo; }

mkdir -p "$demo/bin" "$demo/mnt"
go build -o "$demo/bin/lazyfs" ./cmd/lazyfs
go build -o "$demo/bin/lazyrun" ./cmd/lazyrun
lazyfs="$demo/bin/lazyfs --root $demo/root"
lazyrun="$demo/bin/lazyrun --root $demo/root"

scripts/registry.sh stop "$demo/registry" 2>/dev/null || true
addr=$(scripts/registry.sh start "$demo/registry")
mountpoint -q "$demo/mnt" && umount "$demo/mnt"
cleanup() {
	mountpoint -q "$demo/mnt" && $lazyfs umount "$demo/mnt" || true
	wait 2>/dev/null || true
	scripts/registry.sh stop "$demo/registry" || true
}
trap cleanup EXIT

echo "== 1. a real image in a real registry ($addr)"
rm -rf "$demo/layout" "$demo/root"
scripts/busybox-image.sh "$demo/layout" >/dev/null
skopeo copy --quiet --dest-tls-verify=false "oci:$demo/layout:latest" "docker://$addr/demo/busybox:latest"
ref=$addr/demo/busybox:latest

echo "== 2. index it once and push the index beside the image"
$lazyfs index --push "$ref"
$lazyfs cache prune --all >/dev/null
$lazyfs inspect "$ref"

echo "== 3. run a container from it lazily (empty cache)"
start=$(date +%s%N)
$lazyrun run --rm --hostname lazy "$ref" sh -c \
	'echo "hello from $(hostname), a container on a lazily mounted image (PID $$ under $(cat /proc/1/comm))"; . /etc/os-release; echo "$NAME: $(ls /bin | wc -l) programs in /bin"; echo written > /tmp/f; cat /tmp/f'
echo "   took $(( ($(date +%s%N) - start) / 1000000 )) ms; the cache now holds:"
$lazyfs cache stats

echo "== 4. mount it read-only to browse it; unmounting reports what crossed the network"
$lazyfs mount "$ref" "$demo/mnt" &
for _ in $(seq 100); do mountpoint -q "$demo/mnt" && break; sleep 0.1; done
mountpoint -q "$demo/mnt" || { echo "demo: mount did not come up" >&2; exit 1; }
ls "$demo/mnt"
$lazyfs umount "$demo/mnt"
wait
