"""The benchmarks of facet-vlm (``scripts/bench.py`` / ``facet-vlm-bench``), one subcommand each; ``report`` reruns
the documented ones and writes ``docs/results.md``.

Each module of this package adds its subcommands with ``add_<name>_parser(subparsers)`` and runs them with the
``run`` it sets as the parser default."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import accuracy, comparison, physio, physio_readout, real_motion, report, rppg, speed

#: The subcommand adders, in ``--help`` order.
PARSERS = (
    speed.add_render_parser,
    speed.add_train_parser,
    speed.add_sequence_parser,
    speed.add_import_parser,
    accuracy.add_hard_parser,
    accuracy.add_curve_parser,
    accuracy.add_sequence_hard_parser,
    accuracy.add_main_job_parser,
    comparison.add_compare_parser,
    physio.add_parser,
    physio_readout.add_parser,
    rppg.add_parser,
    real_motion.add_parser,
    report.add_report_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_parser in PARSERS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the chosen benchmark; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.bench_main = main  # what `report` runs its sections with (no import back from the subcommand modules)
    args.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
