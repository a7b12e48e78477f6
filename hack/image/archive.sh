#!/usr/bin/env bash
# archive.sh OUT IMAGE: writes IMAGE from container storage to OUT as an OCI archive that
# `ctr -n k8s.io images import OUT` imports under IMAGE's own name.
# podman names the image only by org.opencontainers.image.ref.name, which ctr 1.6 ignores for
# a full reference unless told --base-name; containerd reads io.containerd.image.name, so the
# index gets that annotation too.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 OUT IMAGE" >&2; exit 2; }
out=$1 image=$2
work=$(mktemp -d "${TMPDIR:-/var/tmp}/lockguard-archive.XXXXXX")
trap 'rm -rf "$work"' EXIT

podman save --quiet --format oci-archive -o "$work/image.tar" "$image"
mkdir "$work/layout"
tar -C "$work/layout" -xf "$work/image.tar"
ref="\"org.opencontainers.image.ref.name\":\"$image\""
grep -qF "$ref" "$work/layout/index.json" || { echo "archive: $image is not named in index.json" >&2; exit 1; }
sed -i "s|$ref|$ref,\"io.containerd.image.name\":\"$image\"|" "$work/layout/index.json"
mkdir -p "$(dirname "$out")"
tar -C "$work/layout" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "archive: $image -> $out ($(du -h "$out" | cut -f1)); import with: ctr -n k8s.io images import $out"
