"""Attention kernels and activation checkpointing of every model.

Every attention module (the CLIP towers, CVSA, MTGF, the attention pools, the temporal transformer, the point
transformer, the CouPle prompt pooling and the physio prompts inside the CLIP layers) runs the kernel that
`attn_implementation` selects; eager and SDPA must give the same outputs, and checkpointed layers the same gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import MODELS
from torch.overrides import TorchFunctionMode
from transformers.modeling_layers import GradientCheckpointingLayer

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
