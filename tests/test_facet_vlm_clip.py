"""FACET-VLM started from CLIP (a tiny CLIP saved locally by transformers and by open_clip), learned prompt context,
the linear head, zero-shot scoring and the starting-weights record."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition, FacetVLMProcessor
from facet_vlm.arguments import ModelArguments
from facet_vlm.models.facet_vlm.convert_open_clip_to_hf import clip_model_from_open_clip, is_open_clip_tag
from facet_vlm.models.facet_vlm.modeling_facet_vlm import resize_position_embedding
from facet_vlm.starting_weights import describe_record, prompts_are_language, record_starting_weights

TINY_TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
#: A tiny open_clip architecture (registered with `open_clip.add_model_config` or saved as open_clip_config.json).
OPEN_CLIP_TINY = {"embed_dim": 16, "quick_gelu": True,
                  "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
LABELS = {0: "calm", 1: "smiling"}
PROMPTS = {"calm": ["a photo of a calm face."], "smiling": ["a photo of a smiling face."]}
#: FACET-VLM settings of the tests: one texture view (what CLIP sees), two classes with one prompt each.
SINGLE_VIEW = dict(num_views=1, view_angles=[(0, 0)], channels=("texture",), cvsa_heads=2, mtgf_heads=2,
                   id2label=LABELS, label_prompts=PROMPTS)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny transformers CLIP (image 32, patch 8: a 4 x 4 token grid) saved with save_pretrained."""
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=TINY_TOWER, vision_config={**TINY_TOWER, "image_size": 32,
                                                                       "patch_size": 8}, projection_dim=16))
    folder = tmp_path_factory.mktemp("clip")
    clip.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip(clip_dir):
    return CLIPModel.from_pretrained(clip_dir).eval()


