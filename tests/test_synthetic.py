"""The synthetic face model and generator: determinism, layout, round trip through the readers, expressions."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from facet_vlm.data import load_bosphorus, load_bu3dfe, load_bu4dfe
from facet_vlm.data.face_model import (
    BND_STANDARD_INDEX,
    EXPRESSION_AUS,
    MOVEMENTS,
    FaceModel,
    Nuisance,
    add_movement,
    expression_activations,
    eye_openness,
    sample_subject,
    styled_activations,
    subject_style,
)
from facet_vlm.data.synthetic import SyntheticSettings, generate, make_scan, subject_identity, subject_model
from facet_vlm.errors import ConfigError
from facet_vlm.io import read_face
from facet_vlm.labels import BASIC_EXPRESSIONS

TINY = {"vertices": 300, "texture_size": 32}
CLEAN = Nuisance(noise_mm=0, holes=(0, 0), pose_deg=(0, 0, 0), translate_mm=0, au_jitter=0, au_leak=0,
                 asymmetry=0, lighting=0, landmark_noise_mm=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "synthetic.json"}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate(root, subjects=2, seed=3, formats=("bu3dfe", "bosphorus", "bu4dfe"), intensities=2,
                       sequence_frames=3, progress=False, **TINY)
    return root, summary


def test_same_seed_same_files_and_other_seed_differs(tmp_path):
    generate(tmp_path / "a", subjects=1, seed=5, intensities=1, progress=False, **TINY)
    generate(tmp_path / "b", subjects=1, seed=5, intensities=1, progress=False, **TINY)
    generate(tmp_path / "c", subjects=1, seed=6, intensities=1, progress=False, **TINY)
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    wrl_a = {data for name, data in a.items() if name.endswith(".wrl")}
    wrl_c = {data for name, data in c.items() if name.endswith(".wrl")}
    assert len(wrl_a) == 7 and not wrl_a & wrl_c


def test_subject_scans_do_not_depend_on_count_or_processes(tmp_path):
    generate(tmp_path / "one", subjects=1, seed=2, intensities=1, progress=False, **TINY)
    generate(tmp_path / "two", subjects=2, seed=2, intensities=1, num_proc=2, progress=False, **TINY)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one and all(two[name] == data for name, data in one.items())


def test_layout_names_and_counts(tiny_set):
    root, summary = tiny_set
    names = [subject_identity(i, 3) for i in range(2)]
    for identity in names:
        folder = root / "bu3dfe" / identity.bu3dfe
        wrls = sorted(p.name for p in folder.glob("*.wrl"))
        assert len(wrls) == 6 * 2 + 1
        for name in wrls:
            assert re.fullmatch(rf"{identity.bu3dfe}_(AN|DI|FE|HA|SA|SU)0[12]{identity.race}_F3D\.wrl|"
                                rf"{identity.bu3dfe}_NE00{identity.race}_F3D\.wrl", name)
            assert (folder / name).with_suffix(".bmp").is_file() and (folder / name).with_suffix(".bnd").is_file()
        bosphorus = root / "bosphorus" / identity.bosphorus
        assert {p.name for p in bosphorus.glob("*.bnt")} == {f"{identity.bosphorus}_{code}_0.bnt" for code in (
            "E_ANGER", "E_DISGUST", "E_FEAR", "E_HAPPY", "E_SADNESS", "E_SURPRISE", "N_N")}
        for sequence in ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise"):
            frames = root / "bu4dfe" / identity.bu4dfe / sequence
            assert sorted(p.name for p in frames.iterdir()) == ["000.bmp", "000.wrl", "001.bmp", "001.wrl",
                                                                "002.bmp", "002.wrl"]
    assert summary.scans == {"bu3dfe": 26, "bosphorus": 14, "bu4dfe": 36}
    assert all(summary.counts["bu3dfe"][(e, level)] == 2 for e in BASIC_EXPRESSIONS for level in (1, 2))
    assert summary.counts["bu3dfe"][("neutral", 0)] == 2
    table = summary.table()
    assert "bu3dfe" in table and "scans: 26" in table and "I2" in table


def test_female_share_and_names_are_stable():
    identities = [subject_identity(i) for i in range(100)]
    assert sum(identity.sex == "F" for identity in identities) == 56
    females = [identity.bu3dfe for identity in identities if identity.sex == "F"]
    assert females[:2] == ["F0001", "F0002"] and females[-1] == "F0056"
    assert {identity.race for identity in identities} <= {"WH", "AE", "BL", "IN", "LA", "AM"}


def test_loaders_index_the_generated_set(tiny_set):
    root, _ = tiny_set
    bu3dfe = load_bu3dfe(root)
    assert len(bu3dfe) == 26 and bu3dfe.bad_files == []
    assert sorted(set(bu3dfe["intensity"])) == [0, 1, 2]
    assert all((label == -1) == (expression == "neutral") for label, expression in zip(bu3dfe["label"],
                                                                                      bu3dfe["expression"]))
    assert len(load_bosphorus(root / "bosphorus")) == 14
    bu4dfe = load_bu4dfe(root)
    assert len(bu4dfe) == 12 and set(bu4dfe["num_frames"]) == {3}


def test_wrl_round_trip_matches_the_generated_face(tiny_set):
    root, _ = tiny_set
    settings = SyntheticSettings(seed=3, intensities=2, **TINY)
    identity = subject_identity(1, 3)
    scan = make_scan(1, "happiness", 2, settings)
    path = root / "bu3dfe" / identity.bu3dfe / f"{identity.bu3dfe}_HA02{identity.race}_F3D.wrl"
    read = read_face(path)
    np.testing.assert_allclose(read.vertices, scan.face.vertices, atol=1e-4)
    np.testing.assert_array_equal(read.faces, scan.face.faces)
    np.testing.assert_allclose(read.uv, scan.face.uv, atol=1e-6)
    np.testing.assert_array_equal(read.texture, scan.face.texture)
    np.testing.assert_allclose(read.landmarks, scan.face.landmarks[:83], atol=1e-4)


def test_bnt_round_trip_matches_the_range_grid(tiny_set):
    root, _ = tiny_set
    settings = SyntheticSettings(seed=3, intensities=2, **TINY)
    scan = make_scan(0, "surprise", 2, settings, fmt="bosphorus")
    read = read_face(root / "bosphorus" / "bs000" / "bs000_E_SURPRISE_0.bnt")
    valid = np.isfinite(scan.xyz_grid).all(axis=2)
    np.testing.assert_allclose(read.vertices, scan.xyz_grid[valid], atol=1e-4)
    np.testing.assert_array_equal(read.texture, scan.face.texture)
    np.testing.assert_allclose(read.landmark("nose_tip"), scan.face.landmark("nose_tip"), atol=1e-4)


def _generate_skipping(root) -> int:
    return generate(root, subjects=3, intensities=1, progress=False, **TINY).skipped_subjects


@pytest.mark.skipif(sys.platform == "win32", reason="the generation lock is fcntl's (POSIX)")
def test_two_runs_generating_one_set_at_once_write_each_subject_once(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        skipped = pool.map(_generate_skipping, [tmp_path, tmp_path])
    assert sum(skipped) == 3  # every subject written by one run, found complete by the other
    assert len(list((tmp_path / "bu3dfe").rglob("*.wrl"))) == 3 * 7
    assert json.loads((tmp_path / "synthetic.json").read_text())["subjects"] == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_skips_complete_subjects_and_rejects_other_settings(tmp_path):
    generate(tmp_path, subjects=1, intensities=1, progress=False, **TINY)
    wrl = next((tmp_path / "bu3dfe").rglob("*.wrl"))
    before = wrl.stat().st_mtime_ns
    summary = generate(tmp_path, subjects=2, intensities=1, progress=False, **TINY)
    assert summary.skipped_subjects == 1 and summary.scans["bu3dfe"] == 14
    assert wrl.stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="other settings"):
        generate(tmp_path, subjects=1, intensities=1, progress=False, vertices=500, texture_size=32)


def _clean_model(index: int = 0) -> FaceModel:
    _, model = subject_model(index, SyntheticSettings(vertices=800, texture_size=64))
    return model


def _marks(model: FaceModel, expression: str, amount: float = 1.0) -> dict[str, np.ndarray]:
    face = model.scan(expression_activations(expression, amount), np.random.default_rng(0), CLEAN).face
    return {name: face.landmark(name) for name in BND_STANDARD_INDEX}


def test_expressions_move_their_action_unit_regions():
    model = _clean_model()
    neutral = _marks(model, "neutral")
    happy, sad, surprise, anger = (_marks(model, e) for e in ("happiness", "sadness", "surprise", "anger"))
    noise_floor = 1.0  # mm, well above numerical error, well below the AU amplitudes
    for corner in ("mouth_left", "mouth_right"):
        assert happy[corner][1] - neutral[corner][1] > noise_floor  # AU12 raises the lip corners
        assert sad[corner][1] - neutral[corner][1] < -noise_floor  # AU15 lowers them
    assert abs(happy["mouth_left"][0] - happy["mouth_right"][0]) > abs(
        neutral["mouth_left"][0] - neutral["mouth_right"][0]) + noise_floor  # and pulls them apart
    for brow in ("left_brow_inner", "right_brow_inner"):
        assert surprise[brow][1] - neutral[brow][1] > noise_floor  # AU1
        assert anger[brow][1] - neutral[brow][1] < -noise_floor  # AU4
    gap = (surprise["upper_lip"][1] - surprise["lower_lip"][1]) - (neutral["upper_lip"][1] - neutral["lower_lip"][1])
    assert gap > 2 * noise_floor  # AU26 opens the mouth


def test_intensity_scales_the_displacement_and_texture_changes():
    model = _clean_model()
    neutral = _marks(model, "neutral")["mouth_left"][1]
    rises = [_marks(model, "happiness", level / 4)["mouth_left"][1] - neutral for level in (1, 2, 3, 4)]
    assert all(b > a for a, b in zip(rises, rises[1:]))
    rng = np.random.default_rng(0)
    closed = model.scan({}, rng, CLEAN).face.texture.astype(float)
    opened = model.scan(expression_activations("surprise", 1.0), rng, CLEAN).face.texture.astype(float)
    assert np.abs(opened - closed).max() > 50  # eyes widen, the mouth interior shows
    assert set(EXPRESSION_AUS["surprise"]) == {1, 2, 5, 26}


def test_subjects_differ_in_shape_and_skin():
    a, b = (sample_subject(np.random.default_rng(i), "F", race) for i, race in ((0, "WH"), (1, "BL")))
    assert a.skin_rgb.mean() > b.skin_rgb.mean()
    model_a, model_b = FaceModel(a, vertices=800, texture_size=64), FaceModel(b, vertices=800, texture_size=64)
    marks_a, marks_b = _marks(model_a, "neutral"), _marks(model_b, "neutral")
    eye_gap = [np.linalg.norm(m["left_eye_outer"] - m["right_eye_outer"]) for m in (marks_a, marks_b)]
    nose = [m["nose_tip"][2] - m["mouth_left"][2] for m in (marks_a, marks_b)]
    assert abs(eye_gap[0] - eye_gap[1]) > 0.5 or abs(nose[0] - nose[1]) > 0.5


def test_mesh_resolution_is_a_parameter_and_triangles_face_the_camera():
    params = sample_subject(np.random.default_rng(0), "M", "WH")
    coarse, fine = FaceModel(params, vertices=1000, texture_size=32), FaceModel(params, vertices=4000,
                                                                                 texture_size=32)
    assert 0.8 < coarse.mask.sum() / 1000 < 1.2 and 0.8 < fine.mask.sum() / 4000 < 1.2
    face = coarse.scan({}, np.random.default_rng(0), CLEAN).face
    a, b, c = (face.vertices[face.faces[:, k]] for k in range(3))
    assert (np.cross(b - a, c - a)[:, 2] > 0).mean() > 0.95
    width = face.vertices[:, 0].max() - face.vertices[:, 0].min()
    assert 2 * params.half_width * 0.8 < width < 2 * params.half_width * 1.05


def test_bad_arguments_raise():
    with pytest.raises(ConfigError):
        generate("unused", subjects=1, formats=("obj",), progress=False)
    with pytest.raises(ConfigError):
        SyntheticSettings(intensities=5)
    with pytest.raises(ConfigError):
        expression_activations("contempt", 1.0)


def test_hard_preset_styles_are_per_subject_and_stay_inside_their_ranges():
    hard = Nuisance.preset("hard")
    settings = SyntheticSettings(nuisance="hard", **TINY)
    assert settings.nuisance == hard and hard.has_style and not Nuisance().has_style
    styles = {}
    for index in range(6):
        style = subject_style("happiness", np.random.default_rng([0, index, 3, 4]), hard)
        for au in EXPRESSION_AUS["happiness"]:
            assert 1 - hard.style_weight <= style[au] <= 1 + hard.style_weight
        extra = set(style) - set(EXPRESSION_AUS["happiness"])
        assert len(extra) <= hard.style_extra_aus and all(style[au] <= hard.style_coactivation for au in extra)
        styles[index] = style
    assert len({tuple(sorted(s.items())) for s in styles.values()}) == 6  # every subject smiles its own way
    # A subject keeps its style: at intensity 3 its scan is its intensity-4 style at 3/4 of the amount.
    model = _clean_model(1)
    style = subject_style("surprise", np.random.default_rng(7), hard)
    lift = [model.scan(styled_activations("surprise", amount, style), np.random.default_rng(0), CLEAN).face
            .landmark("left_brow_inner")[1] for amount in (0.0, 0.75, 1.0)]
    prototype = model.scan(expression_activations("surprise", 1.0), np.random.default_rng(0), CLEAN).face
    assert lift[2] - lift[0] > lift[1] - lift[0] > 0
    assert abs((lift[2] - lift[0]) - (prototype.landmark("left_brow_inner")[1] - lift[0])) > 0.1


def test_movements_that_are_no_expression_and_blinks():
    always = Nuisance(movement_prob=1.0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        acts, name = add_movement({12: 0.8}, rng, always)
        assert name in MOVEMENTS and acts[12] == 0.8 and set(MOVEMENTS[name]) <= set(acts)
        seen.add(name)
    assert seen == set(MOVEMENTS)
    assert add_movement({12: 0.8}, rng, Nuisance()) == ({12: 0.8}, "")
    model = _clean_model()
    upper, lower = eye_openness({45: 1.0}, model.params)
    assert upper < 0.2 and lower < 0.3 and eye_openness({}, model.params) == (1.0, 1.0)
    settings = SyntheticSettings(nuisance={"preset": "hard", "movement_prob": 1.0}, **TINY)
    scans = [make_scan(0, e, 4, settings).face.meta.get("movement") for e in BASIC_EXPRESSIONS]
    assert all(name in MOVEMENTS for name in scans)


def test_hard_options_leave_default_data_and_markers_unchanged(tmp_path):
    default = SyntheticSettings(**TINY)
    assert set(default.to_json()["nuisance"]) == {"noise_mm", "holes", "hole_radius_mm", "pose_deg", "translate_mm",
                                                   "au_jitter", "au_leak", "asymmetry", "lighting",
                                                   "landmark_noise_mm"}  # the fields of generator version 1
    explicit = SyntheticSettings(nuisance={"style_weight": 0.0, "movement_prob": 0.0, "subject_asymmetry": 0.0},
                                 **TINY)
    a, b = make_scan(0, "fear", 3, default).face, make_scan(0, "fear", 3, explicit).face
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.texture, b.texture)
    hard = make_scan(0, "fear", 3, SyntheticSettings(nuisance="hard", **TINY)).face
    assert hard.num_vertices != a.num_vertices or not np.allclose(hard.vertices, a.vertices)
    generate(tmp_path, subjects=1, intensities=1, progress=False, nuisance="hard", **TINY)
    with pytest.raises(ConfigError, match="other settings"):
        generate(tmp_path, subjects=1, intensities=1, progress=False, **TINY)
    summary = generate(tmp_path, subjects=1, intensities=1, progress=False, nuisance={"preset": "hard"}, **TINY)
    assert summary.skipped_subjects == 1


def test_bad_nuisance_settings_raise():
    with pytest.raises(ConfigError, match="unknown nuisance preset"):
        Nuisance.preset("harder")
    with pytest.raises(ConfigError, match="unknown Nuisance fields"):
        SyntheticSettings(nuisance={"preset": "hard", "wobble": 1.0})
    with pytest.raises(ConfigError, match="movement_prob"):
        Nuisance(movement_prob=1.5)
    with pytest.raises(ConfigError, match="nuisance must be"):
        SyntheticSettings(nuisance=3)
