"""``scripts/bench.py hard``: one real ``scripts/train.py`` run per model and fold (tiny budget), the per-fold
accuracies read back from each fold's results, mean ± std over the folds, extra train.py arguments passed through,
and a rerun that reuses the finished folds instead of training them again."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_hard_bench_runs_every_fold_and_reports_mean_and_std(tmp_path):
    options = {"vertices": 1500, "texture_size": 64, "nuisance": "hard"}
    command = [sys.executable, str(REPO / "scripts" / "bench.py"), "hard", "--models", "afnet_m", "--subjects", "4",
               "--seed", "3", "--options", json.dumps(options), "--protocol", "bu3dfe-p1-2fold", "--folds", "0", "1",
               "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"),
               "--json", str(tmp_path / "result.json"),
               "--train-args", shlex.join(["--max_steps", "2", "--batch_size", "4", "--num_threads", "1"])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())["models"]["afnet_m"]
    folds = [json.loads((tmp_path / "out" / "afnet_m" / f"fold_{k}" / "all_results.json").read_text())["accuracy"]
             for k in (0, 1)]
    assert result["accuracy_per_fold"] == folds
    assert np.isclose(result["accuracy"], np.mean(folds)) and np.isclose(result["accuracy_std"], np.std(folds))
    run_config = json.loads((tmp_path / "out" / "afnet_m" / "fold_1" / "run_config.json").read_text())
    assert run_config["training"]["max_steps"] == 2  # --train-args reached train.py
    table = done.stdout[done.stdout.index("hard setting"):]
    assert "folds [0, 1]" in table and "std" in table and "--max_steps 2" in table

    weights = tmp_path / "out" / "afnet_m" / "fold_0" / "fold_0" / "rank_0_weights.json"
    before = weights.stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert weights.stat().st_mtime_ns == before  # the finished fold was reused, not trained again
    assert json.loads((tmp_path / "result.json").read_text())["models"]["afnet_m"]["accuracy_per_fold"] == folds
