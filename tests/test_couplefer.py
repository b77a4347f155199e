"""CoupleFER: shapes, CouPle coupling modes, loss terms, prototypes, CLIP loading, save/load, remote code, LoRA,
and the processor."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from helpers import toy_face
from transformers import CLIPVisionConfig, CLIPVisionModel

from couple import CoupleFERConfig, CoupleFERForExpressionRecognition
from couple.couplefer.modeling_couplefer import farthest_point_sampling, knn_indices

NUM_LABELS = 4
IMAGE_SIZE = 16
NUM_POINTS = 64
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": IMAGE_SIZE,
    "patch_size": 4,
}
LOSS_TERMS = {
    "ce_loss": "ce_loss_weight",
    "branch_ce_loss": "branch_ce_loss_weight",
    "contrastive_loss": "contrastive_loss_weight",
    "prototype_loss": "prototype_loss_weight",
}


def tiny_config(**overrides) -> CoupleFERConfig:
    settings = {
        "vision_config": TINY_VISION,
        "point_hidden_size": 32,
        "point_intermediate_size": 64,
        "point_num_attention_heads": 2,
        "point_embed_hidden_size": 16,
        "num_point_groups": 8,
        "point_group_size": 8,
        "num_prompt_tokens": 2,
        "projection_dim": 16,
        "num_labels": NUM_LABELS,
    }
    return CoupleFERConfig(**{**settings, **overrides})


def tiny_model(seed: int = 0, **overrides) -> CoupleFERForExpressionRecognition:
    torch.manual_seed(seed)
    return CoupleFERForExpressionRecognition(tiny_config(**overrides)).eval()


def batch(size: int = 4, seed: int = 0, channels: int = 6) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(size, NUM_POINTS, channels, generator=generator)
    points[..., 3:6] = F.normalize(points[..., 3:6], dim=-1)
    return {
        "pixel_values": torch.rand(size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        "points": points,
        "labels": torch.arange(size) % NUM_LABELS,
    }


# ---------------------------------------------------------------------------------------------------------------


def test_point_patch_helpers_follow_geometry():
    line = torch.arange(10.0)
    xyz = torch.stack([line, torch.zeros(10), torch.zeros(10)], dim=-1).unsqueeze(0)
    picked = farthest_point_sampling(xyz, 3)[0].tolist()
    # the two ends (farthest from the centroid, then from each other), then a middle point
    assert set(picked[:2]) == {0, 9}
    assert picked[2] in (4, 5)
    shuffled = torch.randperm(10)
    picked_shuffled = farthest_point_sampling(xyz[:, shuffled], 2)[0]
    assert set(shuffled[picked_shuffled].tolist()) == {0, 9}

    cloud = torch.randn(2, 30, 3)
    centers = cloud[:, :5]
    nearest = knn_indices(cloud, centers, 4)
    brute = torch.cdist(centers, cloud).argsort(dim=-1)[..., :4]
    assert torch.equal(nearest.sort(dim=-1).values, brute.sort(dim=-1).values)
    assert torch.equal(nearest[..., 0], torch.arange(5).expand(2, 5))  # every centre is its own nearest point


@pytest.mark.parametrize("mode", ["2d_to_3d", "bidirectional", "off"])
def test_output_shapes(mode):
    model = tiny_model(couple_mode=mode)
    inputs = batch(3, channels=9)  # rgb columns are ignored by a 6-feature model
    out = model(**inputs, output_hidden_states=True)
    depth = TINY_VISION["num_hidden_layers"]
    assert out.logits.shape == out.image_logits.shape == out.point_logits.shape == (3, NUM_LABELS)
    assert out.prototype_logits.shape == (3, NUM_LABELS)
    assert out.image_embeds.shape == out.point_embeds.shape == (3, 16)
    assert out.fused_embeds.shape == (3, 32)
    assert len(out.image_hidden_states) == len(out.point_hidden_states) == depth + 1
    num_patches = (IMAGE_SIZE // TINY_VISION["patch_size"]) ** 2
    assert out.image_hidden_states[-1].shape == (3, 1 + num_patches, 32)
    assert out.point_hidden_states[-1].shape == (3, 1 + 8, 32)  # prompts are dropped after every layer
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    has_couple = hasattr(model.couplefer, "couple_2d_to_3d")
    assert has_couple == (mode != "off")
    assert hasattr(model.couplefer, "couple_3d_to_2d") == (mode == "bidirectional")


def test_sum_fusion_and_colour_points():
    model = tiny_model(fusion="sum", point_input_dim=9)
    out = model(**batch(2, channels=9))
    assert out.fused_embeds.shape == (2, 16)
    torch.testing.assert_close(out.fused_embeds, out.image_embeds + out.point_embeds)
    with pytest.raises(ValueError, match="points"):
        model(**batch(2, channels=6))


def test_bad_inputs_and_config_raise():
    model = tiny_model()
    inputs = batch(2)
    with pytest.raises(ValueError, match="num_point_groups"):
        model(pixel_values=inputs["pixel_values"], points=inputs["points"][:, :4])
    with pytest.raises(ValueError, match="batch sizes"):
        model(pixel_values=inputs["pixel_values"][:1], points=inputs["points"])
    with pytest.raises(ValueError, match="couple_mode"):
        tiny_config(couple_mode="3d_to_2d")
    with pytest.raises(ValueError, match="prototype_mode"):
        tiny_config(prototype_mode="kmeans")


def test_couple_mode_controls_image_to_point_flow():
    inputs = batch(2)
    other_image = torch.rand_like(inputs["pixel_values"])
    for mode, depends in (("off", False), ("2d_to_3d", True), ("bidirectional", True)):
        model = tiny_model(couple_mode=mode)
        with torch.no_grad():
            first = model(pixel_values=inputs["pixel_values"], points=inputs["points"])
            second = model(pixel_values=other_image, points=inputs["points"])
        assert not torch.allclose(first.image_embeds, second.image_embeds)
        same_points = torch.allclose(first.point_embeds, second.point_embeds, atol=1e-6)
        assert same_points != depends, mode
    # in 2d_to_3d mode the image branch never sees the points; in bidirectional mode it does
    other_points = batch(2, seed=1)["points"]
    for mode, depends in (("2d_to_3d", False), ("bidirectional", True)):
        model = tiny_model(couple_mode=mode)
        with torch.no_grad():
            first = model(pixel_values=inputs["pixel_values"], points=inputs["points"]).image_embeds
            second = model(pixel_values=inputs["pixel_values"], points=other_points).image_embeds
        assert torch.allclose(first, second, atol=1e-6) != depends, mode


def test_gate_scales_the_prompts():
    model = tiny_model()
    inputs = batch(2)
    with torch.no_grad():
        for generator in model.couplefer.couple_2d_to_3d:
            generator.gate.zero_()
        gated_off = model(pixel_values=inputs["pixel_values"], points=inputs["points"]).point_embeds
        changed = model(pixel_values=torch.rand_like(inputs["pixel_values"]), points=inputs["points"]).point_embeds
    torch.testing.assert_close(gated_off, changed)


def test_loss_is_sum_of_enabled_terms():
    inputs = batch(4)
    weights = {"ce_loss_weight": 1.0, "branch_ce_loss_weight": 0.3, "contrastive_loss_weight": 0.2,
               "prototype_loss_weight": 0.7}
    reference = tiny_model(**weights)
    full = reference(**inputs)
    expected = sum(weights[weight] * getattr(full, term) for term, weight in LOSS_TERMS.items())
    torch.testing.assert_close(full.loss, expected)
    # the contrastive term is InfoNCE: log(batch) for a model that cannot tell faces apart, here just finite > 0
    assert full.contrastive_loss > 0
    for term, weight in LOSS_TERMS.items():
        switched = tiny_model(**{**weights, weight: 0.0})(**inputs)
        assert getattr(switched, term) is None
        torch.testing.assert_close(switched.loss, full.loss - weights[weight] * getattr(full, term))
    only_none = tiny_model(**dict.fromkeys(weights, 0.0))(**inputs)
    assert only_none.loss.item() == 0.0
    assert reference(pixel_values=inputs["pixel_values"], points=inputs["points"]).loss is None


def test_training_steps_lower_the_loss():
    model = tiny_model().train()
    inputs = batch(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    gates = [generator.gate.grad for generator in model.couplefer.couple_2d_to_3d]
    assert all(grad is not None and grad.abs() > 0 for grad in gates)


def _prototype_distance(model, inputs) -> float:
    with torch.no_grad():
        fused = F.normalize(model(pixel_values=inputs["pixel_values"], points=inputs["points"]).fused_embeds, dim=-1)
        own = F.normalize(model.prototypes, dim=-1)[inputs["labels"]]
    return (1 - (fused * own).sum(-1)).mean().item()


@pytest.mark.parametrize("prototype_mode", ["learned", "ema"])
def test_cluster_loss_pulls_samples_to_their_prototype(prototype_mode):
    only_prototypes = {"ce_loss_weight": 0.0, "branch_ce_loss_weight": 0.0, "contrastive_loss_weight": 0.0,
                       "prototype_loss_weight": 1.0}
    model = tiny_model(prototype_mode=prototype_mode, prototype_momentum=0.5, **only_prototypes)
    inputs = batch(4)
    before = _prototype_distance(model, inputs)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(6):
        out = model(**inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    assert _prototype_distance(model, inputs) < before
    assert isinstance(model.prototypes, torch.nn.Parameter) == (prototype_mode == "learned")


PROTOTYPE_LABELS = {0: torch.tensor([0, 1, 1]), 1: torch.tensor([1, 2, 2])}  # class 0 on rank 0 only, 3 nowhere


def _prototype_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    """One process of the distributed prototype test: two training forwards on this rank's own data."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        model = tiny_model(prototype_mode="ema", prototype_momentum=0.5).train()
        seen = []
        for step in range(2):
            inputs = {**batch(3, seed=10 * rank + step), "labels": PROTOTYPE_LABELS[rank]}
            out = model(**inputs)
            seen.append((out.fused_embeds.detach(), inputs["labels"]))
        torch.save({"prototypes": model.prototypes.detach().clone(), "seen": seen}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e
def test_ema_prototypes_are_equal_across_processes_and_match_one_process(tmp_path):
    """Two gloo processes, each fed different data: the EMA updates are reduced before they are applied, so both
    hold the same prototypes, those of one process updating on the union of the batches."""
    import torch.multiprocessing as mp

    mp.spawn(_prototype_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    torch.testing.assert_close(ranks[0]["prototypes"], ranks[1]["prototypes"], rtol=0, atol=0)

    single = tiny_model(prototype_mode="ema", prototype_momentum=0.5).train()
    initial = single.prototypes.clone()
    for step in range(2):
        embeds = torch.cat([ranks[rank]["seen"][step][0] for rank in range(2)])
        labels = torch.cat([ranks[rank]["seen"][step][1] for rank in range(2)])
        single.update_prototypes(embeds, labels)
    torch.testing.assert_close(ranks[0]["prototypes"], single.prototypes)
    changed = ~torch.isclose(single.prototypes, initial).all(dim=-1)
    assert changed.tolist() == [True, True, True, False]  # classes seen on either rank moved, class 3 did not


def test_from_clip_loads_vision_weights(tmp_path):
    torch.manual_seed(1)
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY_VISION)).eval()
    clip.save_pretrained(tmp_path / "clip")
    model = CoupleFERForExpressionRecognition.from_clip(
        str(tmp_path / "clip"), **{k: v for k, v in tiny_config().to_diff_dict().items() if k != "vision_config"}
    ).eval()
    encoder_state = model.get_image_encoder().state_dict()
    for name, value in clip.state_dict().items():
        torch.testing.assert_close(encoder_state[name], value)
    # in 2d_to_3d mode the image branch is exactly the CLIP tower (normalisation done inside the model)
    pixel_values = batch(2)["pixel_values"]
    mean = torch.tensor(model.config.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.image_std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = clip(pixel_values=(pixel_values - mean) / std).last_hidden_state
        ours = model.couplefer(pixel_values, batch(2)["points"]).image_last_hidden_state
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_save_load_keeps_the_ema_prototypes(tmp_path):
    """The shared save/load and remote-code tests (test_models_common.py) cover the logits; the EMA prototypes are
    buffers of this model alone."""
    model = tiny_model(couple_mode="bidirectional", prototype_mode="ema")
    inputs = batch(2)
    inputs.pop("labels")
    model.save_pretrained(tmp_path / "local")
    reloaded = CoupleFERForExpressionRecognition.from_pretrained(tmp_path / "local").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, model(**inputs).logits, rtol=0, atol=0)
        torch.testing.assert_close(reloaded.prototypes, model.prototypes, rtol=0, atol=0)


