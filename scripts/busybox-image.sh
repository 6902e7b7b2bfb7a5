#!/usr/bin/env bash
# Makes an OCI image layout holding a busybox-static root file system in one
# gzip layer, from Debian's busybox-static package: a real image without a
# docker engine. Usage: scripts/busybox-image.sh OUTDIR
set -euo pipefail
out=${1:?usage: busybox-image.sh OUTDIR}
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-image.sh: $bb missing (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,etc,tmp,root,var,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'NAME="busybox on lazyfs"\n' >"$root/etc/os-release"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
mkdir -p "$out/blobs/sha256"
tar --numeric-owner --sort=name -C "$root" -cf "$work/layer.tar" .
diffid=$(sha "$work/layer.tar")
gzip -n -6 -c "$work/layer.tar" >"$work/layer.tar.gz"
layer=$(sha "$work/layer.tar.gz")
cp "$work/layer.tar.gz" "$out/blobs/sha256/$layer"

arch=$(go env GOARCH 2>/dev/null || echo amd64)
cat >"$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:$diffid"]},"history":[{"created_by":"scripts/busybox-image.sh"}]}
JSON
config=$(sha "$work/config.json")
cp "$work/config.json" "$out/blobs/sha256/$config"

cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$work/config.json")},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer","size":$(size "$work/layer.tar.gz")}]}
JSON
manifest=$(sha "$work/manifest.json")
cp "$work/manifest.json" "$out/blobs/sha256/$manifest"
echo '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
cat >"$out/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest","size":$(size "$work/manifest.json"),"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}
JSON
echo "$out"
