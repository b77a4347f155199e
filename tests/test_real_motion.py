"""Real motion as an input: landmark sequences (BU-4DFE landmark release layout) read, repaired and aligned; the
landmark-driven warp; the calibrated generator; the real-motion benchmark. Every file here is written by the test
(generated faces, with glitches, sliding contours and head motion added); no real data is read."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facet_vlm import Face
from facet_vlm.data import generate, load_bu3dfe, load_bu4dfe
from facet_vlm.data.bu4dfe import landmark_motion
from facet_vlm.data.calibrate import (
    MotionCalibration,
    calibrated_rest,
    calibrated_scan,
    generator_landmarks,
    load_calibration,
    mirror,
)
from facet_vlm.data.face_model import Nuisance, expression_activations, pose_matrix
from facet_vlm.data.synthetic import SyntheticSettings, subject_identity, subject_model
from facet_vlm.errors import ConfigError, FormatError
from facet_vlm.geometry.motion import (
    CONTOUR,
    INNER,
    MIRROR,
    STABLE_POINTS,
    MotionOptions,
    canonical_axes,
    canonical_motion,
    frame_shape,
    rigid_fit,
)
from facet_vlm.geometry.warp import ThinPlateSpline, transfer_motion, warp_face
from facet_vlm.io import read_bnd, read_tbnd, write_bnd, write_tbnd
from facet_vlm.labels import BU4DFE_FOLDERS

FRAMES = 16
APEX = 8
FOLDERS = {name: folder for folder, name in BU4DFE_FOLDERS.items()}


def profile(frames: int = FRAMES, apex: int = APEX) -> np.ndarray:
    """Expression amount per frame: 0 at both ends, 1 at `apex`."""
    t = np.arange(frames, dtype=float)
    return np.where(t <= apex, t / apex, (frames - 1 - t) / (frames - 1 - apex))


def clean_sequence(index: int, expression: str, frames: int = FRAMES) -> np.ndarray:
    """True (pose-free) landmark motion of generated subject `index`: (T, 83, 3) in the real layout."""
    _, model = subject_model(index, SyntheticSettings(vertices=300, texture_size=32))
    neutral = load_calibration().neutral
    return np.stack([generator_landmarks(model, expression_activations(expression, amount), neutral)
                     for amount in profile(frames)])


def tracked(sequence: np.ndarray, seed: int, glitches: bool = True) -> np.ndarray:
    """What a tracker hands over: head motion, the contour sliding in depth and (with `glitches`) landmarks that
    jump for one or two frames."""
    rng = np.random.default_rng(seed)
    out = sequence.copy()
    for t in range(len(out)):
        out[t, list(CONTOUR), 2] += rng.uniform(-15.0, 15.0, len(CONTOUR))
        pose = pose_matrix(*np.radians(rng.uniform(-8.0, 8.0, 3)), rng.uniform(-5.0, 5.0, 3), (0.0, 0.0, -80.0))
        out[t] = out[t] @ pose[:, :3].T + pose[:, 3]
    if glitches:
        out[5, 40] += [0.0, 210.0, -40.0]
        out[11:13, 20] += [150.0, 0.0, 0.0]
    return out


def write_sequence(folder: Path, sequence: np.ndarray, suffix: str = ".bnd") -> None:
    for t, frame in enumerate(sequence):
        write_bnd(folder / f"{t:03d}{suffix}", frame.astype(np.float32), vertex_indices=range(17000, 17083))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A BU-4DFE landmark release of two generated subjects; F001/Surprise starts at its apex, carries
    ``.landmark`` files and a ``.mat`` beside its ``.bnd`` files, and F001/Happy has one unreadable frame."""
    root = tmp_path_factory.mktemp("landmarks") / "BU4DFE_BND_V1.1"
    truth = {}
    for index, subject in enumerate(("F001", "M001")):
        for number, expression in enumerate(FOLDERS):
            clean = clean_sequence(index, expression)
            if (subject, expression) == ("F001", "surprise"):
                clean = clean[APEX:]  # apex -> neutral: does not start at a neutral face
            truth[(subject, expression)] = clean
            folder = root / subject / FOLDERS[expression]
            write_sequence(folder, tracked(clean, 10 * index + number))
    surprise = root / "F001" / "Surprise"
    write_sequence(surprise, tracked(truth[("F001", "surprise")], 99, glitches=False) + 1.0, ".landmark")
    (surprise / "F001_Surprise.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    (root / "F001" / ".DS_Store").write_bytes(b"\0")
    (root / "F001" / "Happy" / "004.bnd").write_text("17000 1.0 2.0\n")
    return root, truth


def test_landmark_release_is_indexed_repaired_and_reported(release):
    root, truth = release
    with pytest.warns(UserWarning, match="see dataset.bad_files"):
        dataset = load_bu4dfe(root)
    assert len(dataset) == 12 and set(dataset["subject"]) == {"F001", "M001"}
    reported = "\n".join(dataset.bad_files)
    assert "Surprise: 8 .landmark file(s) (000.landmark, ...): landmark frames not used" in reported
    assert "F001_Surprise.mat, ...): not a landmark frame; not read" in reported
    assert "Happy/004.bnd: unreadable (line 1: expected 4 columns" in reported
    assert "DS_Store" not in reported
    for row, motion in zip(dataset, dataset.motions):
        clean = truth[(row["subject"], row["expression"])]
        assert row["num_frames"] == len(clean) and row["frames"][0].endswith("000.bnd")
        if (row["subject"], row["expression"]) == ("F001", "surprise"):
            assert not row["starts_neutral"] and row["neutral"] == len(clean) - 1 and row["apex"] == 0
        else:
            assert row["starts_neutral"] and row["neutral"] == 0 and row["apex"] == APEX
            assert row["onset"] == int(np.ceil(0.6 * APEX)) and row["offset"] == APEX + 3
            listed = set(row["repairs"])
            assert any(text.startswith("frame 5 point 40: 21") for text in listed)
            assert {f"frame {t} point 20: 150 mm off, interpolated" for t in (11, 12)} <= listed
        # head motion and glitches removed: the canonical motion is the clean motion (contour depth aside)
        error = np.linalg.norm(motion.displacements(normalized=False) - expected_motion(clean, row["neutral"]),
                               axis=-1)[:, list(INNER)]
        repaired = np.zeros_like(error, dtype=bool)
        for repair in motion.repairs:
            if repair.point in INNER:
                repaired[repair.frame, repair.point] = True
        assert error[~repaired].max() < 0.1 and error[repaired].max() < 0.5  # interpolated between frames
        assert np.ptp(motion.landmarks[:, list(CONTOUR), 2], axis=0).max() == 0.0  # the sliding depth is fixed
    happy = dataset.filter(lambda row: row["subject"] == "F001" and row["expression"] == "happiness")
    assert "frame 4 point 0: not finite, interpolated" in happy[0]["repairs"]
    rebuilt = landmark_motion(happy[0])
    np.testing.assert_allclose(rebuilt.landmarks, dataset.motions[dataset["expression"].index("happiness")].landmarks)


def expected_motion(clean: np.ndarray, neutral: int) -> np.ndarray:
    """The clean sequence's motion from its neutral frame, each frame aligned on the stable points, in the neutral
    frame's canonical axes (what `canonical_motion` should give for a tracked copy)."""
    rotation = canonical_axes(clean[neutral])[0]
    out = []
    for frame in clean:
        turn, shift = rigid_fit(clean[neutral][list(STABLE_POINTS)], frame[list(STABLE_POINTS)])
        out.append((frame @ turn.T + shift - clean[neutral]) @ rotation.T)
    return np.stack(out)


def test_the_other_landmark_files_can_be_chosen_and_bad_options_are_refused(release):
    root, _ = release
    with pytest.warns(UserWarning):
        dataset = load_bu4dfe(root, landmark_suffix=".landmark")
    assert len(dataset) == 1 and dataset[0]["frames"][0].endswith("000.landmark")
    with pytest.raises(ConfigError, match="landmark_suffix"):
        load_bu4dfe(root, landmark_suffix=".txt")
    with pytest.raises(ConfigError, match="glitch_mm"):
        MotionOptions(glitch_mm=0)
    with pytest.raises(FormatError, match=r"shape \(frames, 83, 3\)"):
        canonical_motion(np.zeros((4, 82, 3)))
    broken = np.tile(clean_sequence(0, "happiness")[:1], (5, 1, 1))
    broken[:, 3] = np.nan
    with pytest.raises(FormatError, match="point 3 is a glitch or not finite in every frame"):
        canonical_motion(broken, path="x/Happy")


def test_meshes_get_their_landmark_motion_from_landmarks_root(tmp_path):
    generate(tmp_path / "meshes", subjects=1, formats=("bu4dfe",), sequence_frames=4, vertices=300, texture_size=32,
             progress=False)
    landmarks = tmp_path / "BU4DFE_BND_V1.1"
    for number, expression in enumerate(FOLDERS):
        frames = 5 if expression == "fear" else 4  # fear: a frame more than the meshes
        write_sequence(landmarks / subject_identity(0).bu4dfe / FOLDERS[expression],
                       tracked(clean_sequence(0, expression, frames), number, glitches=False))
    with pytest.warns(UserWarning, match="see dataset.bad_files"):
        dataset = load_bu4dfe(tmp_path / "meshes", landmarks_root=landmarks)
    assert "4 mesh frames but 5 landmark frames" in "\n".join(dataset.bad_files)
    for row in dataset:
        if row["expression"] == "fear":
            assert row["landmark_frames"] == [] and row["apex"] == -1
            continue
        assert [Path(f).stem for f in row["landmark_frames"]] == [Path(f).stem for f in row["frames"]]
        assert len(row["landmark_transforms"]) == 4 and len(row["landmark_transforms"][0]) == 12
        raw = read_bnd(row["landmark_frames"][2])[0].astype(float)
        transform = np.asarray(row["landmark_transforms"][2]).reshape(3, 4)
        canonical = landmark_motion(row).landmarks[2]
        np.testing.assert_allclose((raw @ transform[:, :3].T + transform[:, 3])[list(INNER)],
                                   canonical[list(INNER)], atol=1e-6)


def test_tbnd_round_trip_with_untracked_points(tmp_path):
    points = np.random.default_rng(0).normal(0.0, 30.0, (83, 3))
    points[7] = np.nan
    path = write_tbnd(tmp_path / "0000.tbnd", points, (-3.5, 12.0, 179.0))
    assert path.read_text().splitlines()[8] == "0 0 0"  # the guide's mark of an untracked point
    pose, read = read_tbnd(path)
    np.testing.assert_allclose(pose, [-3.5, 12.0, 179.0])
    assert np.isnan(read[7]).all() and np.allclose(read[~np.isnan(read[:, 0])], np.delete(points, 7, axis=0))
    (tmp_path / "bad.tbnd").write_text("1 2\n" + "1 2 3\n" * 83)
    with pytest.raises(FormatError, match="bad.tbnd: line 1: the first line must be the pose"):
        read_tbnd(tmp_path / "bad.tbnd")
    (tmp_path / "short.tbnd").write_text("0 0 0\n" + "1 1 2 3\n" * 82)
    with pytest.raises(FormatError, match="short.tbnd: 82 landmarks, expected 83"):
        read_tbnd(tmp_path / "short.tbnd")


# --- the warp ------------------------------------------------------------------------------------------------------


def grid_face(size: int = 15) -> Face:
    xs = np.linspace(-60.0, 60.0, size)
    x, y = np.meshgrid(xs, xs)
    vertices = np.stack([x, y, 20.0 * np.exp(-(x ** 2 + y ** 2) / 1500.0)], -1).reshape(-1, 3)
    index = np.arange(size * size).reshape(size, size)
    faces = np.concatenate([np.stack([index[:-1, :-1], index[1:, :-1], index[:-1, 1:]], -1).reshape(-1, 3),
                            np.stack([index[1:, :-1], index[1:, 1:], index[:-1, 1:]], -1).reshape(-1, 3)])
    return Face(vertices, faces)


def test_thin_plate_spline_lands_control_points_and_leaves_a_still_mesh_still():
    rng = np.random.default_rng(1)
    source = rng.uniform(-50.0, 50.0, (20, 3))
    target = source + rng.normal(0.0, 4.0, source.shape)
    spline = ThinPlateSpline(source, target)
    np.testing.assert_allclose(spline(source), target, atol=1e-8)
    face = grid_face()
    still = warp_face(face, source, source)
    np.testing.assert_allclose(still.vertices, face.vertices, atol=1e-4)
    rotation = pose_matrix(0.3, -0.2, 0.1, (5.0, -2.0, 1.0), (0.0, 0.0, 0.0))
    moved = ThinPlateSpline(source, source @ rotation[:, :3].T + rotation[:, 3])(face.vertices)
    np.testing.assert_allclose(moved, face.vertices @ rotation[:, :3].T + rotation[:, 3], atol=1e-4)
    far = np.linalg.norm(face.vertices[:, None] - source[None], axis=-1).min(axis=1) > 30.0
    near = ~far
    change = np.linalg.norm(spline(face.vertices) - face.vertices, axis=1)
    assert change[near].max() > 0.5 and np.all(np.isfinite(change))
    with pytest.raises(ConfigError, match="pass regularization"):
        ThinPlateSpline(np.zeros((5, 3)), np.zeros((5, 3)))


def test_transfer_motion_scales_and_turns_real_motion_onto_another_face():
    motion = canonical_motion(tracked(clean_sequence(1, "surprise"), 3))
    face = grid_face()
    rest = clean_sequence(0, "happiness")[0]
    pose = pose_matrix(0.4, 0.1, -0.2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    target_marks = (rest * 1.2) @ pose[:, :3].T  # a bigger face, turned
    face.landmarks = np.concatenate([target_marks, [[0.0, 0.0, 99.0]]]).astype(np.float32)
    frames = transfer_motion(face, motion, frames=[0, motion.apex])
    np.testing.assert_allclose(frames[0].vertices, face.vertices, atol=1e-3)  # the neutral frame: no motion
    sent = frames[1].landmarks[:83].astype(float)
    rotation, _, interocular = canonical_axes(target_marks)
    back = ((sent - target_marks) @ rotation.T) / interocular  # the motion seen in the target's canonical frame
    np.testing.assert_allclose(back, motion.displacements()[motion.apex], atol=1e-4)
    assert frames[1].meta["motion_frame"] == motion.apex and frames[1].landmarks.shape == (84, 3)
    with pytest.raises(ConfigError, match="83 BU-3DFE-layout landmarks"):
        transfer_motion(grid_face(), motion)


# --- the calibration -----------------------------------------------------------------------------------------------


def synthetic_motions(subjects: int = 4):
    out = []
    for index in range(subjects):
        for number, expression in enumerate(FOLDERS):
            out.append((f"S{index}", expression, canonical_motion(tracked(clean_sequence(index, expression), number,
                                                                          glitches=False))))
    return out


def test_an_outlying_apex_is_left_out_of_its_expression_fit_and_reported():
    """`apex_outliers`: one sequence whose apex moved far more than the others' is found by its robust z-score;
    `fit` leaves it out of that expression only, says so in its settings, and keeps it with ``outlier_z=None``."""
    from facet_vlm.data.calibrate import OUTLIER_MIN_SEQUENCES, apex_outliers

    motions = synthetic_motions(OUTLIER_MIN_SEQUENCES)
    disgust = [m for _, name, m in motions if name == "disgust"]
    far = disgust[3]
    far.landmarks[far.apex] += 0.8 * far.interocular * np.linspace(0.0, 1.0, 83)[:, None]
    assert apex_outliers(disgust, 3.5) == [3]
    assert apex_outliers(disgust[:3] + disgust[4:], 3.5) == []
    kept = MotionCalibration.fit(motions, components=2, identity_subjects=0, outlier_z=None)
    trimmed = MotionCalibration.fit(motions, components=2, identity_subjects=0)
    assert trimmed.settings["outliers_left_out"] == {name: int(name == "disgust") for name in FOLDERS}
    assert kept.expressions["disgust"].samples == OUTLIER_MIN_SEQUENCES
    assert trimmed.expressions["disgust"].samples == OUTLIER_MIN_SEQUENCES - 1
    assert trimmed.expressions["disgust"].spreads[0] < 0.5 * kept.expressions["disgust"].spreads[0]
    few = MotionCalibration.fit(synthetic_motions(4), components=2, identity_subjects=0)
    assert few.settings["outliers_left_out"] == {}  # too few sequences to call one an outlier


def test_calibration_fits_summaries_that_round_trip_and_sample_like_the_data(tmp_path):
    motions = synthetic_motions()
    calibration = MotionCalibration.fit(motions, components=2, source="generated", identity_subjects=3,
                                        identity_components=0)
    assert calibration.subjects == 4 and calibration.neutral.shape == (83, 3)
    neutrals = np.stack([m.landmarks[m.neutral] / m.interocular for _, _, m in motions])
    np.testing.assert_allclose(calibration.neutral_std, neutrals.std(axis=0), atol=1e-12)
    assert calibration.generator_mean.shape == calibration.generator_std.shape == (83, 3)
    for expression, model in calibration.expressions.items():
        apex = np.stack([m.displacements()[m.apex] for _, name, m in motions if name == expression])
        symmetric = 0.5 * (apex + mirror(apex))
        np.testing.assert_allclose(model.mean, apex.mean(axis=0), atol=1e-12)
        assert model.components.shape == (2, 83, 3) and model.samples == 4
        np.testing.assert_allclose(np.linalg.norm(model.components.reshape(2, -1), axis=1), 1.0)
        assert np.abs(model.components - mirror(model.components)).max() < 1e-9  # directions are symmetric
        assert model.timing["apex"][0] == pytest.approx(APEX / (FRAMES - 1))
        draws = np.stack([model.sample(np.random.default_rng(i)) for i in range(400)])
        spread = np.linalg.norm(symmetric - symmetric.mean(0), axis=(1, 2)).mean()
        assert np.linalg.norm(draws.mean(0) - model.mean) < 0.2 * spread + 1e-3
        amounts = model.profile(FRAMES)
        assert amounts[0] == 0.0 and amounts.max() == pytest.approx(1.0) and np.argmax(amounts) == APEX
    happiness = calibration.expressions["happiness"]
    assert happiness.activations[list(calibration_aus()).index(12)] > 0.5  # the refit finds the smile's AU12
    saved = calibration.save(tmp_path / "calibration.json")
    again = MotionCalibration.load(saved)
    np.testing.assert_allclose(again.expressions["fear"].mean, calibration.expressions["fear"].mean, atol=1e-5)
    data = json.loads(saved.read_text())
    assert "frames" not in saved.read_text() and set(data) == {
        "version", "source", "subjects", "settings", "interocular_mm", "neutral", "neutral_std", "generator_mean",
        "generator_std", "expressions"}
    data["version"] = 99
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="old.json: calibration version 99"):
        MotionCalibration.load(tmp_path / "old.json")
    with pytest.raises(ConfigError, match="at least 2 are needed"):
        MotionCalibration.fit(motions[:6], identity_subjects=0)


def test_calibrated_faces_get_the_real_covariance_of_the_neutral_faces(tmp_path):
    """With identity components, generated neutral faces spread along the real faces' principal directions as the
    real faces do (and uncorrelated), not only point by point; the fields round-trip; too many components is an
    error."""
    motions = synthetic_motions()
    calibration = MotionCalibration.fit(motions, components=2, identity_subjects=30, identity_components=3)
    assert calibration.neutral_directions.shape == calibration.generator_directions.shape == (3, 83, 3)
    assert calibration.settings["identity_components"] == 3
    settings = SyntheticSettings(vertices=400, texture_size=32)  # the generator subjects the fit measured
    shapes = np.stack([frame_shape(calibrated_rest(subject_model(i, settings)[1], calibration)) for i in range(30)])
    directions = calibration.neutral_directions.reshape(3, -1)
    scores = (shapes - calibration.neutral).reshape(30, -1) @ directions.T
    np.testing.assert_allclose(scores.std(axis=0), calibration.neutral_spreads, rtol=0.2)
    correlation = np.corrcoef(scores.T)
    assert np.abs(correlation - np.eye(3)).max() < 0.3
    per_point = dataclasses.replace(calibration, neutral_directions=None, generator_directions=None)
    flat = np.stack([frame_shape(calibrated_rest(subject_model(i, settings)[1], per_point)) for i in range(30)])
    assert not np.allclose(flat, shapes, atol=1e-3)  # the directions change the faces
    again = MotionCalibration.load(calibration.save(tmp_path / "calibration.json"))
    np.testing.assert_allclose(again.neutral_spreads, calibration.neutral_spreads, rtol=1e-4)
    np.testing.assert_allclose(calibrated_rest(subject_model(0, settings)[1], again),
                               calibrated_rest(subject_model(0, settings)[1], calibration), atol=0.01)  # mm
    with pytest.raises(ConfigError, match="identity_components=30 needs more"):
        MotionCalibration.fit(motions, identity_subjects=30, identity_components=30)


def calibration_aus():
    from facet_vlm.data.face_model import ACTION_UNITS

    return ACTION_UNITS


def test_the_shipped_calibration_holds_only_summaries():
    calibration = load_calibration("bu4dfe")
    assert calibration.subjects == 41 and set(calibration.expressions) == set(FOLDERS)
    assert calibration.neutral_std.shape == calibration.generator_mean.shape == (83, 3)
    left_out = calibration.settings["outliers_left_out"]
    for name, model in calibration.expressions.items():  # one sequence per subject, less the outliers left out
        assert model.samples == 41 - left_out[name] and model.components.shape[0] <= 5  # no per-person scores
        assert model.covariance.shape == (13, 13)
    assert np.abs(calibration.neutral[list(MIRROR)] * [-1, 1, 1] - calibration.neutral).max() < 0.1


def test_a_calibrated_scan_puts_every_landmark_where_it_was_sent():
    _, model = subject_model(2, SyntheticSettings(vertices=600, texture_size=32))
    calibration = load_calibration()
    displacement = calibration.expressions["surprise"].sample(np.random.default_rng(0))
    exact = Nuisance(noise_mm=0.0, holes=(0, 0), landmark_noise_mm=0.0)
    identity = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)
    scan = calibrated_scan(model, displacement, np.random.default_rng(1), calibration, exact, pose=identity)
    rest = calibrated_rest(model, calibration)
    rotation, _, interocular = canonical_axes(rest)
    np.testing.assert_allclose(scan.face.landmarks[:83], rest + interocular * displacement @ rotation, atol=1e-3)
    assert scan.face.landmark_names[:2] == ["bnd_00", "bnd_01"] and "nose_tip" in scan.face.landmark_names
    assert float(scan.face.meta["activations"]["26"]) > 0.3  # surprise drops the jaw
    plain = dataclasses.replace(calibration, neutral_std=None)
    still = calibrated_scan(model, np.zeros((83, 3)), np.random.default_rng(1), plain, exact, pose=identity)
    neutral = model.scan({}, np.random.default_rng(1), exact, pose=identity, asymmetry=0.0)
    np.testing.assert_allclose(still.face.vertices, neutral.face.vertices, atol=1e-3)
    # the identity geometry gives the generated face the real faces' proportions: a narrower mouth
    width = {name: np.ptp(frame_shape(points)[[48, 54], 0]) for name, points in
             (("own", generator_landmarks(model, {}, calibration.neutral)), ("calibrated", rest))}
    real = np.ptp(calibration.neutral[[48, 54], 0])
    assert abs(width["calibrated"] - real) < abs(width["own"] - real)


