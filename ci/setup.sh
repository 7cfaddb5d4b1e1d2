#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine, and nothing that is
# already there: cmake, clang and libclang (llama.cpp through llama-cpp-sys-2), pkg-config,
# and cargo-nextest (the test runner). Idempotent; a second run takes about a second.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in cmake clang libclang-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}" >&2
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "ci/setup.sh: installing cargo-nextest (cargo install, a few minutes on 2 cores)" >&2
  cargo install cargo-nextest --locked
fi
