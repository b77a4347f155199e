"""The neutral reference: an expressive scan registered to the same person's neutral scan on the stable landmarks,
the ``neutral_reference="difference"`` inputs of AFNet-M and CoupleFER (points measured against the neutral
surface), and training runs that pair every scan with its subject's neutral scan (and refuse a subject without
one)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import run_command, run_train, tiny_config, toy_face

from couple import (
    AFNetMConfig,
    AFNetMForExpressionRecognition,
    AFNetMProcessor,
    CoupleFERConfig,
    CoupleFERForExpressionRecognition,
    CoupleFERProcessor,
)
from facet_vlm.errors import ConfigError, DatasetLayoutError, FormatError
from facet_vlm.face import Face
from facet_vlm.geometry import align, surface_offsets
from facet_vlm.geometry.align import align_to_reference

MOUTH = ("mouth_left", "mouth_right", "upper_lip", "lower_lip")


def rigid(face, degrees: float = 12.0, shift=(7.0, -4.0, 15.0)):
    """The face turned about its vertical and its horizontal axis and shifted (a head that moved)."""
    a = np.radians(degrees)
    yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    rotation = yaw @ pitch

    def move(points):
        return (points.astype(np.float64) @ rotation.T + np.asarray(shift)).astype(np.float32)

    return face.copy(vertices=move(face.vertices), landmarks=move(face.landmarks))


def open_mouth(face, drop_mm: float = 12.0, back_mm: float = 6.0):
    """The mouth landmarks moved down by `drop_mm` and back by `back_mm`, the skin below the nose down (in the face's
    own frame)."""
    names = list(face.landmark_names)
    landmarks = face.landmarks.copy()
    for name in MOUTH:
        landmarks[names.index(name), 1] -= drop_mm
        landmarks[names.index(name), 2] -= back_mm
    vertices = face.vertices.copy()
    below = vertices[:, 1] < -15.0
    vertices[below, 1] -= drop_mm * np.exp(-((vertices[below, 1] + 30.0) / 20.0) ** 2)
    return face.copy(vertices=vertices, landmarks=landmarks)


def test_registration_recovers_the_head_motion_that_own_alignment_confuses_with_the_mouth():
    neutral = toy_face()
    expressive = rigid(open_mouth(neutral))
    reference = align(neutral)
    registered = align_to_reference(expressive, neutral)
    record = registered.meta["align"]
    assert record["method"] == "reference" and record["reference_rms"] < 1e-3
    assert "nose_tip" in record["reference_points"] and not set(MOUTH) & set(record["reference_points"])
    assert record["rotation"] == reference.meta["align"]["rotation"]
    # The eyes and the nose land where the neutral scan's are; each scan's own alignment (its up axis runs from
    # the mouth to the eyes) tilts the opened face instead.
    names = list(neutral.landmark_names)
    stable = [names.index(name) for name in ("left_eye_outer", "right_eye_outer", "left_eye_inner", "nose_tip")]
    own = align(expressive)
    registered_error = np.abs(registered.landmarks[stable] - reference.landmarks[stable]).max()
    own_error = np.abs(own.landmarks[stable] - reference.landmarks[stable]).max()
    assert registered_error < 1e-4 < 0.005 < own_error  # units of the 90-mm crop radius


def test_registration_needs_shared_stable_landmarks_and_raw_scans():
    neutral = toy_face()
    bare = neutral.copy(landmarks=neutral.landmarks[:2], landmark_names=list(neutral.landmark_names)[:2])
    bare.meta["path"] = "scan_without_landmarks.wrl"
    with pytest.raises(FormatError, match="scan_without_landmarks.wrl.*|only 2 stable landmarks"):
        align_to_reference(bare, neutral)
    with pytest.raises(ConfigError, match="raw scans"):
        align_to_reference(align(neutral), neutral)


def tiny(**overrides) -> AFNetMForExpressionRecognition:
    torch.manual_seed(0)
    config = AFNetMConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], fusion_stages=[0, 1],
                          mask_hidden_size=8, fusion_hidden_size=8, template_size=16, num_labels=3,
                          hidden_dropout=0.0, **overrides)
    return AFNetMForExpressionRecognition(config).eval()


def test_difference_model_needs_the_neutral_inputs_and_uses_them(tmp_path):
    model = tiny(neutral_reference="difference")
    assert model.texture_branch.stem_conv.in_channels == 6 and model.geometry_branch.stem_conv.in_channels == 8
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32, generator=generator),
              "geometry_values": torch.rand(2, 4, 32, 32, generator=generator)}
    with pytest.raises(ValueError, match="neutral_pixel_values"):
        model(**inputs)
    with pytest.raises(ValueError, match="shape"):
        model(**inputs, neutral_pixel_values=inputs["pixel_values"][:, :, :16],
              neutral_geometry_values=inputs["geometry_values"])
    same = {"neutral_pixel_values": inputs["pixel_values"], "neutral_geometry_values": inputs["geometry_values"]}
    other = {"neutral_pixel_values": torch.rand(2, 3, 32, 32, generator=generator),
             "neutral_geometry_values": torch.rand(2, 4, 32, 32, generator=generator)}
    with torch.no_grad():
        logits_same, logits_other = model(**inputs, **same).logits, model(**inputs, **other).logits
    assert not torch.allclose(logits_same, logits_other, atol=1e-4)
    with pytest.raises(ValueError, match="neutral_reference"):
        AFNetMConfig(neutral_reference="ratio")

    assert_reference_survives_saving_and_plain_model_ignores_it(model, tiny(), inputs, other, logits_other, tmp_path)


def assert_reference_survives_saving_and_plain_model_ignores_it(model, plain, inputs, neutral, logits, folder):
    """A reference model saved and reloaded keeps its reference and its predictions; a model without one gives the
    same prediction with or without the neutral inputs."""
    model.save_pretrained(folder)
    reloaded = type(model).from_pretrained(folder).eval()
    assert reloaded.config.neutral_reference == "difference"
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs, **neutral).logits, logits, atol=1e-6)
    assert plain.config.neutral_input_names == ()
    with torch.no_grad():
        assert torch.equal(plain(**inputs).logits, plain(**inputs, **neutral).logits)


def test_processor_renders_the_pair_in_the_neutral_frame():
    neutral = toy_face()
    processor = AFNetMProcessor(image_size=32)
    moved = rigid(neutral)  # the same face, the head turned: after registration nothing differs
    inputs = processor([moved], neutral_faces=[neutral], return_tensors="np")
    assert set(inputs) >= {"neutral_pixel_values", "neutral_geometry_values"}
    depth, neutral_depth = inputs["geometry_values"][0, 0], inputs["neutral_geometry_values"][0, 0]
    assert np.abs(depth - neutral_depth).max() < 0.02
    unregistered = processor([moved], return_tensors="np")["geometry_values"][0, 0]
    assert np.abs(processor([neutral], return_tensors="np")["geometry_values"][0, 0] - unregistered).max() < 0.02
    opened = processor([rigid(open_mouth(neutral))], neutral_faces=[neutral], return_tensors="np")
    difference = np.abs(opened["geometry_values"][0] - opened["neutral_geometry_values"][0]).sum(0)
    assert difference[20:].sum() > 5 * difference[:12].sum()  # the change is in the lower face (rows grow down)
    with pytest.raises(ConfigError, match="2 neutral faces for 1"):
        processor([neutral], neutral_faces=[neutral, neutral])
    from facet_vlm.processing_utils import FaceProcessor

    class NoReference(FaceProcessor):
        def process_face(self, face):
            return {"points": face.vertices[:4]}

    with pytest.raises(ConfigError, match="no neutral-reference inputs"):
        NoReference()([neutral], neutral_faces=[neutral])


def plane(size: float = 1.0, n: int = 21, wound_down: bool = False) -> Face:
    """A flat square mesh in z = 0 (normals +z, or -z from the triangles when `wound_down`)."""
    xs = np.linspace(-size, size, n)
    x, y = np.meshgrid(xs, xs)
    vertices = np.stack([x, y, np.zeros_like(x)], -1).reshape(-1, 3).astype(np.float32)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    return Face(vertices=vertices, faces=(faces[:, ::-1] if wound_down else faces).astype(np.int64))


@pytest.mark.parametrize("wound_down", [False, True])
def test_surface_offsets_measure_how_far_points_left_the_reference_surface(wound_down):
    reference = plane(wound_down=wound_down)
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.9, 0.9, (50, 2))  # anywhere between the vertices, not on them
    height = rng.uniform(-0.1, 0.1, 50)
    offsets = surface_offsets(np.column_stack([xy, height]), reference)
    np.testing.assert_allclose(offsets, height, atol=1e-6)  # signed, out of the face (+z) positive
    # clipped, and zero where the reference has no surface (beyond its edge)
    far = surface_offsets(np.array([[0.0, 0.0, 0.5], [0.0, 0.0, -0.5], [1.5, 0.0, 0.01]]), reference,
                          max_offset=0.15, max_gap=0.1)
    np.testing.assert_allclose(far, [0.15, -0.15, 0.0], atol=1e-6)
    with pytest.raises(FormatError, match="no surface"):
        surface_offsets(np.zeros((3, 3)), Face(vertices=np.zeros((3, 3), np.float32),
                                               faces=np.zeros((0, 3), np.int64), meta={"path": "neutral.wrl"}))


def test_couplefer_pair_measures_the_points_against_the_neutral_surface():
    neutral = toy_face()
    processor = CoupleFERProcessor(image_size=32, num_points=256)
    moved = processor([rigid(neutral)], neutral_faces=[neutral], return_tensors="np")
    assert set(moved) == {"pixel_values", "points", "neutral_pixel_values", "neutral_point_offsets"}
    assert moved["neutral_point_offsets"].shape == (1, 256)
    assert np.abs(moved["neutral_point_offsets"]).max() < 0.01  # the head moved, the face did not: < 1 mm
    opened = processor([rigid(open_mouth(neutral))], neutral_faces=[neutral], return_tensors="np")
    offsets, height = opened["neutral_point_offsets"][0], opened["points"][0, :, 1]
    lower, upper = np.abs(offsets[height < -0.2]).mean(), np.abs(offsets[height > 0.1]).mean()
    assert lower > 0.01 and lower > 20 * upper  # the jaw moved (about 2 mm on average below the mouth), not the brow


def test_couplefer_region_crop_samples_the_mouth_and_still_measures_it(tmp_path):
    neutral = toy_face()
    processor = CoupleFERProcessor(image_size=32, num_points=256, point_regions=["mouth"], point_region_margin=0.05)
    processor.save_pretrained(tmp_path)
    loaded = CoupleFERProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict() and loaded.point_regions == ["mouth"]
    whole = CoupleFERProcessor(image_size=32, num_points=256)
    opened = [p([rigid(open_mouth(neutral))], neutral_faces=[neutral], return_tensors="np") for p in (loaded, whole)]
    crop, full = (o["points"][0, :, :3] for o in opened)
    assert crop[:, 1].max() < full[:, 1].max() - 0.3  # nothing from the brows or forehead
    assert np.ptp(crop[:, 0]) < 0.8 * np.ptp(full[:, 0])
    # more of the cropped cloud shows the jaw's motion, with the same per-point measurement
    moving = [float(np.mean(np.abs(o["neutral_point_offsets"][0]) > 0.01)) for o in opened]
    assert moving[0] > 1.5 * moving[1]
    with pytest.raises(ConfigError, match="point_regions"):
        CoupleFERProcessor(point_regions=["ears"])
    with pytest.raises(ConfigError, match="point_region_margin"):
        CoupleFERProcessor(point_regions=["mouth"], point_region_margin=0)


def tiny_couplefer(**overrides) -> CoupleFERForExpressionRecognition:
    torch.manual_seed(0)
    config = CoupleFERConfig(vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                            "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                             point_hidden_size=32, point_intermediate_size=64, point_num_attention_heads=2,
                             num_point_groups=8, point_group_size=8, projection_dim=16, num_labels=3, **overrides)
    return CoupleFERForExpressionRecognition(config).eval()


@pytest.mark.parametrize("modality", ["image", "points"])
def test_couplefer_difference_model_needs_the_neutral_inputs_and_each_branch_uses_them(tmp_path, modality):
    model = tiny_couplefer(neutral_reference="difference", input_modality=modality)
    assert model.config.neutral_input_names == ("pixel_values", "point_offsets")
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.rand(2, 3, 32, 32, generator=generator),
              "points": torch.randn(2, 64, 6, generator=generator)}
    with pytest.raises(ValueError, match="neutral_pixel_values and neutral_point_offsets"):
        model(**inputs)
    with pytest.raises(ValueError, match="one offset per point"):
        model(**inputs, neutral_pixel_values=inputs["pixel_values"], neutral_point_offsets=torch.zeros(2, 32))
    still = {"neutral_pixel_values": inputs["pixel_values"], "neutral_point_offsets": torch.zeros(2, 64)}
    # each branch alone (single-modality ablation): its prediction changes when only its own reference input does
    moved = dict(still)
    if modality == "image":
        moved["neutral_pixel_values"] = torch.rand(2, 3, 32, 32, generator=generator)
    else:
        moved["neutral_point_offsets"] = 0.05 * torch.randn(2, 64, generator=generator)
    with torch.no_grad():
        logits_still, logits_moved = model(**inputs, **still).logits, model(**inputs, **moved).logits
    assert not torch.allclose(logits_still, logits_moved, atol=1e-4)
    with pytest.raises(ValueError, match="neutral_reference"):
        CoupleFERConfig(neutral_reference="ratio")

    assert_reference_survives_saving_and_plain_model_ignores_it(model, tiny_couplefer(), inputs, moved, logits_moved,
                                                                tmp_path)


@pytest.fixture(scope="module")
def scans_with_neutral(tmp_path_factory):
    from facet_vlm.data.synthetic import generate

    root = tmp_path_factory.mktemp("neutral_scans")
    generate(root, subjects=3, seed=1, formats=("bu3dfe",), intensities=1, include_neutral=True, vertices=1500,
             texture_size=64, progress=False)
    return root


def predict_against_the_neutral_scan(model_folder, scans):
    """The saved model predicts a scan against its neutral scan (pipeline) and refuses the scan without one;
    returns the pipeline, the scan and its scores."""
    from facet_vlm.pipelines import pipeline

    subject = sorted((scans / "bu3dfe").iterdir())[0]
    scan, neutral = sorted(subject.glob("*HA01*.wrl"))[0], sorted(subject.glob("*NE00*.wrl"))[0]
    runner = pipeline(model=str(model_folder))
    scores = runner(str(scan), neutral=str(neutral))
    assert sum(entry["score"] for entry in scores) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ConfigError, match="neutral scan"):
        runner(str(scan))
    return runner, scan, scores


def test_training_pairs_every_scan_with_its_subjects_neutral_scan(tmp_path, scans_with_neutral, cache_dir):
    config = tiny_config(tmp_path, "afnet_m", scans_with_neutral, cache_dir, intensities=[1],
                         model_config={"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
                                       "fusion_stages": [0, 1], "image_size": 32, "mask_hidden_size": 8,
                                       "fusion_hidden_size": 8, "template_size": 16,
                                       "neutral_reference": "difference"},
                         augment={"mirror_prob": 0.5, "max_shift": 2})
    run_train("--config", str(config))
    output = tmp_path / "run"
    results = json.loads((output / "all_results.json").read_text())
    assert results["fold_results"][0]["num_samples"] == 6  # one test subject, six expressions, no neutral row
    assert json.loads((output / "model" / "config.json").read_text())["neutral_reference"] == "difference"

    predict_against_the_neutral_scan(output / "model", scans_with_neutral)

    # a subject without a neutral scan is named, never trained on without a reference
    broken = tmp_path / "broken"
    shutil.copytree(scans_with_neutral, broken)
    missing = sorted((broken / "bu3dfe").iterdir())[1]
    for path in missing.glob("*NE00*"):
        path.unlink()
    from facet_vlm.cli import train_main

    result = run_command(train_main, "--config", str(config), "--dataset", f"synthetic:{broken}",
                         "--output_dir", str(tmp_path / "broken_run"))
    assert result.returncode != 0 and missing.name in result.stderr and "no neutral scan" in result.stderr


def test_sequence_rows_take_the_neutral_frame_found_from_the_landmarks():
    import datasets

    from facet_vlm.data.prepare import sequence_neutral_paths, subject_neutral_paths

    rows = datasets.Dataset.from_dict({"frames": [["a/000", "a/001", "a/002"], ["b/000", "b/001"]],
                                       "neutral": [2, 0]})
    assert sequence_neutral_paths(rows) == ["a/002", "b/000"]
    assert sequence_neutral_paths(rows.remove_columns("neutral")) == ["a/000", "b/000"]
    index = datasets.Dataset.from_dict({"subject": ["S1", "S1", "S2"], "expression": ["neutral", "happy", "happy"],
                                        "path": ["S1/ne", "S1/ha", "S2/ha"]})
    with pytest.raises(DatasetLayoutError, match="1 subject.*S2"):
        subject_neutral_paths(index, index.select([1, 2]), "bu3dfe:ROOT")
    assert subject_neutral_paths(index, index.select([1]), "bu3dfe:ROOT") == ["S1/ne"]


@pytest.mark.parametrize("model", ["couplefer", "facet_vlm"])
def test_model_trains_against_the_neutral_scan_and_predicts_with_it(tmp_path, scans_with_neutral, cache_dir, model):
    from helpers import TINY_MODELS

    augment = {"mirror_prob": 0.5, "max_shift": 2, **({"point_noise": 0.005} if model == "couplefer" else {})}
    config = tiny_config(tmp_path, model, scans_with_neutral, cache_dir, intensities=[1],
                         model_config={**TINY_MODELS[model], "neutral_reference": "difference"}, augment=augment)
    run_train("--config", str(config))
    output = tmp_path / "run"
    results = json.loads((output / "all_results.json").read_text())
    assert results["fold_results"][0]["num_samples"] == 6
    assert json.loads((output / "model" / "config.json").read_text())["neutral_reference"] == "difference"
    runner, scan, scores = predict_against_the_neutral_scan(output / "model", scans_with_neutral)
    # the neutral scan reaches the prediction: the scan against itself is no motion at all
    assert runner(str(scan), neutral=str(scan)) != scores


def tiny_facet_vlm(**overrides):
    from helpers import TINY_MODELS

    from facet_vlm import FacetVLMConfig, FacetVLMForExpressionRecognition

    torch.manual_seed(0)
    return FacetVLMForExpressionRecognition(FacetVLMConfig(**{**TINY_MODELS["facet_vlm"], "num_labels": 3,
                                                              **overrides})).eval()


@pytest.mark.parametrize("patch_stem", ["linear", "conv"])
def test_facet_vlm_difference_model_needs_the_neutral_renders_and_uses_them(tmp_path, patch_stem):
    model = tiny_facet_vlm(neutral_reference="difference", patch_stem=patch_stem)
    assert model.config.neutral_input_names == ("pixel_values",)
    generator = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.rand(2, 5, 7, 32, 32, generator=generator)}
    with pytest.raises(ValueError, match="neutral_pixel_values"):
        model(**inputs)
    with pytest.raises(ValueError, match="shape"):
        model(**inputs, neutral_pixel_values=inputs["pixel_values"][:, :3])
    still = {"neutral_pixel_values": inputs["pixel_values"]}
    moved = {"neutral_pixel_values": inputs["pixel_values"].clone()}
    moved["neutral_pixel_values"][:, :, :, 8:16, 8:16] += 0.05  # a few pixels of one region differ
    with torch.no_grad():
        logits_still, logits_moved = model(**inputs, **still).logits, model(**inputs, **moved).logits
        # a 4D sequence: one neutral render per sequence, compared with every frame (the same as each frame alone)
        frames = torch.stack([inputs["pixel_values"], inputs["pixel_values"]], dim=1)
        sequence = model(pixel_values=frames, **moved).logits
        per_frame = model(pixel_values=frames, neutral_pixel_values=torch.stack([moved["neutral_pixel_values"]] * 2,
                                                                                dim=1)).logits
    assert not torch.allclose(logits_still, logits_moved, atol=1e-4)
    assert torch.allclose(sequence, per_frame, atol=1e-6)
    with pytest.raises(ValueError, match="neutral_reference"):
        tiny_facet_vlm(neutral_reference="ratio")
    # with a silent neutral stem the tower is the plain CLIP tower: same weights, same logits as a plain model
    silent = tiny_facet_vlm(patch_stem=patch_stem)
    silent.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for parameter in model.facet_vlm.neutral_stem.parameters():
            parameter.zero_()
        assert torch.allclose(model(**inputs, **moved).logits, silent(**inputs).logits, atol=1e-5)
    model = tiny_facet_vlm(neutral_reference="difference", patch_stem=patch_stem)

    assert_reference_survives_saving_and_plain_model_ignores_it(model, tiny_facet_vlm(patch_stem=patch_stem), inputs,
                                                                moved, logits_moved, tmp_path / "reference")

    # a model saved without a reference is fine-tuned with one: everything loads but the neutral stem
    plain = tiny_facet_vlm(patch_stem=patch_stem)
    plain.save_pretrained(tmp_path / "plain")
    loaded, info = type(model).from_pretrained(tmp_path / "plain", neutral_reference="difference",
                                               output_loading_info=True)
    assert info["missing_keys"] and all(".neutral_stem." in key for key in info["missing_keys"])
    assert torch.equal(loaded.facet_vlm.visual_projection.weight, plain.facet_vlm.visual_projection.weight)


def test_view_augmentation_moves_the_neutral_renders_with_the_scan():
    from facet_vlm.geometry.augment import ViewAugmenter
    from facet_vlm.models.facet_vlm.configuration_facet_vlm import DEFAULT_VIEW_ANGLES

    augmenter = ViewAugmenter(view_angles=DEFAULT_VIEW_ANGLES, channels=["depth", "normal"], mirror_prob=1.0,
                              max_shift=3, max_zoom=0.1, max_holes=2, hole_radius=(2.0, 4.0))
    torch.manual_seed(0)
    renders = torch.rand(4, 5, 4, 32, 32)
    neutral = renders.clone()
    neutral[..., 10:14, 10:14] = 0.0  # where the face moved
    out = augmenter.augment_batch({"pixel_values": renders, "neutral_pixel_values": neutral, "labels": torch.ones(4)})
    assert not torch.allclose(out["pixel_values"], renders)  # augmented ...
    same = (out["pixel_values"] - out["neutral_pixel_values"]).abs() < 1e-6
    # ... and the pair still agrees wherever it agreed: only a small moved region (the 4x4 patch, shifted,
    # zoomed, mirrored) differs
    assert same.float().mean() > 0.95 and not same.all()
    with pytest.raises(ConfigError, match="same shape"):
        augmenter.augment_batch({"pixel_values": renders, "neutral_pixel_values": neutral[:, :3]})


def test_a_model_without_a_reference_refuses_a_neutral_scan(tmp_path, scans_with_neutral):
    from facet_vlm.pipelines import pipeline

    tiny_facet_vlm().save_pretrained(tmp_path)  # the pipeline builds the processor from its config
    scan = sorted((scans_with_neutral / "bu3dfe").rglob("*HA01*.wrl"))[0]
    runner = pipeline(model=str(tmp_path))
    assert len(runner(str(scan))) == 3
    with pytest.raises(ConfigError, match="no neutral reference"):
        runner(str(scan), neutral=str(scan))


def test_facet_vlm_processor_renders_the_pair_in_the_neutral_frame(scans_with_neutral):
    from facet_vlm import FacetVLMProcessor

    subject = sorted((scans_with_neutral / "bu3dfe").iterdir())[0]
    scan, neutral = sorted(subject.glob("*HA01*.wrl"))[0], sorted(subject.glob("*NE00*.wrl"))[0]
    processor = FacetVLMProcessor(image_size=32, channels=["depth", "normal"])
    pair = processor(faces=[str(scan)], neutral_faces=[str(neutral)])
    itself = processor(faces=[str(neutral)], neutral_faces=[str(neutral)])
    assert pair["pixel_values"].shape == pair["neutral_pixel_values"].shape == (1, 5, 4, 32, 32)
    assert torch.equal(itself["pixel_values"], itself["neutral_pixel_values"])
    assert not torch.equal(pair["pixel_values"], pair["neutral_pixel_values"])
    with pytest.raises(ConfigError, match="one per face"):
        processor(faces=[str(scan), str(scan)], neutral_faces=[str(neutral)])


def test_every_shipped_recipe_parses_and_the_3d_recipes_take_the_neutral_reference():
    """Every training config of facet_vlm/configs is read by train.py's parser into a config its model accepts;
    the 3D stills recipes (each model's small config and the main job) take the neutral reference, the setting
    that won for every model on the real-motion development benchmark."""
    from pathlib import Path

    from facet_vlm.arguments import parse_args
    from facet_vlm.registry import model_entry

    folder = Path(__file__).resolve().parents[1] / "facet_vlm" / "configs"
    recipes = sorted(path for path in folder.glob("*.json") if not path.name.startswith("benchmark_"))
    assert len(recipes) >= 15
    references = {}
    for path in recipes:
        model_args, _, _ = parse_args(["--config", str(path)])
        config = model_entry(model_args.model).config_class(**(model_args.model_config or {}))
        references[path.stem] = getattr(config, "neutral_reference", None)
    for name in ("afnet_m_synthetic_small", "couplefer_synthetic_small", "facet_vlm_synthetic_small",
                 "facet_vlm_calibrated_small"):
        assert references[name] == "difference", name
    assert references["facet_vlm_4d_synthetic_small"] == "none"  # frames are compared with the first instead
