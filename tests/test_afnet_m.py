"""AFNet-M: shapes, mask attention (FiLM), importance-weight fusion, loss, training, save/load, remote code, LoRA,
and the processor."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from helpers import toy_face

from couple import AFNetMConfig, AFNetMForExpressionRecognition
from couple.afnet_m.configuration_afnet_m import REGION_NAMES
from couple.afnet_m.modeling_afnet_m import AFNetMImportanceFusion, AFNetMMaskAttention, region_template

NUM_LABELS = 3
SIZE = 32


def tiny_config(**overrides) -> AFNetMConfig:
    settings = {
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 16],
        "depths": [1, 1, 1],
        "mask_hidden_size": 8,
        "fusion_hidden_size": 8,
        "template_size": 16,
        "hidden_dropout": 0.0,
        "num_labels": NUM_LABELS,
    }
    return AFNetMConfig(**{**settings, **overrides})


def tiny_model(seed: int = 0, **overrides) -> AFNetMForExpressionRecognition:
    torch.manual_seed(seed)
    return AFNetMForExpressionRecognition(tiny_config(**overrides)).eval()


def batch(size: int = 4, seed: int = 0, masks: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "pixel_values": torch.rand(size, 3, SIZE, SIZE, generator=generator),
        "geometry_values": torch.rand(size, 4, SIZE, SIZE, generator=generator) * 2 - 1,
        "labels": torch.arange(size) % NUM_LABELS,
    }
    if masks:
        inputs["region_masks"] = (torch.rand(size, 4, SIZE, SIZE, generator=generator) > 0.7).float()
    return inputs


def set_modulation(model: AFNetMForExpressionRecognition, seed: int = 0) -> None:
    """Give every mask-attention module non-zero γ/β weights (they start at zero, i.e. as the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for attention in [*model.texture_mask_attention.values(), *model.geometry_mask_attention.values()]:
            for layer in (attention.gamma_proj, attention.beta_proj):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)


