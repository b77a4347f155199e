"""Console entry points, each the same as its script in ``scripts/``: ``facet-vlm-train`` (`train_main`,
``train.py``), ``facet-vlm-prepare`` (`prepare_main`, ``prepare_data.py``), ``facet-vlm-evaluate`` (`evaluate_main`,
``evaluate_model.py``), ``facet-vlm-publish`` (`publish_main`, ``publish.py``) and ``facet-vlm-bench``
(`bench_main`, ``bench.py``); and `run_cli`, the wrapper every command runs under.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

#: Exit codes of every command line: 2 = bad arguments (`ConfigError`, also argparse's own code), 1 = bad data
#: (any other `FacetVLMError`, or a command that reports failed inputs).
EXIT_BAD_ARGUMENTS = 2
EXIT_BAD_DATA = 1
DEBUG_FLAG = "--debug"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """List `DEBUG_FLAG` in a parser's ``--help`` (`run_cli` removes it before the parser sees the arguments)."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="Show the traceback of an error.")


def run_cli(main: Callable[[list[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command line's ``main(argv)`` and turn its errors into one line on stderr and an exit code.

    A `ConfigError` exits with `EXIT_BAD_ARGUMENTS`, any other `FacetVLMError` with `EXIT_BAD_DATA`; with
    ``--debug`` the traceback is printed too. Other exceptions (bugs) propagate with their traceback. Returns the
    exit code (``main``'s return value when it is an int, else 0)::

        if __name__ == "__main__":
            sys.exit(run_cli(main))
    """
    from .errors import ConfigError, FacetVLMError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [argument for argument in argv if argument != DEBUG_FLAG]
    try:
        code = main(argv)
    except FacetVLMError as error:
        if debug:
            traceback.print_exc()
        prog = os.path.basename(sys.argv[0]) or "facet-vlm"
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS if isinstance(error, ConfigError) else EXIT_BAD_DATA
    return code if isinstance(code, int) else 0


PREPARE_USAGE = """Data preparation from the command line.

    python scripts/prepare_data.py synthetic --out data/synthetic --subjects 100      # generate + summary table
    python scripts/prepare_data.py views data/synthetic/F0001/F0001_HA04WH_F3D.wrl --out views.png
    python scripts/prepare_data.py check data/synthetic                               # read every scan, report bad ones
"""


def train_main(argv: Sequence[str] | None = None) -> int:
    """``facet-vlm-train``: the same as ``python scripts/train.py`` (arguments of `facet_vlm.arguments`); returns
    the exit code (see `run_cli`)."""
    from .training import main

    return run_cli(main, argv)


SCAN_SUFFIXES = (".wrl", ".bnt", ".obj", ".ply", ".glb", ".off", ".stl")


def _synthetic(args: argparse.Namespace) -> int:
    from facet_vlm.data.synthetic import generate

    summary = generate(args.out, subjects=args.subjects, seed=args.seed, formats=tuple(args.formats.split(",")),
                       num_proc=args.num_proc)
    print(summary.table())
    return 0


def _views(args: argparse.Namespace) -> int:
    from facet_vlm.geometry import contact_sheet
    from facet_vlm.io import read_face

    out = contact_sheet(read_face(args.path), args.out, size=args.size)
    print(f"wrote {out}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from facet_vlm.io import validate_files

    root = Path(args.root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in SCAN_SUFFIXES) if root.is_dir() else [root]
    report = validate_files(paths)
    print(report)
    if args.report:
        report.to_json(args.report)
    return 1 if report.bad else 0


def build_prepare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=PREPARE_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthetic", help="generate the synthetic face data set in the BU-3DFE layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--subjects", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", default="bu3dfe", help="comma-separated: bu3dfe, bosphorus, bu4dfe")
    p.add_argument("--num-proc", type=int, default=2)
    p.set_defaults(func=_synthetic)

    p = sub.add_parser("views", help="write a contact sheet of the rendered views and channels of one scan")
    p.add_argument("path", help="a scan: .wrl, .bnt, .obj, .ply, ...")
    p.add_argument("--out", default="views.png")
    p.add_argument("--size", type=int, default=224)
    p.set_defaults(func=_views)

    p = sub.add_parser("check", help="read every scan under a folder and report the ones that fail")
    p.add_argument("root")
    p.add_argument("--report", help="also write the report as JSON here")
    p.set_defaults(func=_check)
    add_debug_argument(parser)
    return parser


def prepare_main(argv: list[str] | None = None) -> int:
    """``facet-vlm-prepare`` / ``scripts/prepare_data.py``: generate, preview or check scans (see `PREPARE_USAGE`)."""
    def prepare(args: list[str]) -> int:
        parsed = build_prepare_parser().parse_args(args)
        return parsed.func(parsed)

    return run_cli(prepare, argv)


# ----------------------------------------------------------------------------------------------------- evaluate
EVALUATE_USAGE = """Score a saved model on a data set, subject-independently
(`facet_vlm.evaluation.evaluate_saved_model`).

    python scripts/evaluate_model.py outputs/run/model --dataset bu3dfe:/data/BU3DFE --protocol all
    python scripts/evaluate_model.py outputs/run/model --dataset synthetic --protocol subject-kfold --folds 5
    python scripts/evaluate_model.py openai/clip-vit-base-patch16 --zero_shot --dataset bu3dfe:/data/BU3DFE \
        --prompts prompts.json --model_config '{"num_views": 1, "channels": ["texture"]}'

``--zero_shot`` scores a FACET-VLM built on a CLIP (a transformers name or folder, or an open_clip name: see
``FacetVLMForExpressionRecognition.from_clip``) with no training: the data set's classes (or ``--label_set``), each
with its prompt ensemble (``--prompts``: a JSON object class -> list of prompts, inline or in a file; by default the
templates x class descriptions of ``facet_vlm.labels``), compared with CLIP's image-text similarity.
"""


def json_object(text: str) -> dict:
    """A JSON object given inline or as the path of a .json file (an argparse type)."""
    import json

    path = Path(text)
    try:
        value = json.loads(path.read_text(encoding="utf-8") if path.suffix == ".json" and path.is_file() else text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a .json file: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _evaluate(argv: list[str]) -> None:
    from .evaluation import evaluate_saved_model

    parser = argparse.ArgumentParser(prog="evaluate_model.py", description=EVALUATE_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = vars(args)
    options.pop("debug")  # read by run_cli
    results = evaluate_saved_model(**options)
    print(results["table"])



def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``facet-vlm-evaluate`` / ``scripts/evaluate_model.py``: score a saved model on a data set."""
    return run_cli(_evaluate, argv)


# ----------------------------------------------------------------------------------------------------- publish
PUBLISH_USAGE = """Build a Hub-ready folder from a trained run and optionally push it.

    python scripts/publish.py runs/exp1/model --repo-id ORG/NAME [--out DIR] [--results all_results.json] [--push]

The folder holds safetensors weights, config.json with ``auto_map`` and the model's code (so that
``AutoModel.from_pretrained(repo, trust_remote_code=True)`` works without facet-vlm), the processor files, the
run's results and confusion matrix, and a README.md model card with a ``model-index``. PEFT runs publish the
adapter only. ``--push`` uploads it; offline, the push fails with a clear message (exit code 3) and the folder stays
complete.
"""
#: Exit codes of publish: 1 = the folder could not be built, 2 = bad arguments (every command's code),
#: 3 = the folder is complete but the push failed.
EXIT_BUILD_FAILED = 1
EXIT_PUSH_FAILED = 3


def _publish_arguments(argv: list[str]) -> argparse.Namespace:
    from .hub import DEFAULT_TEMPLATE

    parser = argparse.ArgumentParser(prog="publish.py", description=PUBLISH_USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="folder written by save_pretrained (DIR/model from train.py)")
    parser.add_argument("--repo-id", required=True, help="Hub repository id, ORG/NAME")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: MODEL_DIR/../hub_export)")
    parser.add_argument("--results", type=Path, default=None,
                        help="all_results.json of the run (default: found next to or above MODEL_DIR)")
    parser.add_argument("--confusion-matrix", type=Path, default=None,
                        help="confusion matrix image (default: confusion_matrix.png next to or above MODEL_DIR)")
    parser.add_argument("--base-model", default=None,
                        help="Hub id of the base model (PEFT adapters; default: from adapter_config.json)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--pipeline-tag", default=None, help="override the Hub pipeline tag of the card")
    parser.add_argument("--dataset", action="append", default=[], help="Hub data set id for the card (repeatable)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="model card Jinja template")
    parser.add_argument("--push", action="store_true", help="upload the folder to the Hub")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    add_debug_argument(parser)
    return parser.parse_args(argv)



def _publish(argv: list[str]) -> int:
    """Build the folder, then push it when asked; return the process exit code."""
    from .errors import FacetVLMError
    from .hub import build_hub_folder, push_folder

    args = _publish_arguments(argv)
    out_dir = args.out or args.model_dir.parent / "hub_export"
    try:
        folder = build_hub_folder(args.model_dir, out_dir, args.repo_id, results_path=args.results,
                                  confusion_matrix_path=args.confusion_matrix, base_model=args.base_model,
                                  license=args.license, pipeline_tag=args.pipeline_tag, datasets=args.dataset,
                                  template_path=args.template)
    except FacetVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    print(f"Hub folder ready: {folder}")
    if not args.push:
        return 0
    try:
        url = push_folder(folder, args.repo_id, private=args.private, token=args.token)
    except FacetVLMError as error:
        print(f"error: push failed: {error}", file=sys.stderr)
        return EXIT_PUSH_FAILED
    print(f"Pushed to {url}")
    return 0



def publish_main(argv: Sequence[str] | None = None) -> int:
    """``facet-vlm-publish`` / ``scripts/publish.py``: build a Hub-ready folder from a trained run, optionally push."""
    return run_cli(_publish, argv)


# ----------------------------------------------------------------------------------------------------- bench
def bench_main(argv: Sequence[str] | None = None) -> int:
    """``facet-vlm-bench`` / ``scripts/bench.py``: the benchmarks (`facet_vlm.benchmarks`)."""
    from .benchmarks.cli import main

    return run_cli(main, argv)
