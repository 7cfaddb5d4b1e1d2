#!/usr/bin/env bash
# Bring an offline kind cluster up from nothing: host setup, Go builds, images, cluster,
# scenario images loaded, Prometheus Operator installed. Every step is cached; on a warm machine
# only `kind create cluster` does real work. Prints the kubeconfig path on the last line.
# Env: CLUSTER_NAME (default from versions.env), KIND_CONFIG (extra kind config file),
#      SKIP_MONITORING=1 (no Prometheus Operator).
. "$(dirname "$0")/lib.sh"
t0=$(now)
"$KIND_DIR/host-setup.sh"
"$KIND_DIR/build-binaries.sh"
[ "${SKIP_MONITORING:-0}" = 1 ] || "$KIND_DIR/build-binaries.sh" prometheus-operator prometheus
"$KIND_DIR/build-images.sh" all
if [ "${SKIP_MONITORING:-0}" = 1 ]; then "$KIND_DIR/build-extra-images.sh" busybox; else "$KIND_DIR/build-extra-images.sh"; fi
timing "up: builds (cached or not)" "$t0"

KIND="$BIN/kind-$KIND_VERSION"
KUBECTL="$BIN/kubectl-$K8S_VERSION"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-$CACHE/kubeconfig-$CLUSTER_NAME}"

# The cluster's kind config: the caller's (KIND_CONFIG), else ours.
cfg_want=$(mktemp)
if [ -n "${KIND_CONFIG:-}" ]; then cp "$KIND_CONFIG" "$cfg_want"; else
  cat > "$cfg_want" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  # this kernel has no IP_VS; iptables is kind's default anyway
  kubeProxyMode: iptables
kubeadmConfigPatches:
  # The kubelet refreshes mounted Secrets/ConfigMaps on its pod sync (default every 1m, seen
  # here at 3+ minutes): a new or deleted ServiceMonitor reached Prometheus that late. Scenarios
  # run with short scrape and analysis intervals; 10s keeps config changes within seconds.
  - |
    kind: KubeletConfiguration
    syncFrequency: 10s
YAML
fi
cfg="$CACHE/kind-config-$CLUSTER_NAME.yaml"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  # Reuse only a cluster whose node runs the node image wanted now (same image ID) and that was
  # created from the same kind config: anything else is deleted and created again.
  have=$(docker inspect -f '{{.Image}}' "$CLUSTER_NAME-control-plane" 2>/dev/null || true)
  want=$(docker image inspect -f '{{.Id}}' "$NODE_IMAGE" 2>/dev/null || true)
  if [ -n "$have" ] && [ "$have" = "$want" ] && cmp -s "$cfg" "$cfg_want"; then
    log "cluster $CLUSTER_NAME exists with node image $NODE_IMAGE and the same config; reusing it (ci/kind/down.sh deletes it)"
  else
    log "cluster $CLUSTER_NAME runs node image ${have:-unknown} (wanted $want, $NODE_IMAGE) or another kind config: deleting it"
    "$KIND" delete cluster --name "$CLUSTER_NAME" >&2 || die "could not delete the stale cluster $CLUSTER_NAME"
  fi
fi
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  t=$(now)
  cp "$cfg_want" "$cfg"
  "$KIND" create cluster --name "$CLUSTER_NAME" --image "$NODE_IMAGE" --config "$cfg" \
    --kubeconfig "$KUBECONFIG_OUT" --wait 0s 2>&1 | tee "$LOGS/kind-create.log" >&2
  [ "${PIPESTATUS[0]}" = 0 ] || die "kind create cluster failed (log: $LOGS/kind-create.log; kind export logs for details)"
  timing "up: kind create cluster" "$t"
fi
rm -f "$cfg_want"
"$KIND" export kubeconfig --name "$CLUSTER_NAME" --kubeconfig "$KUBECONFIG_OUT" >/dev/null 2>&1
export KUBECONFIG="$KUBECONFIG_OUT"

t=$(now)
"$KUBECTL" wait --for=condition=Ready nodes --all --timeout=180s >&2 || die "nodes not Ready within 180s"
"$KUBECTL" -n kube-system rollout status deployment/coredns --timeout=180s >&2 || die "CoreDNS not ready within 180s"
timing "up: nodes Ready + CoreDNS" "$t"

t=$(now)
imgs=("$BUSYBOX_IMAGE" docker.io/library/busybox:latest)
[ "${SKIP_MONITORING:-0}" = 1 ] || imgs+=("$PROMETHEUS_IMAGE" "$PROMETHEUS_OPERATOR_IMAGE" "$PROMETHEUS_CONFIG_RELOADER_IMAGE")
"$KIND" load docker-image --name "$CLUSTER_NAME" "${imgs[@]}" >"$LOGS/kind-load.log" 2>&1 \
  || die "kind load docker-image failed, see $LOGS/kind-load.log"
timing "up: kind load docker-image (scenario images)" "$t"
if [ "${SKIP_MONITORING:-0}" != 1 ]; then
  t=$(now)
  "$KIND_DIR/monitoring.sh" install
  timing "up: Prometheus Operator installed" "$t"
fi
timing "up: total" "$t0"
echo "$KUBECONFIG_OUT"
