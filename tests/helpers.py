"""Helpers and constants shared by several test modules (fixtures shared by several modules live in conftest.py).

Test modules import them with ``from helpers import ...``: pytest's default import mode puts tests/ on sys.path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from couple import (
    CoupleFERConfig,
    CoupleFERForExpressionRecognition,
    PhysioPromptConfig,
    PhysioPromptForEmotionRecognition,
)
from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

# ---------------------------------------------------------------------------------------------------------------
# scripts/train.py end to end on tiny generated data (test_train.py, test_finetune.py, test_fuzz_cli.py, ...)
# ---------------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "scripts" / "train.py"

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8}
TINY_MODELS = {
    "facet_vlm": {"vision_config": TINY_VISION,
                  "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                  "num_attention_heads": 2},
                  "projection_dim": 32, "cvsa_heads": 2, "mtgf_heads": 2, "cvsa_layers": 1, "temporal_layers": 1},
    # No 2D<->3D contrastive term: it couples the samples of a batch, so one process and two processes
    # (half batches each) would optimise different losses.
    "couplefer": {"vision_config": TINY_VISION, "point_hidden_size": 32, "point_intermediate_size": 64,
                  "point_num_attention_heads": 2, "num_point_groups": 8, "point_group_size": 8, "projection_dim": 16,
                  "point_embed_hidden_size": 16, "contrastive_loss_weight": 0.0},
    "afnet_m": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "fusion_stages": [0, 1],
                "image_size": 32, "mask_hidden_size": 8, "fusion_hidden_size": 8, "template_size": 16},
    "physio_prompt": {"vision_config": {**TINY_VISION, "num_attention_heads": 4}, "num_prompts": 2,
                      "adapter_bottleneck": 8, "pulse_hidden_size": 16, "pulse_conv_channels": 4},
}
TINY_FEATURES = {"couplefer": {"num_points": 256}, "physio_prompt": {"num_frames": 4, "tfr_size": [32, 32]}}


def tiny_config(tmp_path: Path, model: str, data_root: Path, cache_dir: Path, **changes) -> Path:
    config = {"model": model, "model_config": TINY_MODELS[model], "dataset": f"synthetic:{data_root}",
              "protocol": "subject-kfold", "folds": 3, "max_folds": 1, "batch_size": 4, "max_steps": 2,
              "report_to": "none", "cache_dir": str(cache_dir), "output_dir": str(tmp_path / "run")}
    if model in TINY_FEATURES:
        config["feature_overrides"] = TINY_FEATURES[model]
    config.update(changes)
    path = tmp_path / f"{model}.json"
    path.write_text(json.dumps(config))
    return path


@dataclasses.dataclass
class CommandResult:
    """What a command run in this process printed and returned (the fields of `subprocess.CompletedProcess` the
    tests read); `stderr` also holds the library's log records (INFO and above)."""

    returncode: int
    stdout: str
    stderr: str


def run_command(main: Callable[[list[str]], int], *args: str) -> CommandResult:
    """Run a console entry point of `facet_vlm.cli` (``train_main``, ``evaluate_main``, ...) in this process, as the
    command line would (``run_cli``: exit codes, one-line errors), capturing stdout, stderr and the log.

    In-process runs spare the test suite a fresh interpreter (and ``import facet_vlm``) per command; the commands
    themselves run end to end through `subprocess` in the tests marked ``e2e``. Accelerate's process-wide state is
    reset after the run, so that the next run may choose other settings."""
    from accelerate.state import AcceleratorState

    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("facet_vlm", "couple")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's --help and usage errors
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
        AcceleratorState._reset_state(reset_partial_state=True)
    return CommandResult(code, stdout.getvalue(), stderr.getvalue())


def script_main(script: str) -> Callable[[list[str]], int]:
    """The `facet_vlm.cli` entry point that ``scripts/<script>`` runs."""
    from facet_vlm import cli

    mains = {"train.py": cli.train_main, "evaluate_model.py": cli.evaluate_main, "prepare_data.py": cli.prepare_main,
             "publish.py": cli.publish_main, "bench.py": cli.bench_main}
    return mains[script]


