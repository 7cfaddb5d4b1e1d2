#!/usr/bin/env bash
# Container images of our own binaries, built without any registry, and loaded into the kind
# cluster when one is running:
#   veritas.local/veritas-spark:dev       the runtime daemon + CLI, a generated tiny model in
#                                         /models (and tiny 1.1.0 in /models-next), curl (the guide execs `curl` in runtime pods)
#   veritas.local/veritas-controller:dev  the controller
# Base: a Debian rootfs of the same suite as the host that built the binaries (glibc, libstdc++),
# made by debootstrap like the other offline images (ci/kind/build-images.sh).
# Usage: build-veritas-images.sh [--no-build] [--no-load] [--base-only]
#   --base-only only the Debian base image (curl, CA certificates)
#   --no-build  use the release binaries already in $CARGO_TARGET_DIR (default target/), or in
#               $VERITAS_BIN_DIR when set (e.g. debug builds for a quick local check)
#   --no-load   do not `kind load` even when the cluster exists
# Idempotent: an image whose veritas.key label (hash of binaries, model, base) matches is kept.
. "$(dirname "$0")/lib.sh"
REPO="$(cd "$KIND_DIR/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
BINDIR="${VERITAS_BIN_DIR:-$TARGET/release}"
SPARK_IMAGE="${SPARK_IMAGE:-veritas.local/veritas-spark:dev}"
CONTROLLER_IMAGE="${CONTROLLER_IMAGE:-veritas.local/veritas-controller:dev}"
RUNTIME_BASE="veritas.local/veritas-runtime-base:${DEBIAN_SUITE}"
ROOTFS="$CACHE/rootfs"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
build=1 load=1 base_only=0
for a in "$@"; do
  case $a in
    --base-only) base_only=1 ;;
    --no-build) build=0 ;;
    --no-load) load=0 ;;
    *) die "usage: $0 [--no-build] [--no-load] [--base-only]" ;;
  esac
done

image_key() { docker image inspect -f '{{index .Config.Labels "veritas.key"}}' "$1" 2>/dev/null || true; }
up_to_date() { [ "$(image_key "$1")" = "$2" ]; }

# The binaries must run on the base: same Debian suite as this host.
host_suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$host_suite" = "$DEBIAN_SUITE" ] || die "host is Debian '$host_suite', images are $DEBIAN_SUITE: build the binaries on $DEBIAN_SUITE (glibc must match)"

if [ $build = 1 ] && [ $base_only = 0 ]; then
  t=$(now)
  (cd "$REPO" && cargo build --release -p veritas-spark -p veritas-controller -p veritas-fixtures) >"$LOGS/cargo-release.log" 2>&1 \
    || { tail -30 "$LOGS/cargo-release.log" >&2; die "cargo build --release failed, see $LOGS/cargo-release.log"; }
  timing "cargo build --release (veritas images)" "$t"
fi
for b in veritas-spark veritas-controller veritas-fixtures; do
  [ $base_only = 1 ] && break
  [ -x "$BINDIR/$b" ] || die "$BINDIR/$b missing (run without --no-build)"
done

# 1. Base rootfs: minbase + curl + CA certificates (libstdc++6/libgcc come with minbase).
runtime_base() {
  local pkgs="ca-certificates,curl"
  local key; key="runtime-$(echo "$DEBIAN_SUITE $pkgs" | sha256sum | cut -c1-16)"
  up_to_date "$RUNTIME_BASE" "$key" && return 0
  local dir="$ROOTFS/veritas-runtime" t; t=$(now)
  if ! [ -f "$dir.key" ] || [ "$(cat "$dir.key")" != "$key" ]; then
    rm -rf "$dir" "$dir.key"
    log "debootstrap veritas-runtime ($pkgs)"
    debootstrap --variant=minbase --include="$pkgs" "$DEBIAN_SUITE" "$dir" "$MIRROR" >"$LOGS/debootstrap-veritas-runtime.log" 2>&1 \
      || die "debootstrap failed, see $LOGS/debootstrap-veritas-runtime.log"
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log
    echo "$key" > "$dir.key"
  fi
  tar -C "$dir" -c . | docker import --change "LABEL veritas.key=$key" - "$RUNTIME_BASE" >/dev/null
  timing "image $RUNTIME_BASE" "$t"
}

