#!/usr/bin/env bash
# Set up (once) and run nara's main job on the embedded tiny model: `nara demo`.
# Usage: bash scripts/demo.sh [nara demo options...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec nara demo "$@"
