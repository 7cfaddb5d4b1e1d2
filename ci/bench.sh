#!/usr/bin/env bash
# The performance regression benchmark: builds llama.cpp's llama-server (cached by
# ci/bench/build-llama-server.sh) and the release binaries, then runs
# `veritas-harness bench` with your arguments. Table on stdout; report.json, table.txt and
# bench.svg under --out (default target/veritas-bench).
#   ci/bench.sh                       # the full run (about 10 minutes on 2 cores)
#   ci/bench.sh --quick               # a smoke run: the job works, the numbers mean little
#   ci/bench.sh --threads 2 --skip llama-server
# llama.cpp is compiled as Release (-O3) on both sides: the release profile builds
# llama-cpp-sys-2 without debug info (Cargo.toml), which makes its build script pick CMake
# Release, and CMAKE_BUILD_TYPE=Release in the llama-server script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
if ! bash ci/bench/build-llama-server.sh >/dev/null; then
  echo "ci/bench.sh: llama-server could not be built (see above); the bench reports it SKIPPED" >&2
fi
# The whole workspace's binaries: a narrower selection unifies features differently.
cargo build --release --workspace --bins --quiet
exec "${CARGO_TARGET_DIR:-target}/release/veritas-harness" bench "$@"
