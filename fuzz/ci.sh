#!/usr/bin/env bash
# The fuzz targets in CI, on the stable toolchain (fuzz/README.md, "CI"):
# a plain `cargo build` of this workspace links libFuzzer's driver into each
# target, so each binary (1) replays every committed input once (`-runs=0`:
# the seeds and `corpus/<target>/` are regression inputs) and (2) fuzzes for
# KEYWARD_FUZZ_SECONDS (default 30) from them. Without cargo-fuzz's
# coverage instrumentation the second part is libFuzzer mutating the
# committed inputs blindly (no coverage feedback); see README for why CI
# does not build the instrumented targets. A crash fails CI and is kept in
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"
seconds="${KEYWARD_FUZZ_SECONDS:-30}"
cargo build --manifest-path fuzz/Cargo.toml --target-dir "$target_dir" --bins --locked
for t in frame attestation_parse attestation_verify api custody_formats policy_context; do
  inputs=()
  case "$t" in
    policy_context) inputs+=(policies/contexts) ;;
    attestation_parse) inputs+=(fuzz/seeds/"$t" tests/data) ;;
    *) inputs+=(fuzz/seeds/"$t") ;;
  esac
  [ -d fuzz/corpus/"$t" ] && inputs+=(fuzz/corpus/"$t")
  artifacts=fuzz/artifacts/"$t"
  mkdir -p "$artifacts"
  bin="$target_dir/debug/$t"
  started=$(date +%s)
  log=$(mktemp)
  work=$(mktemp -d)
  status=0
  "$bin" -runs=0 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" "${inputs[@]}" >"$log" 2>&1 || status=$?
  if [ "$status" -eq 0 ]; then
    grep -E '^Done' "$log" || true
    "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
      "$work" "${inputs[@]}" >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units)' "$log" || true
  fi
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    rm -f "$log"
    echo "fuzz: $t failed (exit $status); inputs in $artifacts/"
    exit "$status"
  fi
  rm -f "$log"
  echo "fuzz: $t ok in $(( $(date +%s) - started )) s"
done
