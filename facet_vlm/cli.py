"""Console entry points: ``facet-vlm-train`` (`train_main`, the same as ``scripts/train.py``) and
``facet-vlm-prepare`` (`prepare_main`, the same as ``scripts/prepare_data.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

PREPARE_USAGE = """Data preparation from the command line.

    python scripts/prepare_data.py synthetic --out data/synthetic --subjects 100      # generate + summary table
    python scripts/prepare_data.py views data/synthetic/F0001/F0001_HA04WH_F3D.wrl --out views.png
    python scripts/prepare_data.py check data/synthetic                               # read every scan, report bad ones
"""


def train_main(argv: Sequence[str] | None = None) -> None:
    """``facet-vlm-train``: the same as ``python scripts/train.py`` (arguments of `facet_vlm.arguments`)."""
    from .training import main

    main(argv)


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
    return parser


def prepare_main(argv: list[str] | None = None) -> int:
    """``facet-vlm-prepare`` / ``scripts/prepare_data.py``: generate, preview or check scans (see `PREPARE_USAGE`)."""
    from facet_vlm.errors import FacetVLMError

    args = build_prepare_parser().parse_args(argv)
    try:
        return args.func(args)
    except FacetVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