@pytest.fixture(scope="module")
def open_clip_model(tmp_path_factory):
    """A tiny open_clip model saved two ways: an open_clip folder (``local-dir:``) and, for a registered
    architecture, a checkpoint file (``ARCH/FILE``). Returns (model, local-dir name, ARCH/FILE name)."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip")
    (folder / "FacetTinyClip-ViT.json").write_text(json.dumps(OPEN_CLIP_TINY))
    open_clip.add_model_config(folder / "FacetTinyClip-ViT.json")
    torch.manual_seed(1)
    source = open_clip.create_model("FacetTinyClip-ViT").eval()
    state = {key: value.contiguous() for key, value in source.state_dict().items()}
    local = folder / "local"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": OPEN_CLIP_TINY}))
    save_file(state, local / "open_clip_model.safetensors")
    save_file(state, folder / "checkpoint.safetensors")
    return source, f"local-dir:{local}", f"FacetTinyClip-ViT/{folder / 'checkpoint.safetensors'}"


def prompt_tokens(texts: list[str]) -> dict[str, torch.Tensor]:
    return FacetVLMProcessor().tokenize(texts)


# ----------------------------------------------------------------------------------------------------- loading
def test_linear_stem_loads_every_clip_tensor(clip_dir, clip, caplog):
    with caplog.at_level(logging.INFO, logger="facet_vlm.models.facet_vlm.modeling_facet_vlm"):
        model = FacetVLMForExpressionRecognition.from_clip(str(clip_dir), **SINGLE_VIEW)
    own = model.facet_vlm.state_dict()
    source = {k: v for k, v in clip.state_dict().items() if not k.endswith("position_ids")}
    for key, value in source.items():
        assert torch.equal(own[key], value), key
    assert model.config.starting_weights == {"source": "clip", "vision_tower": str(clip_dir),
                                             "text_tower": str(clip_dir), "text_tower_trained": False}
    log = caplog.text
    assert f"{len(source)} tensors loaded from CLIP" in log and "CLIP tensors not used: none" in log
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in log and "cvsa." in log


def test_conv_stem_loads_all_but_the_stem_and_resizes_positions(clip_dir, clip, caplog):
    """Conv stem at 64 px: CLIP's 4 x 4 position grid becomes 8 x 8; every other tower tensor is CLIP's."""
    with caplog.at_level(logging.INFO, logger="facet_vlm.models.facet_vlm.modeling_facet_vlm"):
        model = FacetVLMForExpressionRecognition.from_clip(
            str(clip_dir), patch_stem="conv", vision_config={"image_size": 64, "hidden_size": 64}, **SINGLE_VIEW)
    assert model.config.vision_config.hidden_size == 32  # CLIP's: the override is replaced and named
    assert "vision_config.hidden_size=64 -> 32" in caplog.text
    own = model.facet_vlm.state_dict()
    positions = "vision_model.embeddings.position_embedding.weight"
    patch = "vision_model.embeddings.patch_embedding.weight"
    loaded = [key for key in clip.state_dict() if key not in (positions, patch) and not key.endswith("position_ids")]
    for key in loaded:
        assert torch.equal(own[key], clip.state_dict()[key]), key
    assert own[positions].shape == (1 + 8 * 8, 32)
    torch.testing.assert_close(own[positions], resize_position_embedding(clip.state_dict()[positions], 8))
    assert torch.equal(own["vision_model.embeddings.class_embedding"],
                       clip.state_dict()["vision_model.embeddings.class_embedding"])
    stem = [key for key in own if key.startswith("vision_model.embeddings.patch_embedding.")]
    assert stem and patch not in stem
    log = caplog.text
    assert f"CLIP tensors not used: {patch}" in log
    assert "resized: vision_model.embeddings.position_embedding.weight (17, 32) -> (65, 32)" in log
    assert all(key in log.split("start new (")[1] for key in stem if not key.endswith("num_batches_tracked"))
    assert model.config.starting_weights["vision_tower"] == f"{clip_dir} (patch stem new: conv)"
    with torch.no_grad():
        assert model(torch.rand(2, 1, 3, 64, 64)).logits.shape == (2, 2)


def test_position_resize_follows_the_anchors(clip):
    weight = clip.state_dict()["vision_model.embeddings.position_embedding.weight"]
    assert resize_position_embedding(weight, 4) is weight  # the original grid keeps the source as it is
    embeddings = clip.vision_model.embeddings
    for grid in (2, 6):  # without antialiasing: transformers' run-time interpolation
        expected = embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + grid * grid, 32), 8 * grid, 8 * grid)[0]
        torch.testing.assert_close(resize_position_embedding(weight, grid, antialias=False), expected)
    pytest.importorskip("open_clip")
    from open_clip.model import resize_pos_embed

    for grid in (2, 6):  # the default: open_clip's resizing of a checkpoint
        visual = type("Visual", (), {"grid_size": (grid, grid)})
        state = {"visual.positional_embedding": weight.clone()}
        resize_pos_embed(state, type("Model", (), {"visual": visual})())
        torch.testing.assert_close(resize_position_embedding(weight, grid), state["visual.positional_embedding"])


@pytest.mark.parametrize("form", ["local_dir", "architecture_and_file"])
def test_open_clip_checkpoints_load_into_facet_vlm(open_clip_model, form):
    source, local_dir, architecture_file = open_clip_model
    name = local_dir if form == "local_dir" else architecture_file
    assert is_open_clip_tag(name)
    assert ModelArguments(model="facet_vlm", init_from=name).init_from == name  # --init_from takes it
    model = FacetVLMForExpressionRecognition.from_clip(name, center_text_embeds=False, **SINGLE_VIEW).eval()
    assert model.config.text_backend == "open_clip"
    converted = clip_model_from_open_clip(source).state_dict()
    own = model.facet_vlm.state_dict()
    assert all(torch.equal(own[key], value) for key, value in converted.items() if not key.endswith("position_ids"))
    texts = [PROMPTS["calm"][0], PROMPTS["smiling"][0]]
    tokens = torch.nn.functional.pad(prompt_tokens(texts)["input_ids"], (0, 77 - prompt_tokens(texts)["input_ids"]
                                                                         .shape[1]))
    with torch.no_grad():
        torch.testing.assert_close(model.facet_vlm.encode_prompt_features(), source.encode_text(tokens),
                                   rtol=0, atol=1e-5)


def test_open_clip_names_are_told_apart(tmp_path):
    assert is_open_clip_tag("ViT-B-16/openai") and is_open_clip_tag("hf-hub:timm/ViT-B-16-SigLIP")
    assert not is_open_clip_tag("openai/clip-vit-base-patch16")
    assert not is_open_clip_tag(str(tmp_path))
    assert not is_open_clip_tag(f"ViT-B-16/{tmp_path}/missing.safetensors")


# ----------------------------------------------------------------------------------------------------- text side
def test_prompt_features_equal_clips_text_features(clip_dir, clip):
    model = FacetVLMForExpressionRecognition.from_clip(str(clip_dir), **SINGLE_VIEW).eval()
    tokens = prompt_tokens([PROMPTS["calm"][0], PROMPTS["smiling"][0]])
    with torch.no_grad():
        expected = clip.get_text_features(**tokens).pooler_output
        torch.testing.assert_close(model.facet_vlm.encode_prompt_features(), expected, rtol=0, atol=1e-5)


def test_context_from_a_template_reproduces_the_template_prompt(clip_dir, clip):
    """CoOp's init from a template: context = the word embeddings of "a photo of a", prompts = the class words, so
    before any training the features equal CLIP's for the full prompt "a photo of a calm face."."""
    model = FacetVLMForExpressionRecognition.from_clip(
        str(clip_dir), prompt_context_init="a photo of a", prompt_context_class_specific=True,
        **{**SINGLE_VIEW, "label_prompts": None}, class_descriptions={"calm": ["calm face"],
                                                                     "smiling": ["smiling face"]}).eval()
    assert model.config.prompt_context_length == 4
    assert model.config.label_prompts == {"calm": ["calm face."], "smiling": ["smiling face."]}
    tokens = prompt_tokens([PROMPTS["calm"][0], PROMPTS["smiling"][0]])
    with torch.no_grad():
        expected = clip.get_text_features(**tokens).pooler_output
        torch.testing.assert_close(model.facet_vlm.encode_prompt_features(), expected, rtol=0, atol=1e-5)


