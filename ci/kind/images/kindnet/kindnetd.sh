#!/bin/sh
# kindnet-offline: the pod network of the offline kind node image (see ci/README.md).
# Does what kind's kindnetd does for a kind cluster, with Debian tools and kube-router:
#  - writes this node's CNI config (ptp + host-local on the node's podCIDR + portmap),
#  - masquerades pod traffic leaving the pod subnet,
#  - keeps routes to the other nodes' podCIDRs,
#  - enforces NetworkPolicy with kube-router's firewall (iptables + ipset).
# kindnetd itself is not reachable through the Go module proxy, and its nfqueue-based policy
# engine needs CONFIG_NFT_QUEUE, which the CI VMs' kernel lacks.
set -eu
NODE=${NODE_NAME:-$(hostname)}
if [ -n "${CONTROL_PLANE_ENDPOINT:-}" ]; then
  # Talk to the API server directly so we do not depend on kube-proxy being up.
  export KUBERNETES_SERVICE_HOST="${CONTROL_PLANE_ENDPOINT%:*}" KUBERNETES_SERVICE_PORT="${CONTROL_PLANE_ENDPOINT##*:}"
fi
log() { echo "$(date -u +%FT%TZ) kindnet: $*"; }
# (not --request-timeout: any such flag makes kubectl ignore the in-cluster config)
k() { timeout 20 kubectl "$@"; }

child=""
trap 'log "terminating"; [ -n "$child" ] && kill "$child" 2>/dev/null; exit 0' TERM INT

cidr=""
until cidr=$(k get node "$NODE" -o jsonpath='{.spec.podCIDR}' 2>/dev/null) && [ -n "$cidr" ]; do
  log "waiting for node $NODE to get a podCIDR"; sleep 2
done
mtu=$(cat /sys/class/net/eth0/mtu 2>/dev/null || echo 1500)
log "node $NODE podCIDR $cidr mtu $mtu cluster subnet ${POD_SUBNET:-unset}"

conf=/etc/cni/net.d/10-kindnet.conflist
tmp=$(mktemp /etc/cni/net.d/.kindnet.XXXXXX)
cat > "$tmp" <<JSON
{
  "cniVersion": "0.3.1",
  "name": "kindnet",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "mtu": $mtu,
      "ipam": {
        "type": "host-local",
        "dataDir": "/run/cni-ipam-state",
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "ranges": [ [ { "subnet": "$cidr" } ] ]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
if cmp -s "$tmp" "$conf" 2>/dev/null; then rm -f "$tmp"; else chmod 0644 "$tmp"; mv "$tmp" "$conf"; log "wrote $conf"; fi

# Masquerade traffic from pods to anything outside the cluster pod subnet (and not to this node).
subnet=${POD_SUBNET:-$cidr}
iptables -w -t nat -N KINDNET-MASQ 2>/dev/null || true
iptables -w -t nat -F KINDNET-MASQ
iptables -w -t nat -A KINDNET-MASQ -d "$subnet" -j RETURN
iptables -w -t nat -A KINDNET-MASQ -m addrtype --dst-type LOCAL -j RETURN
iptables -w -t nat -A KINDNET-MASQ -j MASQUERADE
iptables -w -t nat -C POSTROUTING -s "$subnet" -j KINDNET-MASQ 2>/dev/null \
  || iptables -w -t nat -A POSTROUTING -s "$subnet" -j KINDNET-MASQ

# NetworkPolicy enforcement.
kube-router --run-firewall=true --run-router=false --run-service-proxy=false \
  --enable-cni=false --hostname-override="$NODE" --metrics-port=0 --health-port=0 --enable-ipv6=false -v=1 &
child=$!
log "kube-router firewall started (pid $child)"

# Routes to the other nodes' pod subnets.
while kill -0 "$child" 2>/dev/null; do
  k get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' 2>/dev/null \
  | while read -r name pcidr ip; do
      [ "$name" = "$NODE" ] && continue
      [ -n "$pcidr" ] && [ -n "$ip" ] || continue
      ip route replace "$pcidr" via "$ip" 2>/dev/null || log "route $pcidr via $ip failed"
    done
  sleep 10 & wait $! || true
done
wait "$child"; rc=$?
log "kube-router exited with $rc"
exit "$rc"