# build IMAGE KEY CTX
build_image() {
  local t; t=$(now)
  DOCKER_BUILDKIT=0 docker build -q --label "veritas.key=$2" -t "$1" "$3" >"$LOGS/docker-build-veritas.log" 2>&1 \
    || { cat "$LOGS/docker-build-veritas.log" >&2; die "docker build $1 failed"; }
  timing "image $1" "$t"
}

runtime_base
[ $base_only = 1 ] && { echo "$RUNTIME_BASE"; exit 0; }
base_key=$(image_key "$RUNTIME_BASE")

# 2. Runtime image: daemon + CLI + a generated model registry in /models (model `tiny` 1.0.0),
# and the next release of that model (tiny 1.1.0, other weights) in /models-next, which a
# scenario mounts over /models in one environment only (State Not Syncing, "Model mount
# different").
ctx="$CACHE/ctx/veritas-spark"; rm -rf "$ctx"; mkdir -p "$ctx"
cp "$BINDIR/veritas-spark" "$ctx/veritas-spark"
"$BINDIR/veritas-fixtures" model-dir --out "$ctx/models" --name tiny >/dev/null
"$BINDIR/veritas-fixtures" model-dir --out "$ctx/models-next" --name tiny --version 1.1.0 --seed 1 >/dev/null
key="$( (sha256sum "$ctx/veritas-spark"; find "$ctx/models" "$ctx/models-next" -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-16)-$base_key"
if ! up_to_date "$SPARK_IMAGE" "$key"; then
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $RUNTIME_BASE
COPY veritas-spark /usr/local/bin/veritas-spark
COPY models /models
COPY models-next /models-next
RUN mkdir -p /var/run/veritas && chown 65534:65534 /var/run/veritas
USER 65534
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/veritas-spark"]
CMD ["serve"]
DOCKERFILE
  build_image "$SPARK_IMAGE" "$key" "$ctx"
fi

# 3. Controller image.
ctx="$CACHE/ctx/veritas-controller"; rm -rf "$ctx"; mkdir -p "$ctx"
cp "$BINDIR/veritas-controller" "$ctx/veritas-controller"
key="$(sha256sum "$ctx/veritas-controller" | cut -c1-16)-$base_key"
if ! up_to_date "$CONTROLLER_IMAGE" "$key"; then
  printf 'FROM %s\nCOPY veritas-controller /usr/local/bin/veritas-controller\nUSER 65534\nEXPOSE 8080\nENTRYPOINT ["/usr/local/bin/veritas-controller"]\n' \
    "$RUNTIME_BASE" > "$ctx/Dockerfile"
  build_image "$CONTROLLER_IMAGE" "$key" "$ctx"
fi
docker image prune -f --filter label=veritas.key >/dev/null 2>&1 || true

# 4. Load into the cluster when it exists.
KIND="$BIN/kind-$KIND_VERSION"
if [ $load = 1 ] && [ -x "$KIND" ] && "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  t=$(now)
  "$KIND" load docker-image --name "$CLUSTER_NAME" "$SPARK_IMAGE" "$CONTROLLER_IMAGE" >"$LOGS/kind-load-veritas.log" 2>&1 \
    || die "kind load failed, see $LOGS/kind-load-veritas.log"
  timing "kind load (veritas images)" "$t"
else
  log "no kind cluster '$CLUSTER_NAME' (or --no-load): images built, not loaded"
fi
echo "$SPARK_IMAGE"
echo "$CONTROLLER_IMAGE"
