"""Data preparation: `python scripts/prepare_data.py {synthetic,views,check} ...` (see facet_vlm/prepare.py)."""

import sys

from facet_vlm.prepare import main

if __name__ == "__main__":
    sys.exit(main())
