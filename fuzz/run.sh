#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# fuzz/run.sh: runs the libFuzzer targets of the fuzz preset (build/fuzz), one at a time, each for a set time with
# its seed corpus copied to a scratch folder (the committed corpus never grows unless --merge is given).
#
#   fuzz/run.sh [--seconds N] [--build-dir DIR] [--merge] [--jobs-note] [target ...]
#
#   --seconds N     seconds per target (default: $FUZZ_SECONDS, else 120)
#   --build-dir D   the fuzz build (default build/fuzz)
#   --merge         afterwards, merge what the run found into fuzz/corpus/<target> (-merge=1: only inputs that add
#                   coverage); for refreshing the committed seeds by hand, never in CI
#   target          fuzz_page_resource fuzz_bitmap ... (default: all)
#
# Per target it prints the executions (libFuzzer's stat::number_of_executed_units), the inputs and operations the
# harness decoded, and the wall time; then "fuzz: N passed, M failed". A finding (crash, sanitizer report, timeout,
# out-of-memory) fails its target: the input is in <build-dir>/fuzz-work/<target>/artifacts/, and
#   <build-dir>/fuzz/<target> <that file>                 replays it
#   STRATA_FUZZ_TRACE=1 <build-dir>/fuzz/<target> <file>  prints every operation (a readable reproducer)
#   <build-dir>/fuzz/<target> -minimize_crash=1 -runs=10000 <file>   shrinks it
# Exit status: 0 when every target passed.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-120}"
build="build/fuzz"
merge=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_page_resource fuzz_bitmap fuzz_sync_bitmap fuzz_free_list fuzz_sync_free_list fuzz_fixed_pool
           fuzz_sync_fixed_pool fuzz_thread_cache fuzz_c_heap)
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:quarantine_size_mb=64:malloc_context_size=12:print_summary=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

passed=0
failed=0
failed_names=()
total_start=$(date +%s)
for t in "${targets[@]}"; do
  bin="$build/fuzz/$t"
  work="$build/fuzz-work/$t"
  if [ ! -x "$bin" ]; then
    echo "fuzz: $t: FAIL (no executable $bin: build the fuzz preset first)"
    failed=$((failed + 1)); failed_names+=("$t"); continue
  fi
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "fuzz/corpus/$t" ] && [ -n "$(ls -A "fuzz/corpus/$t" 2>/dev/null)" ]; then
    cp "fuzz/corpus/$t"/* "$work/corpus/"
  else
    "$build/fuzz/fuzz_make_seeds" "$work/seeds" >/dev/null && cp "$work/seeds/$t"/* "$work/corpus/" 2>/dev/null
  fi
  start=$(date +%s)
  # One worker; -timeout: one input may not take longer; the RSS limit leaves room for page-backed blocks.
  "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout=60 -rss_limit_mb=4096 -max_len=4096 \
         -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log" | tail -1 | grep -o '[0-9]*$')
  counters=$(grep -o 'inputs [0-9]* (cross-thread [0-9]*), ops decoded [0-9]*.*' "$work/log" | tail -1)
  if [ -z "$execs" ]; then execs=$(grep -o '^#[0-9]*' "$work/log" | tail -1 | tr -d '#'); fi
  # crash-, leak-, timeout-, oom- inputs are findings; slow-unit- ones (over 10 s) are only kept for a look.
  artifact=$(ls -t "$work/artifacts" 2>/dev/null | grep -v '^slow-unit-' | head -1)
  if [ $rc -eq 0 ] && [ -z "$artifact" ]; then
    passed=$((passed + 1))
    echo "fuzz: $t: PASS  executions ${execs:-?}, ${counters:-no counters}, wall ${wall} s"
  else
    failed=$((failed + 1)); failed_names+=("$t")
    echo "fuzz: $t: FAIL (exit $rc) executions ${execs:-?}, ${counters:-no counters}, wall ${wall} s"
    grep -E '==strata-fuzz==|^  op |ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' "$work/log" \
      | head -40 | sed 's/^/    /'
    if [ -n "$artifact" ]; then
      echo "    input: $work/artifacts/$artifact"
      echo "    replay: $bin $work/artifacts/$artifact   (STRATA_FUZZ_TRACE=1 prints every operation)"
    fi
    echo "    log: $work/log"
  fi
  if [ $merge -eq 1 ]; then
    mkdir -p "fuzz/corpus/$t"
    "$bin" -merge=1 -max_len=4096 -rss_limit_mb=4096 "fuzz/corpus/$t" "$work/corpus" >"$work/merge.log" 2>&1 \
      && echo "fuzz: $t: merged into fuzz/corpus/$t ($(ls "fuzz/corpus/$t" | wc -l) files)"
  fi
done
echo "fuzz: $passed passed, $failed failed ($(( $(date +%s) - total_start )) s)${failed_names:+: ${failed_names[*]}}"
[ $failed -eq 0 ]
