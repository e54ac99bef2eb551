"""Training step (forward + backward + AdamW) of every adapter vs PEFT LoRA and the floor.

    python benchmarks/training.py                       # tiny + mid-size, batch 8 × 256, r 32
    python benchmarks/training.py --quick --json /tmp/training.json
    python benchmarks/training.py --help                # every option (shared with `nara bench`)

The measuring code lives in nara.benchmarking (so `nara bench` works from an installed package);
this script runs its "training" section only.
"""

import sys

from nara.benchmarking.suite import main

if __name__ == "__main__":
    sys.exit(main(only="training"))
