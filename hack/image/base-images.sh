#!/usr/bin/env bash
# Local stand-ins for the two base images the Dockerfile names, for machines that cannot pull
# them. Built with buildah from Debian packages, without a registry:
#
#   docker.io/library/rust:1.95-bookworm   Debian bookworm (debootstrap --variant=minbase from
#       deb.debian.org, plus gcc, libc6-dev, make, pkg-config, curl, ca-certificates) and this
#       machine's Rust 1.95 toolchain, laid out as the official image has it: rustup's minimal
#       profile (rustc, cargo, rust-std) in RUSTUP_HOME=/usr/local/rustup, the rustup proxies in
#       CARGO_HOME=/usr/local/cargo/bin, on PATH.
#   gcr.io/distroless/cc-debian12:nonroot  what distroless/cc holds: files of libc6, libgcc-s1,
#       libgomp1, libstdc++6, libssl3, base-files, netbase, tzdata and the CA bundle (extracted
#       with dpkg-deb, no dpkg, no shell), /etc/passwd and /etc/group with root, nobody and
#       nonroot (65532), /home/nonroot; user 65532, workdir /home/nonroot.
#
# One local addition: the builder also trusts this machine's own CA certificates
# (/usr/local/share/ca-certificates/*.crt, LOCAL_CA_DIR), as the machine itself does, so that
# cargo reaches crates.io through an egress proxy that re-signs TLS. LOCAL_CA_DIR=none leaves
# them out. The runtime image gets only Debian's bundle.
#
# An image is rebuilt only when its inputs changed: each carries the label
# dev.lockguard.stand-in, a hash of this script, the toolchain's `rustc -vV`, the mirror and the
# local CA certificates.
# FORCE=1 rebuilds. Needs root, buildah, runc, debootstrap, dpkg-deb. Prints the time of each step.
set -euo pipefail
# runc rather than Debian's default crun, which refuses a cgroup v1 host whose cgroup2
# hierarchy has a controller enabled ("cgroups in hybrid mode not supported").
export BUILDAH_RUNTIME=${BUILDAH_RUNTIME:-runc}

BUILDER=${BUILDER_IMAGE:-docker.io/library/rust:1.95-bookworm}
RUNTIME=${RUNTIME_IMAGE:-gcr.io/distroless/cc-debian12:nonroot}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
LABEL=dev.lockguard.stand-in
# The builder's packages; the last five are there for the runtime image, which takes their .debs.
BUILDER_PACKAGES=ca-certificates,curl,gcc,libc6-dev,make,pkg-config,libstdc++6,libgomp1,libssl3,netbase,tzdata
RUNTIME_PACKAGES="base-files netbase tzdata libc6 libgcc-s1 libgomp1 libstdc++6 libssl3"

say() { printf 'base-images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
# step NAME COMMAND…: runs COMMAND and prints how long it took.
step() {
  local name=$1 start=$EPOCHREALTIME; shift
  "$@"
  say "$(awk -v n="$name" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%-26s %6.1f s", n, b - a}')"
}

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, and files owned by other users in the images)"
for tool in buildah "$BUILDAH_RUNTIME" debootstrap dpkg-deb; do
  command -v "$tool" >/dev/null || die "$tool is missing (make image-deps installs it)"
done

# The toolchain: the sysroot of the rustc on PATH (or RUST_SYSROOT), which must be 1.95.
sysroot=${RUST_SYSROOT:-$(rustc --print sysroot)}
rust_version=$("$sysroot/bin/rustc" --version | awk '{print $2}')
[[ $rust_version == 1.95.* ]] || die "the tag says Rust 1.95, $sysroot has $rust_version"
host=$("$sysroot/bin/rustc" -vV | awk '/^host:/ {print $2}')
toolchain=$rust_version-$host

local_cas=()
LOCAL_CA_DIR=${LOCAL_CA_DIR:-/usr/local/share/ca-certificates}
if [ "$LOCAL_CA_DIR" != none ] && [ -d "$LOCAL_CA_DIR" ]; then
  mapfile -t local_cas < <(find "$LOCAL_CA_DIR" -maxdepth 1 -name '*.crt' | sort)
