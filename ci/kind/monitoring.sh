#!/usr/bin/env bash
# Install Prometheus Operator (CRDs + RBAC + Deployment, from the operator's Go module source in
# the module cache) and the "veritas" Prometheus in namespace monitoring, on $KUBECONFIG.
# Usage: monitoring.sh install
. "$(dirname "$0")/lib.sh"
KUBECTL="$BIN/kubectl-$K8S_VERSION"
[ "${1:-install}" = install ] || die "usage: $0 install"
OP=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | jq -r .Dir)
[ -d "$OP/example/prometheus-operator-crd" ] || die "operator module source not found"

"$KUBECTL" apply --server-side --force-conflicts -f "$OP/example/prometheus-operator-crd/" >/dev/null \
  || die "applying the monitoring.coreos.com CRDs failed"
# (kubectl wait fails at once on an object it cannot see yet, so poll it)
wait_for "monitoring CRDs Established" 90 "$KUBECTL" wait --for=condition=Established --timeout=5s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheuses.monitoring.coreos.com \
  || die "monitoring CRDs not Established within 90s"
# The operator's own example RBAC + Deployment (namespace default), images as built locally.
for f in service-account cluster-role cluster-role-binding deployment service; do
  "$KUBECTL" apply -f "$OP/example/rbac/prometheus-operator/prometheus-operator-$f.yaml" >/dev/null \
    || die "applying prometheus-operator-$f.yaml failed"
done
"$KUBECTL" -n default rollout status deployment/prometheus-operator --timeout=180s >&2 \
  || die "prometheus-operator Deployment not ready within 180s"
sed -e "s#PROMETHEUS_IMAGE#$PROMETHEUS_IMAGE#" -e "s#PROMETHEUS_VERSION#$PROMETHEUS_VERSION#" \
  "$KIND_DIR/manifests/prometheus.yaml" | "$KUBECTL" apply -f - >/dev/null || die "applying prometheus.yaml failed"
wait_for "StatefulSet monitoring/prometheus-veritas to exist" 120 \
  "$KUBECTL" -n monitoring get statefulset prometheus-veritas || die "operator did not create the Prometheus StatefulSet"
"$KUBECTL" -n monitoring rollout status statefulset/prometheus-veritas --timeout=240s >&2 \
  || die "Prometheus StatefulSet not ready within 240s"
log "Prometheus Operator $PROMETHEUS_OPERATOR_VERSION and Prometheus $PROMETHEUS_VERSION running"
