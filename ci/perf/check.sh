#!/usr/bin/env bash
# Instruction-count regression gate: runs the gungraun (callgrind) benchmarks of the hot paths
# (harness/perf/benches/hot_paths.rs) and compares each one's instruction count (Ir) with the
# committed ci/perf/baseline.json.
#
#   ci/perf/check.sh            # exit 1 when a benchmark costs more than THRESHOLD % above baseline
#   ci/perf/check.sh --update   # measure and rewrite ci/perf/baseline.json (then commit it)
#
# VERITAS_PERF_THRESHOLD (percent, default 5) and VERITAS_PERF_MIN_IR (instructions, default
# 64): a regression is a count above the baseline by more than both. Instruction counts are
# deterministic up to hash seeds, allocator state and where the stack starts: runs of one
# build here differ by a few tenths of a percent, but a clone at another path (CI's) moved
# request admission from 253 to 272 Ir (+7.5 %) with nothing in its code changed (a memcpy's
# branches follow the alignment of the stack, which starts below argv and the environment).
# A new allocation, lock or format costs hundreds of instructions; below 64 a difference is
# that kind of placement, not a change of the code. A benchmark missing
# from the baseline fails too (refresh the baseline).
# Installs valgrind and jq (apt) and gungraun-runner (cargo install, the version of the
# gungraun dev-dependency) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

THRESHOLD=${VERITAS_PERF_THRESHOLD:-5}
MIN_IR=${VERITAS_PERF_MIN_IR:-64}
BASELINE=ci/perf/baseline.json
# Must equal the `gungraun` version in harness/perf/Cargo.toml: the runner refuses another.
GUNGRAUN_VERSION=$(sed -n 's/^gungraun = "=\([0-9.]*\)"/\1/p' harness/perf/Cargo.toml)
update=0
[[ "${1:-}" == "--update" ]] && update=1

log() { printf '[perf] %s\n' "$*" >&2; }

need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
  log "installing ${need[*]} from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ "$(gungraun-runner --version 2>/dev/null | awk '{print $NF}')" != "$GUNGRAUN_VERSION" ]]; then
  log "installing gungraun-runner $GUNGRAUN_VERSION (cargo install)"
  started=$(date +%s)
  cargo install --locked --quiet gungraun-runner --version "$GUNGRAUN_VERSION"
  log "gungraun-runner installed in $(( $(date +%s) - started )) s"
fi

out=${CARGO_TARGET_DIR:-target}/veritas-perf
mkdir -p "$out"
log "running the callgrind benchmarks (cargo bench --workspace --profile perf --bench hot_paths)"
started=$(date +%s)
# --workspace: a -p selection unifies features differently and rebuilds dependencies.
cargo bench --workspace --profile perf --bench hot_paths -- --output-format=json >"$out/summaries.jsonl"
log "benchmarks ran in $(( $(date +%s) - started )) s"

# { "module::function.id": Ir } from one JSON summary per line (gungraun 0.20: the callgrind
# profile's total, `.data.total.metrics.Ir.values.new`).
jq -s 'map({key: (.module_path + "." + (.id // "")),
            value: ([.profiles[] | .data.total.metrics.Ir.values.new? // empty] | first)})
       | from_entries' "$out/summaries.jsonl" >"$out/current.json"
if jq -e 'length == 0 or any(.[]; type != "number")' "$out/current.json" >/dev/null; then
  log "no instruction count (Ir) read from $out/summaries.jsonl: did the gungraun JSON format change?"
  jq . "$out/current.json" >&2
  exit 1
fi

if ((update)); then
  jq -S . "$out/current.json" >"$BASELINE"
  log "baseline rewritten: $BASELINE ($(jq length "$BASELINE") benchmarks); commit it"
  exit 0
fi

[[ -f "$BASELINE" ]] || { log "no $BASELINE: run ci/perf/check.sh --update and commit it"; exit 1; }
report=$(jq -r --slurpfile base "$BASELINE" --argjson t "$THRESHOLD" --argjson min "$MIN_IR" '
  . as $cur | $base[0] as $b
  | ($cur | keys) + ($b | keys) | unique | .[]
  | . as $k
  | if ($b[$k] == null) then "NEW      \($k): \($cur[$k]) Ir, not in the baseline"
    elif ($cur[$k] == null) then "MISSING  \($k): in the baseline, not measured"
    else ($cur[$k] - $b[$k]) as $delta | ($delta * 100 / $b[$k]) as $pct
      | (if $pct > $t and $delta > $min then "REGRESSED" else "ok       " end)
        + " \($k): \($cur[$k]) Ir (baseline \($b[$k]), \($pct * 100 | round / 100)%)"
    end' "$out/current.json")
printf '%s\n' "$report"
if grep -qE '^(REGRESSED|NEW|MISSING)' <<<"$report"; then
  log "instruction-count check FAILED (threshold ${THRESHOLD}% and ${MIN_IR} Ir); if the change is intended: ci/perf/check.sh --update"
  exit 1
fi
log "instruction counts within ${THRESHOLD}% (or ${MIN_IR} Ir) of the baseline"
