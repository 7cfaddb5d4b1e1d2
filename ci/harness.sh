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
cargo build --quiet -p veritas-spark -p veritas-harness
[ $# -gt 0 ] || set -- run
exec target/debug/veritas-harness "$@"