def tiny_config(**overrides) -> FacetVLMConfig:
    settings = dict(vision_config={**TINY_TOWER, "image_size": 32, "patch_size": 8}, text_config=TINY_TOWER,
                    projection_dim=32, cvsa_heads=2, mtgf_heads=2, cvsa_intermediate_size=64, channels=["depth"])
    settings.update(overrides)
    return FacetVLMConfig(**settings)


def trainable(model) -> set[str]:
    return {name for name, parameter in model.named_parameters() if parameter.requires_grad}


def test_only_the_intended_parameters_train():
    frozen = FacetVLMForExpressionRecognition(tiny_config())
    assert not any(".text_model." in name or "text_projection" in name for name in trainable(frozen))
    context = FacetVLMForExpressionRecognition(tiny_config(prompt_context_length=3))
    text_side = {name for name in trainable(context) if "text" in name or "prompt_context" in name}
    assert text_side == {"facet_vlm.prompt_context.context"}
    loss = context(torch.rand(2, 5, 1, 32, 32), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert context.facet_vlm.prompt_context.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in context.facet_vlm.text_model.parameters())

    from facet_vlm.training.build import apply_lora

    for text_lora in (False, True):
        model = apply_lora(FacetVLMForExpressionRecognition(tiny_config(prompt_context_length=3,
                                                                        text_tower_lora=text_lora)),
                           ModelArguments(model="facet_vlm", peft="lora"))
        names = trainable(model)
        assert any("vision_model" in n and "lora_" in n for n in names)
        assert any("text_model" in n and "lora_" in n for n in names) == text_lora
        assert not any(("text_model" in n or "vision_model" in n) and "lora_" not in n for n in names)
        assert any("prompt_context" in n for n in names)
        assert record_starting_weights(model, None)["text_tower_trained"] == text_lora


