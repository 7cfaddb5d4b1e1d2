#!/usr/bin/env bash
# The performance regression benchmark: builds llama.cpp's llama-server (cached by
# ci/bench/build-llama-server.sh) and the release binaries, then runs
# `veritas-harness bench` with your arguments. Table on stdout; report.json, table.txt and
# bench.svg under --out (default target/veritas-bench).
#   ci/bench.sh                       # the full run (about 10 minutes on 2 cores)
#   ci/bench.sh --quick               # a smoke run: the job works, the numbers mean little
#   ci/bench.sh --threads 2 --skip llama-server
# llama.cpp is compiled as Release (-O3) on both sides: LLAMA_LIB_PROFILE=Release here, and
# CMAKE_BUILD_TYPE=Release in the llama-server script (a plain `cargo build --release`
# builds it RelWithDebInfo, -O2, because the release profile keeps debug info).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
if ! bash ci/bench/build-llama-server.sh >/dev/null; then
  echo "ci/bench.sh: llama-server could not be built (see above); the bench reports it SKIPPED" >&2
fi
export LLAMA_LIB_PROFILE=Release
# The whole workspace's binaries: a narrower selection unifies features differently.
cargo build --release --workspace --bins --quiet
exec "${CARGO_TARGET_DIR:-target}/release/veritas-harness" bench "$@"
