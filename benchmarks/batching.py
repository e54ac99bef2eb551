"""NaRA: one training step on a batch of 8 vs 8 accumulated steps of batch 1 (samples/s).

    python benchmarks/batching.py                       # tiny + mid-size, batch 8 × 256
    python benchmarks/batching.py --quick --json /tmp/batching.json
    python benchmarks/batching.py --help                # every option (shared with `nara bench`)

The measuring code lives in nara.benchmarking (so `nara bench` works from an installed package);
this script runs its "batching" section only.
"""

import sys

from nara.benchmarking.suite import main

if __name__ == "__main__":
    sys.exit(main(only="batching"))
