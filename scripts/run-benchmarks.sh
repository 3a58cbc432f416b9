#!/usr/bin/env bash
# Builds everything (Release, -march=native, build/release) and runs the benchmark, which ends with
# a summary table. Extra arguments go to the benchmark, e.g. --quick or --benchmark_filter=decode.
# Results: the console, and build/release/bench.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-deps.sh
cmake --preset release -DEFFATTN_NATIVE=ON -DEFFATTN_BUILD_BENCHMARKS=ON
cmake --build --preset release

# bench/CMakeLists.txt decides where the binary lands; look it up instead of assuming a path.
bench=$(find build/release -type f -name effattn_bench -perm -u+x -print -quit)
if [[ -z $bench ]]; then
  echo "run-benchmarks: effattn_bench was not built" >&2
  exit 1
fi
"$bench" --benchmark_out=build/release/bench.json --benchmark_out_format=json "$@"
