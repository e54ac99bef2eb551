"""Sampling time (64 tokens, 64 steps): base, LoRA unmerged/merged, NaRA, Multi-LoRA; C(λ) cost.

    python benchmarks/sampling.py                       # tiny + mid-size, batch 1
    python benchmarks/sampling.py --quick --json /tmp/sampling.json
    python benchmarks/sampling.py --help                # every option (shared with `nara bench`)

The measuring code lives in nara.benchmarking (so `nara bench` works from an installed package);
this script runs its "sampling" section only.
"""

import sys

from nara.benchmarking.suite import main

if __name__ == "__main__":
    sys.exit(main(only="sampling"))
