#!/usr/bin/env bash
# Host prerequisites for offline kind: Debian packages, a running dockerd, and (on VMs whose
# capability bounding set lacks CAP_SYS_RESOURCE) a runc wrapper as dockerd's default runtime.
# Idempotent: a second run changes nothing and returns in about a second.
. "$(dirname "$0")/lib.sh"

PKGS="docker.io debootstrap jq iptables ca-certificates gcc libc6-dev openssl python3"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=" $p"; done
if [ -n "$missing" ]; then
  log "apt-get install$missing"
  t=$(now)
  apt-get update -qq || log "apt-get update failed; trying the install anyway"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >"$LOGS/apt.log" 2>&1 \
    || die "apt-get install failed, see $LOGS/apt.log"
  timing host-apt "$t"
fi

# Is CAP_SYS_RESOURCE (bit 24) in the bounding set?
capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
need_wrapper=0
(( (0x$capbnd >> 24) & 1 )) || need_wrapper=1

mkdir -p /etc/docker
want_daemon_json="$CACHE/daemon.json"
if (( need_wrapper )); then
  install -m 0755 "$KIND_DIR/runc-drop-sys-resource" /usr/local/sbin/runc-drop-sys-resource
  cat > "$want_daemon_json" <<'JSON'
{
  "default-runtime": "runc-nosysres",
  "runtimes": { "runc-nosysres": { "path": "/usr/local/sbin/runc-drop-sys-resource" } }
}
JSON
else
  echo '{}' > "$want_daemon_json"
fi

restart=0
if ! cmp -s "$want_daemon_json" /etc/docker/daemon.json 2>/dev/null; then
  cp "$want_daemon_json" /etc/docker/daemon.json
  restart=1
fi

dockerd_pid() { pgrep -x dockerd | head -1; }
if [ -n "$(dockerd_pid)" ] && (( restart )); then
  log "daemon.json changed; restarting dockerd"
  if command -v systemctl >/dev/null && systemctl is-active -q docker 2>/dev/null; then
    systemctl restart docker
  else
    pid=$(dockerd_pid); kill "$pid"
    wait_for "dockerd $pid to exit" 60 sh -c "! kill -0 $pid" || die "dockerd did not stop"
  fi
fi
if ! docker info >/dev/null 2>&1; then
  if [ -z "$(dockerd_pid)" ]; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      systemctl start docker
    else
      log "starting dockerd in the background (log: $LOGS/dockerd.log)"
      # containerd from the docker.io dependency is started by dockerd itself when not running.
      nohup setsid dockerd >>"$LOGS/dockerd.log" 2>&1 </dev/null &
    fi
  fi
  wait_for "docker info" 90 docker info || die "dockerd did not come up, see $LOGS/dockerd.log"
fi
if (( need_wrapper )); then
  docker info --format '{{.DefaultRuntime}}' | grep -qx runc-nosysres \
    || die "dockerd runs but its default runtime is not runc-nosysres"
fi
log "dockerd ready ($(docker version --format '{{.Server.Version}}'), default runtime $(docker info --format '{{.DefaultRuntime}}'))"
