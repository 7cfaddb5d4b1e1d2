#!/usr/bin/env bash
# etcd + kube-apiserver on loopback from the same binaries as the kind node (like envtest), for
# controller integration tests that need a real API server but no nodes.
#   apiserver.sh start   -> prints the kubeconfig path on the last line (state in $STATE_DIR)
#   apiserver.sh stop    -> stops both processes and removes the state
#   apiserver.sh status
# Env: VERITAS_APISERVER_DIR (default /tmp/veritas-apiserver). Builds the binaries if needed.
. "$(dirname "$0")/lib.sh"
STATE_DIR="${VERITAS_APISERVER_DIR:-/tmp/veritas-apiserver}"
APISERVER="$BIN/kube-apiserver-$K8S_VERSION"
ETCD="$BIN/etcd-$ETCD_VERSION"
KUBECTL="$BIN/kubectl-$K8S_VERSION"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
alive() { [ -f "$STATE_DIR/$1.pid" ] && kill -0 "$(cat "$STATE_DIR/$1.pid")" 2>/dev/null; }

stop() {
  local p pid
  for p in kube-apiserver etcd; do
    if alive "$p"; then
      pid=$(cat "$STATE_DIR/$p.pid"); kill "$pid"
      wait_for "$p ($pid) to exit" 30 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$STATE_DIR"
}

start() {
  if alive kube-apiserver && alive etcd; then echo "$STATE_DIR/kubeconfig"; return 0; fi
  stop
  [ -x "$APISERVER" ] && [ -x "$ETCD" ] && [ -x "$KUBECTL" ] || "$KIND_DIR/build-binaries.sh" kubernetes etcd >&2
  mkdir -p "$STATE_DIR/pki" "$STATE_DIR/etcd"
  local pki="$STATE_DIR/pki"
  # CA, serving cert for 127.0.0.1/localhost, service-account key pair.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=veritas-test-ca \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' > "$pki/ext.cnf"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
    -extfile "$pki/ext.cnf" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local token; token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$token,veritas-admin,veritas-admin,system:masters" > "$pki/tokens.csv"

  local etcd_port peer_port api_port
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  nohup "$ETCD" --name veritas-test --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "veritas-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync \
    >"$STATE_DIR/etcd.log" 2>&1 &
  echo $! > "$STATE_DIR/etcd.pid"
  nohup "$APISERVER" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC --service-cluster-ip-range 10.0.0.0/24 \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --allow-privileged=true \
    --disable-admission-plugins ServiceAccount \
    >"$STATE_DIR/kube-apiserver.log" 2>&1 &
  echo $! > "$STATE_DIR/kube-apiserver.pid"

  cat > "$STATE_DIR/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: veritas-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: veritas-admin
  user:
    token: $token
contexts:
- name: veritas-test
  context: {cluster: veritas-test, user: veritas-admin, namespace: default}
current-context: veritas-test
YAML
  ready() { "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; }
  if ! wait_for "kube-apiserver /readyz" 90 ready; then
    tail -20 "$STATE_DIR/kube-apiserver.log" >&2; tail -5 "$STATE_DIR/etcd.log" >&2
    stop; die "kube-apiserver did not become ready within 90s"
  fi
  wait_for "namespace default" 30 "$KUBECTL" --kubeconfig "$STATE_DIR/kubeconfig" get ns default \
    || die "namespace default was not created"
  echo "$STATE_DIR/kubeconfig"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) alive kube-apiserver && alive etcd && echo "running: $STATE_DIR/kubeconfig" || { echo "not running"; exit 1; } ;;
  *) die "usage: $0 start|stop|status" ;;
esac