def test_calibrated_motion_is_an_option_of_the_generator(tmp_path):
    generate(tmp_path / "au", subjects=1, intensities=2, vertices=300, texture_size=32, progress=False)
    generate(tmp_path / "cal", subjects=1, intensities=2, vertices=300, texture_size=32, progress=False,
             motion="bu4dfe", formats=("bu3dfe", "bu4dfe"), sequence_frames=5)
    default, calibrated = load_bu3dfe(tmp_path / "au"), load_bu3dfe(tmp_path / "cal")
    assert len(default) == len(calibrated) == 13
    marker = json.loads(next((tmp_path / "cal" / "bu3dfe").glob("*/.facet_vlm_complete.json")).read_text())
    assert marker["motion"] == "bu4dfe" and "motion" not in json.loads(
        next((tmp_path / "au" / "bu3dfe").glob("*/.facet_vlm_complete.json")).read_text())
    paths = dict(zip(zip(calibrated["expression"], calibrated["intensity"]), calibrated["landmarks_path"]))
    mean = load_calibration().expressions["happiness"].mean
    rest, smile = (read_bnd(paths[key])[0].astype(float) for key in (("neutral", 0), ("happiness", 2)))
    motion = canonical_motion(np.stack([rest, smile]))
    seen = motion.displacements()[1][list(INNER)].ravel()
    assert np.corrcoef(seen, mean[list(INNER)].ravel())[0, 1] > 0.6
    assert frame_shape(rest)[8, 0] > 0  # the real layout: point 8 is the second eye's inner corner
    sequences = load_bu4dfe(tmp_path / "cal", landmarks_root=tmp_path / "cal" / "bu4dfe")
    assert sequences.bad_files == [] and all(len(row["landmark_frames"]) == 5 for row in sequences)
    with pytest.raises(ConfigError, match="not bosphorus"):
        generate(tmp_path / "b", subjects=1, formats=("bosphorus",), motion="bu4dfe", progress=False)


