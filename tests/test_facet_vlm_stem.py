"""FACET-VLM's convolutional patch stem (`patch_stem="conv"`) on tiny random configs."""

from __future__ import annotations

import pytest
import torch

from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_config(**overrides) -> FacetVLMConfig:
    settings = dict(vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8}, text_config=TINY_TOWER,
                    projection_dim=32, cvsa_heads=2, mtgf_heads=2, cvsa_intermediate_size=64, channels=["depth"])
    settings.update(overrides)
    return FacetVLMConfig(**settings)


def _stem(model: FacetVLMForExpressionRecognition) -> torch.nn.Module:
    return model.facet_vlm.vision_model.embeddings.patch_embedding


def test_conv_stem_keeps_the_token_grid_and_is_local():
    torch.manual_seed(0)
    linear = FacetVLMForExpressionRecognition(tiny_config()).eval()
    conv = FacetVLMForExpressionRecognition(tiny_config(patch_stem="conv")).eval()
    assert isinstance(_stem(linear), torch.nn.Conv2d) and not isinstance(_stem(conv), torch.nn.Conv2d)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert _stem(conv)(images).shape == _stem(linear)(images).shape == (3, 32, 4, 4)
        assert conv.facet_vlm.vision_model(pixel_values=images).last_hidden_state.shape == (3, 17, 32)
        changed = images.clone()
        changed[:, :, :4, :4] += 1.0  # inside the top-left patch
        delta = (_stem(conv)(changed) - _stem(conv)(images)).abs().amax(dim=(0, 1))
    # Three stride-2 3x3 convolutions see 15 pixels: the edit reaches the neighbouring patches, not the far ones.
    assert delta[0, 0] > 0 and delta[2:, :].max() == 0 and delta[:, 2:].max() == 0


def test_conv_stem_trains_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = FacetVLMForExpressionRecognition(tiny_config(patch_stem="conv", conv_stem_channels=[8, 16, 16]))
    assert [m.out_channels for m in _stem(model).modules() if isinstance(m, torch.nn.Conv2d)] == [8, 16, 16, 32]
    pixels, labels = torch.rand(4, 5, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = model(pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    model.eval().save_pretrained(tmp_path)
    loaded = FacetVLMForExpressionRecognition.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(model(pixels).logits, loaded(pixels).logits, atol=1e-5)


def test_conv_stem_bad_settings_raise():
    with pytest.raises(ValueError, match="power-of-two"):
        tiny_config(patch_stem="conv", vision_config={**TINY_TOWER, "image_size": 36, "patch_size": 6})
    with pytest.raises(ValueError, match="conv_stem_channels"):
        tiny_config(patch_stem="conv", conv_stem_channels=[8, 16])
    with pytest.raises(ValueError, match="patch_stem"):
        tiny_config(patch_stem="resnet")
    with pytest.raises(ValueError, match="class_head"):
        tiny_config(class_head="mlp")
    with pytest.raises(ValueError, match="prompt_context_init"):
        tiny_config(prompt_context_init="a photo of a", prompt_context_length=2)
