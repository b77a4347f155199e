"""GPU-readiness options that run on the CPU too: bf16 autocast for every model, channels-last for AFNet-M."""

from __future__ import annotations

import pytest
import torch
from helpers import MODELS

from couple import AFNetMConfig, AFNetMForExpressionRecognition


def afnet_m(**overrides):
    config = AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=6, hidden_dropout=0.0,
                          **overrides)
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32), "geometry_values": torch.rand(2, 4, 32, 32),
              "labels": torch.tensor([1, 4])}
    return AFNetMForExpressionRecognition, config, inputs, 0


@pytest.mark.parametrize("name", [*MODELS, "afnet_m"])
def test_bf16_autocast_trains_with_the_float32_loss(name):
    model_class, config, inputs, _ = afnet_m() if name == "afnet_m" else MODELS[name]()
    torch.manual_seed(0)
    model = model_class(config).train()
    with torch.no_grad():
        reference = model(**inputs).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    assert abs(loss.item() - reference.item()) <= 0.03 * reference.item()  # bf16 keeps 8 bits of mantissa
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)


def test_channels_last_afnet_m_gives_the_same_outputs_in_nhwc():
    _, config, inputs, _ = afnet_m()
    torch.manual_seed(0)
    plain = AFNetMForExpressionRecognition(config).eval()
    nhwc = AFNetMForExpressionRecognition(afnet_m(channels_last=True)[1]).eval()
    nhwc.load_state_dict(plain.state_dict())
    with torch.no_grad():
        expected = plain(**inputs, output_hidden_states=True)
        found = nhwc(**inputs, output_hidden_states=True)
    torch.testing.assert_close(found.logits, expected.logits, rtol=0, atol=1e-5)
    layout = torch.channels_last
    assert all(state.is_contiguous(memory_format=layout) for state in found.geometry_hidden_states)
    assert not any(state.is_contiguous(memory_format=layout) for state in expected.geometry_hidden_states)
