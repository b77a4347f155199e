"""Moved: ``python scripts/bench.py sequence [...]`` (this script is an alias for one release)."""

import sys

from facet_vlm.benchmarks.cli import main

if __name__ == "__main__":
    print("scripts/bench_sequences.py is now 'scripts/bench.py sequence'", file=sys.stderr)
    sys.exit(main(["sequence", *sys.argv[1:]]))
