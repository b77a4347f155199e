"""Score a saved model on a data set, subject-independently (see `facet_vlm.evaluation.evaluate_saved_model`).

    python scripts/evaluate_model.py outputs/run/model --dataset bu3dfe:/data/BU3DFE --protocol all
    python scripts/evaluate_model.py outputs/run/model --dataset synthetic --protocol subject-kfold --folds 5

(Not called ``evaluate.py``: a script of that name would shadow the `evaluate` package the metrics load from.)
"""

import argparse
import logging
import sys

from facet_vlm.cli import add_debug_argument, run_cli
from facet_vlm.evaluation import evaluate_saved_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="A folder written by scripts/train.py (model/) or save_pretrained.")
    parser.add_argument("--dataset", required=True, help="synthetic | synthetic:DIR | bu3dfe:ROOT | bosphorus:ROOT | "
                                                         "bu4dfe:ROOT | bp4d:ROOT | 4dme:ROOT | "
                                                         "mahnob:ROOT | deap:ROOT")
    parser.add_argument("--protocol", default="all", help="all (every sample), subject-kfold, loso, holdout, "
                                                          "bu3dfe-p1-10fold, ...: scores each fold's test subjects")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--fold", type=int, default=None)
    parser.add_argument("--fold_seed", type=int, default=0)
    parser.add_argument("--cache_dir", default=".cache/facet_vlm")
    parser.add_argument("--num_proc", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--synthetic_subjects", type=int, default=40)
    parser.add_argument("--synthetic_seed", type=int, default=0)
    parser.add_argument("--output_dir", default=None, help="Default: MODEL_DIR/evaluation.")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = vars(args)
    options.pop("debug")  # read by run_cli
    results = evaluate_saved_model(**options)
    print(results["table"])


if __name__ == "__main__":
    sys.exit(run_cli(main))
