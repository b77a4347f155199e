"""What every model of `facet_vlm.registry` must do, one parametrized test per property over all four models:
save/load round trip (also through the Auto classes), remote code in a process without this project, LoRA adapters
saved and loaded through PEFT, and the processor's save/load round trip (also through `AutoProcessor`).

Each model is tiny (32-px images, 1-2 layers) and its inputs come from its own processor on a tiny scan or a short
generated face video, so the tests exercise the same path as training and the pipelines.
"""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from helpers import RemoteCheck, load_remote_and_compare_all

import facet_vlm  # noqa: F401  (registers every model)
from facet_vlm.registry import MODEL_REGISTRY, make_processor

TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
         "image_size": 32, "patch_size": 8}
TINY_CONFIGS = {
    "facet_vlm": {"vision_config": TOWER, "text_config": {k: v for k, v in TOWER.items() if "image" not in k
                                                          and "patch" not in k},
                  "projection_dim": 32, "cvsa_heads": 2, "mtgf_heads": 2, "cvsa_layers": 1, "temporal_layers": 1},
    "couplefer": {"vision_config": TOWER, "point_hidden_size": 32, "point_intermediate_size": 64,
                  "point_num_attention_heads": 2, "num_point_groups": 8, "point_group_size": 8, "projection_dim": 16,
                  "point_embed_hidden_size": 16},
    "afnet_m": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "fusion_stages": [0, 1],
                "image_size": 32, "mask_hidden_size": 8, "fusion_hidden_size": 8, "template_size": 16},
    "physio_prompt": {"vision_config": {**TOWER, "num_attention_heads": 4}, "num_prompts": 2,
                      "adapter_bottleneck": 8, "pulse_hidden_size": 16, "pulse_conv_channels": 4},
}
PROCESSOR_OVERRIDES = {"couplefer": {"num_points": 256}, "physio_prompt": {"num_frames": 4, "tfr_size": [32, 32]}}
#: The output every model is compared on.
SCORED = {"physio_prompt": "valence_logits"}
#: The output of the base model (`AutoModel`) that the recognition model also returns.
BASE_SCORED = {"facet_vlm": "logits", "couplefer": "fused_embeds", "afnet_m": "pooled_output",
               "physio_prompt": "video_embeds"}
MODELS = sorted(MODEL_REGISTRY)


def test_every_registered_model_is_covered_here_and_by_the_card_text():
    from facet_vlm.hub import METHODS

    assert set(TINY_CONFIGS) == set(MODEL_REGISTRY) == set(METHODS)
    for name, entry in MODEL_REGISTRY.items():
        expected_tag = "video-classification" if entry.is_video else "image-classification"
        assert METHODS[name].pipeline_tag == expected_tag, name


@pytest.fixture(scope="module")
def sample_inputs(tmp_path_factory):
    """One raw input per data kind: a small textured scan with landmarks, and a 3 s face video with a pulse."""
    from facet_vlm.data.synthetic import generate
    from facet_vlm.data.synthetic_video import generate_videos

    root = tmp_path_factory.mktemp("inputs")
    generate(root / "scans", subjects=1, seed=0, formats=("bu3dfe",), intensities=1, include_neutral=False,
             vertices=1500, texture_size=64, progress=False)
    generate_videos(root / "videos", subjects=1, trials_per_subject=1, seconds=3.0, size=32, seed=0)
    scan = sorted((root / "scans").rglob("*_F3D.wrl"))[0]
    video = sorted(path for path in (root / "videos").rglob("*") if path.suffix in (".avi", ".mp4"))[0]
    return {"scan": scan, "video": video}


def build(name: str, seed: int = 0):
    entry = MODEL_REGISTRY[name]
    config = entry.config_class(**TINY_CONFIGS[name], num_labels=6 if not entry.is_video else 2)
    torch.manual_seed(seed)
    model = entry.model_class(config).eval()
    processor = make_processor(name, config, PROCESSOR_OVERRIDES.get(name))
    return model, processor


def model_inputs(name: str, processor, sample_inputs) -> dict[str, torch.Tensor]:
    if MODEL_REGISTRY[name].is_video:
        return dict(processor(videos=[sample_inputs["video"]]))
    return {key: value for key, value in processor(faces=[sample_inputs["scan"]]).items() if key != "labels"}


