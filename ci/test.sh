#!/usr/bin/env bash
# The tests: every crate's tests and every scenario of the catalog (one nextest test each).
# Installs what a fresh machine lacks first. Extra arguments go to nextest, e.g.
#   ci/test.sh -E 'test(=E2001)'
# Cluster scenarios run when VERITAS_KUBECONFIG names a cluster (.ci/run brings kind up);
# otherwise nextest lists them as ignored, never as passed. NEXTEST_PROFILE picks the profile
# (default `ci`; `.ci/run` uses `cluster` for the cluster rows).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
exec cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-ci}" "$@"
