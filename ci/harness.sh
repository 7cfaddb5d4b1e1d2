#!/usr/bin/env bash
# The main job: the scenario playbook. Installs what a fresh machine lacks, builds the runtime
# and the harness, then runs `veritas-harness` with your arguments (default: `run`, every
# scenario the process driver can run on this machine, no cluster needed).
#   ci/harness.sh run E2001 E3001
#   ci/harness.sh run --all --driver kind --parallel 4
#   ci/harness.sh explain CNT-1
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
# Build exactly what the tests build (same feature set), so the two README commands share one
# build: a narrower `-p` selection unifies features differently and rebuilds llama.cpp.
cargo test --workspace --no-run --quiet
[ $# -gt 0 ] || set -- run
exec target/debug/veritas-harness "$@"
