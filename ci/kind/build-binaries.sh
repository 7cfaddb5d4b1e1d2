#!/usr/bin/env bash
# Build every Go binary the offline kind cluster needs, from Go modules only, one component at a
# time, at the lowest CPU priority. Results: $CACHE/bin/<name>-<version>; existing ones are kept.
# Usage: build-binaries.sh [component...]   (default: all, in dependency-free order)
. "$(dirname "$0")/lib.sh"

NICE="nice -n 19"

# Binaries are keyed by version; the recipe (this script, the ldflags, the pins, the Go
# toolchain) is stamped beside them. A changed recipe moves the old binaries aside so they are
# rebuilt; a cache from before stamps existed is adopted as built by the current recipe.
BIN_RECIPE=$( { cat "$0"; declare -f k8s_ldflags; } | sha256sum | cut -c1-8)-$(recipe_key /dev/null)
if [ -f "$STAMPS/binaries.recipe" ] && [ "$(cat "$STAMPS/binaries.recipe")" != "$BIN_RECIPE" ]; then
  log "binary recipe changed ($(cat "$STAMPS/binaries.recipe") -> $BIN_RECIPE): rebuilding"
  mkdir -p "$CACHE/bin.stale" && mv "$BIN"/* "$CACHE/bin.stale/" 2>/dev/null || true
fi
echo "$BIN_RECIPE" > "$STAMPS/binaries.recipe"

# new_module NAME KEY: (re)create a throwaway module dir, print its path.
new_module() {
  local d; d=$(gomod_dir "$1" "$2")
  rm -f "$d/go.mod" "$d/go.sum" "$d/tools.go"
  printf 'module veritas.local/build/%s\n\ngo 1.24\n' "$1" > "$d/go.mod"
  echo "$d"
}

# write_tools DIR PKG...: blank imports so `go mod tidy` resolves the packages' dependencies.
write_tools() {
  local d=$1; shift
  { echo '//go:build tools'; echo; echo 'package tools'; echo; echo 'import ('
    for p in "$@"; do echo "	_ \"$p\""; done; echo ')'; } > "$d/tools.go"
}

# build_one OUT PKG LDFLAGS: go build inside the current module dir.
build_one() {
  local out=$1 pkg=$2 ldf=$3 t; t=$(now)
  log "go build $pkg -> $out"
  $NICE go build -trimpath -ldflags "$ldf" -o "$out.tmp" "$pkg" >>"$LOGS/build-$(basename "$out").log" 2>&1 \
    || die "go build $pkg failed, see $LOGS/build-$(basename "$out").log"
  mv "$out.tmp" "$out"
  timing "build $(basename "$out")" "$t"
}

K8S_BINS="kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy"

build_kubernetes() {
  local all=1 b
  for b in $K8S_BINS; do [ -x "$BIN/$b-$K8S_VERSION" ] || all=0; done
  (( all )) && return 0
  local t d gomod; t=$(now)
  d=$(new_module kubernetes "$K8S_VERSION")
  cd "$d"
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    # k8s.io/kubernetes replaces its staging modules with ./staging paths; pin them instead.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$K8S_STAGING_VERSION"'#p' "$gomod"
  } >> go.mod
  grep -q '^replace k8s.io/api ' go.mod || die "found no staging replaces in $gomod"
  local pkgs=() b
  for b in $K8S_BINS; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  write_tools "$d" "${pkgs[@]}"
  $NICE go mod tidy >>"$LOGS/build-kubernetes.log" 2>&1 || die "go mod tidy for kubernetes failed, see $LOGS/build-kubernetes.log"
  local ldf; ldf=$(k8s_ldflags)
  for b in $K8S_BINS; do
    [ -x "$BIN/$b-$K8S_VERSION" ] || build_one "$BIN/$b-$K8S_VERSION" "k8s.io/kubernetes/cmd/$b" "$ldf"
  done
  timing "build kubernetes (all)" "$t"
}


# go_component NAME VERSION MODULE PKG LDFLAGS [OUTNAME]: build PKG from MODULE@VERSION in a
# throwaway module; output $BIN/OUTNAME-VERSION (OUTNAME defaults to NAME).
go_component() {
  local name=$1 ver=$2 mod=$3 pkg=$4 ldf=$5 out=${6:-$1}
  [ -x "$BIN/$out-$ver" ] && return 0
  local d; d=$(new_module "$name" "$ver")
  ( cd "$d"
    echo "require $mod $ver" >> go.mod
    write_tools "$d" "$pkg"
    $NICE go mod tidy >>"$LOGS/build-$out.log" 2>&1 || die "go mod tidy for $name failed, see $LOGS/build-$out.log"
    build_one "$BIN/$out-$ver" "$pkg" "$ldf" )
}

build_kind() {
  go_component kind "$KIND_VERSION" sigs.k8s.io/kind sigs.k8s.io/kind "-s -w"
}
build_etcd() {
  # go.etcd.io/etcd/server/v3 is the etcd main package (its own replaces are ignored here).
  go_component etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 "-s -w"
}
build_coredns() {
  go_component coredns "$COREDNS_VERSION" github.com/coredns/coredns github.com/coredns/coredns \
    "-s -w -X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}"
}
build_crictl() {
  go_component crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl \
    "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}"
}
build_local_path_provisioner() {
  go_component local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" github.com/rancher/local-path-provisioner \
    github.com/rancher/local-path-provisioner "-s -w -X main.VERSION=${LOCAL_PATH_PROVISIONER_VERSION}"
}
build_kube_router() {
  # NetworkPolicy enforcement inside our kindnet image (see README: kindnetd is not on the proxy,
  # and this kernel has no NFT_QUEUE, which kindnetd's nfqueue-based policy engine needs).
  go_component kube-router "$KUBE_ROUTER_VERSION" github.com/cloudnativelabs/kube-router/v2 \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router \
    "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=${KUBE_ROUTER_VERSION}"
}
build_prometheus_operator() {
  local ldf="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}"
  go_component prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" github.com/prometheus-operator/prometheus-operator \
    github.com/prometheus-operator/prometheus-operator/cmd/operator "$ldf" prometheus-operator
  go_component prometheus-operator "$PROMETHEUS_OPERATOR_VERSION" github.com/prometheus-operator/prometheus-operator \
    github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader "$ldf" prometheus-config-reloader
}
build_prometheus() {
  # Built from the Go module: Debian's prometheus package lacks kubernetes_sd_configs, which every
  # ServiceMonitor needs. No web UI assets (API only); module v0.3XX.Y is Prometheus v3.XX.Y.
  local pv=${PROMETHEUS_VERSION#v} ldf
  ldf="-s -w -X github.com/prometheus/common/version.Version=$pv -X github.com/prometheus/common/version.Branch=release"
  ldf+=" -X github.com/prometheus/common/version.Revision=$PROMETHEUS_MODULE_VERSION"
  go_component prometheus "$PROMETHEUS_MODULE_VERSION" github.com/prometheus/prometheus \
    github.com/prometheus/prometheus/cmd/prometheus "$ldf" prometheus
}
build_pause() {
  # pause is one C file in the k8s.io/kubernetes module; built static like upstream.
  [ -x "$BIN/pause-$PAUSE_VERSION" ] && return 0
  local dir; dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Dir)
  log "gcc -static pause.c"
  $NICE gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-veritas" -o "$BIN/pause-$PAUSE_VERSION.tmp" \
    "$dir/build/pause/linux/pause.c" && strip "$BIN/pause-$PAUSE_VERSION.tmp" && mv "$BIN/pause-$PAUSE_VERSION.tmp" "$BIN/pause-$PAUSE_VERSION"
}

components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kind kubernetes etcd coredns crictl kube-router local-path-provisioner pause)
for c in "${components[@]}"; do
  ( "build_${c//-/_}" ) || die "building $c failed"
done
