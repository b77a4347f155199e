"""Attention kernels and activation checkpointing of every model.

Every attention module (the CLIP towers, CVSA, MTGF, the attention pools, the temporal transformer, the point
transformer, the CouPle prompt pooling and the physio prompts inside the CLIP layers) runs the kernel that
`attn_implementation` selects; eager and SDPA must give the same outputs, and checkpointed layers the same gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from transformers.modeling_layers import GradientCheckpointingLayer

from couple import (
    CoupleFERConfig,
    CoupleFERForExpressionRecognition,
    PhysioPromptConfig,
    PhysioPromptForEmotionRecognition,
)
from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_VISION = {**TINY, "image_size": 32, "patch_size": 8}


def facet_vlm(frames: int):
    config = FacetVLMConfig(vision_config=TINY_VISION, text_config=TINY, projection_dim=32, cvsa_heads=4,
                            mtgf_heads=2, cvsa_layers=2, temporal_layers=2, num_frames=4, consistency_weight=0.5,
                            cvsa_use_patch_tokens=True)
    shape = (2, 5, 7, 32, 32) if frames == 1 else (2, frames, 5, 7, 32, 32)
    inputs = {"pixel_values": torch.rand(shape), "labels": torch.tensor([0, 3])}
    attention_calls = 2 + 2 + 1 + 1 + (2 + 1 if frames > 1 else 0)  # vision, CVSA, pool, MTGF (+ temporal, pool)
    return FacetVLMForExpressionRecognition, config, inputs, attention_calls


def couplefer():
    config = CoupleFERConfig(vision_config=TINY_VISION, point_hidden_size=32, point_intermediate_size=64,
                             point_num_attention_heads=4, num_point_groups=8, point_group_size=8, projection_dim=16,
                             num_labels=6, couple_mode="bidirectional")
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32), "points": torch.randn(2, 64, 6), "labels": torch.tensor([0, 3])}
    return CoupleFERForExpressionRecognition, config, inputs, 4 * 2  # image, point, 2D->3D and 3D->2D per layer


def physio_prompt():
    config = PhysioPromptConfig(vision_config=TINY_VISION, num_prompts=2, pulse_hidden_size=16,
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


CHECKPOINTED_LAYERS = {
    "facet_vlm_3d": {"CLIPEncoderLayer", "FacetVLMEncoderLayer"},
    "facet_vlm_4d": {"CLIPEncoderLayer", "FacetVLMEncoderLayer"},
    "couplefer": {"CLIPEncoderLayer", "CoupleFERPointLayer"},
    "physio_prompt": {"CLIPEncoderLayer"},
}


class CountSDPA(TorchFunctionMode):
    """Counts the calls of torch's fused attention kernel (it observes them; the kernel still runs)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def build(name: str, attn_implementation: str):
    model_class, config, inputs, attention_calls = MODELS[name]()
    torch.manual_seed(0)
    model = model_class._from_config(config, attn_implementation=attn_implementation)
    return model, inputs, attention_calls


def tensors(output) -> dict[str, torch.Tensor]:
    return {key: value for key, value in output.items() if torch.is_tensor(value)}


@pytest.mark.parametrize("name", MODELS)
def test_eager_and_sdpa_give_the_same_outputs_and_every_attention_uses_the_chosen_kernel(name):
    torch.manual_seed(1)
    eager, inputs, attention_calls = build(name, "eager")
    sdpa, _, _ = build(name, "sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    outputs, calls = {}, {}
    for label, model in (("eager", eager.eval()), ("sdpa", sdpa.eval())):
        with torch.no_grad():
            model(**inputs)  # FACET-VLM caches its class text embeddings on the first call
            with CountSDPA() as counter:
                outputs[label] = tensors(model(**inputs))
        calls[label] = counter.calls
    assert calls == {"eager": 0, "sdpa": attention_calls}
    assert outputs["eager"].keys() == outputs["sdpa"].keys() and "logits" in outputs["eager"]
    for key, value in outputs["eager"].items():
        torch.testing.assert_close(outputs["sdpa"][key], value, rtol=0, atol=1e-5, msg=key)

    sdpa.set_attn_implementation("eager")  # a built model switches: the modules read the config at call time
    with torch.no_grad(), CountSDPA() as counter:
        sdpa(**inputs)
    assert counter.calls == 0


def gradients(model, inputs) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(2)
    model(**inputs).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", MODELS)
def test_gradient_checkpointing_recomputes_the_layers_and_keeps_the_gradients(name):
    model, inputs, _ = build(name, "sdpa")
    model.train()
    with torch.no_grad():
        model(**inputs)  # FACET-VLM caches its class text embeddings (the frozen text tower runs once)
    checkpointed = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    forward_runs = []
    for layer in checkpointed:
        # the layer's first module: the backward's recompute stops early, once the tensors it needs are back
        name_of = type(layer).__name__
        layer.layer_norm1.register_forward_pre_hook(lambda *args, name_of=name_of: forward_runs.append(name_of))
    reference = gradients(model, inputs)
    plain_runs = list(forward_runs)
    forward_runs.clear()

    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in checkpointed)
    checkpointed_grads = gradients(model, inputs)
    # every layer ran once more, in the backward pass
    assert sorted(forward_runs) == sorted(plain_runs * 2)
    assert {type(layer).__name__ for layer in checkpointed} == CHECKPOINTED_LAYERS[name]
    assert reference.keys() == checkpointed_grads.keys() and len(reference) > 10
    for key, value in reference.items():
        torch.testing.assert_close(checkpointed_grads[key], value, rtol=1e-5, atol=1e-6, msg=key)
