"""``bench.py report``: rerun the documented benchmarks with their documented settings and write the results the
docs show, so that every published number can be reproduced with one command.

Each section is one benchmark of this package run with fixed arguments (`SECTIONS`); its results go to
``<output>/results/<section>.json`` together with the code version (`facet_vlm.training.code_version`), the date,
the machine and the torch thread count, and ``<output>/results.md`` is rendered from every section file present.
Trainings inside a benchmark reuse a finished fold only when its arguments and the code version match, so rerunning
the report after a code change retrains everything that change can touch; a section file made by another code
version is marked as such in ``results.md`` (never shown as current). Sections that need a licensed data set run
only when its root is given (``--ubfc-root``, ``--bu4dfe-root``) and are listed as not run otherwise.

    python scripts/bench.py report                              # every section that needs no licensed data
    python scripts/bench.py report --sections main hard --output docs
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The 3D models' folds of the held-out hard setting that the docs report.
HARD_FOLDS = tuple(range(10))


@dataclass(frozen=True)
class Section:
    """One benchmark of the report: the ``bench.py`` arguments that make it (given the report's arguments and the
    JSON path to write) and the markdown that shows its JSON."""

    title: str
    command: Callable[[argparse.Namespace, Path], list[str] | None]
    render: Callable[[dict[str, Any]], str]
    needs: str | None = None  # the report argument naming licensed data, when the section needs some


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _mean_std(row: dict[str, Any]) -> str:
    return f"{100 * row['accuracy']:.1f} ± {100 * row.get('accuracy_std', 0.0):.1f} %"


# ----------------------------------------------------------------------------------------------------- sections
def _train_args(args: argparse.Namespace, *extra: str) -> list[str]:
    """``--train-args`` of a training section: the section's own plus the report's (for smoke runs)."""
    joined = " ".join(part for part in (*extra, args.train_args) if part)
    return ["--train-args", joined] if joined else []


def _main_command(args: argparse.Namespace, out: Path) -> list[str]:
    return ["main-job", "--output-dir", str(args.runs / "main"), "--json", str(out),
            *_train_args(args, f"--num_proc {args.num_proc} --cache_dir {args.runs / 'cache'}")]


def _render_main(result: dict[str, Any]) -> str:
    return ("| run | accuracy | UAR | macro-F1 | wall time |\n|---|---|---|---|---|\n"
            f"| main job (`{result['config']}`), held-out subjects | {_percent(result['accuracy'])} | "
            f"{_percent(result['uar'])} | {_percent(result['macro_f1'])} | {result['seconds']:.0f} s |")


def _hard_command(args: argparse.Namespace, out: Path) -> list[str]:
    return ["hard", "--folds", *map(str, HARD_FOLDS), "--output-dir", str(args.runs / "hard"), "--json", str(out),
            "--jobs", str(args.jobs), "--num-proc", str(args.num_proc), "--cache-dir", str(args.runs / "cache"),
            *_train_args(args, "--num_threads 1")]


def _render_hard(result: dict[str, Any]) -> str:
    models = result["models"]
    lines = ["| model | accuracy (mean ± std over folds) | per fold | seconds |", "|---|---|---|---|"]
    for name, row in models.items():
        folds = " / ".join(f"{100 * value:.1f}" for value in row["accuracy_per_fold"])
        lines.append(f"| {name} | {_mean_std(row)} | {folds} | {row['seconds']:.0f} |")
    return (f"Generated held-out hard setting (seed {result['seed']}, {result['subjects']} subjects, "
            f"`{result['protocol']}`, folds {result['folds']}); each model's small config from scratch.\n\n"
            + "\n".join(lines))


def _sequence_command(args: argparse.Namespace, out: Path) -> list[str]:
    return ["sequence-hard", "--output-dir", str(args.runs / "sequence_hard"), "--json", str(out),
            "--num-proc", str(args.num_proc), "--cache-dir", str(args.runs / "cache"),
            *_train_args(args, "--num_threads 1")]


def _render_sequence(result: dict[str, Any]) -> str:
    lines = ["| config | accuracy | UAR | test sequences | seconds |", "|---|---|---|---|---|"]
    for name, row in result["models"].items():
        lines.append(f"| {name} | {_percent(row['accuracy'])} | {_percent(row.get('uar'))} | "
                     f"{row.get('num_test_samples')} | {row['seconds']:.0f} |")
    return f"Generated hard 4D setting (BU-4DFE layout, seed {result['seed']}).\n\n" + "\n".join(lines)


def _speed_command(args: argparse.Namespace, out: Path) -> list[str]:
    return ["train", "--size", "small", "--num-threads", "1", "--json", str(out)]


def _render_speed(result: dict[str, Any]) -> str:
    lines = ["| model | parameters | train samples/s | inference samples/s | peak RSS |", "|---|---|---|---|---|"]
    for name, row in result["models"].items():
        lines.append(f"| {name} | {row['parameters'] / 1e6:.2f} M | {row['train_samples_per_s']:.1f} | "
                     f"{row['inference_samples_per_s']:.1f} | {row['peak_rss_mb']:.0f} MB |")
    return (f"Small configs, batch {result['batch_size']}, {result['num_threads']} torch thread(s), "
            f"{result['device']}.\n\n" + "\n".join(lines))


SECTIONS: dict[str, Section] = {
    "main": Section("The main job", _main_command, _render_main),
    "hard": Section("3D models on the held-out hard generated setting (10 folds)", _hard_command, _render_hard),
    "sequence-hard": Section("4D: temporal model and its apex baseline", _sequence_command, _render_sequence),
    "speed": Section("Model throughput", _speed_command, _render_speed),
}


# ----------------------------------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_section(name: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Run one section through the benchmark command line (``args.bench_main``, set by `facet_vlm.benchmarks.cli`)
    and stamp its JSON; None when its data is missing."""
    from ..training import code_version

    section = SECTIONS[name]
    if section.needs and getattr(args, section.needs) is None:
        print(f"report: section {name!r} needs --{section.needs.replace('_', '-')}; not run")
        return None
    out = args.output / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC)
    args.bench_main(section.command(args, out))
    result = json.loads(out.read_text(encoding="utf-8"))
    result["report"] = {"code_version": code_version(), "started": started.isoformat(timespec="seconds"),
                        "machine": machine(), "command": ["bench.py", *section.command(args, out)]}
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def render_results(output: Path) -> str:
    """``results.md`` from every section file under ``output/results``, in `SECTIONS` order."""
    from ..training import code_version

    current = code_version()
    parts = ["# Results", "", "Written by `python scripts/bench.py report` from the JSON files in `results/`; "
             "each section names the code version, machine and command that made it.", ""]
    for name, section in SECTIONS.items():
        path = output / "results" / f"{name}.json"
        parts += [f"## {section.title}", ""]
        if not path.is_file():
            parts += ["Not run." + (f" (needs `--{section.needs.replace('_', '-')}`)" if section.needs else ""), ""]
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        stamp = result.get("report", {})
        version = stamp.get("code_version", "unknown")
        note = "" if version == current else f" **Made by another code version ({version}; now {current}).**"
        host = stamp.get("machine", {})
        parts += [section.render(result), "",
                  f"<sub>code {version}, {stamp.get('started', '?')}, {host.get('cpu_count', '?')} CPUs, "
                  f"{host.get('torch_threads', '?')} torch threads, GPU {host.get('cuda') or 'none'}; "
                  f"`{' '.join(stamp.get('command', []))}`.</sub>{note}", ""]
    return "\n".join(parts)


