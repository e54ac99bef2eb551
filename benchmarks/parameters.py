"""Trainable parameters of every method, and NaRA over LoRA, at tiny, mid-size and LLaDA-8B shapes.

    python benchmarks/parameters.py                       # seconds: models on the meta device
    python benchmarks/parameters.py --quick --json /tmp/parameters.json
    python benchmarks/parameters.py --help                # every option (shared with `nara bench`)

The measuring code lives in nara.benchmarking (so `nara bench` works from an installed package);
this script runs its "parameters" section only.
"""

import sys

from nara.benchmarking.suite import main

if __name__ == "__main__":
    sys.exit(main(only="parameters"))
