#!/usr/bin/env bash
# Smoke test of an offline kind cluster (ci/kind/up.sh): nodes Ready, CoreDNS resolves a
# Service, a Deployment answers through its ClusterIP, NetworkPolicy blocks then allows,
# a PVC binds through local-path, Prometheus Operator turns a ServiceMonitor into an "up" target.
# Every wait polls with a deadline. Exits non-zero with a message on the first failed check.
# Env: KUBECONFIG (default: the one up.sh wrote), SKIP_MONITORING=1, KEEP=1 (keep the namespace).
. "$(dirname "$0")/lib.sh"
export KUBECONFIG="${KUBECONFIG:-$CACHE/kubeconfig-$CLUSTER_NAME}"
KUBECTL="$BIN/kubectl-$K8S_VERSION"
k() { "$KUBECTL" "$@"; }
NS=veritas-smoke
M="$KIND_DIR/manifests"
t0=$(now)
pass() { log "PASS: $* ($(( $(now) - t0 ))s)"; }
fail() { log "FAIL: $*"; k -n "$NS" get pods,svc,endpoints,netpol,pvc -o wide >&2 2>/dev/null || true; exit 1; }
render() { sed "s#BUSYBOX_IMAGE#$BUSYBOX_IMAGE#g" "$1"; }
in_client() { k -n "$NS" exec client -- "$@"; }

# 0. fresh namespace
if k get ns "$NS" >/dev/null 2>&1; then
  k delete ns "$NS" --wait=true --timeout=120s >/dev/null || fail "could not delete the old $NS namespace"
fi

# 1. nodes Ready
k wait --for=condition=Ready nodes --all --timeout=120s >/dev/null || fail "nodes not Ready within 120s"
pass "all nodes Ready: $(k get nodes --no-headers | awk '{print $1"="$2}' | tr '\n' ' ')"

# 2. workloads up
render "$M/smoke.yaml" | k apply -f - >/dev/null || fail "could not apply smoke.yaml"
k -n "$NS" rollout status deployment/web --timeout=120s >/dev/null || fail "Deployment web not ready within 120s"
k -n "$NS" wait --for=condition=Ready pod/client --timeout=120s >/dev/null || fail "client pod not Ready within 120s"
pass "Deployment web (2 replicas) and client pod running"

# 3. DNS: CoreDNS resolves the Service name to its ClusterIP
cip=$(k -n "$NS" get svc web -o jsonpath='{.spec.clusterIP}')
dns_ok() { in_client nslookup "web.$NS.svc.cluster.local" 2>/dev/null | grep -q "Address: *$cip\$\|Address 1: *$cip\b\|$cip"; }
wait_for "DNS web.$NS.svc.cluster.local -> $cip" 60 dns_ok || fail "CoreDNS did not resolve web.$NS.svc.cluster.local to $cip within 60s"
pass "CoreDNS resolves web.$NS.svc.cluster.local -> $cip"

# 4. Service: the Deployment answers through the ClusterIP (and through the DNS name)
# busybox 1.35's `wget -T` segfaults (Debian bookworm), so bound it with busybox `timeout` instead.
svc_ok() { in_client timeout 5 wget -q -O - "http://$1/index.html" 2>/dev/null | grep -q veritas-smoke-ok; }
wait_for "HTTP via ClusterIP $cip" 60 svc_ok "$cip" || fail "no answer from http://$cip/ within 60s"
wait_for "HTTP via web.$NS" 30 svc_ok "web.$NS" || fail "no answer from http://web.$NS/ within 30s"
pass "Service web answers through ClusterIP $cip and its DNS name"

# 5. NetworkPolicy: deny-all ingress blocks, then an allow rule for role=client lets traffic in
k apply -f "$M/smoke-netpol-deny.yaml" >/dev/null || fail "could not apply the deny NetworkPolicy"
blocked() { ! svc_ok "$cip"; }
wait_for "traffic to web to be blocked" 60 blocked || fail "NetworkPolicy web-deny-all did not block traffic within 60s (is a policy engine running?)"
# stays blocked (not a transient failure)
for _ in 1 2 3; do svc_ok "$cip" && fail "traffic got through while web-deny-all is in force"; done
pass "NetworkPolicy web-deny-all blocks traffic to web"
k apply -f "$M/smoke-netpol-allow.yaml" >/dev/null || fail "could not apply the allow NetworkPolicy"
wait_for "traffic from client allowed again" 60 svc_ok "$cip" || fail "NetworkPolicy web-allow-client did not allow traffic within 60s"
pass "NetworkPolicy web-allow-client lets the client in again"
k -n "$NS" delete networkpolicy web-deny-all web-allow-client >/dev/null

# 6. PVC binds through local-path (default StorageClass "standard") and the pod writes to it
render "$M/smoke-pvc.yaml" | k apply -f - >/dev/null || fail "could not apply smoke-pvc.yaml"
bound() { [ "$(k -n "$NS" get pvc data -o jsonpath='{.status.phase}')" = Bound ]; }
wait_for "PVC data Bound" 120 bound || fail "PVC data not Bound within 120s (local-path-provisioner logs: kubectl -n local-path-storage logs deploy/local-path-provisioner)"
k -n "$NS" wait --for=condition=Ready pod/pvc-writer --timeout=60s >/dev/null || fail "pvc-writer pod not Ready within 60s"
written() { [ "$(k -n "$NS" exec pvc-writer -- cat /data/proof 2>/dev/null)" = persisted ]; }
wait_for "file on the PV" 30 written || fail "pvc-writer could not write to the PV"
pass "PVC data Bound ($(k -n "$NS" get pvc data -o jsonpath='{.spec.volumeName}')) and writable"

# 7. Prometheus Operator: ServiceMonitor -> scrape target up in Prometheus
if [ "${SKIP_MONITORING:-0}" != 1 ]; then
  k get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1 || fail "ServiceMonitor CRD missing (up.sh installs it unless SKIP_MONITORING=1)"
  k apply -f "$M/smoke-servicemonitor.yaml" >/dev/null || fail "could not apply the ServiceMonitor"
  q='/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy/api/v1/query?query=min(up%7Bnamespace%3D%22veritas-smoke%22%2Cservice%3D%22web%22%7D)'
  target_up() { k get --raw "$q" 2>/dev/null | jq -e '.data.result[0].value[1] == "1"' >/dev/null; }
  wait_for "Prometheus target for ServiceMonitor veritas-smoke/web up" 180 target_up \
    || fail "Prometheus has no up target for ServiceMonitor veritas-smoke/web within 180s (last answer: $(k get --raw "$q" 2>&1 | head -c 400))"
  metric_ok() { k get --raw '/api/v1/namespaces/monitoring/services/prometheus-operated:9090/proxy/api/v1/query?query=veritas_smoke_up' 2>/dev/null | jq -e '.data.result | length >= 2' >/dev/null; }
  wait_for "veritas_smoke_up from both replicas" 60 metric_ok || fail "Prometheus did not ingest veritas_smoke_up from both replicas"
  pass "Prometheus Operator reconciled ServiceMonitor web; Prometheus reports both targets up"
fi

[ "${KEEP:-0}" = 1 ] || k delete ns "$NS" --wait=false >/dev/null
log "smoke: all checks passed in $(( $(now) - t0 ))s"
printf '%s smoke total %ss\n' "$(date -u +%FT%TZ)" "$(( $(now) - t0 ))" >> "$LOGS/timings.log"
