#!/usr/bin/env bash
# Builds the lockguard binary of a recorded release (CHANGELOG.md names its commit; a clean
# clone may have no tags) into the tool cache, once per commit, with the release's CRDs beside
# it. The upgrade test runs it next to this checkout's binary. Prints the directory. Without a
# VERSION, the newest release CHANGELOG.md records (its first `## v…` heading).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${LOCKGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lockguard}
version=${1:-$(awk '/^## v/ { print $2; exit }' "$root/CHANGELOG.md")}
[ -n "$version" ] || { echo "release: CHANGELOG.md records no release" >&2; exit 1; }
commit=$(awk -v head="## $version " 'index($0, head) == 1 { found = 1; next }
  found && /^## / { exit }
  found && /^Commit `/ { print substr($2, 2, 40); exit }' "$root/CHANGELOG.md")
[[ "$commit" =~ ^[0-9a-f]{40}$ ]] || { echo "release: no commit for $version in CHANGELOG.md" >&2; exit 1; }
out="$cache/releases/$commit"
if [ ! -x "$out/lockguard" ]; then
  echo "release: building lockguard $version ($commit)" >&2
  src="$cache/releases/src-$commit"
  rm -rf "$src"
  # A shallow clone may lack the release's commit: fetch it.
  git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null ||
    git -C "$root" fetch --quiet origin "$commit" || git -C "$root" fetch --quiet --unshallow origin
  git -C "$root" worktree prune
  git -C "$root" worktree add --quiet --detach --force "$src" "$commit"
  # A target directory of its own (sharing this checkout's would put the release's binary
  # where the tests look for this one), seeded with a copy of this checkout's dependencies:
  # the release uses the same crates, so mostly lockguard itself compiles.
  target="$cache/releases/target"
  if [ ! -d "$target/debug" ] && [ -d "$root/target/debug/deps" ]; then
    mkdir -p "$target/debug"
    cp -a "$root/target/debug/deps" "$root/target/debug/build" "$root/target/debug/.fingerprint" "$target/debug/"
  fi
  t0=$SECONDS
  (cd "$src" && CARGO_TARGET_DIR="$target" cargo build -q --locked --bin lockguard)
  mkdir -p "$out"
  cp "$src/crds/lockguard.dev.yaml" "$out/crds.yaml"
  cp "$target/debug/lockguard" "$out/lockguard.tmp" && mv "$out/lockguard.tmp" "$out/lockguard"
  git -C "$root" worktree remove --force "$src"
  rm -rf "$target"   # gigabytes; the binary is what is kept
  echo "release: built $version in $((SECONDS - t0)) s" >&2
fi
echo "$out"