def test_learned_context_embeddings_are_recomputed_in_training_and_cached_in_evaluation():
    model = FacetVLMForExpressionRecognition(tiny_config(prompt_context_length=2))
    calls = []
    model.facet_vlm.text_model.encoder.register_forward_hook(lambda *args: calls.append(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    pixels, labels = torch.rand(2, 5, 1, 32, 32), torch.tensor([0, 1])
    model.train()
    texts = []
    for _ in range(2):
        output = model(pixels, labels=labels)
        texts.append(output.text_embeds.detach().clone())
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert len(calls) == 2 and not torch.allclose(texts[0], texts[1])
    model.eval()
    with torch.no_grad():
        first = model(pixels).text_embeds
        second = model(pixels).text_embeds
    assert len(calls) == 3 and torch.equal(first, second)


def test_new_label_set_reuses_the_learned_context():
    for class_specific in (False, True):
        torch.manual_seed(0)
        model = FacetVLMForExpressionRecognition(tiny_config(prompt_context_length=2,
                                                             prompt_context_class_specific=class_specific))
        with torch.no_grad():
            model.facet_vlm.prompt_context.context.normal_()
        old = model.facet_vlm.prompt_context.context.detach().clone()
        model.set_labels(["surprise", "contempt", "anger"])
        new = model.facet_vlm.prompt_context.context.detach()
        if class_specific:
            assert new.shape[0] == 3 and model.facet_vlm.prompt_context.context.requires_grad
            torch.testing.assert_close(new[0], old[5])
            torch.testing.assert_close(new[2], old[0])
            torch.testing.assert_close(new[1], old.mean(dim=0))
        else:
            assert torch.equal(new, old)
        assert model.config.label_prompts["contempt"] == ["contempt."]
        with torch.no_grad():
            assert model(torch.rand(1, 5, 1, 32, 32)).logits.shape == (1, 3)


def test_linear_head_has_no_text_side():
    model = FacetVLMForExpressionRecognition(tiny_config(class_head="linear")).eval()
    base = model.facet_vlm
    assert base.text_model is None and base.mtgf is None and base.prompt_context is None
    pixels = torch.rand(2, 5, 1, 32, 32)
    with torch.no_grad():
        output = model(pixels)
        torch.testing.assert_close(output.logits, base.linear_head(output.face_embeds))
        assert output.text_embeds is None
    with pytest.raises(ValueError, match="linear"):
        model.zero_shot(pixels)
    head = base.linear_head.weight.detach().clone()
    model.set_labels(["happiness", "pain"])
    torch.testing.assert_close(base.linear_head.weight[0], head[3])
    assert record_starting_weights(model, None)["text_tower"] == "none (linear head)"


# ----------------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_logits_equal_clips_image_text_similarity(clip_dir, clip):
    """One view, one channel group, fusion bypassed: CLIP's logits_per_image, whatever center_text_embeds says."""
    model = FacetVLMForExpressionRecognition.from_clip(str(clip_dir), **SINGLE_VIEW).eval()
    assert model.config.center_text_embeds
    image = torch.rand(3, 1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = prompt_tokens([PROMPTS["calm"][0], PROMPTS["smiling"][0]])
    normalised = (image[:, 0] - model.facet_vlm.image_mean) / model.facet_vlm.image_std
    with torch.no_grad():
        expected = clip(pixel_values=normalised, **tokens).logits_per_image
        torch.testing.assert_close(model.zero_shot(image).logits, expected, rtol=0, atol=1e-5)
        model.set_labels(["calm", "smiling"], prompts=[["a photo of a smiling face."], ["a photo of a calm face."]])
        torch.testing.assert_close(model.zero_shot(image).logits, expected.flip(-1), rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------- records
def test_models_saved_with_the_previous_config_fields_still_load(tmp_path):
    model = FacetVLMForExpressionRecognition(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    new_fields = ("class_head", "prompt_context_length", "prompt_context_init", "prompt_context_class_specific",
                  "prompt_context_init_ids", "text_tower_lora", "starting_weights")
    assert all(field in config for field in new_fields)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k not in new_fields}))
    loaded = FacetVLMForExpressionRecognition.from_pretrained(tmp_path).eval()
    pixels = torch.rand(2, 5, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=1e-6)
    assert loaded.config.class_head == "text" and loaded.config.prompt_context_length == 0


def test_starting_weights_records(clip_dir, tmp_path):
    random_model = FacetVLMForExpressionRecognition(tiny_config())
    record = record_starting_weights(random_model, None)
    assert record == {"source": "random", "vision_tower": "random", "text_tower": "random",
                      "text_tower_trained": False}
    assert not prompts_are_language(record)
    clip_model = FacetVLMForExpressionRecognition.from_clip(str(clip_dir), freeze_text_tower=False, **SINGLE_VIEW)
    record = record_starting_weights(clip_model, str(clip_dir))
    assert record["source"] == "clip" and record["text_tower"] == str(clip_dir) and record["text_tower_trained"]
    assert prompts_are_language(record)
    clip_model.save_pretrained(tmp_path)
    tuned = FacetVLMForExpressionRecognition.from_pretrained(tmp_path)
    record = record_starting_weights(tuned, str(tmp_path))
    assert record["source"] == "saved_model" and record["vision_tower"] == str(tmp_path)
    assert record["saved_model_started_from"]["text_tower"] == str(clip_dir) and prompts_are_language(record)
    assert describe_record(record).startswith(f"vision tower: saved model {tmp_path}")


def test_zero_shot_command_scores_a_clip_on_prompts(clip_dir, scans, cache_dir, tmp_path):
    """scripts/evaluate_model.py --zero_shot: swapping the prompts of two classes swaps their predictions."""
    from helpers import run_command

    from facet_vlm.cli import evaluate_main

    labels = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    prompts = {label: [f"a photo of a face showing {label}."] for label in labels}
    swapped = {**prompts, "anger": prompts["happiness"], "happiness": prompts["anger"]}
    matrices = []
    for name, given in (("plain", prompts), ("swapped", swapped)):
        (tmp_path / f"{name}.json").write_text(json.dumps(given))
        done = run_command(evaluate_main, str(clip_dir), "--zero_shot", "--dataset", f"synthetic:{scans}",
                           "--cache_dir", str(cache_dir), "--output_dir", str(tmp_path / name), "--prompts",
                           str(tmp_path / f"{name}.json"), "--model_config",
                           '{"num_views": 1, "view_angles": [[0, 0]], "channels": ["texture"]}')
        assert done.returncode == 0, done.stderr[-3000:]
        results = json.loads((tmp_path / name / "evaluation_results.json").read_text())
        assert results["zero_shot"] and results["prompts"] == given and results["labels"] == labels
        assert results["starting_weights"]["vision_tower"] == str(clip_dir)
        matrices.append(torch.tensor(results["confusion_matrix"]))
    assert matrices[0].sum() == 18
    torch.testing.assert_close(matrices[1], matrices[0][:, [3, 1, 2, 0, 4, 5]])


@pytest.mark.parametrize("recipe", ["facet_vlm_synthetic_small", "facet_vlm_clip_b16"])
def test_every_recipe_starts_from_clip(recipe, clip_dir, clip, tmp_path):
    """The tuned small recipe (conv stem, 64 px, depth + normals) and the paper's setting (LoRA on the vision
    tower, frozen text tower) both build on a CLIP: its layers, class token and text tower load."""
    from pathlib import Path

    from facet_vlm.arguments import parse_args
    from facet_vlm.training.build import build_model

    config = Path(__file__).resolve().parents[1] / "facet_vlm" / "configs" / f"{recipe}.json"
    model_args, _, _ = parse_args(["--config", str(config), "--init_from", str(clip_dir), "--output_dir",
                                   str(tmp_path)])
    model = build_model(model_args, ["anger", "disgust", "fear", "happiness", "sadness", "surprise"])
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    state = base.facet_vlm.state_dict()
    source = clip.state_dict()
    for key in ("vision_model.encoder.layers.1.mlp.fc2.weight", "vision_model.embeddings.class_embedding",
                "text_model.encoder.layers.0.self_attn.k_proj.weight", "text_projection.weight"):
        merged = key.replace(".weight", ".base_layer.weight") if key.replace(".weight", ".base_layer.weight") \
            in state else key
        assert torch.equal(state[merged], source[key]), key
    record = base.config.starting_weights
    assert record["source"] == "clip" and record["text_tower"] == str(clip_dir)
    assert not record["text_tower_trained"]
    names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    if model_args.peft == "lora":
        assert any("vision_model" in n and "lora_" in n for n in names)
        assert not any("text_model" in n for n in names)
    else:
        assert base.config.patch_stem == "conv" and base.config.image_size == 64
        assert state["vision_model.embeddings.position_embedding.weight"].shape == (1 + 4 * 4, 32)


def test_card_and_space_name_the_starting_weights(clip_dir):
    import importlib.util
    from pathlib import Path

    from facet_vlm.hub import RunResults, build_model_card

    random_model = FacetVLMForExpressionRecognition(tiny_config())
    record_starting_weights(random_model, None)
    card = build_model_card(random_model.config.to_dict(), "org/tiny").text
    assert "- **Vision tower:** random" in card and "- **Text tower trained:** no (frozen)" in card
    assert "learned class anchors, not language" in card

    clip_record = {"source": "clip", "vision_tower": "openai/clip-vit-base-patch16 (patch stem new: conv)",
                   "text_tower": "openai/clip-vit-base-patch16", "text_tower_trained": False}
    results = RunResults.from_dict({"accuracy": 0.5, "dataset": "synthetic", "starting_weights": clip_record})
    card = build_model_card(random_model.config.to_dict(), "org/tiny", results).text
    assert "- **Text tower:** CLIP `openai/clip-vit-base-patch16`" in card
    assert "learned class anchors" not in card

    app_file = Path(__file__).resolve().parents[1] / "hub" / "space" / "app.py"
    spec = importlib.util.spec_from_file_location("space_app_for_weights", app_file)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    note = app.starting_weights_note(random_model)
    assert "vision tower: random" in note and "learned class anchors, not language" in note
    clip_model = FacetVLMForExpressionRecognition.from_clip(str(clip_dir), **SINGLE_VIEW)
    note = app.starting_weights_note(clip_model)
    assert f"text tower: CLIP {clip_dir}" in note and "class anchors" not in note
