"""Data preparation: ``python scripts/prepare_data.py {synthetic,views,check} ...``.

See `facet_vlm.cli.prepare_main`.
"""

import sys

from facet_vlm.cli import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main())
