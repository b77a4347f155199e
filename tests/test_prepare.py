"""The data-preparation command line (scripts/prepare_data.py, `facet_vlm.cli.prepare_main`)."""

from __future__ import annotations

import numpy as np
from helpers import CommandResult, run_command
from PIL import Image

from facet_vlm.cli import prepare_main


def run(*args: str) -> CommandResult:
    return run_command(prepare_main, *args)


def test_synthetic_views_and_check(tmp_path):
    out = tmp_path / "synthetic"
    result = run("synthetic", "--out", str(out), "--subjects", "1", "--num-proc", "1")
    assert result.returncode == 0, result.stderr
    scans = sorted((out / "bu3dfe").glob("*/*_F3D.wrl"))
    assert len(scans) == 25  # 6 expressions x 4 intensities + neutral
    assert "happiness" in result.stdout and str(len(scans)) in result.stdout

    sheet = tmp_path / "views.png"
    result = run("views", str(scans[0]), "--out", str(sheet), "--size", "64")
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert image.shape[0] > 5 * 64 and image.std() > 10  # five view rows with visible content

    broken = scans[1].with_name("F9999_AN01WH_F3D.wrl")
    broken.write_text("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0,")
    result = run("check", str(out / "bu3dfe"))
    assert result.returncode == 1
    assert broken.name in result.stdout and "1" in result.stdout


def test_missing_file_is_a_clear_error(tmp_path):
    result = run("views", str(tmp_path / "nope.wrl"), "--out", str(tmp_path / "v.png"))
    assert result.returncode == 1
    assert "nope.wrl: no such file" in result.stderr and "Traceback" not in result.stderr
