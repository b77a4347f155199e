"""Score a saved model on a data set, subject-independently (`facet_vlm.cli.evaluate_main`; installed as
``facet-vlm-evaluate``).

    python scripts/evaluate_model.py outputs/run/model --dataset bu3dfe:/data/BU3DFE --protocol all
"""

import sys

from facet_vlm.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
