#!/usr/bin/env bash
# The main job until veritas-harness lands: the runtime-level playbook on the process driver.
# Builds release binaries, generates a model, runs the guide's quick diagnostics against a
# real daemon and provokes a few documented error codes, printing what each command shows.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p veritas-spark -p veritas-fixtures
bin=target/release
work=$(mktemp -d)
sock="$work/veritas-spark.sock"
trap 'kill -TERM "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$work"' EXIT

spark() { "$bin/veritas-spark" --socket "$sock" "$@"; }
show() { printf '\n$ veritas-spark %s\n' "$*"; spark "$@" || printf '(exit %d)\n' "$?"; }

"$bin/veritas-fixtures" model-dir --out "$work/models" --name tiny --version 1.0.0
http=127.0.0.1:18080 metrics=127.0.0.1:19090
"$bin/veritas-spark" serve --socket "$sock" --model-dir "$work/models" --model tiny \
  --http-addr "$http" --metrics-addr "$metrics" --deployment canary 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 1 300); do spark ready >/dev/null 2>&1 && break; sleep 0.1; done

show health
show health --verbose
show ready
show models list
show generate "Hearthlink says" --max-tokens 16
show metrics summary
show telemetry status
show sandbox selftest
printf '\n$ curl -s %s/metrics | grep requests_total\n' "$metrics"
curl -s "http://$metrics/metrics" | grep '^veritas_spark_requests_total' || true

printf '\n--- provoked errors ---\n'
show models load nosuch
show generate "$(head -c 400 /dev/zero | tr '\0' x)" --max-tokens 4
"$bin/veritas-spark" --socket "$work/absent.sock" health || printf '(exit %d)\n' "$?"
printf '\nplaybook done; daemon log: %s lines\n' "$(wc -l <"$work/daemon.log")"
