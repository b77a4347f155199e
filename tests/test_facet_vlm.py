"""FACET-VLM on tiny random configs (hidden 32, 2 layers, image 32, patch 8): shapes, training, save/load, set
semantics of views, label switching, ablations, zero-shot, CLIP loading, PEFT and the processor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, CLIPConfig, CLIPModel

from facet_vlm import (
    Face,
    FacetVLMConfig,
    FacetVLMForExpressionRecognition,
    FacetVLMModel,
    FacetVLMProcessor,
    labels,
)
from facet_vlm.models.facet_vlm.configuration_facet_vlm import (
    DEFAULT_CLASS_DESCRIPTIONS,
    DEFAULT_LABELS,
    DEFAULT_PROMPT_TEMPLATES,
)
from facet_vlm.models.facet_vlm.convert_open_clip_to_hf import clip_model_from_open_clip
from facet_vlm.models.facet_vlm.modeling_facet_vlm import (
    multiview_consistency_loss,
    sample_sequence_frames,
    view_agreement_loss,
)
from facet_vlm.models.facet_vlm.tokenization_facet_vlm import END_TOKEN_ID, START_TOKEN_ID, clip_token_ids

TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_config(**overrides) -> FacetVLMConfig:
    settings = dict(
        vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8}, text_config=TINY_TOWER, projection_dim=32,
        cvsa_heads=2, mtgf_heads=2, cvsa_intermediate_size=64, num_frames=4,
    )
    settings.update(overrides)
    return FacetVLMConfig(**settings)


def tiny_model(seed: int = 0, **overrides) -> FacetVLMForExpressionRecognition:
    torch.manual_seed(seed)
    return FacetVLMForExpressionRecognition(tiny_config(**overrides)).eval()


def renders(*leading: int, views: int = 5, seed: int = 0) -> torch.Tensor:
    """Random renderer-range input: texture and depth in [0, 1], normals in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(*leading, views, 7, 32, 32, generator=generator)
    pixels[..., 4:, :, :] = pixels[..., 4:, :, :] * 2 - 1
    return pixels


def test_config_defaults_are_the_label_module_data():
    assert DEFAULT_LABELS == labels.BASIC_EXPRESSIONS
    assert DEFAULT_PROMPT_TEMPLATES == labels.PROMPT_TEMPLATES
    for name, words in DEFAULT_CLASS_DESCRIPTIONS.items():
        assert words == labels.CLASS_DESCRIPTIONS[name]
    config = tiny_config()
    assert config.labels == list(labels.BASIC_EXPRESSIONS)
    assert config.label_prompts["anger"] == labels.class_prompts("anger")
    assert config.prompt_input_ids[0][0] == clip_token_ids([labels.class_prompts("anger")[0]])[0]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"channels": ("texture", "albedo")}, "channels"),
        ({"num_views": 3}, "view_angles"),
        ({"cvsa_heads": 5}, "cvsa_heads"),
        ({"image_size": 64}, "image_size"),
        ({"id2label": {0: "anger"}}, "2 classes"),
        ({"text_backend": "jax"}, "text_backend"),
        ({"prompt_templates": ["no slot"]}, "template"),
        ({"frame_reference": "last"}, "frame_reference"),
    ],
)
def test_config_rejects_bad_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_forward_backward_shapes_3d_and_4d():
    model = tiny_model().train()
    labels_ = torch.tensor([0, 3])
    out = model(renders(2), labels=labels_)
    assert out.logits.shape == (2, 6) and out.view_logits.shape == (2, 5, 6)
    assert out.face_embeds.shape == (2, 32) and out.view_embeds.shape == (2, 5, 32)
    assert out.view_weights.shape == (2, 6, 5) and out.text_embeds.shape == (6, 32)
    torch.testing.assert_close(out.view_weights.sum(-1), torch.ones(2, 6))
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(6))
    out.loss.backward()
    inner = model.facet_vlm
    assert inner.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert inner.mtgf.attention.q_proj.weight.grad.abs().sum() > 0
    assert inner.cvsa.pool.query.grad.abs().sum() > 0
    assert all(p.grad is None for p in inner.text_model.parameters())

    model.zero_grad()
    out4 = model(renders(2, 3), labels=labels_)
    assert out4.logits.shape == (2, 6) and out4.face_embeds.shape == (2, 32)
    assert out4.view_embeds.shape == (2, 5, 32) and out4.view_weights.shape == (2, 6, 5)
    out4.loss.backward()
    assert inner.temporal.position_embedding.weight.grad[:3].abs().sum() > 0
    assert inner.temporal.position_embedding.weight.grad[3:].abs().sum() == 0
    with pytest.raises(ValueError, match="num_frames"):
        model(renders(1, 5))
    with pytest.raises(ValueError, match="channels"):
        model(renders(1)[:, :, :6])


