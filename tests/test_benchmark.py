"""The benchmark report (facet_vlm.benchmarks.comparison) end to end on the tiny config, the test-time perturbations
and the ablation switches added for it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from facet_vlm.face import Face
from facet_vlm.geometry import perturb

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "facet_vlm" / "configs" / "benchmark_tiny.json"


# ----------------------------------------------------------------------------------------------------- report
def _tables(report: str) -> dict[str, list[list[str]]]:
    """Section title → rows (cells) of its Markdown table."""
    tables, section = {}, None
    for line in report.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            tables[section] = []
        elif section and line.startswith("| ") and not line.startswith("|---"):
            tables[section].append([cell.strip() for cell in line.strip("|").split("|")])
    return {name: rows[1:] for name, rows in tables.items()}  # drop the header row


def _mean_std(cell: str) -> tuple[float, float]:
    mean, std = re.fullmatch(r"([\d.]+) ± ([\d.]+)", cell).groups()
    return float(mean), float(std)


def test_report_on_tiny_config(tmp_path):
    from facet_vlm.benchmarks.comparison import ABLATIONS, run_benchmark
    from facet_vlm.registry import model_entry

    config = json.loads(TINY.read_text())
    config["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "report"
    run_benchmark(path, out)

    results = json.loads((out / "results.json").read_text())
    tables = _tables((out / "report.md").read_text())
    assert list(tables) == ["1. Side by side", "2. Ablations", "3. Robustness", "4. Cross-dataset",
                            "5. Physio subject invariance"]
    title = {name: model_entry(name).title for name in config["models"]}

    side = tables["1. Side by side"]
    assert [row[0] for row in side] == [title[m] for m in config["models"]]
    for row, res in zip(side, results["side_by_side"]):
        for cell, name in zip(row[1:4], ("accuracy", "uar", "macro_f1")):
            assert _mean_std(cell) == (res[name], res[f"{name}_std"])
        assert int(row[4]) == res["parameters"] > 0
        assert float(row[5]) == res["runtime_s"] and float(row[6]) == res["samples_per_s"] > 0

    ablations = tables["2. Ablations"]
    expected = [(title[m], v) for m, variants in config["ablations"].items() for v in variants]
    assert [(row[0], row[1]) for row in ablations] == expected
    for row, res in zip(ablations, results["ablations"]):
        assert not res.get("missing"), res  # every configured switch exists now
        assert _mean_std(row[3]) == (res["accuracy"], res["accuracy_std"])
        assert json.loads(row[2].strip("`")) == {**ABLATIONS[res["model"]][res["variant"]].get("model_config", {}),
                                                 **ABLATIONS[res["model"]][res["variant"]].get(
                                                     "feature_overrides", {})}

    robustness = tables["3. Robustness"]
    settings = config["robustness"]
    expected = [(title[m], name, float(s)) for m in settings["models"]
                for name, s in [("none", 0.0)] + [(n, s) for n, ss in settings["perturbations"].items() for s in ss]]
    assert [(row[0], row[1], float(row[2])) for row in robustness] == expected
    for row, res in zip(robustness, results["robustness"]):
        assert float(row[4]) == res["accuracy"] and 0 <= res["accuracy"] <= 100 and int(row[3]) == res["scans"] > 0

    cross = tables["4. Cross-dataset"]
    assert [(row[0], row[1], row[2]) for row in cross] == [
        (title[m], a, b) for m in config["cross_dataset"]["models"] for a, b in (("bu3dfe", "bosphorus"),
                                                                              ("bosphorus", "bu3dfe"))]
    for row, res in zip(cross, results["cross_dataset"]):
        assert float(row[5]) == res["within_accuracy"] and float(row[6]) == res["cross_accuracy"]
        assert int(row[4]) == res["scans"] > 0

    probe = tables["5. Physio subject invariance"]
    assert [row[0] for row in probe] == ["with decoupled adapters", "without decoupled adapters"]
    for row, res in zip(probe, results["physio_probe"]):
        assert float(row[3]) == res["probe_accuracy"] and float(row[4]) == res["shared_code_probe_accuracy"]
        assert float(row[5]) == res["chance"] == round(100 / res["subjects"], 2)
        assert all(0 <= res[name] <= 100 for name in ("probe_accuracy", "shared_code_probe_accuracy"))

    for name in ("side_by_side", "ablations", "robustness", "physio_probe"):
        png = out / f"{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_models_keeps_only_the_named_models_everywhere():
    from facet_vlm.benchmarks.comparison import load_benchmark_config, select_models
    from facet_vlm.errors import ConfigError

    config = load_benchmark_config(REPO / "facet_vlm" / "configs" / "benchmark_small.json")
    assert select_models(config, None) is config
    physio = select_models(config, ["physio_prompt"])
    assert list(physio["models"]) == ["physio_prompt"] and list(physio["ablations"]) == ["physio_prompt"]
    assert physio["robustness"]["models"] == [] and physio["cross_dataset"]["models"] == []
    assert physio["models"]["physio_prompt"] == config["models"]["physio_prompt"]
    scans = select_models(config, ["afnet_m", "couplefer"])
    assert list(scans["models"]) == ["couplefer", "afnet_m"]  # the config's order
    assert scans["robustness"]["models"] == ["couplefer", "afnet_m"]
    assert len(config["models"]) == 4 and config["robustness"]["models"][0] == "facet_vlm"  # the input is untouched
    with pytest.raises(ConfigError, match="not in the benchmark config"):
        select_models(load_benchmark_config(TINY), ["nonexistent"])


# ----------------------------------------------------------------------------------------------------- perturbations
def grid_face(n: int = 40, size: float = 100.0) -> Face:
    """A flat n×n vertex grid of side `size` mm at z = 0, two triangles per cell, with per-vertex colours."""
    x, y = np.meshgrid(np.linspace(0, size, n), np.linspace(0, size, n))
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1].ravel(), index[:-1, 1:].ravel(), index[1:, :-1].ravel(), index[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    colors = np.full((n * n, 3), 200, dtype=np.uint8)
    return Face(vertices, faces, colors=colors, uv=vertices[:, :2] / size,
                texture=np.zeros((4, 4, 3), np.uint8), landmarks=vertices[:3])


def test_depth_noise_moves_z_only_by_sigma():
    face = grid_face(60)
    noisy = perturb.depth_noise(face, 2.0, seed=1)
    np.testing.assert_array_equal(noisy.vertices[:, :2], face.vertices[:, :2])
    dz = noisy.vertices[:, 2] - face.vertices[:, 2]
    assert abs(dz.std() - 2.0) < 0.1 and abs(dz.mean()) < 0.1
    np.testing.assert_array_equal(face.vertices[:, 2], 0)  # the input is untouched


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5])
def test_holes_remove_the_stated_share_of_the_surface(share):
    face = grid_face()
    holed = perturb.holes(face, share, seed=3)
    total, left = perturb.surface_area(face), perturb.surface_area(holed)
    largest = perturb.triangle_areas(face.vertices, face.faces).max()
    assert share * total <= total - left <= share * total + largest + 1e-6
    assert holed.num_vertices < face.num_vertices and holed.faces.max() < holed.num_vertices
    assert len(holed.colors) == len(holed.uv) == holed.num_vertices


@pytest.mark.parametrize("degrees", [15.0, -40.0, 90.0])
def test_rotation_turns_every_vertex_by_theta_about_y(degrees):
    face = grid_face(10)
    vertices = face.vertices + np.array([0, 0, 5], np.float32) * (np.arange(100)[:, None] % 3)
    face = face.copy(vertices=vertices, landmarks=vertices[:3])
    turned = perturb.rotate(face, degrees, axis="y")
    centre = face.vertices.mean(axis=0)
    before, after = face.vertices - centre, turned.vertices - centre
    np.testing.assert_allclose(after[:, 1], before[:, 1], atol=1e-4)  # the axis coordinate stays
    moved = np.linalg.norm(before[:, [0, 2]], axis=1) > 1
    angle_before = np.arctan2(before[moved, 0], before[moved, 2])
    angle_after = np.arctan2(after[moved, 0], after[moved, 2])
    turn = np.rad2deg(np.angle(np.exp(1j * (angle_after - angle_before))))
    np.testing.assert_allclose(turn, degrees, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), np.linalg.norm(before, axis=1), rtol=1e-5)
    np.testing.assert_allclose(turned.landmarks, turned.vertices[:3], atol=1e-4)  # landmarks turn with the mesh


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_decimation_keeps_the_stated_share_of_vertices(keep):
    face = grid_face()
    thin = perturb.decimate(face, keep, seed=0)
    assert thin.num_vertices == round(keep * face.num_vertices)
    original = {tuple(v) for v in face.vertices.tolist()}
    assert all(tuple(v) in original for v in thin.vertices.tolist())  # a subset of the original vertices
    assert thin.faces.max() < thin.num_vertices and len(thin.colors) == thin.num_vertices
    assert abs(perturb.surface_area(thin) / perturb.surface_area(face) - 1) < 0.1  # still covers the face


def test_missing_texture_drops_texture_uv_and_colours_only():
    face = grid_face(10)
    bare = perturb.missing_texture(face)
    assert bare.texture is None and bare.uv is None and bare.colors is None
    np.testing.assert_array_equal(bare.vertices, face.vertices)
    assert face.texture is not None


def test_perturbation_arguments_are_checked():
    from facet_vlm.errors import ConfigError

    with pytest.raises(ConfigError, match="keep"):
        perturb.decimate(grid_face(5), 0.0)
    with pytest.raises(ConfigError, match="share"):
        perturb.holes(grid_face(5), 1.0)
    with pytest.raises(ConfigError, match="unknown perturbation"):
        perturb.perturb(grid_face(5), "blur", 1.0)


# ----------------------------------------------------------------------------------------------------- switches
TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8}


@pytest.mark.parametrize("modality", ["2d", "3d"])
def test_afnet_m_single_modality_ignores_the_other_input(modality):
    from couple import AFNetMConfig, AFNetMForExpressionRecognition

    torch.manual_seed(0)
    model = AFNetMForExpressionRecognition(AFNetMConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], fusion_stages=[0, 1], image_size=32,
        mask_hidden_size=8, fusion_hidden_size=8, template_size=16, num_labels=6, input_modality=modality)).eval()
    pixels, geometry = torch.rand(2, 3, 32, 32), torch.rand(2, 4, 32, 32)
    base = model(pixel_values=pixels, geometry_values=geometry).logits
    other_geometry = model(pixel_values=pixels, geometry_values=torch.rand(2, 4, 32, 32)).logits
    other_pixels = model(pixel_values=torch.rand(2, 3, 32, 32), geometry_values=geometry).logits
    assert torch.equal(base, other_geometry) == (modality == "2d")
    assert torch.equal(base, other_pixels) == (modality == "3d")


@pytest.mark.parametrize("modality", ["image", "points"])
def test_couplefer_single_modality_ignores_the_other_input(modality):
    from couple import CoupleFERConfig, CoupleFERForExpressionRecognition

    torch.manual_seed(0)
    config = CoupleFERConfig(vision_config=TINY_VISION, point_hidden_size=32, point_intermediate_size=64,
                             point_num_attention_heads=2, num_point_groups=8, point_group_size=8, projection_dim=16,
                             num_labels=6, input_modality=modality)
    assert config.couple_mode == "off"
    model = CoupleFERForExpressionRecognition(config).eval()
    pixels, points = torch.rand(2, 3, 32, 32), torch.randn(2, 64, 6)
    base = model(pixel_values=pixels, points=points).logits
    assert torch.equal(base, model(pixel_values=pixels, points=torch.randn(2, 64, 6)).logits) == (modality == "image")
    assert torch.equal(base, model(pixel_values=torch.rand(2, 3, 32, 32), points=points).logits) == (
        modality == "points")


def _physio(**changes):
    from couple import PhysioPromptConfig, PhysioPromptForEmotionRecognition

    torch.manual_seed(0)
    config = PhysioPromptConfig(vision_config={**TINY_VISION, "num_attention_heads": 4}, num_prompts=2,
                                adapter_bottleneck=8, pulse_hidden_size=16, pulse_conv_channels=4, **changes)
    return PhysioPromptForEmotionRecognition(config).eval()


def test_physio_without_pulse_prompts_ignores_the_pulse_map():
    pixels, tfr = torch.rand(2, 4, 3, 32, 32), torch.rand(2, 1, 32, 32)
    for prompts in (True, False):
        model = _physio(use_pulse_prompts=prompts, use_pulse_embedding=False)
        with torch.no_grad():  # the prompt projection starts at zero; give it weights as training would
            model.prompt_generator.prompt_proj.weight.normal_(0, 0.5)
        base = model(pixel_values=pixels, tfr_values=tfr).logits
        other = model(pixel_values=pixels, tfr_values=torch.rand(2, 1, 32, 32)).logits
        assert torch.equal(base, other) == (not prompts)


def test_physio_without_decoupled_adapters_builds_no_subject_modules():
    with_adapters = _physio(num_train_subjects=3)
    without = _physio(num_train_subjects=3, use_subject_adapters=False)
    assert without.config.num_train_subjects == 0 and with_adapters.config.num_train_subjects == 3
    names = {name for name, _ in without.named_parameters()}
    assert not any("specific_adapter" in name or "subject_classifier" in name for name in names)
    assert any("specific_adapter" in name for name, _ in with_adapters.named_parameters())


def test_every_ablation_is_a_config_switch_that_changes_the_config():
    """Each variant of ABLATIONS names existing config fields (or processor settings), and applying it changes
    the built model's config from the main model's."""
    from facet_vlm.benchmarks.comparison import ABLATIONS, _merge
    from facet_vlm.registry import make_processor, model_entry

    config = json.loads(TINY.read_text())
    for model, variants in ABLATIONS.items():
        entry = model_entry(model)
        base_settings = config["models"][model]["model_config"]
        base = entry.config_class(**base_settings, num_labels=6)
        for variant, override in variants.items():
            changed = entry.config_class(**_merge(base_settings, override.get("model_config", {})), num_labels=6)
            for name in override.get("model_config", {}):
                assert hasattr(base, name), (model, variant, name)
                assert getattr(changed, name) != getattr(base, name), (model, variant, name)
            if override.get("feature_overrides"):
                processor = make_processor(model, changed, override["feature_overrides"])
                for name, value in override["feature_overrides"].items():
                    assert getattr(processor, name) == value != getattr(make_processor(model, base), name)