fi

inputs=$( { cat "$0"; "$sysroot/bin/rustc" -vV; echo "$MIRROR $SUITE"; cat "${local_cas[@]}" </dev/null; } \
  | sha256sum | cut -c1-16)
current() {
  [ -z "${FORCE:-}" ] && [ "$(buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null)" = "$inputs" ]
}
need_builder=1 need_runtime=1
current "$BUILDER" && need_builder=""
current "$RUNTIME" && need_runtime=""
if [ -z "$need_builder$need_runtime" ]; then
  say "$BUILDER and $RUNTIME are up to date (inputs $inputs)"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/lockguard-base-images.XXXXXX")
containers=()
cleanup() {
  # debootstrap unmounts /proc and /sys of the target itself; this is for an interrupted run.
  findmnt -rn -o TARGET | grep -F "$work/" | sort -r | xargs -r umount -l || true
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Debian bookworm, minbase. Its downloaded .debs stay behind for the runtime image.
rootfs=$work/rootfs
bootstrap() {
  debootstrap --variant=minbase --include="$BUILDER_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
}
step "debootstrap" bootstrap
mkdir "$work/debs"
mv "$rootfs"/var/cache/apt/archives/*.deb "$work/debs/"
# As the official debian image: apt sources in deb822 form, no package lists, no cache.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
if [ ${#local_cas[@]} -gt 0 ]; then
  say "the builder also trusts ${local_cas[*]}"
  cp "${local_cas[@]}" "$rootfs/usr/local/share/ca-certificates/"
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*

# new_container: a working container from scratch, in $ctr (removed on exit unless committed).
new_container() {
  ctr=$(buildah from scratch)
  containers+=("$ctr")
}
# add_tree DIR: DIR's contents as a layer at /, through a tar so that owners, modes and hard
# links are kept (buildah add extracts local archives as they are).
add_tree() {
  tar --numeric-owner -C "$1" -cf "$1.tar" .
  buildah add --quiet "$ctr" "$1.tar" / >/dev/null
  rm -f "$1.tar"
}
# commit NAME: the container becomes image NAME; the image it replaces is removed.
commit() {
  local replaced
  replaced=$(buildah images --quiet --no-trunc "$1" 2>/dev/null || true)
  buildah commit --quiet --rm "$ctr" "$1" >/dev/null
  containers=("${containers[@]/$ctr/}")
  if [ -n "$replaced" ]; then buildah rmi "$replaced" >/dev/null 2>&1 || true; fi
}

# The official image's layout: rustup's minimal profile (the files its component manifests
# list for rustc, cargo and rust-std) under /usr/local/rustup, the proxies in /usr/local/cargo/bin.
stage_toolchain() {
  local usr_local=$work/toolchain/usr/local c p
  local dest=$usr_local/rustup/toolchains/$toolchain components=(rustc cargo rust-std)
  mkdir -p "$dest/lib/rustlib" "$usr_local/cargo/bin" "$usr_local/rustup/update-hashes"
  for c in "${components[@]}"; do
    sed -n 's/^\(file\|dir\)://p' "$sysroot/lib/rustlib/manifest-$c-$host"
  done >"$work/toolchain-files"
  tar -C "$sysroot" -cf - -T "$work/toolchain-files" | tar -C "$dest" -xf -
  {
    printf 'config_version = "1"\n'
    for c in "${components[@]}"; do
      cp "$sysroot/lib/rustlib/manifest-$c-$host" "$dest/lib/rustlib/"
      printf '%s-%s\n' "$c" "$host" >>"$dest/lib/rustlib/components"
      printf '\n[[components]]\npkg = "%s"\ntarget = "%s"\nis_extension = false\n' "$c" "$host"
    done
  } >"$dest/lib/rustlib/multirust-config.toml"
  cp "$sysroot/lib/rustlib/rust-installer-version" "$sysroot/lib/rustlib/multirust-channel-manifest.toml" \
    "$dest/lib/rustlib/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n\n[overrides]\n' "$toolchain" \
    >"$usr_local/rustup/settings.toml"
  : >"$usr_local/rustup/update-hashes/$toolchain"
  # rustup and its hard links, as rustup-init makes them; without a rustup on this machine,
  # symbolic links straight into the toolchain.
  local proxies=(cargo rustc rustdoc rust-gdb rust-gdbgui rust-lldb) rustup
  if rustup=$(command -v rustup); then
    cp "$(readlink -f "$rustup")" "$usr_local/cargo/bin/rustup"
    for p in "${proxies[@]}"; do ln "$usr_local/cargo/bin/rustup" "$usr_local/cargo/bin/$p"; done
  else
    for p in "${proxies[@]}"; do ln -s "/usr/local/rustup/toolchains/$toolchain/bin/$p" "$usr_local/cargo/bin/$p"; done
  fi
  chmod -R a+w "$usr_local/rustup" "$usr_local/cargo"
}

build_builder() {
  new_container
  step "builder: Debian layer" add_tree "$rootfs"
  step "builder: toolchain copy" stage_toolchain
  step "builder: toolchain layer" add_tree "$work/toolchain"
  buildah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$rust_version" --cmd bash --label "$LABEL=$inputs" "$ctr"
  step "builder: commit" commit "$BUILDER"
  # The toolchain answers inside the image, as the Dockerfile will call it.
  new_container_from "$BUILDER"
  buildah run "$ctr" -- sh -c 'cargo --version && rustup show active-toolchain' >&2
  buildah rm "$ctr" >/dev/null
  containers=("${containers[@]/$ctr/}")
}
new_container_from() {
  ctr=$(buildah from --pull=never "$1")
  containers+=("$ctr")
}

build_runtime() {
  local tree=$work/distroless ctr deb name
  mkdir -p "$tree/var/lib/dpkg/status.d"
  for name in $RUNTIME_PACKAGES ca-certificates; do
    deb=$(ls "$work/debs/${name}_"*.deb)
    # Like distroless: the files (minus docs other than copyright), and the control data as
    # /var/lib/dpkg/status.d/NAME so scanners see the package.
    if [ "$name" = ca-certificates ]; then dpkg-deb -x "$deb" "$work/ca"; else dpkg-deb -x "$deb" "$tree"; fi
    dpkg-deb -f "$deb" >"$tree/var/lib/dpkg/status.d/$name"
  done
  find "$tree/usr/share/doc" -type f ! -name copyright -delete
  rm -rf "$tree/usr/share/man" "$tree/usr/share/info" "$tree/usr/share/lintian" "$tree/usr/share/doc/ca-certificates"
  mkdir -p "$tree/usr/share/doc/ca-certificates"
  cp "$work/ca/usr/share/doc/ca-certificates/copyright" "$tree/usr/share/doc/ca-certificates/"
  # The bundle update-ca-certificates writes: every Mozilla certificate (all are enabled by
  # default), each ending with a newline.
  mkdir -p "$tree/etc/ssl/certs"
  for crt in "$work"/ca/usr/share/ca-certificates/mozilla/*.crt; do sed -e '$a\' "$crt"; done \
    >"$tree/etc/ssl/certs/ca-certificates.crt"
  cat >"$tree/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$tree/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' \
    >"$tree/etc/nsswitch.conf"
  install -d -m 0700 "$tree/root"
  install -d -m 0700 -o 65532 -g 65532 "$tree/home/nonroot"
  install -d -m 1777 "$tree/tmp"
  new_container
  add_tree "$tree"
  buildah config --user 65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --label "$LABEL=$inputs" "$ctr"
  commit "$RUNTIME"
}

if [ -n "$need_builder" ]; then step "builder, in all" build_builder; fi
if [ -n "$need_runtime" ]; then step "runtime, in all" build_runtime; fi
say "built (inputs $inputs):"
buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -F -e "${BUILDER%:*}" -e "${RUNTIME%:*}" >&2