def test_lora_trains_and_adapter_roundtrip(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    base_seed = 3
    model = get_peft_model(tiny_model(base_seed), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    # both branches and the CouPle pooling carry adapters
    assert any("image_encoder" in n for n in trainable) and any("point_encoder" in n for n in trainable)
    assert any("couple_2d_to_3d" in n for n in trainable)
    inputs = batch(4)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(**inputs).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n)
    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    restored = PeftModel.from_pretrained(tiny_model(base_seed), tmp_path / "adapter").eval()
    eval_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(restored(**eval_inputs).logits, model(**eval_inputs).logits)
        untuned = tiny_model(base_seed)(**eval_inputs).logits
    assert not torch.allclose(untuned, model(**eval_inputs).logits)


def _geometry_available() -> bool:
    try:
        return importlib.util.find_spec("facet_vlm.geometry") is not None
    except ImportError:
        return False


@pytest.mark.skipif(not _geometry_available(), reason="facet_vlm.geometry is not written yet")
def test_processor_feeds_the_model(tmp_path):
    from couple import CoupleFERProcessor

    model = tiny_model()
    processor = CoupleFERProcessor.from_config(model.config, num_points=NUM_POINTS)
    assert processor.image_size == IMAGE_SIZE
    face = toy_face()
    inputs = processor([face, face], labels=[0, 2])
    assert inputs["pixel_values"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert 0.0 <= inputs["pixel_values"].min() and inputs["pixel_values"].max() <= 1.0
    assert inputs["points"].shape == (2, NUM_POINTS, 6)
    torch.testing.assert_close(inputs["points"][..., 3:].norm(dim=-1), torch.ones(2, NUM_POINTS), atol=1e-3,
                               rtol=0)
    out = model(**inputs)
    assert out.logits.shape == (2, NUM_LABELS) and torch.isfinite(out.loss)
    processor.save_pretrained(tmp_path)
    assert CoupleFERProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()
    coloured = CoupleFERProcessor(image_size=IMAGE_SIZE, num_points=NUM_POINTS, point_channels=9)(face)
    assert coloured["points"].shape == (1, NUM_POINTS, 9)
