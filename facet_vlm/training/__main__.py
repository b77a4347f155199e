"""``python -m facet_vlm.training ARGS``: the same as ``scripts/train.py ARGS`` (what the benchmarks run)."""

import sys

from facet_vlm.cli import train_main

sys.exit(train_main())