def test_frame_reference_compares_every_frame_with_the_first():
    frames = torch.randn(3, 4, 32)
    static = frames[:, :1].expand(-1, 4, -1)
    subtract = tiny_model(frame_reference="subtract_first").facet_vlm.temporal
    assert torch.equal(subtract.frame_inputs(static), torch.zeros_like(static))
    torch.testing.assert_close(subtract.frame_inputs(frames), frames - frames[:, :1])
    append = tiny_model(frame_reference="append_first").facet_vlm.temporal
    expected = append.reference_projection(torch.cat([frames, frames - frames[:, :1]], dim=-1))
    torch.testing.assert_close(append.frame_inputs(frames), expected)
    assert torch.equal(tiny_model().facet_vlm.temporal.frame_inputs(frames), frames)
    with pytest.raises(ValueError, match="at least 2 frames"):
        subtract(frames[:, :1])


def test_subtracting_the_first_frame_ignores_what_all_frames_share():
    """Two different faces held still look the same to the temporal model; with frame_reference "none" they do not."""
    first = renders(1, 1, seed=1).expand(-1, 3, -1, -1, -1, -1)
    second = renders(1, 1, seed=2).expand(-1, 3, -1, -1, -1, -1)
    model = tiny_model(frame_reference="subtract_first")
    with torch.no_grad():
        torch.testing.assert_close(model(first).logits, model(second).logits)
        assert not torch.allclose(model(first).face_embeds, model(renders(1, 3, seed=3)).face_embeds)
    plain = tiny_model()
    with torch.no_grad():
        assert not torch.allclose(plain(first).logits, plain(second).logits)


