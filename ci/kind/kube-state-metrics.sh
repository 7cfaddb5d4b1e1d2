#!/usr/bin/env bash
# kube-state-metrics on the offline kind cluster, for the guide's "Pod readiness" query
# (scenario PRQ-5, which is reported skipped on a cluster without it). Built from its Go module
# (served here), cached in $CACHE/bin like the cluster's other binaries; an image on the static
# base, loaded into the cluster, deployed in `monitoring` with a ServiceMonitor.
# Not part of `.ci/run`: its cold build (about 10 CPU-minutes) would lengthen the cold run's
# critical path, the kind build.
# Usage: CLUSTER_NAME=veritas KUBECONFIG=... ci/kind/kube-state-metrics.sh
. "$(dirname "$0")/lib.sh"
# Pinned here, not in versions.env: every cached cluster binary and image is keyed on that file.
KSM_VERSION=v2.19.1
: "${KUBECONFIG:?set KUBECONFIG to the kubeconfig of the cluster}"
KUBECTL="$BIN/kubectl-$K8S_VERSION"
KIND="$BIN/kind-$KIND_VERSION"
bin="$BIN/kube-state-metrics-$KSM_VERSION"
image="registry.k8s.io/kube-state-metrics/kube-state-metrics:$KSM_VERSION"

if [ ! -x "$bin" ]; then
  t=$(now)
  d=$(gomod_dir kube-state-metrics "$KSM_VERSION")
  log "go install k8s.io/kube-state-metrics/v2@$KSM_VERSION (nice 19)"
  ( cd "$d" && GOBIN="$d/bin" nice -n 19 go install -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${KSM_VERSION#v}" \
      "k8s.io/kube-state-metrics/v2@$KSM_VERSION" ) >"$LOGS/build-kube-state-metrics.log" 2>&1 \
    || die "building kube-state-metrics failed, see $LOGS/build-kube-state-metrics.log"
  mv "$d/bin/kube-state-metrics" "$bin"
  timing "build kube-state-metrics" "$t"
fi

key=$(sha256sum "$bin" | cut -c1-16)
image_key() { docker image inspect -f '{{index .Config.Labels "veritas.key"}}' "$1" 2>/dev/null || true; }
if [ "$(image_key "$image")" != "$key" ]; then
  "$KIND_DIR/build-images.sh" tools >/dev/null
  ctx="$CACHE/ctx/kube-state-metrics"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$bin" "$ctx/kube-state-metrics"
  printf 'FROM veritas.local/static-base:1\nCOPY kube-state-metrics /kube-state-metrics\nUSER 65534\nENTRYPOINT ["/kube-state-metrics"]\n' > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q --label "veritas.key=$key" -t "$image" "$ctx" >"$LOGS/docker-build-ksm.log" 2>&1 \
    || die "docker build $image failed, see $LOGS/docker-build-ksm.log"
fi
"$KIND" load docker-image --name "$CLUSTER_NAME" "$image" >"$LOGS/kind-load-ksm.log" 2>&1 \
  || die "kind load failed, see $LOGS/kind-load-ksm.log"
sed "s#\${KSM_IMAGE}#$image#" "$KIND_DIR/manifests/kube-state-metrics.yaml" | "$KUBECTL" apply -f - >/dev/null
"$KUBECTL" -n monitoring rollout status deployment/kube-state-metrics --timeout=120s >/dev/null \
  || die "kube-state-metrics did not become ready"
log "kube-state-metrics $KSM_VERSION ready in monitoring (ServiceMonitor kube-state-metrics)"
