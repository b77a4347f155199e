"""Score a saved model on a data set, subject-independently (see `facet_vlm.evaluation.evaluate_saved_model`).

    python scripts/evaluate_model.py outputs/run/model --dataset bu3dfe:/data/BU3DFE --protocol all
    python scripts/evaluate_model.py outputs/run/model --dataset synthetic --protocol subject-kfold --folds 5
    python scripts/evaluate_model.py openai/clip-vit-base-patch16 --zero_shot --dataset bu3dfe:/data/BU3DFE \
        --prompts prompts.json --model_config '{"num_views": 1, "channels": ["texture"]}'

``--zero_shot`` scores a FACET-VLM built on a CLIP (a transformers name or folder, or an open_clip name: see
``FacetVLMForExpressionRecognition.from_clip``) with no training: the data set's classes (or ``--label_set``), each
with its prompt ensemble (``--prompts``: a JSON object class -> list of prompts, inline or in a file; by default the
templates x class descriptions of ``facet_vlm.labels``), compared with CLIP's image-text similarity.

(Not called ``evaluate.py``: a script of that name would shadow the `evaluate` package the metrics load from.)
"""

import argparse
import json
import logging
import sys
from pathlib import Path

from facet_vlm.cli import add_debug_argument, run_cli
from facet_vlm.evaluation import evaluate_saved_model


def json_object(text: str) -> dict:
    """A JSON object given inline or as the path of a .json file."""
    path = Path(text)
    try:
        value = json.loads(path.read_text(encoding="utf-8") if path.suffix == ".json" and path.is_file() else text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a .json file: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


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
    parser.add_argument("--output_dir", default=None, help="Default: MODEL_DIR/evaluation "
                                                          "(outputs/zero_shot/NAME with --zero_shot).")
    parser.add_argument("--zero_shot", action="store_true", help="Score a CLIP (MODEL_DIR: a CLIP name or folder) "
                                                                 "with no training, on prompts.")
    parser.add_argument("--label_set", default=None, help="Classes to score (a facet_vlm.labels label set); default "
                                                          "the data set's.")
    parser.add_argument("--prompts", type=json_object, default=None,
                        help="With --zero_shot: JSON object (or a .json file) class -> list of prompts.")
    parser.add_argument("--model_config", type=json_object, default=None,
                        help="With --zero_shot: JSON object of FacetVLMConfig settings (views, channels, image size).")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = vars(args)
    options.pop("debug")  # read by run_cli
    results = evaluate_saved_model(**options)
    print(results["table"])


if __name__ == "__main__":
    sys.exit(run_cli(main))