def test_loss_decreases_on_a_fixed_batch():
    model = tiny_model(num_views=2, view_angles=[(0, 0), (30, 0)]).train()
    pixels, targets = renders(4, views=2), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(6):
        loss = model(pixels, labels=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_consistency_loss_terms():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    agreeing_views = logits[:, None].repeat(1, 3, 1)
    embeds = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[:, None].repeat(1, 3, 1)
    # views agree with the fused prediction, same-class embeddings coincide, the classes are orthogonal (distance 1)
    assert multiview_consistency_loss(logits, agreeing_views, embeds, torch.tensor([0, 1]), margin=0.5).abs() < 1e-6
    assert multiview_consistency_loss(logits, agreeing_views, embeds, torch.tensor([0, 1]), margin=1.5) > 0
    assert multiview_consistency_loss(logits, agreeing_views.flip(-1), embeds) > 0
    model = tiny_model(consistency_weight=0.0)
    out = model(renders(2), labels=torch.tensor([1, 2]))
    assert out.consistency_loss is None and torch.equal(out.loss, out.ce_loss)


@pytest.mark.parametrize("sequence", [False, True])
def test_consistency_loss_uses_each_views_own_prediction(sequence):
    """CVSA mixes the views, but the view embeddings and predictions of the consistency loss are taken before it:
    changing the pixels of view 3 changes the fused prediction and view 3's own, and no other view's."""
    model = tiny_model()
    pixels = renders(2, 3) if sequence else renders(2)
    changed = pixels.clone()
    changed[..., 3, :, :, :] = renders(2, 3, seed=1)[..., 3, :, :, :] if sequence else renders(2, seed=1)[:, 3]
    targets = torch.tensor([1, 4])
    with torch.no_grad():
        before, after = model(pixels, labels=targets), model(changed, labels=targets)
    others = [0, 1, 2, 4]
    torch.testing.assert_close(after.view_embeds[:, others], before.view_embeds[:, others])
    torch.testing.assert_close(after.view_logits[:, others], before.view_logits[:, others])
    assert not torch.allclose(after.view_logits[:, 3], before.view_logits[:, 3], atol=1e-4)
    assert not torch.allclose(after.logits, before.logits, atol=1e-4)
    assert not torch.allclose(after.face_embeds, before.face_embeds, atol=1e-4)
    for out in (before, after):
        expected = multiview_consistency_loss(out.logits, out.view_logits, out.view_embeds, targets, margin=0.5)
        torch.testing.assert_close(out.consistency_loss, expected)


def test_consistency_margin_term_is_a_switch():
    pixels, targets = renders(3), torch.tensor([0, 0, 2])
    with torch.no_grad():
        with_margin = tiny_model()(pixels, labels=targets)
        without_margin = tiny_model(use_consistency_margin=False)(pixels, labels=targets)
    torch.testing.assert_close(without_margin.logits, with_margin.logits)
    torch.testing.assert_close(
        without_margin.consistency_loss, view_agreement_loss(without_margin.logits, without_margin.view_logits)
    )
    assert with_margin.consistency_loss > without_margin.consistency_loss + 1e-3


def test_save_and_auto_model_round_trip(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    pixels = renders(2)
    with torch.no_grad():
        expected = model(pixels).logits
        base = AutoModel.from_pretrained(tmp_path).eval()
        head = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
        assert isinstance(base, FacetVLMModel) and isinstance(head, FacetVLMForExpressionRecognition)
        torch.testing.assert_close(base(pixels).logits, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(head(pixels).logits, expected, rtol=0, atol=1e-6)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["prompt_input_ids"] == model.config.prompt_input_ids


def test_views_are_a_set_without_view_embeddings():
    permutation = torch.tensor([3, 0, 4, 1, 2])
    pixels = renders(2)
    for overrides in ({}, {"cvsa_use_patch_tokens": True}):
        model = tiny_model(use_view_embeddings=False, **overrides)
        with torch.no_grad():
            out, permuted = model(pixels), model(pixels[:, permutation])
        torch.testing.assert_close(permuted.logits, out.logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(permuted.face_embeds, out.face_embeds, rtol=0, atol=1e-5)
        torch.testing.assert_close(permuted.view_weights, out.view_weights[:, :, permutation], rtol=0, atol=1e-5)
    with torch.no_grad():
        positional = tiny_model()
        assert not torch.allclose(positional(pixels[:, permutation]).logits, positional(pixels).logits, atol=1e-5)


def test_new_label_set_without_retraining(tmp_path):
    model = tiny_model(center_text_embeds=False)  # without centring, a class embedding depends on its prompts only
    pixels = renders(2)
    vision_before = {k: v.clone() for k, v in model.facet_vlm.vision_model.state_dict().items()}
    with torch.no_grad():
        six = model(pixels)
        model.set_labels(["positive", "negative", "surprise"])
        three = model(pixels)
    assert three.logits.shape == (2, 3) and model.config.id2label == {0: "positive", 1: "negative", 2: "surprise"}
    assert model.config.label2id["negative"] == 1
    # "surprise" keeps its prompts, so its text embedding and (being a per-class fusion) its logit are unchanged
    torch.testing.assert_close(three.text_embeds[2], six.text_embeds[5], rtol=0, atol=1e-6)
    torch.testing.assert_close(three.logits[:, 2], six.logits[:, 5], rtol=0, atol=1e-5)
    assert all(torch.equal(v, vision_before[k]) for k, v in model.facet_vlm.vision_model.state_dict().items())

    with torch.no_grad():
        model.set_labels(["positive", "negative", "surprise"], prompts=[["a grin."], ["a frown."], ["a gasp."]])
        reprompted = model(pixels)
    assert not torch.allclose(reprompted.text_embeds, three.text_embeds)
    model.save_pretrained(tmp_path)
    reloaded = FacetVLMForExpressionRecognition.from_pretrained(tmp_path).eval()
    assert reloaded.config.labels == ["positive", "negative", "surprise"]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, reprompted.logits, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="prompt lists"):
        model.set_labels(["a", "b"], prompts=[["x"]])
    assert model.config.labels == ["positive", "negative", "surprise"]


def test_text_embeddings_are_cached():
    calls = []
    model = tiny_model()
    model.facet_vlm.text_model.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        model(renders(1))
        model(renders(1))
    model.train()
    model(renders(2), labels=torch.tensor([0, 1])).loss.backward()
    model(renders(2), labels=torch.tensor([0, 1]))
    assert len(calls) == 2  # once in eval, once after switching to training; the tower is frozen

    calls.clear()
    trainable = tiny_model(freeze_text_tower=False).train()
    trainable.facet_vlm.text_model.register_forward_hook(lambda *args: calls.append(1))
    trainable(renders(2), labels=torch.tensor([0, 1])).loss.backward()
    trainable(renders(2), labels=torch.tensor([0, 1]))
    assert len(calls) == 2 and trainable.facet_vlm.text_projection.weight.grad is not None


def test_centred_text_embeddings_separate_the_classes():
    def mean_pairwise_cosine(model):
        with torch.no_grad():
            text = model(renders(1)).text_embeds
        off_diagonal = ~torch.eye(len(text), dtype=torch.bool)
        return (text @ text.T)[off_diagonal].mean().item(), text

    raw, raw_text = mean_pairwise_cosine(tiny_model(center_text_embeds=False))
    centred, centred_text = mean_pairwise_cosine(tiny_model(center_text_embeds=True))
    assert raw > 0.5  # prompt ensembles share most words: raw class embeddings nearly coincide
    assert centred < 0 and centred < raw
    torch.testing.assert_close(centred_text.norm(dim=-1), torch.ones(len(centred_text)))
    expected = raw_text - raw_text.mean(dim=0, keepdim=True)
    torch.testing.assert_close(centred_text, expected / expected.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize(
    "switch",
    [{"use_cvsa": False}, {"use_mtgf": False}, {"use_view_embeddings": False}, {"cvsa_use_patch_tokens": True}],
)
def test_ablation_switches_change_the_computation(switch):
    pixels = renders(2)
    with torch.no_grad():
        reference = tiny_model()(pixels)
        ablated_model = tiny_model(**switch)
        ablated = ablated_model(pixels)
    assert not torch.allclose(ablated.logits, reference.logits, atol=1e-4)
    if switch == {"use_mtgf": False}:
        torch.testing.assert_close(ablated.view_weights, torch.full((2, 6, 5), 0.2))
        face = torch.nn.functional.normalize(ablated.face_embeds, dim=-1)
        scale = ablated_model.facet_vlm.logit_scale.exp()
        torch.testing.assert_close(ablated.logits, scale * face @ ablated.text_embeds.t())
    if switch == {"use_cvsa": False}:
        torch.testing.assert_close(ablated.face_embeds, ablated.view_embeds.mean(dim=1))


def test_zero_shot_uses_only_the_pretrained_towers():
    model = tiny_model()
    pixels = renders(2)
    with torch.no_grad():
        before, fused_before = model.zero_shot(pixels), model(pixels)
        for module in (model.facet_vlm.cvsa, model.facet_vlm.mtgf):
            for parameter in module.parameters():
                parameter.add_(0.5)
        after, fused_after = model.zero_shot(pixels), model(pixels)
    torch.testing.assert_close(after.logits, before.logits)
    assert not torch.allclose(fused_after.logits, fused_before.logits)
    assert model.zero_shot(renders(2, 3)).logits.shape == (2, 6)


def test_from_clip_local_folder_matches_clip_zero_shot(tmp_path):
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=TINY_TOWER, vision_config={**TINY_TOWER, "image_size": 32,
                                                                       "patch_size": 8}, projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    prompts = [["a photo of a calm face."], ["a photo of a smiling face."]]
    model = FacetVLMForExpressionRecognition.from_clip(
        str(tmp_path / "clip"), num_views=1, view_angles=[(0, 0)], channels=("texture",), cvsa_heads=2, mtgf_heads=2,
        id2label={0: "calm", 1: "smiling"}, label_prompts={"calm": prompts[0][0:1], "smiling": prompts[1][0:1]},
        center_text_embeds=False,  # CLIP's own zero-shot recipe
    ).eval()
    assert model.config.projection_dim == 16 and model.config.pretrained_clip_name == str(tmp_path / "clip")
    image = torch.rand(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = FacetVLMProcessor().tokenize([p[0] for p in prompts])
    normalised = (image[:, 0] - model.facet_vlm.image_mean) / model.facet_vlm.image_std
    with torch.no_grad():
        expected = clip(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                        pixel_values=normalised).logits_per_image
        torch.testing.assert_close(model.zero_shot(image).logits, expected, rtol=0, atol=1e-5)


def test_open_clip_conversion_matches_open_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    config = {"embed_dim": 16, "quick_gelu": True,
              "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    (tmp_path / "FacetTiny-ViT.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "FacetTiny-ViT.json")
    torch.manual_seed(0)
    source = open_clip.create_model("FacetTiny-ViT").eval()
    converted = clip_model_from_open_clip(source)
    images = torch.randn(2, 3, 32, 32)
    tokens = FacetVLMProcessor().tokenize(["a smiling face.", "a face showing anger."])
    with torch.no_grad():
        torch.testing.assert_close(converted.get_image_features(pixel_values=images).pooler_output,
                                   source.encode_image(images), rtol=0, atol=1e-5)
        padded = torch.nn.functional.pad(tokens["input_ids"], (0, 77 - tokens["input_ids"].shape[1]))
        torch.testing.assert_close(converted.get_text_features(input_ids=tokens["input_ids"]).pooler_output,
                                   source.encode_text(padded), rtol=0, atol=1e-5)


def test_lora_adapter_round_trip(tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_model()
    model.save_pretrained(tmp_path / "base")
    pixels, targets = renders(2), torch.tensor([1, 4])
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=r".*vision_model.*\.(q_proj|v_proj)")
    tuned = peft.get_peft_model(model, lora)
    trainable = [name for name, p in tuned.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name and "vision_model" in name for name in trainable)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    tuned.train()
    for _ in range(3):
        loss = tuned(pixel_values=pixels, labels=targets).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned.eval()
    tuned.save_pretrained(tmp_path / "adapter")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in key for key in saved)
    base = FacetVLMForExpressionRecognition.from_pretrained(tmp_path / "base").eval()
    with torch.no_grad():
        untuned = base(pixels).logits
        reloaded = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        expected = tuned(pixel_values=pixels).logits
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(expected, untuned, atol=1e-4)


def test_sample_sequence_frames():
    assert sample_sequence_frames(10, 4) == [0, 3, 6, 9]
    assert sample_sequence_frames(3, 5) == sorted(sample_sequence_frames(3, 5))
    assert len(sample_sequence_frames(3, 5)) == 5
    frames = sample_sequence_frames(40, 7, mode="onset_apex_offset", apex_index=10)
    assert len(frames) == 7 and frames[0] == 0 and frames[-1] == 39 and 10 in frames
    assert frames == sorted(frames)
    with pytest.raises(ValueError, match="apex"):
        sample_sequence_frames(5, 3, mode="onset_apex_offset", apex_index=7)
    with pytest.raises(ValueError, match="mode"):
        sample_sequence_frames(5, 3, mode="random")


def test_processor_text_and_faces(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("facet_vlm.geometry", reason="facet_vlm.geometry (the renderer) is not available")
    processor = FacetVLMProcessor(image_size=32)
    tokens = processor(text=["a happy face.", "anger"])
    assert tokens["input_ids"][:, 0].tolist() == [START_TOKEN_ID] * 2
    assert tokens["input_ids"][1, tokens["attention_mask"][1].sum() - 1] == END_TOKEN_ID

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=75.0)
    face = Face(sphere.vertices, sphere.faces, colors=np.full((len(sphere.vertices), 3), 200, np.uint8))
    pixel_values = processor(faces=[face, face.copy()])["pixel_values"]
    assert pixel_values.shape == (2, 5, 7, 32, 32) and pixel_values.dtype == torch.float32
    frontal_centre = pixel_values[0, 0, :, 15:17, 15:17].mean(dim=(-1, -2))
    torch.testing.assert_close(frontal_centre[:3], torch.full((3,), 200 / 255), atol=0.02, rtol=0)
    assert frontal_centre[6] > 0.95  # a sphere faces the camera at the centre of the frontal view: normal z ~ 1
    assert pixel_values[:, :, :4].min() >= 0 and pixel_values[:, :, 4:].abs().max() <= 1

    sequence = processor(faces=[[face, face, face]])["pixel_values"]
    assert sequence.shape == (1, 3, 5, 7, 32, 32)
    model = tiny_model()
    with torch.no_grad():
        assert model(**processor(faces=[face])).logits.shape == (1, 6)

    processor.save_pretrained(tmp_path)
    assert FacetVLMProcessor.from_pretrained(tmp_path).to_dict() == processor.to_dict()
    assert FacetVLMProcessor.from_config(model.config).image_size == 32
