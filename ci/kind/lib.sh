# Shared helpers for ci/kind/*.sh (sourced, not executed).
set -euo pipefail
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$KIND_DIR/versions.env"
CACHE="${VERITAS_KIND_CACHE:-/var/cache/veritas-kind}"
BIN="$CACHE/bin"            # built binaries, one file per component+version
STAMPS="$CACHE/stamps"      # "this step is done for this key" markers
LOGS="$CACHE/logs"
mkdir -p "$CACHE" "$BIN" "$STAMPS" "$LOGS"
export PATH="/usr/local/go/bin:$BIN:$PATH"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOTOOLCHAIN=local

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; exit 1; }

# Seconds since epoch, for timing lines written to $LOGS/timings.log.
now() { date +%s; }
timing() { # timing NAME START
  local d=$(( $(now) - $2 )); log "$1 took ${d}s"
  printf '%s %s %ss\n' "$(date -u +%FT%TZ)" "$1" "$d" >> "$LOGS/timings.log"
}

# wait_for DESCRIPTION DEADLINE_SECONDS CMD...: poll CMD every 2 s until it succeeds. On
# timeout, say what the last attempt printed (the value it saw), not only that it timed out.
wait_for() {
  local what=$1 limit=$2; shift 2
  local end=$(( $(now) + limit )) last
  until last=$("$@" 2>&1); do
    if (( $(now) >= end )); then
      log "timed out after ${limit}s waiting for: $what; last attempt printed:"
      printf '%s\n' "${last:-(nothing)}" | tail -n 15 | sed 's/^/    /' >&2
      return 1
    fi
    sleep 2
  done
}

# recipe_key PATH...: a hash of how something is made (the given scripts and directories, the
# pins and the Go toolchain). Cache keys include it, so a changed recipe never reuses a stale
# image or binary made by the old one.
recipe_key() {
  { local p; for p in "$@" "$KIND_DIR/versions.env"; do
      if [ -d "$p" ]; then find "$p" -type f -print0 | sort -z | xargs -0 cat; else cat "$p"; fi
    done
    go version 2>/dev/null || echo "no go"
  } | sha256sum | cut -c1-12
}

# k8s_ldflags: the version stamps hack/lib/version.sh sets (kubeadm rejects v0.0.0-master).
k8s_ldflags() {
  local v=${K8S_VERSION#v} major minor
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  local date=2025-01-01T00:00:00Z f=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  echo "-s -w$f"
}

# gomod_dir NAME KEY: a throwaway module directory for one component.
gomod_dir() { local d="$CACHE/src/$1-$2"; mkdir -p "$d"; echo "$d"; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
