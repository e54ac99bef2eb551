#!/usr/bin/env bash
# Set up (once) and run nara's test suite: lint, format check, then pytest.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
python -m pytest "$@"
