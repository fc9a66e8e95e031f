#!/usr/bin/env bash
# Coverage-guided fuzzing of vitedge with cargo-fuzz (libFuzzer + AddressSanitizer, nightly
# toolchain; fuzz/ is its own workspace, outside the product build). Works on whatever targets
# `cargo fuzz list` shows (fuzz/fuzz_targets/<name>.rs).
#
#   scripts/fuzz.sh smoke [--seconds S]                  every target for S seconds (default 20; .ci/run)
#   scripts/fuzz.sh campaign [--seconds S] [--runs N] [TARGET...]
#                                                        every (or the named) target for S seconds
#                                                        (default 600) or until N executions, then a
#                                                        table: executions, exec/s, new units, crashes
#   any command: --sanitizer none  builds without AddressSanitizer (several times the executions per
#                                  second; Rust's own checks — bounds, overflow, debug assertions —
#                                  stay on) into target/fuzz-sanitizer-none, beside the ASan build
#   scripts/fuzz.sh repro TARGET FILE...                 run the inputs once (a crash artifact): the
#                                                        panic message and backtrace
#   scripts/fuzz.sh list                                 the targets
#
# Per target: the committed seeds fuzz/corpus/<t>/ are read, never written (what the fuzzer finds
# goes to target/fuzz-corpus/<t>/, kept between runs); fuzz/dict/<t>.dict is used if present;
# crashes land in fuzz/artifacts/<t>/; logs in target/fuzz-logs/<t>.log, the tables of every run
# in target/fuzz-logs/table.txt.
# A crash: `scripts/fuzz.sh repro <t> fuzz/artifacts/<t>/crash-…`, fix the bug, and commit the input
# as tests/fixtures/fuzz/<t>/<what-it-was> (replayed by tests/fuzz_regressions.rs, or for the
# checkpoint targets unpickle, torch_zip and safetensors by quant/tests/hostile.rs).
# Installs cargo-fuzz (crates.io) and, with rustup, the nightly toolchain when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ensure_tools() {
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain; installing it with rustup"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz from crates.io"
    cargo +nightly install cargo-fuzz --locked
  fi
}

targets() { cargo +nightly fuzz list; }

# run_target TARGET SECONDS: one libFuzzer run; prints one table row; returns 1 on a crash.
run_target() {
  local t=$1 seconds=$2 corpus="$root/target/fuzz-corpus/$1" artifacts="$root/fuzz/artifacts/$1/"
  local log="$root/target/fuzz-logs/$1.log" dict=() before after status=0
  mkdir -p "$corpus" "$artifacts" "$root/target/fuzz-logs"
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=$root/fuzz/dict/$t.dict")
  before=$(find "$artifacts" -type f | wc -l)
  cargo +nightly fuzz run "${fuzz_opts[@]}" "$t" "$corpus" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" "${runs_opt[@]}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts" "${dict[@]}" > "$log" 2>&1 || status=$?
  after=$(find "$artifacts" -type f | wc -l)
  local runs rate units
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  units=$(grep -o 'stat::new_units_added: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  printf '%-24s %8s %14s %10s %10s %8s\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "${units:-?}" "$((after - before))"
  if [ "$status" != 0 ] || [ "$after" != "$before" ]; then
    echo "  CRASH in $t (exit $status); log: $log"
    grep -E "panicked|ERROR: |SUMMARY|Test unit written" "$log" | head -8 | sed 's/^/    /'
    return 1
  fi
}

# fuzz_all SECONDS TARGET...: builds every target once, runs each, prints the table (also appended
# to target/fuzz-logs/table.txt, headed by date, commit and CPU); non-zero on a crash.
fuzz_all() {
  local seconds=$1 failed=0 table="$root/target/fuzz-logs/table.txt" commit cpu
  shift
  mkdir -p "$root/target/fuzz-logs"
  cargo +nightly fuzz build "${fuzz_opts[@]}"
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- 2>/dev/null || commit="$commit+changes"
  cpu=$(awk -F': ' '/^model name/ {n=$2} /^cpu family/ {f=$2} /^model\t/ {m=$2} END {printf "%s (family %s model %s)", n, f, m}' /proc/cpuinfo)
  {
    echo "# $(date -u +%Y-%m-%dT%H:%MZ) commit $commit; $cpu, $(nproc) CPUs; $(cargo +nightly fuzz --version); sanitizer $sanitizer"
    printf '%-24s %8s %14s %10s %10s %8s\n' target seconds executions exec/s new_units crashes
  } | tee -a "$table"
  for t in "$@"; do
    run_target "$t" "$seconds" | tee -a "$table" || failed=1
  done
  return $failed
}

cmd=${1:-help}
shift || true
seconds=""
sanitizer=address
runs_opt=()
names=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs_opt=("-runs=$2"); shift 2 ;;
    --sanitizer) sanitizer=$2; shift 2 ;;
    *) names+=("$1"); shift ;;
  esac
done

fuzz_opts=(--sanitizer "$sanitizer")
[ "$sanitizer" = address ] || fuzz_opts+=(--target-dir "$root/target/fuzz-sanitizer-$sanitizer")

case $cmd in
  list)
    ensure_tools; targets ;;
  smoke)
    ensure_tools
    mapfile -t all < <(targets)
    fuzz_all "${seconds:-20}" "${all[@]}" ;;
  campaign)
    ensure_tools
    if [ ${#names[@]} -eq 0 ]; then mapfile -t names < <(targets); fi
    fuzz_all "${seconds:-600}" "${names[@]}" ;;
  repro)
    ensure_tools
    [ ${#names[@]} -ge 2 ] || { echo "usage: scripts/fuzz.sh repro TARGET FILE..." >&2; exit 2; }
    t=${names[0]}
    for f in "${names[@]:1}"; do
      RUST_BACKTRACE=1 cargo +nightly fuzz run "${fuzz_opts[@]}" "$t" "$(realpath "$f")" -- -runs=1 || echo "$f: crashes (above)"
    done ;;
  *)
    sed -n '2,25p' "$0"; exit 2 ;;
esac
