#!/usr/bin/env bash
# oci-image.sh NAME ROOTFS_DIR OUT.tar ENTRYPOINT_JSON [USER]
# Writes a one-layer OCI image archive (an oci-layout directory in a tar) of ROOTFS_DIR, named
# NAME through the io.containerd.image.name annotation, so that `ctr images import` registers
# it under that name. Nothing is pulled: the node's images (pause, CoreDNS, busybox) are built
# from local files by hack/devenv (node.rs). Reproducible: sorted entries, mtime 0, uid/gid 0.
set -euo pipefail
name=$1 rootfs=$2 out=$3 entrypoint=$4 user=${5:-}
work=$(mktemp -d "${out}.XXXXXX")
trap 'rm -rf "$work"' EXIT
blobs=$work/blobs/sha256
mkdir -p "$blobs"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
# An uncompressed layer: the archive only travels to the local containerd, and gzip of the
# 78 MB CoreDNS binary cost more time than the import.
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$diff_id
layer_size=$(stat -c %s "$work/layer.tar")
mv "$work/layer.tar" "$blobs/$layer"

blob() { # write stdin as a blob; print "digest size"
  local tmp digest
  tmp=$(mktemp "$work/blob.XXXXXX")
  cat > "$tmp"
  digest=$(sha256sum "$tmp" | cut -d' ' -f1)
  mv "$tmp" "$blobs/$digest"
  echo "$digest $(stat -c %s "$blobs/$digest")"
}

# (Command substitution, not `read < <(…)`: the blob must be in place before the next one.)
config_blob=$(printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":%s,"Env":["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],"User":"%s","WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$entrypoint" "$user" "$diff_id" | blob)
read -r config config_size <<< "$config_blob"
manifest_blob=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config" "$config_size" "$layer" "$layer_size" | blob)
read -r manifest manifest_size <<< "$manifest_blob"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$manifest_size" "$name" "${name##*:}" > "$work/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work" -cf "$out" oci-layout index.json blobs
