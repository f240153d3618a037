#!/usr/bin/env bash
# Runs every benchmark in sequence; each writes benchmarks/results/<name>.json.
#
#   bash benchmarks/run_all.sh            # full sizes (tens of minutes on 2 cores)
#   bash benchmarks/run_all.sh --quick    # smoke run: every script at tiny sizes
#
# Arguments are passed to every script. PYTHON picks the interpreter (default: the repo's
# .venv if present). Run on a quiet machine: the numbers are wall-clock times.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
# bench_training runs before bench_input_pipeline, which compares against its JSON.
for name in bench_inference bench_torch bench_reconstruction bench_training \
            bench_input_pipeline bench_limit; do
  echo "=== benchmarks/${name}.py $*"
  "$PYTHON" -m "benchmarks.${name}" "$@"
done
