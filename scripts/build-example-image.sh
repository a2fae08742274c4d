#!/usr/bin/env bash
# Builds the example training image, gpu-executor-examples/pytorch, from Debian's own packages
# (python3-torch, python3-numpy, python3-sklearn): mmdebstrap makes the root filesystem with this
# machine's apt sources, and `docker import` turns it into an image on $DOCKER_HOST. No registry
# but Debian's is needed.
#
# The image is cached by what goes into it (the package list, the suite, the apt sources and this
# script): a second build with the same inputs finds the image in the daemon, or imports the
# root filesystem kept in the cache directory, and builds nothing.
#
#   DOCKER_HOST                              the daemon to build into (the test bed's, say)
#   GPU_EXECUTOR_EXAMPLE_IMAGE_CACHE          where root filesystems are kept
#                                             (default /var/cache/gpu-executor/example-images)
#
# Prints the image's name (gpu-executor-examples/pytorch:KEY) on stdout; it is also tagged :latest.
set -euo pipefail
cd "$(dirname "$0")/.."

repository="gpu-executor-examples/pytorch"
suite="bookworm"
packages=(python3-torch python3-numpy python3-sklearn)
cache="${GPU_EXECUTOR_EXAMPLE_IMAGE_CACHE:-/var/cache/gpu-executor/example-images}"

say() { echo "build-example-image: $*" >&2; }

shopt -s nullglob
sources=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list)
[[ -f /etc/apt/sources.list ]] && sources+=(/etc/apt/sources.list)
shopt -u nullglob
key="$( { printf '%s\n' "$suite" "${packages[@]}"; cat "$0" "${sources[@]}"; } | sha256sum | cut -c1-16)"
image="$repository:$key"

if docker image inspect "$image" >/dev/null 2>&1; then
  say "$image is built already (same packages, suite and sources)"
  docker tag "$image" "$repository:latest"
  echo "$image"
  exit 0
fi

rootfs="$cache/$key.tar"
if [[ ! -f $rootfs ]]; then
  if ! command -v mmdebstrap >/dev/null; then
    say "installing mmdebstrap"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2
  fi
  mkdir -p "$cache"
  # This machine's own sources where it has them in deb822 form, Debian's mirror otherwise.
  mirror=()
  [[ -f /etc/apt/sources.list.d/debian.sources ]] && mirror=(/etc/apt/sources.list.d/debian.sources)
  started=$SECONDS
  say "building the root filesystem: ${packages[*]} from $suite (minutes, once)"
  # The host's own sources (its mirror and keys); no recommended packages (GDAL, LLVM, Mesa:
  # half the size), documentation, manuals, locales or C headers: the image is for running.
  # The name ends in .tar: mmdebstrap writes a directory for any other name.
  mmdebstrap --variant=essential --mode=root \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/include/*' \
    "$suite" "$cache/$key.partial.tar" "${mirror[@]}" >&2
  mv "$cache/$key.partial.tar" "$rootfs"
  say "root filesystem built in $((SECONDS - started)) s: $(du -h "$rootfs" | cut -f1)"
fi

started=$SECONDS
# One thread per training process by default: a CPU host's cores are the job's to share out,
# and a trainer that wants more sets OMP_NUM_THREADS itself.
docker import \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1' \
  --change 'ENV PYTHONUNBUFFERED=1' \
  --change 'CMD ["/bin/bash"]' \
  --message "python3-torch, python3-numpy, python3-sklearn from Debian $suite, by scripts/build-example-image.sh" \
  "$rootfs" "$image" >/dev/null
docker tag "$image" "$repository:latest"
say "imported $image in $((SECONDS - started)) s ($(docker image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f MiB", $1 / 1048576 }'))"
echo "$image"