def scored(name: str, outputs) -> torch.Tensor:
    return outputs[SCORED.get(name, "logits")]


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_round_trip_through_the_auto_classes(name, tmp_path, sample_inputs):
    entry = MODEL_REGISTRY[name]
    model, processor = build(name)
    inputs = model_inputs(name, processor, sample_inputs)
    with torch.no_grad():
        outputs = model(**inputs)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    for auto_class, expected_class, key in (("AutoModel", entry.base_model_class, BASE_SCORED[name]),
                                            (entry.auto_class, entry.model_class, SCORED.get(name, "logits"))):
        reloaded = getattr(transformers, auto_class).from_pretrained(tmp_path).eval()
        assert type(reloaded) is expected_class
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**inputs)[key], outputs[key], rtol=0, atol=1e-5)


def test_remote_code_loads_without_the_project(tmp_path, sample_inputs):
    """Every model saved with its code loads through its task Auto class in one process where this project cannot
    be imported, names the right classes in ``auto_map``, and gives the outputs computed here."""
    checks = []
    for name in MODELS:
        model, processor = build(name)
        inputs = model_inputs(name, processor, sample_inputs)
        with torch.no_grad():
            outputs = model(**inputs)
        keys = [SCORED.get(name, "logits")] + (["view_weights"] if name == "facet_vlm" else [])
        folder = tmp_path / name
        model.save_pretrained(folder)
        entry = MODEL_REGISTRY[name]
        auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
        module = entry.module("modeling").rsplit(".", 1)[-1]
        assert auto_map == {"AutoConfig": f"configuration_{name}.{entry.config_name}",
                            "AutoModel": f"{module}.{entry.base_model_name}",
                            entry.auto_class: f"{module}.{entry.model_name}"}
        checks.append(RemoteCheck(folder, {k: v.numpy() for k, v in inputs.items()},
                                  {key: outputs[key] for key in keys}, entry.auto_class))
    load_remote_and_compare_all(checks)


@pytest.mark.parametrize("name", MODELS)
def test_processor_round_trip_and_auto_processor(name, tmp_path, sample_inputs):
    model, processor = build(name)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == MODEL_REGISTRY[name].processor_name
    reloaded = type(processor).from_pretrained(tmp_path)
    assert reloaded == processor and reloaded is not processor
    model.config.save_pretrained(tmp_path)
    facet_vlm.register_processors()
    through_auto = transformers.AutoProcessor.from_pretrained(tmp_path)
    assert type(through_auto) is type(processor) and through_auto.to_dict() == processor.to_dict()
    first, again = model_inputs(name, processor, sample_inputs), model_inputs(name, through_auto, sample_inputs)
    assert isinstance(processor(**({"videos": [sample_inputs["video"]]} if MODEL_REGISTRY[name].is_video
                                   else {"faces": [sample_inputs["scan"]]})), transformers.BatchFeature)
    for key in first:
        torch.testing.assert_close(again[key], first[key], rtol=0, atol=0)
    (tmp_path / "processor_config.json").unlink()
    from_config = type(processor).from_pretrained(tmp_path)  # a model folder without processor settings
    assert from_config == type(processor).from_config(model.config)


@pytest.mark.parametrize("name", MODELS)
def test_lora_adapter_saves_and_loads_through_peft(name, tmp_path, sample_inputs):
    """`training.lora_config` on the model; the adapter folder loads with PeftModel.from_pretrained on the base."""
    from peft import PeftModel, get_peft_model

    from facet_vlm.arguments import ModelArguments
    from facet_vlm.errors import ConfigError
    from facet_vlm.training import lora_config

    model, processor = build(name, seed=1)
    if name == "afnet_m":  # a CNN trained from scratch: no pretrained tower to adapt, and the run says so
        with pytest.raises(ConfigError, match="match no nn.Linear of the pretrained towers"):
            lora_config(model, ModelArguments(model=name, lora_r=2))
        return
    config = lora_config(model, ModelArguments(model=name, lora_r=2))
    peft_model = get_peft_model(model, config)
    for _, parameter in peft_model.named_parameters():  # give the adapters and saved modules non-initial values
        if parameter.requires_grad:
            parameter.data.add_(0.01 * torch.randn_like(parameter))
    assert any("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad) or name == "physio_prompt"
    inputs = model_inputs(name, processor, sample_inputs)
    with torch.no_grad():
        expected = scored(name, peft_model.eval()(**inputs))
    peft_model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file() and not (tmp_path / "model.safetensors").exists()
    base, _ = build(name, seed=1)
    with torch.no_grad():
        assert not torch.allclose(scored(name, base(**inputs)), expected)
        reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
        torch.testing.assert_close(scored(name, reloaded(**inputs)), expected, rtol=0, atol=1e-5)