def test_output_shapes_and_defaults():
    model = tiny_model()
    out = model(**batch(2), output_hidden_states=True)
    config = model.config
    assert config.fusion_stages == [1, 2] and config.mask_attention_stages == [0, 1, 2]
    assert out.logits.shape == (2, NUM_LABELS)
    assert out.modality_weights.shape == (2, len(config.fusion_stages), 2)
    torch.testing.assert_close(out.modality_weights.sum(-1), torch.ones(2, 2))
    assert out.pooled_output.shape == (2, config.hidden_sizes[-1])
    # stem: /4, then every stage after the first halves the resolution
    sides = [SIZE // 4 // 2**index for index in range(len(config.hidden_sizes))]
    shapes = [tuple(state.shape) for state in out.texture_hidden_states]
    assert shapes == [(2, width, side, side) for width, side in zip(config.hidden_sizes, sides)]
    assert [tuple(s.shape) for s in out.geometry_hidden_states] == shapes
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_last_stage_is_always_fused():
    config = tiny_config(fusion_stages=[0])
    assert config.fusion_stages == [0, 2] and config.importance_weight_stages == [0, 2]
    with pytest.raises(ValueError, match="fusion_stages"):
        tiny_config(fusion_stages=[5])
    with pytest.raises(ValueError, match="importance_weight_stages"):
        tiny_config(fusion_stages=[1], importance_weight_stages=[0])
    with pytest.raises(ValueError, match="mask_background_weight"):
        tiny_config(mask_background_weight=1.5)
    with pytest.raises(ValueError, match="hidden_sizes"):
        tiny_config(depths=[1, 1])


def test_bad_inputs_raise():
    model = tiny_model()
    inputs = batch(2)
    with pytest.raises(ValueError, match="geometry_values"):
        model(pixel_values=inputs["pixel_values"], geometry_values=inputs["geometry_values"][:, :3])
    with pytest.raises(ValueError, match="region_masks"):
        model(pixel_values=inputs["pixel_values"], geometry_values=inputs["geometry_values"],
              region_masks=inputs["region_masks"][:, :2])


def test_region_template_follows_the_face_layout():
    template = region_template(64)
    assert template.shape == (len(REGION_NAMES), 64, 64)
    assert 0.0 <= template.min() and template.max() == 1.0
    rows = torch.arange(64.0).view(1, 64, 1)
    cols = torch.arange(64.0).view(1, 1, 64)
    centre_row = (template * rows).sum((1, 2)) / template.sum((1, 2))
    centre_col = (template * cols).sum((1, 2)) / template.sum((1, 2))
    order = {name: index for index, name in enumerate(REGION_NAMES)}
    # image rows grow downwards: brows above eyes above nose above mouth, all centred left-right
    assert centre_row[order["brows"]] < centre_row[order["eyes"]] < centre_row[order["nose"]]
    assert centre_row[order["nose"]] < centre_row[order["mouth"]]
    torch.testing.assert_close(centre_col, torch.full((4,), 31.5), atol=0.05, rtol=0)
    # eyes and brows are pairs: mirror-symmetric masks
    torch.testing.assert_close(template[order["eyes"]], template[order["eyes"]].flip(-1))
    assert torch.equal(region_template(8, num_regions=3), torch.ones(3, 8, 8))


def test_mask_attention_is_film():
    config = tiny_config(mask_spatial_weighting=False)
    attention = AFNetMMaskAttention(8, config)
    hidden = torch.randn(2, 8, 5, 5)
    masks = torch.rand(2, 4, 5, 5)
    with torch.no_grad():
        for layer in (attention.gamma_proj, attention.beta_proj):
            layer.weight.zero_()
        attention.gamma_proj.bias.copy_(torch.linspace(-0.5, 0.5, 8))
        attention.beta_proj.bias.copy_(torch.linspace(1.0, 2.0, 8))
    out, gamma = attention(hidden, masks)
    scale = 1 + torch.linspace(-0.5, 0.5, 8).view(1, 8, 1, 1)
    shift = torch.linspace(1.0, 2.0, 8).view(1, 8, 1, 1)
    torch.testing.assert_close(out, hidden * scale + shift)
    assert gamma.shape == (2, 8)


def test_without_spatial_weighting_masks_matter_only_once_modulation_is_learned():
    inputs = batch(2)
    other_masks = 1 - inputs["region_masks"]
    model = tiny_model(mask_spatial_weighting=False)
    with torch.no_grad():
        first = model(**inputs).logits
        second = model(**{**inputs, "region_masks": other_masks}).logits
    torch.testing.assert_close(first, second)  # γ = β = 0 at init: identity
    set_modulation(model)
    with torch.no_grad():
        first = model(**inputs).logits
        second = model(**{**inputs, "region_masks": other_masks}).logits
        template_logits = model(**{**inputs, "region_masks": None}).logits
        template = model.region_template.unsqueeze(0).expand(2, -1, -1, -1)
        explicit = model(**{**inputs, "region_masks": template}).logits
    assert not torch.allclose(first, second)
    torch.testing.assert_close(template_logits, explicit)


def test_spatial_mask_weighting_scales_the_background_by_the_configured_weight():
    background = 0.25
    weighted = AFNetMMaskAttention(8, tiny_config(mask_background_weight=background))
    plain = AFNetMMaskAttention(8, tiny_config(mask_spatial_weighting=False))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in (weighted.gamma_proj, weighted.beta_proj):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
    plain.load_state_dict(weighted.state_dict())
    hidden = torch.randn(2, 8, 6, 6, generator=generator)
    masks = torch.zeros(2, 4, 6, 6)
    masks[:, 1, :2] = 1.0  # a region over the top two rows
    masks[:, 3, 4, 4] = 0.6  # a soft region edge
    with torch.no_grad():
        out, _ = weighted(hidden, masks)
        reference, _ = plain(hidden, masks)
    outside = masks.amax(dim=1, keepdim=True).expand_as(out) == 0
    assert outside.sum() > 0 and reference[outside].abs().min() > 0
    torch.testing.assert_close(out[outside], background * reference[outside])
    torch.testing.assert_close(out[:, :, :2], reference[:, :, :2])  # inside a region: unchanged
    torch.testing.assert_close(out[:, :, 4, 4], (background + (1 - background) * 0.6) * reference[:, :, 4, 4])


def test_spatial_weighting_reaches_the_model_and_is_the_identity_at_background_weight_one():
    inputs = batch(2)
    with torch.no_grad():
        plain = tiny_model(mask_spatial_weighting=False)(**inputs).logits
        identity = tiny_model(mask_background_weight=1.0)(**inputs).logits
        damped = tiny_model(mask_background_weight=0.25)(**inputs).logits
    torch.testing.assert_close(identity, plain)
    assert not torch.allclose(damped, plain, atol=1e-4)  # the masks act from the start, before γ/β are learned


@pytest.mark.parametrize("importance_stages", [[1], []])
def test_importance_weights_are_switchable_at_every_stage_the_last_included(importance_stages):
    reference_model = tiny_model()
    model = tiny_model(importance_weight_stages=importance_stages)
    assert sorted(model.importance_fusion) == [str(stage) for stage in importance_stages]
    model.load_state_dict(reference_model.state_dict(), strict=False)  # same weights, fewer importance modules
    inputs = batch(2)
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        reference = reference_model(**inputs)
    assert model.config.fusion_stages == [1, 2]
    torch.testing.assert_close(out.modality_weights[:, -1], torch.full((2, 2), 0.5))  # the last stage: equal
    assert (out.modality_weights[:, 0] != 0.5).all() == (1 in importance_stages)
    last = 0.5 * (out.texture_hidden_states[-1] + out.geometry_hidden_states[-1])
    torch.testing.assert_close(out.pooled_output, last.mean(dim=(2, 3)))
    assert not torch.allclose(out.logits, reference.logits, atol=1e-5)


def test_importance_fusion_weights_the_modalities():
    fusion = AFNetMImportanceFusion(6, tiny_config())
    texture, geometry = torch.randn(3, 6, 4, 4), torch.randn(3, 6, 4, 4)
    fused, weights = fusion(texture, geometry)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    expected = weights[:, 0].view(3, 1, 1, 1) * texture + weights[:, 1].view(3, 1, 1, 1) * geometry
    torch.testing.assert_close(fused, expected)
    assert not torch.allclose(weights[0], weights[1])  # input-dependent


def test_loss_uses_label_smoothing():
    inputs = batch(4)
    for smoothing in (0.0, 0.2):
        out = tiny_model(label_smoothing=smoothing)(**inputs)
        log_probs = out.logits.log_softmax(-1)
        nll = -log_probs.gather(1, inputs["labels"].view(-1, 1)).squeeze(1)
        uniform = -log_probs.mean(-1)
        torch.testing.assert_close(out.loss, ((1 - smoothing) * nll + smoothing * uniform).mean())


def test_training_steps_lower_the_loss():
    model = tiny_model(label_smoothing=0.0).train()
    inputs = batch(6)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert model.region_template.grad is None  # masks were given: the template is not used
    model(**{**inputs, "region_masks": None}).loss.backward()
    assert model.region_template.grad is not None


def test_fixed_template_is_a_buffer():
    model = tiny_model(learnable_template=False)
    assert "region_template" not in dict(model.named_parameters())
    assert "region_template" in model.state_dict()


def test_lora_trains_and_adapter_roundtrip(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base_seed = 5
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["conv1", "conv2"])
    model = get_peft_model(tiny_model(base_seed), lora)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert any("texture_branch" in n for n in trainable) and any("geometry_branch" in n for n in trainable)
    inputs = batch(4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    # batch-norm statistics stay frozen (eval mode) so that the adapter alone reproduces the fine-tuned model
    model.eval()
    for _ in range(2):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(tmp_path / "adapter")
    restored = PeftModel.from_pretrained(tiny_model(base_seed), tmp_path / "adapter").eval()
    eval_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        tuned = model(**eval_inputs).logits
        torch.testing.assert_close(restored(**eval_inputs).logits, tuned)
        assert not torch.allclose(tiny_model(base_seed)(**eval_inputs).logits, tuned)


def _geometry_available() -> bool:
    try:
        return importlib.util.find_spec("facet_vlm.geometry") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _geometry_available(), reason="facet_vlm.geometry is not written yet")
def test_processor_feeds_the_model_and_matches_the_template(tmp_path):
    from couple import AFNetMProcessor

    model = tiny_model()
    processor = AFNetMProcessor.from_config(model.config, image_size=SIZE)
    face = toy_face()
    inputs = processor([face, face], labels=[0, 1])
    assert inputs["pixel_values"].shape == (2, 3, SIZE, SIZE)
    assert inputs["geometry_values"].shape == (2, 4, SIZE, SIZE)
    assert inputs["region_masks"].shape == (2, len(REGION_NAMES), SIZE, SIZE)
    depth, normals = inputs["geometry_values"][:, 0], inputs["geometry_values"][:, 1:]
    assert 0.0 <= depth.min() and depth.max() <= 1.0 and normals.abs().max() <= 1.0 + 1e-5
    out = model(**inputs)
    assert out.logits.shape == (2, NUM_LABELS) and torch.isfinite(out.loss)
    no_masks = AFNetMProcessor(image_size=SIZE, with_masks=False)(face)
    assert "region_masks" not in no_masks
    processor.save_pretrained(tmp_path)
    assert AFNetMProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()

    # the toy face carries the mean-face landmarks, so its masks sit where the model's template puts them
    masks = inputs["region_masks"][0]
    template = F.interpolate(region_template(64)[None], size=(SIZE, SIZE), mode="bilinear")[0]
    rows = torch.arange(float(SIZE)).view(1, SIZE, 1)
    mask_rows = (masks * rows).sum((1, 2)) / masks.sum((1, 2))
    template_rows = (template * rows).sum((1, 2)) / template.sum((1, 2))
    assert (mask_rows - template_rows).abs().max() < 0.1 * SIZE
