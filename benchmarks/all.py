"""Every benchmark section in one process: the same as `nara bench`.

python benchmarks/all.py --json benchmarks/results.json   # tens of minutes on 2 CPU cores
python benchmarks/all.py --quick --json /tmp/bench.json   # a smoke test in seconds
"""

import sys

from nara.benchmarking.suite import main

if __name__ == "__main__":
    sys.exit(main())
