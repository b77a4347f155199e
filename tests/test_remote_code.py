"""A saved model folder must load with `trust_remote_code=True` where this project cannot be imported.

`load_remote_and_compare` is reusable by the tests of other models: save a model with its code, then call it with
the inputs and the outputs computed in this process.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

BLOCKED_PACKAGES = ("facet_vlm", "couple")
#: Modules FACET-VLM's remote code may import (open_clip only inside the open_clip loader, on demand).
REMOTE_CODE_IMPORTS = {"__future__", "dataclasses", "math", "os", "typing", "torch", "transformers", "open_clip"}

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

    folder, inputs_path, output_path, auto_class, keys = sys.argv[2:7]
    model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
    module = type(model).__module__
    if not module.startswith("transformers_modules"):
        raise SystemExit(f"model class came from {module}, not from the folder's remote code")
    inputs = {key: torch.from_numpy(value) for key, value in np.load(inputs_path).items()}
    with torch.no_grad():
        output = model(**inputs)
    np.savez(output_path, **{key: output[key].numpy() for key in json.loads(keys)})
    print(json.dumps({"class": type(model).__name__, "module": module}))
    """
)


def load_remote_and_compare(
    folder: str | os.PathLike,
    inputs: Mapping[str, np.ndarray | torch.Tensor] | str | os.PathLike,
    expected: Mapping[str, np.ndarray | torch.Tensor],
    auto_class: str = "AutoModel",
    blocked: Sequence[str] = BLOCKED_PACKAGES,
    atol: float = 1e-5,
    timeout: float = 300.0,
) -> dict[str, np.ndarray]:
    """Load `folder` with `transformers.<auto_class>.from_pretrained(..., trust_remote_code=True)` in a fresh Python
    process in which the packages `blocked` cannot be imported (a `sys.meta_path` finder refuses them, and the
    script checks that it does), run it on `inputs` (a dict of arrays or an `.npz` path) and assert that every
    output named in `expected` matches within `atol`. Returns the remote outputs."""
    folder = Path(folder)
    if isinstance(inputs, (str, os.PathLike)):
        inputs_path = Path(inputs)
    else:
        inputs_path = folder.parent / f"{folder.name}_remote_inputs.npz"
        np.savez(inputs_path, **{key: np.asarray(value) for key, value in inputs.items()})
    output_path = folder.parent / f"{folder.name}_remote_outputs.npz"
    script = folder.parent / f"{folder.name}_remote_check.py"
    script.write_text(_REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(folder.parent / "hf_modules")}
    env.pop("PYTHONPATH", None)
    command = [sys.executable, str(script), json.dumps(list(blocked)), str(folder), str(inputs_path),
               str(output_path), auto_class, json.dumps(list(expected))]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder.parent, timeout=timeout)
    assert result.returncode == 0, f"remote load failed:\n{result.stdout}\n{result.stderr}"
    remote = dict(np.load(output_path))
    for key, value in expected.items():
        local = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        np.testing.assert_allclose(remote[key], local, atol=atol, err_msg=f"output {key!r} differs")
    return remote


def _tiny_model(seed: int = 0):
    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

    tiny = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    config = FacetVLMConfig(
        vision_config={**tiny, "image_size": 32, "patch_size": 8}, text_config=tiny, projection_dim=32,
        cvsa_heads=2, mtgf_heads=2, num_frames=4, cvsa_intermediate_size=64,
    )
    torch.manual_seed(seed)
    return FacetVLMForExpressionRecognition(config).eval()


def test_saved_folder_carries_code_and_auto_map(tmp_path):
    model = _tiny_model()
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_facet_vlm.FacetVLMConfig",
        "AutoModel": "modeling_facet_vlm.FacetVLMModel",
        "AutoModelForImageClassification": "modeling_facet_vlm.FacetVLMForExpressionRecognition",
    }
    assert {"configuration_facet_vlm.py", "modeling_facet_vlm.py"} <= {p.name for p in (tmp_path / "model").iterdir()}
    for name in ("configuration_facet_vlm.py", "modeling_facet_vlm.py"):
        tree = ast.parse((tmp_path / "model" / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.level == 0}
        assert not imported & set(BLOCKED_PACKAGES), f"{name} imports {imported & set(BLOCKED_PACKAGES)}"
        assert imported <= REMOTE_CODE_IMPORTS, f"{name} imports {imported - REMOTE_CODE_IMPORTS}"


def test_remote_code_loads_without_the_project(tmp_path):
    model = _tiny_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.rand(2, 5, 7, 32, 32, generator=generator)
    pixel_values[:, :, 4:] = pixel_values[:, :, 4:] * 2 - 1
    with torch.no_grad():
        expected = model(pixel_values)
    remote = load_remote_and_compare(
        folder, {"pixel_values": pixel_values}, {"logits": expected.logits, "view_weights": expected.view_weights},
        auto_class="AutoModelForImageClassification",
    )
    assert remote["logits"].shape == (2, model.config.num_labels)
