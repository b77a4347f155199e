"""Build a Hub-ready folder from a trained run and optionally push it.

    python scripts/publish.py runs/exp1/model --repo-id ORG/NAME [--out DIR] [--results all_results.json] [--push]

The folder holds safetensors weights, config.json with ``auto_map`` and the model's code (so that
``AutoModel.from_pretrained(repo, trust_remote_code=True)`` works without facet-vlm), the processor files, the
run's results and confusion matrix, and a README.md model card with a ``model-index``. PEFT runs publish the
adapter only. ``--push`` uploads it; offline, the push fails with a clear message (exit code 3) and the folder stays
complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facet_vlm.cli import add_debug_argument, run_cli
from facet_vlm.errors import FacetVLMError
from facet_vlm.hub import DEFAULT_TEMPLATE, build_hub_folder, push_folder

#: Exit codes: 1 = the folder could not be built, 2 = bad arguments (every CLI's code, `facet_vlm.cli`),
#: 3 = the folder is complete but the push failed.
EXIT_BUILD_FAILED = 1
EXIT_PUSH_FAILED = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


def main(argv: list[str] | None = None) -> int:
    """Build the folder, then push it when asked; return the process exit code."""
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(run_cli(main))