def add_report_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="rerun the documented benchmarks and write docs/results.md")
    parser.add_argument("--sections", nargs="+", default=None, choices=list(SECTIONS),
                        help="sections to run (default: all that need no licensed data, plus those whose data is "
                             "given); the others keep their files")
    parser.add_argument("--output", type=Path, default=Path("docs"), help="where results/ and results.md go")
    parser.add_argument("--runs", type=Path, default=Path("outputs/report"), help="training runs of the sections")
    parser.add_argument("--render-only", action="store_true", help="only rewrite results.md from the JSON files")
    parser.add_argument("--jobs", type=int, default=1, help="folds trained at the same time (bench.py hard --jobs)")
    parser.add_argument("--num-proc", type=int, default=1, help="processes for data generation and rendering")
    parser.add_argument("--train-args", default="", help="more training arguments for every training section (a "
                                                         "smoke run: '--max_steps 2'); the docs' numbers use none")
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> None:
    names = args.sections or [name for name, section in SECTIONS.items()
                              if not section.needs or getattr(args, section.needs, None) is not None]
    if not args.render_only:
        for name in names:
            print(f"report: {name}", flush=True)
            run_section(name, args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(render_results(args.output), encoding="utf-8")
    print(f"wrote {args.output / 'results.md'}", file=sys.stderr)


__all__ = ["SECTIONS", "Section", "add_report_parser", "render_results", "run_report", "run_section"]