def run_train(*args: str, launcher: list[str] | None = None, timeout: int = 300) -> CommandResult:
    """``scripts/train.py ARGS``: in this process (`run_command`), or under `launcher` (e.g. ``accelerate launch``)
    as a subprocess."""
    if launcher is None:
        from facet_vlm.cli import train_main

        result = run_command(train_main, *args)
    else:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        result = subprocess.run([*launcher, str(TRAIN), *args], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def fold_record(output_dir: Path, fold: int = 0) -> dict:
    return json.loads((output_dir / f"fold_{fold}" / "results.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# A toy face scan (test_couplefer.py, test_afnet_m.py)
# ---------------------------------------------------------------------------------------------------------------

def toy_face():
    """A smooth 160 mm heightfield 'face' with a nose bump, vertex colours and the standard landmarks."""
    from facet_vlm.face import Face
    from facet_vlm.geometry.masks import TEMPLATE_MM

    n, half = 40, 80.0
    xs = np.linspace(-half, half, n)
    x, y = np.meshgrid(xs, xs)
    z = 60 * np.exp(-(x**2 + y**2) / (2 * 55.0**2)) + 20 * np.exp(-(x**2 + (y - 5) ** 2) / (2 * 10.0**2))
    vertices = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    colors = np.clip(np.stack([128 + x, 128 + y, np.full_like(x, 90)], -1), 0, 255).reshape(-1, 3).astype(np.uint8)
    names = list(TEMPLATE_MM)
    landmarks = np.array([[TEMPLATE_MM[k][0], 5 + TEMPLATE_MM[k][1], 60.0] for k in names], np.float32)
    return Face(vertices=vertices, faces=faces.astype(np.int64), colors=colors, landmarks=landmarks,
                landmark_names=names)


# ---------------------------------------------------------------------------------------------------------------
# The Gradio Space served on 127.0.0.1 (test_space.py, test_space_sequences.py, test_fuzz_inputs.py)
# ---------------------------------------------------------------------------------------------------------------

APP = REPO / "hub" / "space" / "app.py"
START_TIMEOUT_S = 240


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Space exited with code {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the Space did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_space(log: Path, **variables: str):
    """Run hub/space/app.py on a free local port with extra environment `variables`; yield its URL."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "MAX_UPLOAD_MB": "5"}
    for variable in ("FACET_VLM_MODEL", "COUPLEFER_MODEL", "AFNET_M_MODEL", "PHYSIO_PROMPT_MODEL"):
        env.pop(variable, None)
    env["FACET_VLM_LOCAL_MODELS"] = ""  # no trained model of this machine unless a test names one
    env.update(variables)
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(APP)], cwd=APP.parent, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# ---------------------------------------------------------------------------------------------------------------
# Remote code loaded where this project cannot be imported (test_remote_code.py, test_models_common.py, ...)
# ---------------------------------------------------------------------------------------------------------------

BLOCKED_PACKAGES = ("facet_vlm", "couple")

_REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import json
    import sys

    BLOCKED = set(json.loads(sys.argv[1]))


    class BlockProject(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked in this process")
            return None


    sys.meta_path.insert(0, BlockProject())
    for package in BLOCKED:
        try:
            __import__(package)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{package} is importable although it must be blocked")

    import numpy as np
    import torch
    import transformers

    for job in json.loads(sys.argv[2]):
        model = getattr(transformers, job["auto_class"]).from_pretrained(job["folder"], trust_remote_code=True).eval()
        module = type(model).__module__
        if not module.startswith("transformers_modules"):
            raise SystemExit(f"{job['folder']}: model class came from {module}, not from the folder's remote code")
        inputs = {key: torch.from_numpy(value) for key, value in np.load(job["inputs"]).items()}
        with torch.no_grad():
            output = model(**inputs)
        np.savez(job["outputs"], **{key: output[key].numpy() for key in job["keys"]})
        print(json.dumps({"class": type(model).__name__, "module": module}))
    """
)


@dataclasses.dataclass
class RemoteCheck:
    """One saved folder to load as remote code: its inputs (arrays or an ``.npz`` path), the outputs expected (by
    output name) and the Auto class that loads it."""

    folder: Path
    inputs: Mapping[str, np.ndarray | torch.Tensor] | str | os.PathLike
    expected: Mapping[str, np.ndarray | torch.Tensor]
    auto_class: str = "AutoModel"


def load_remote_and_compare_all(checks: Sequence[RemoteCheck], blocked: Sequence[str] = BLOCKED_PACKAGES,
                                atol: float = 1e-5, timeout: float = 300.0) -> list[dict[str, np.ndarray]]:
    """Load every folder of `checks` with ``transformers.<auto_class>.from_pretrained(..., trust_remote_code=True)``
    in one fresh Python process in which the packages `blocked` cannot be imported (a `sys.meta_path` finder refuses
    them, and the script checks that it does), run each on its inputs and assert that every expected output matches
    within `atol`. Returns the remote outputs of each check."""
    jobs = []
    for index, check in enumerate(checks):
        folder = Path(check.folder)
        if isinstance(check.inputs, (str, os.PathLike)):
            inputs_path = Path(check.inputs)
        else:
            inputs_path = folder.parent / f"{folder.name}_remote_inputs_{index}.npz"
            np.savez(inputs_path, **{key: np.asarray(value) for key, value in check.inputs.items()})
        jobs.append({"folder": str(folder), "inputs": str(inputs_path), "auto_class": check.auto_class,
                     "outputs": str(folder.parent / f"{folder.name}_remote_outputs_{index}.npz"),
                     "keys": list(check.expected)})
    work = Path(checks[0].folder).parent
    script = work / "remote_check.py"
    script.write_text(_REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "hf_modules")}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, str(script), json.dumps(list(blocked)), json.dumps(jobs)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work, timeout=timeout)
    assert result.returncode == 0, f"remote load failed:\n{result.stdout}\n{result.stderr}"
    outputs = []
    for check, job in zip(checks, jobs):
        remote = dict(np.load(job["outputs"]))
        for key, value in check.expected.items():
            local = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            np.testing.assert_allclose(remote[key], local, atol=atol,
                                       err_msg=f"{job['folder']}: output {key!r} differs")
        outputs.append(remote)
    return outputs


def load_remote_and_compare(folder: str | os.PathLike, inputs: Mapping[str, np.ndarray | torch.Tensor] | str |
                            os.PathLike, expected: Mapping[str, np.ndarray | torch.Tensor],
                            auto_class: str = "AutoModel", **kwargs) -> dict[str, np.ndarray]:
    """`load_remote_and_compare_all` for one folder."""
    return load_remote_and_compare_all([RemoteCheck(Path(folder), inputs, expected, auto_class)], **kwargs)[0]


# ---------------------------------------------------------------------------------------------------------------
# Tiny models with every attention module (test_attention.py, test_precision_and_layout.py)
# ---------------------------------------------------------------------------------------------------------------

ATTENTION_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
ATTENTION_TINY_VISION = {**ATTENTION_TINY, "image_size": 32, "patch_size": 8}


def facet_vlm(frames: int):
    config = FacetVLMConfig(vision_config=ATTENTION_TINY_VISION, text_config=ATTENTION_TINY, projection_dim=32,
                            cvsa_heads=4, mtgf_heads=2, cvsa_layers=2, temporal_layers=2, num_frames=4,
                            consistency_weight=0.5, cvsa_use_patch_tokens=True)
    shape = (2, 5, 7, 32, 32) if frames == 1 else (2, frames, 5, 7, 32, 32)
    inputs = {"pixel_values": torch.rand(shape), "labels": torch.tensor([0, 3])}
    attention_calls = 2 + 2 + 1 + 1 + (2 + 1 if frames > 1 else 0)  # vision, CVSA, pool, MTGF (+ temporal, pool)
    return FacetVLMForExpressionRecognition, config, inputs, attention_calls


def couplefer():
    config = CoupleFERConfig(vision_config=ATTENTION_TINY_VISION, point_hidden_size=32, point_intermediate_size=64,
                             point_num_attention_heads=4, num_point_groups=8, point_group_size=8, projection_dim=16,
                             num_labels=6, couple_mode="bidirectional")
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32), "points": torch.randn(2, 64, 6), "labels": torch.tensor([0, 3])}
    return CoupleFERForExpressionRecognition, config, inputs, 4 * 2  # image, point, 2D->3D and 3D->2D per layer


def physio_prompt():
    config = PhysioPromptConfig(vision_config=ATTENTION_TINY_VISION, num_prompts=2, pulse_hidden_size=16,
                                pulse_conv_channels=4, adapter_bottleneck=8, num_train_subjects=3, num_emotions=5,
                                specific_adapter_dropout=0.0, head_dropout=0.0, freeze_vision=False)
    inputs = {"pixel_values": torch.rand(2, 3, 3, 32, 32), "tfr_values": torch.randn(2, 1, 16, 12),
              "subject_ids": torch.tensor([0, 2]), "labels": torch.tensor([[0, 1, 4], [1, 0, 2]])}
    return PhysioPromptForEmotionRecognition, config, inputs, 2  # the prompted CLIP layers


MODELS = {
    "facet_vlm_3d": lambda: facet_vlm(1),
    "facet_vlm_4d": lambda: facet_vlm(3),
    "couplefer": couplefer,
    "physio_prompt": physio_prompt,
}
