#!/usr/bin/env bash
# CI smoke check for the benchmark harness (no performance threshold):
# the scripts parse, the Python compiles, the criterion benches build, and a
# 2-second run of one case through every proxy produces a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for f in bench/*.sh; do
    bash -n "$f"
done
pycache=$(mktemp -d)
trap 'rm -rf "$pycache"' EXIT
PYTHONPYCACHEPREFIX="$pycache" python3 -m py_compile bench/*.py
echo "bench smoke: scripts parse"

cargo bench --no-run --quiet
echo "bench smoke: criterion benches build"

out=$(bench/run.sh --smoke --cases ka50)
echo "$out"
# Every target must have produced a req/s figure.
for target in direct haproxy nginx fulcrum; do
    grep -Eq "^\| ka50 \| $target( ⚠)? \| [0-9]" <<<"$out" || { echo "bench smoke: no result for $target" >&2; exit 1; }
done
echo "bench smoke: ok"
