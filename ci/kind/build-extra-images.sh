#!/usr/bin/env bash
# Images the scenarios need, under the names users would pull from a registry:
#   Prometheus (built from its Go module), Prometheus Operator + config reloader (built from
#   the Go module by build-binaries.sh), busybox (Debian busybox-static; has nslookup, wget, httpd).
# Idempotent: an image whose veritas.key label matches is not rebuilt.
. "$(dirname "$0")/lib.sh"
RECIPE_KEY=$(recipe_key "$KIND_DIR/build-extra-images.sh" "$KIND_DIR/lib.sh")

DEBS="$CACHE/debs"; mkdir -p "$DEBS"
image_key() { docker image inspect -f '{{index .Config.Labels "veritas.key"}}' "$1" 2>/dev/null || true; }
up_to_date() { [ "$(image_key "$1")" = "$2-$RECIPE_KEY" ]; }

# deb_file PACKAGE: path of the downloaded .deb (apt-get download once, then cached).
deb_file() {
  local f; f=$(ls "$DEBS/$1"_*.deb 2>/dev/null | head -1)
  if [ -z "$f" ]; then
    ( cd "$DEBS" && apt-get download "$1" >>"$LOGS/apt-download.log" 2>&1 ) || die "apt-get download $1 failed"
    f=$(ls "$DEBS/$1"_*.deb | head -1)
  fi
  echo "$f"
}

# build_ctx IMAGE KEY CTX: docker build (legacy builder; local FROM images only).
build_ctx() {
  local t; t=$(now)
  DOCKER_BUILDKIT=0 docker build -q --label "veritas.key=$2-$RECIPE_KEY" -t "$1" "$3" >"$LOGS/docker-build-extra.log" 2>&1 \
    || { cat "$LOGS/docker-build-extra.log" >&2; die "docker build $1 failed"; }
  timing "image $1" "$t"
}

busybox_image() {
  local img=$1 deb; deb=$(deb_file busybox-static)
  local key; key=$(sha256sum "$deb" | cut -c1-16)
  up_to_date "$img" "$key" && return 0
  local ctx="$CACHE/ctx/busybox-extra"; rm -rf "$ctx"; mkdir -p "$ctx/x" "$ctx/root/bin" "$ctx/root/tmp" "$ctx/root/etc" "$ctx/root/www"
  dpkg-deb -x "$deb" "$ctx/x"
  cp "$ctx/x/bin/busybox" "$ctx/root/bin/busybox"
  for a in $("$ctx/root/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$ctx/root/bin/$a"; done
  chmod 1777 "$ctx/root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ctx/root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$ctx/root/etc/group"
  tar -C "$ctx/root" -c . | docker import --change "LABEL veritas.key=$key-$RECIPE_KEY" \
    --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$img" >/dev/null
  log "image $img built"
}

prometheus_image() {
  local bin="$BIN/prometheus-$PROMETHEUS_MODULE_VERSION"
  [ -x "$bin" ] || die "$bin missing (build-binaries.sh prometheus)"
  local key; key="$(sha256sum "$bin" | cut -c1-16)-$(image_key "$TOOLS_IMAGE")"
  up_to_date "$PROMETHEUS_IMAGE" "$key" && return 0
  local ctx="$CACHE/ctx/prometheus"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$bin" "$ctx/prometheus"
  cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $TOOLS_IMAGE
COPY prometheus /bin/prometheus
RUN mkdir -p /prometheus /etc/prometheus && chown -R 65534:65534 /prometheus /etc/prometheus
USER 65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
DOCKERFILE
  build_ctx "$PROMETHEUS_IMAGE" "$key" "$ctx"
}

# static_go_image IMAGE BINARY ENTRYPOINT-PATH
static_go_image() {
  local img=$1 bin=$2 dest=$3
  local key; key=$(sha256sum "$bin" | cut -c1-16)
  up_to_date "$img" "$key" && return 0
  local ctx="$CACHE/ctx/$(echo "$img" | tr '/:' '__')"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$bin" "$ctx/bin"
  printf 'FROM veritas.local/static-base:1\nCOPY bin %s\nUSER 65534\nENTRYPOINT ["%s"]\n' "$dest" "$dest" > "$ctx/Dockerfile"
  build_ctx "$img" "$key" "$ctx"
}

# Usage: build-extra-images.sh [busybox|all]   (default all)
"$KIND_DIR/build-images.sh" tools >/dev/null
busybox_image "$BUSYBOX_IMAGE"
docker tag "$BUSYBOX_IMAGE" docker.io/library/busybox:latest
[ "${1:-all}" = busybox ] && exit 0
prometheus_image
static_go_image "$PROMETHEUS_OPERATOR_IMAGE" "$BIN/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION" /bin/operator
static_go_image "$PROMETHEUS_CONFIG_RELOADER_IMAGE" "$BIN/prometheus-config-reloader-$PROMETHEUS_OPERATOR_VERSION" /bin/prometheus-config-reloader
