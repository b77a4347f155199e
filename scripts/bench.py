"""Benchmarks of the library (`facet_vlm.benchmarks`; installed as ``facet-vlm-bench``): ``--help`` lists them.

    python scripts/bench.py render                     # rendering and feature-cache speed
    python scripts/bench.py train --size small         # model throughput
    python scripts/bench.py hard --folds 0 1 2         # 3D models on the held-out hard generated setting
    python scripts/bench.py compare --config facet_vlm/configs/benchmark_small.json
"""

import sys

from facet_vlm.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main())
