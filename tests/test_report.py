"""``bench.py report``: results.md is rendered from the section files, marks a file made by other code, and a
section run end to end writes its stamped JSON."""

from __future__ import annotations

import json

import pytest

from facet_vlm.benchmarks.report import SECTIONS, render_results
from facet_vlm.training import code_version


def write_section(root, name: str, result: dict, version: str) -> None:
    path = root / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = {"code_version": version, "started": "2026-12-04T00:00:00+00:00", "command": ["bench.py", name],
             "machine": {"cpu_count": 2, "torch_threads": 1, "cuda": None}}
    path.write_text(json.dumps({**result, "report": stamp}))


def test_results_md_shows_each_section_and_flags_results_of_other_code(tmp_path):
    main = {"config": "c.json", "accuracy": 0.5, "uar": 0.25, "macro_f1": 0.125, "seconds": 12.0}
    write_section(tmp_path, "main", main, code_version())
    hard = {"seed": 7, "subjects": 60, "protocol": "bu3dfe-p1-10fold", "folds": [0, 1],
            "models": {"afnet_m": {"accuracy": 0.75, "accuracy_std": 0.05, "accuracy_per_fold": [0.7, 0.8],
                                   "seconds": 30.0}}}
    write_section(tmp_path, "hard", hard, "0.0.0+old")
    text = render_results(tmp_path)
    assert text.index(SECTIONS["main"].title) < text.index(SECTIONS["hard"].title)
    assert "| 50.0 % | 25.0 % | 12.5 % |" in text
    assert "75.0 ± 5.0 %" in text and "70.0 / 80.0" in text
    main_part = text[text.index(SECTIONS["main"].title):text.index(SECTIONS["hard"].title)]
    hard_part = text[text.index(SECTIONS["hard"].title):text.index(SECTIONS["sequence-hard"].title)]
    assert "another code version" not in main_part
    assert "Made by another code version (0.0.0+old" in hard_part
    assert "Not run." in text[text.index(SECTIONS["sequence-hard"].title):]


@pytest.mark.e2e
def test_report_runs_the_main_job_section_and_stamps_it(tmp_path):
    from helpers import run_command, script_main

    done = run_command(script_main("bench.py"), "report", "--sections", "main", "--output", str(tmp_path / "docs"),
                       "--runs", str(tmp_path / "runs"), "--train-args",
                       f"--max_steps 2 --synthetic_subjects 6 --cache_dir {tmp_path / 'cache'} --num_threads 1")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "docs" / "results" / "main.json").read_text())
    assert result["report"]["code_version"] == code_version() and 0.0 <= result["accuracy"] <= 1.0
    assert "--max_steps 2" in " ".join(result["report"]["command"])
    assert SECTIONS["main"].title in (tmp_path / "docs" / "results.md").read_text()
