"""Moved: ``python scripts/bench.py compare --config CONFIG [--output_dir DIR]`` (this script is an alias for one
release)."""

import sys

from facet_vlm.benchmarks.cli import main

if __name__ == "__main__":
    print("scripts/benchmark.py is now 'scripts/bench.py compare'", file=sys.stderr)
    sys.exit(main(["compare", *sys.argv[1:]]))
