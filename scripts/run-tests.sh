#!/usr/bin/env bash
# Configures and builds Release into build/release (CMakePresets.json: release), then runs every test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-deps.sh
cmake --preset release
cmake --build --preset release
ctest --test-dir build/release --output-on-failure -j2
