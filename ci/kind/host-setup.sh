#!/usr/bin/env bash
# Host prerequisites for offline kind: Debian packages, a running dockerd, and (on VMs whose
# capability bounding set lacks CAP_SYS_RESOURCE) a runc wrapper as dockerd's default runtime.
# Idempotent: a second run changes nothing and returns in about a second.
. "$(dirname "$0")/lib.sh"

PKGS="debootstrap jq iptables ca-certificates gcc libc6-dev openssl python3"
# The engine is decided by what runs, never by a binary's name: machines of this kind ship a
# Docker *client* and no engine. A daemon that answers `docker info` (docker-ce, Debian's
# docker.io, anything else) is used as it is; a `dockerd` on the PATH is started below;
# otherwise Debian's docker.io is installed (dockerd 20.10 + containerd + runc; a newer client
# on the PATH talks to it through API version negotiation).
if docker info >/dev/null 2>&1; then
  log "a Docker daemon answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null)); not installing docker.io"
elif command -v dockerd >/dev/null 2>&1; then
  log "dockerd present ($(command -v dockerd)) but not answering; it is started below"
else
  log "no Docker engine (client: $(command -v docker || echo none)); installing Debian's docker.io"
  PKGS="docker.io $PKGS"
fi
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

# Only when the wrapper is needed is daemon.json touched: the runtime entries are merged into
# what is there (other settings kept), the original is backed up once, and nothing changes (no
# restart) when the merge equals what is already there.
restart=0
if (( need_wrapper )); then
  install -m 0755 "$KIND_DIR/runc-drop-sys-resource" /usr/local/sbin/runc-drop-sys-resource
  mkdir -p /etc/docker
  current=/etc/docker/daemon.json
  [ -s "$current" ] || echo '{}' > "$CACHE/daemon.empty.json"
  src=$current; [ -s "$current" ] || src="$CACHE/daemon.empty.json"
  jq '. + {"default-runtime": "runc-nosysres"} | .runtimes = ((.runtimes // {}) + {"runc-nosysres": {"path": "/usr/local/sbin/runc-drop-sys-resource"}})' \
    "$src" > "$CACHE/daemon.json" || die "$current is not valid JSON; fix it or move it away"
  if ! cmp -s <(jq -S . "$CACHE/daemon.json") <(jq -S . "$src" 2>/dev/null); then
    if [ -s "$current" ] && [ ! -e "$current.veritas-backup" ]; then
      cp -p "$current" "$current.veritas-backup"
      log "backed up $current to $current.veritas-backup"
    fi
    cp "$CACHE/daemon.json" "$current"
    log "merged the runc-nosysres runtime into $current"
    restart=1
  fi
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
  if ! wait_for "docker info" 90 docker info; then
    tail -n 20 "$LOGS/dockerd.log" 2>/dev/null | sed 's/^/    dockerd.log: /' >&2
    die "dockerd did not come up, see $LOGS/dockerd.log"
  fi
fi
if (( need_wrapper )); then
  docker info --format '{{.DefaultRuntime}}' | grep -qx runc-nosysres \
    || die "dockerd runs but its default runtime is not runc-nosysres"
fi
log "dockerd ready ($(docker version --format '{{.Server.Version}}'), default runtime $(docker info --format '{{.DefaultRuntime}}'))"
