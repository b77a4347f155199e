"""Console entry points: ``facet-vlm-train`` (`train_main`, the same as ``scripts/train.py``) and
``facet-vlm-prepare`` (`prepare_main`, the same as ``scripts/prepare_data.py``), and `run_cli`, the wrapper every
script's ``main`` runs under.
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

