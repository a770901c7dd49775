#!/usr/bin/env bash
# Runs the fuzz targets of smtp-oauth-relay with cargo-fuzz (libFuzzer).
#
#   fuzz/run.sh [SECONDS] [TARGET...]     default: 60 seconds, every target, one after another
#   JOBS=2 fuzz/run.sh 600                run two targets at a time
#
# Installs cargo-fuzz if it is missing. The hand-written seeds in fuzz/seeds/<target>/ are
# committed; they are copied into fuzz/corpus/<target>/ (ignored by git), which libFuzzer then
# grows. Findings land in fuzz/artifacts/<target>/; logs in fuzz/logs/<target>.log.
# Needs a nightly toolchain (`rustup toolchain install nightly`); if only stable is available,
# NIGHTLY= RUSTC_BOOTSTRAP=1 lets the fuzz build use the nightly-only sanitizer flags.
set -euo pipefail

cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
jobs="${JOBS:-1}"
toolchain="${NIGHTLY-+nightly}"

all_targets=(command data line auth config envelope message reply_classify)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p logs
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    if [ -d "seeds/$target" ]; then
        cp -n "seeds/$target"/* "corpus/$target/" 2>/dev/null || true
    fi
done

# shellcheck disable=SC2086 # $toolchain is empty or one word
cargo $toolchain fuzz build

run_one() {
    local target="$1"
    local extra=()
    if [ -f "dicts/$target.dict" ]; then
        extra+=("-dict=dicts/$target.dict")
    fi
    local status=0
    # shellcheck disable=SC2086
    cargo $toolchain fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 -timeout=20 \
        "${extra[@]}" >"logs/$target.log" 2>&1 || status=$?
    echo "== $target (exit $status)"
    grep -E '^(Done|#[0-9]+ +DONE)|stat::number_of_executed_units|cov: ' "logs/$target.log" | tail -3
    return $status
}

failed=0
running=0
pids=()
names=()
for target in "${targets[@]}"; do
    run_one "$target" &
    pids+=($!)
    names+=("$target")
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait "${pids[0]}" || { failed=1; echo "!! ${names[0]} found a problem: see logs/${names[0]}.log"; }
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
        running=$((running - 1))
    fi
done
for index in "${!pids[@]}"; do
    wait "${pids[$index]}" || { failed=1; echo "!! ${names[$index]} found a problem: see logs/${names[$index]}.log"; }
done
exit "$failed"