# --- the benchmark -------------------------------------------------------------------------------------------------


def test_real_motion_benchmark_runs_end_to_end_on_a_generated_release(release, tmp_path):
    from facet_vlm.benchmarks.cli import main

    root, _ = release
    copy = tmp_path / "BU4DFE_BND_V1.1"
    shutil.copytree(root, copy)
    for index, subject in enumerate(("F002", "M002")):
        for number, expression in enumerate(FOLDERS):
            write_sequence(copy / subject / FOLDERS[expression], tracked(clean_sequence(index + 2, expression),
                                                                         50 + number))
    out = tmp_path / "out"
    with pytest.warns(UserWarning):
        main(["real-motion", "--bnd-root", str(copy), "--out", str(out), "--folds", "2", "--generated-subjects", "3",
              "--components", "2", "--trees", "10", "--identity-subjects", "3", "--identity-components", "2",
              "--steps", "baseline", "generated", "calibrate", "write", "identities", "--identities-per-subject", "2",
              "--vertices", "300", "--texture-size", "32", "--sequence-frames", "3", "--identity-sequences"])
    results = json.loads((out / "real_motion.json").read_text())
    assert set(results["baseline"]) == {"without_neutral", "with_neutral", "raw_without_neutral", "raw_with_neutral"}
    assert set(results["generated"]) == {f"{kind}_{side}_neutral" for kind in ("calibrated", "uncalibrated")
                                         for side in ("with", "without")}
    assert all(len(value["folds"]) == 2 for value in results["baseline"].values())
    assert [sorted(test) for _, test in results["settings"]["folds"]] and results["settings"]["subjects"] == [
        "F001", "F002", "M001", "M002"]
    stills = load_bu3dfe(out / "bu3dfe")
    assert len(stills) == 4 * 13 and set(stills["intensity"]) == {0, 3, 4}
    assert sorted(set(stills["subject"])) == ["F0001", "F0002", "M0001", "M0002"]
    sequences = load_bu4dfe(out / "bu4dfe", landmarks_root=out / "bu4dfe")
    assert len(sequences) == 24 and sequences.bad_files == []
    assert MotionCalibration.load(out / "bu4dfe_motion.json").subjects == 4
    # the real-motion pretraining data: 2 new identities per subject, each fold's view holds its training subjects'
    identities = load_bu3dfe(out / "identities" / "bu3dfe")
    assert len(identities) == 4 * 2 * 13 and not set(identities["subject"]) & set(stills["subject"])
    sources = json.loads((out / "identities" / "identities.json").read_text())["sources"]
    for fold, (train, test) in enumerate(results["settings"]["folds"]):
        seen = {sources[name] for name in load_bu3dfe(out / "identities" / f"fold_{fold}" / "bu3dfe")["subject"]}
        assert seen == set(train) and not seen & set(test)
    # ... and, for the temporal model, each identity's six sequences in the BU-4DFE layout, per fold as well
    info = json.loads((out / "identities" / "identities.json").read_text())
    assert sorted(info["sequence_names"]) == sorted(sources) and len(set(info["sequence_names"].values())) == 8
    identity_sequences = load_bu4dfe(out / "identities" / "bu4dfe", landmarks_root=out / "identities" / "bu4dfe")
    assert len(identity_sequences) == 8 * 6 and identity_sequences.bad_files == []
    assert set(identity_sequences["subject"]) == set(info["sequence_names"].values())
    assert all(row["num_frames"] >= 3 for row in identity_sequences)
    source_of = {folder: sources[name] for name, folder in info["sequence_names"].items()}
    for fold, (train, _) in enumerate(results["settings"]["folds"]):
        seen = {source_of[s] for s in load_bu4dfe(out / "identities" / f"fold_{fold}" / "bu4dfe")["subject"]}
        assert seen == set(train)

    def apex_motion(name: str, code: str) -> tuple[np.ndarray, np.ndarray]:
        folder = out / "identities" / "bu3dfe" / name
        rest, apex = (read_bnd(next(folder.glob(f"{name}_{c}*.bnd")))[0].astype(float) for c in ("NE00", code))
        return rest, canonical_motion(np.stack([rest, apex])).displacements()[1][:68]  # without the contour

    # two different faces (F001's identities 0 and 1) show F001's motion: each expression's apex motion is nearer the
    # other face's same expression than its other one (the written landmarks carry the pretraining preset's noise)
    first, second = ({code: apex_motion(name, code) for code in ("HA04", "SU04")} for name in ("F0100", "F0101"))
    assert np.abs(first["HA04"][0] - second["HA04"][0]).mean() > 1.0
    for code, other in (("HA04", "SU04"), ("SU04", "HA04")):
        assert np.linalg.norm(first[code][1] - second[code][1]) < np.linalg.norm(first[code][1] - second[other][1])


def test_a_refitted_calibration_gets_a_new_synthetic_cache_folder(tmp_path):
    """The synthetic set's cache folder follows the calibration file's content: a rewritten calibration is not
    served the faces its predecessor moved; the same content, and sets without calibrated motion, keep theirs."""
    from facet_vlm.data.prepare import synthetic_root

    calibration = MotionCalibration.fit(synthetic_motions(), components=2, identity_subjects=0)
    path = calibration.save(tmp_path / "motion.json")
    options = {"motion": str(path), "vertices": 2000}
    first = synthetic_root(tmp_path / "cache", 10, 0, options)
    assert synthetic_root(tmp_path / "cache", 10, 0, dict(options)) == first
    calibration.expressions["fear"].mean[0, 0] += 0.01
    calibration.save(path)
    assert synthetic_root(tmp_path / "cache", 10, 0, options) != first
    plain = {"vertices": 2000}
    assert synthetic_root(tmp_path / "cache", 10, 0, plain) == synthetic_root(tmp_path / "cache", 10, 0, plain)
    assert synthetic_root(tmp_path / "cache", 10, 0, {"motion": "bu4dfe"}) != synthetic_root(tmp_path / "cache", 10,
                                                                                             0, {})
