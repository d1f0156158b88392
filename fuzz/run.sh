#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time on the corpus kept in the
# repo (fuzz/corpus/TARGET). New inputs go to a scratch directory, so a run
# never edits the tree; a crash leaves its input in fuzz/artifacts/TARGET/
# and fails the script (turn it into a regression test, see fuzz/README.md).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET…]      (default 60 s, all targets)
#
# Needs the nightly toolchain and cargo-fuzz; without them it says why and
# exits 0 (CI on a machine without nightly still passes the rest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

secs=${1:-60}
shift || true
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz --locked)"
    exit 0
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "fuzz: building ${#targets[@]} targets"
cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "$scratch/$t"
    echo "fuzz: $t for ${secs}s on $(ls "corpus/$t" | wc -l) corpus inputs"
    if ! cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        2>"$scratch/$t.log"; then
        failed+=("$t")
        tail -40 "$scratch/$t.log"
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$t.log" | tr '\n' ' '
    echo
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ok, ${#targets[@]} targets, ${secs}s each, no crash"
