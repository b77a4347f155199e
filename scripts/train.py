"""Train and evaluate a model subject-independently (options: `facet_vlm.arguments`, the run: `facet_vlm.training`).

    python scripts/train.py --config facet_vlm/configs/facet_vlm_synthetic_small.json
    accelerate launch --config_file facet_vlm/configs/cpu_2proc.yaml scripts/train.py --model couplefer ...
"""

import sys

from facet_vlm.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
