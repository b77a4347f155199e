"""A saved FACET-VLM folder carries its code and an ``auto_map``, and the code imports nothing of this project.

Loading saved folders as remote code where this project cannot be imported is checked for every model at once in
`test_models_common.test_remote_code_loads_without_the_project` (`helpers.load_remote_and_compare_all`).
"""

from __future__ import annotations

import ast
import json

import torch
from helpers import BLOCKED_PACKAGES

#: Modules FACET-VLM's remote code may import (open_clip only inside the open_clip loader, on demand).
REMOTE_CODE_IMPORTS = {"__future__", "dataclasses", "math", "os", "typing", "torch", "transformers", "open_clip"}


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
