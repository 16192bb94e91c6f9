#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and fails on any crash.
#
#   scripts/fuzz.sh            # 60 s per target (what CI runs)
#   scripts/fuzz.sh 300        # longer, by hand
#   scripts/fuzz.sh 60 query   # one target
#
# Needs cargo-fuzz (installed here if missing). libFuzzer needs nightly flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them, so no nightly install.
# The seed corpus in fuzz/corpus/<target>/ is copied to target/fuzz-corpus/<target>/,
# where the run grows it; the checked-in seeds stay small and readable. A crash
# leaves its input in fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(query cursor json_body route http_conn)
fi

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

echo "fuzz: building the targets (release, ASan)"
cargo fuzz build -O

summary=()
for t in "${targets[@]}"; do
    work=$PWD/target/fuzz-corpus/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
    log=$PWD/target/fuzz-corpus/$t.log
    echo "fuzz: $t for ${secs}s"
    if ! cargo fuzz run -O "$t" "$work" -- -max_total_time="$secs" -max_len=4096 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED — input in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
    corpus=$(find "$work" -type f | wc -l)
    summary+=("$(printf '%-10s %12s execs %8s/s  cov %6s  corpus %5s  crashes 0' "$t" "$execs" "$rate" "$cov" "$corpus")")
done

echo "fuzz: done, ${secs}s per target"
printf '  %s\n' "${summary[@]}"
