"""Real motion: the development benchmark built from the BU-4DFE landmark release, its landmark baseline, and the
generator's calibration measured against real motion (``python scripts/bench.py real-motion --bnd-root ROOT``).

Steps (``--steps``, any of):

- ``baseline``: the landmark random forest on the real motion of the development subjects, BU-3DFE-like protocol
  P1 (6 expressions x intensities 3 and 4 = the onset frame at `MotionOptions.onset_fraction` of the apex magnitude
  and the apex; one sample each per sequence), subject-independent k-fold (`facet_vlm.data.subject_kfold`), without
  the neutral face (each frame alone in its own canonical frame, divided by its inter-ocular distance:
  `facet_vlm.geometry.motion.frame_shape`) and with it (the motion from the neutral frame in its canonical frame,
  divided by the inter-ocular distance). Also on the raw file coordinates (the ``.bnd`` rows as read, neutral frame
  concatenated for "with"; an unreadable frame interpolated over time), which is what a classifier handed the
  landmarks without this library's cleaning sees (the frames chosen are the same).
- ``generated``: the same classifier trained on generated motion and tested on the real motion of each fold's test
  subjects ("generated -> real"), against real -> real. In every fold the calibration is fitted on that fold's
  training subjects only (`MotionCalibration.fit`); the generated subjects are the generator's identities with the
  real layout placed on them (`generator_points`) moved by motion sampled from that calibration. The generator's
  own, uncalibrated AU motion is scored the same way.
- ``calibrate``: fit the calibration on all the subjects given and save it (``--calibration-out``; the library ships
  the one fitted on the 41 development subjects as ``facet_vlm/data/calibration/bu4dfe_motion.json``).
- ``write``: the benchmark data set: one generated identity per real subject (same sex; named after it, F001 ->
  F0001), driven by that subject's real motion (`calibrated_scan`), written in the BU-3DFE layout (neutral, and
  each expression at intensities 3 and 4) under ``OUT/bu3dfe`` and in the BU-4DFE layout (``--sequence-frames``
  frames per sequence, evenly over the real sequence, with each frame's ``.bnd``) under ``OUT/bu4dfe``, plus
  ``OUT/benchmark.json`` with the subjects and folds. `facet_vlm.data.load_bu3dfe` / `load_bu4dfe` read them.
- ``identities``: pretraining data moved by real motion (`write_identities`): ``--identities-per-subject``
  generated identities per real subject, each showing that subject's real stills motion, under
  ``OUT/identities/bu3dfe``, and per fold ``OUT/identities/fold_<f>/bu3dfe`` with the training subjects' identities
  only (the real-motion pretraining arm of the development benchmark; pretrain on a fold's folder, fine-tune on the
  benchmark set's same fold). With ``--identity-sequences`` also their BU-4DFE-layout sequences (``--sequence-frames``
  frames) under ``OUT/identities/bu4dfe`` and ``OUT/identities/fold_<f>/bu4dfe``, for the temporal model.

Results go to ``OUT/real_motion.json`` (per-fold accuracies and settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Classifier settings shared by every score of this benchmark (``--trees`` replaces n_estimators).
FOREST = {"n_estimators": 300, "min_samples_leaf": 1, "max_features": "sqrt"}
LEVELS = (3, 4)
STEPS = ("baseline", "generated", "calibrate", "write", "identities")


@dataclass
class Samples:
    """Landmark samples of P1 (one row per subject x expression x level)."""

    subjects: np.ndarray
    labels: np.ndarray
    levels: np.ndarray
    shapes: np.ndarray  # (n, 249): the frame alone (its own canonical frame / inter-ocular distance)
    motions: np.ndarray  # (n, 249): motion from the neutral frame / inter-ocular distance
    raw: np.ndarray | None = None  # (n, 498): the frame and the neutral frame as read (real data only)

    def features(self, neutral: bool, raw: bool = False) -> np.ndarray:
        if raw:
            return self.raw if neutral else self.raw[:, : self.raw.shape[1] // 2]
        return self.motions if neutral else self.shapes


def real_motions(bnd_root: str | Path, subjects: list[str] | None = None):
    """(index, [(subject, expression, LandmarkMotion)]) of a BU-4DFE landmark release, optionally restricted to
    `subjects` (the index keeps every subject; only their motions are read)."""
    from ..data import load_bu4dfe

    dataset = load_bu4dfe(bnd_root)
    keep = set(subjects) if subjects else None
    motions = [(row["subject"], row["expression"], motion) for row, motion in zip(dataset, dataset.motions)
               if keep is None or row["subject"] in keep]
    return dataset, motions


def real_samples(motions: list, raw_frames: dict | None = None) -> Samples:
    """P1 samples of real sequences; `raw_frames` maps a sequence path to its raw (T, 83, 3) landmarks."""
    from ..geometry.motion import frame_shape
    from ..labels import BASIC_EXPRESSIONS

    rows = {"subjects": [], "labels": [], "levels": [], "shapes": [], "motions": [], "raw": []}
    for subject, expression, motion in motions:
        displacement = motion.displacements()
        for level, frame in zip(LEVELS, (motion.onset, motion.apex)):
            rows["subjects"].append(subject)
            rows["labels"].append(BASIC_EXPRESSIONS.index(expression))
            rows["levels"].append(level)
            rows["shapes"].append(frame_shape(motion.landmarks[frame]).ravel())
            rows["motions"].append(displacement[frame].ravel())
            if raw_frames is not None:
                raw = raw_frames[motion.path]
                rows["raw"].append(np.concatenate([raw[frame].ravel(), raw[motion.neutral].ravel()]))
    return Samples(subjects=np.array(rows["subjects"]), labels=np.array(rows["labels"]),
                   levels=np.array(rows["levels"]), shapes=np.array(rows["shapes"]),
                   motions=np.array(rows["motions"]), raw=np.array(rows["raw"]) if raw_frames is not None else None)


def generated_samples(calibration, subjects: int, seed: int, calibrated: bool = True,
                      landmark_noise_mm: float = 0.4) -> Samples:
    """P1 samples of `subjects` generated identities (the generator's subjects 0..n-1 of `seed`, real layout placed
    on them): with `calibrated`, the calibrated neutral face (`calibrated_rest`) moved by motion sampled from
    `calibration` (a per-subject style per expression; intensity 3 = the apex motion times a drawn onset ratio), else
    the generator's own face and AU expressions (default nuisance: per-scan AU jitter and leak) at amounts 0.75 and
    1. Landmarks get `landmark_noise_mm` of noise."""
    from ..data.calibrate import calibrated_rest, generator_landmarks
    from ..data.face_model import Nuisance, expression_activations, jitter_activations
    from ..data.synthetic import SyntheticSettings, subject_model
    from ..geometry.motion import canonical_axes, frame_shape
    from ..labels import BASIC_EXPRESSIONS

    settings = SyntheticSettings(seed=seed, vertices=400, texture_size=32)
    nuisance = Nuisance()
    rows = {"subjects": [], "labels": [], "levels": [], "shapes": [], "motions": []}
    for index in range(subjects):
        _, model = subject_model(index, settings)
        rest = calibrated_rest(model, calibration) if calibrated else generator_landmarks(model, {},
                                                                                           calibration.neutral)
        rotation, _, interocular = canonical_axes(rest)
        for label, expression in enumerate(BASIC_EXPRESSIONS):
            rng = np.random.default_rng([seed, index, 70, label])
            if calibrated:
                model_motion = calibration.expressions[expression]
                apex = model_motion.sample(rng)
                targets = [rest + interocular * (model_motion.onset(rng) * apex) @ rotation,
                           rest + interocular * apex @ rotation]
            else:
                targets = [generator_landmarks(model, jitter_activations(expression_activations(expression, amount),
                                                                         rng, nuisance), calibration.neutral)
                           for amount in (0.75, 1.0)]
            noisy_rest = rest + rng.normal(0.0, landmark_noise_mm, rest.shape)
            for level, target in zip(LEVELS, targets):
                target = target + rng.normal(0.0, landmark_noise_mm, target.shape)
                rows["subjects"].append(f"G{index:04d}")
                rows["labels"].append(label)
                rows["levels"].append(level)
                rows["shapes"].append(frame_shape(target).ravel())
                rows["motions"].append((((target - noisy_rest) @ rotation.T) / interocular).ravel())
    return Samples(**{key: np.array(value) for key, value in rows.items()})


def forest_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  seed: int, trees: int = FOREST["n_estimators"]) -> float:
    """Accuracy of the `FOREST` random forest (`trees` trees) trained on (train_x, train_y), tested on (test_x,
    test_y)."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(**{**FOREST, "n_estimators": trees}, random_state=seed, n_jobs=1)
    forest.fit(train_x, train_y)
    return float(np.mean(forest.predict(test_x) == test_y))


def baseline(samples: Samples, folds: list, seed: int = 0, trees: int = FOREST["n_estimators"]) -> dict:
    """Per-fold accuracies of the landmark forest cross-validated on real samples (see the module docstring)."""
    out = {}
    variants = {"without_neutral": (False, False), "with_neutral": (True, False)}
    if samples.raw is not None:
        variants.update({"raw_without_neutral": (False, True), "raw_with_neutral": (True, True)})
    for name, (neutral, raw) in variants.items():
        x = samples.features(neutral, raw)
        scores = []
        for fold, (train, test) in enumerate(folds):
            a, b = np.isin(samples.subjects, train), np.isin(samples.subjects, test)
            scores.append(forest_scores(x[a], samples.labels[a], x[b], samples.labels[b], seed + fold, trees))
        out[name] = scores
    return out


def generated_to_real(motions: list, samples: Samples, folds: list, generated_subjects: int, seed: int = 0,
                      components: int = 5, trees: int = FOREST["n_estimators"], identity_subjects: int = 100,
                      identity_components: int | None = None, outlier_z: float | None | str = "default") -> dict:
    """Per-fold accuracies of the forest trained on generated motion and tested on each fold's real test
    subjects: calibrated on that fold's training subjects, and the uncalibrated generator (see the module docstring).
    `identity_components` None / `outlier_z` "default": the calibration's defaults
    (`facet_vlm.data.calibrate.IDENTITY_COMPONENTS`, `OUTLIER_Z`; `outlier_z` None keeps every sequence).
    """
    from ..data.calibrate import IDENTITY_COMPONENTS, OUTLIER_Z, MotionCalibration

    if identity_components is None:
        identity_components = IDENTITY_COMPONENTS
    if outlier_z == "default":
        outlier_z = OUTLIER_Z

    out: dict[str, list[float]] = {}
    for fold, (train, test) in enumerate(folds):
        calibration = MotionCalibration.fit([m for m in motions if m[0] in set(train)], components=components,
                                            identity_subjects=identity_subjects,
                                            identity_components=identity_components, outlier_z=outlier_z)
        test_rows = np.isin(samples.subjects, test)
        for calibrated in (True, False):
            generated = generated_samples(calibration, generated_subjects, seed + 1000 * fold, calibrated)
            for neutral in (False, True):
                name = f"{'calibrated' if calibrated else 'uncalibrated'}_{'with' if neutral else 'without'}_neutral"
                out.setdefault(name, []).append(forest_scores(
                    generated.features(neutral), generated.labels, samples.features(neutral)[test_rows],
                    samples.labels[test_rows], seed + fold, trees))
    return out


def _identity(key: list[int], sex: str, vertices: int, texture_size: int):
    """(FaceModel, race code) of one generated identity of `sex`, drawn from the random streams keyed by `key`."""
    from ..data.face_model import RACE_WEIGHTS, FaceModel, sample_subject

    races = list(RACE_WEIGHTS)
    rng = np.random.default_rng([*key, 80])
    race = races[int(rng.choice(len(races), p=np.array(list(RACE_WEIGHTS.values())) / sum(RACE_WEIGHTS.values())))]
    model = FaceModel(sample_subject(np.random.default_rng([*key, 81]), sex, race), vertices=vertices,
                      texture_size=texture_size, seed=int(rng.integers(2 ** 31)))
    return model, race


def _write_stills(model, race: str, name: str, sequences: dict, folder: Path, rng_key: list[int], first: int,
                  calibration, nuisance) -> list[str]:
    """Write `name`'s BU-3DFE-layout stills under `folder`: the neutral scan and each expression of `sequences`
    (expression -> real `LandmarkMotion`) at intensities 3 (onset frame) and 4 (apex frame); scan i draws its
    nuisance from ``[*rng_key, 82, level, first + i]``. Returns the written ``.wrl`` paths."""
    from ..data.calibrate import calibrated_scan
    from ..io import write_bnd, write_wrl
    from ..labels import BASIC_EXPRESSIONS, BU3DFE_CODES

    codes = {label: code for code, label in BU3DFE_CODES.items()}
    plan = [("neutral", 0, np.zeros((83, 3)))]
    for expression in BASIC_EXPRESSIONS:
        if expression in sequences:
            motion = sequences[expression]
            displacements = motion.displacements()
            plan += [(expression, level, displacements[frame])
                     for level, frame in zip(LEVELS, (motion.onset, motion.apex))]
    written = []
    for expression, level, displacement in plan:
        scan = calibrated_scan(model, displacement, np.random.default_rng([*rng_key, 82, level, first + len(written)]),
                               calibration, nuisance, meta={"subject": name, "expression": expression,
                                                            "intensity": level})
        stem = f"{name}_{codes[expression]}{level:02d}{race}_F3D"
        write_wrl(folder / f"{stem}.wrl", scan.face)
        write_bnd(folder / f"{stem}.bnd", scan.face.landmarks[:83])
        written.append(str(folder / f"{stem}.wrl"))
    return written


def _write_sequences(model, name: str, sequences: dict, folder: Path, rng_key: list[int], sequence_frames: int,
                     calibration, nuisance) -> int:
    """Write `name`'s BU-4DFE-layout sequences under `folder` (``<Expression>/NNN.wrl`` + ``.bnd``): per expression
    of `sequences` (expression -> real `LandmarkMotion`), `sequence_frames` frames spread evenly over the real
    sequence plus its neutral, onset and apex frames (0: every frame); frame f draws its nuisance from
    ``[*rng_key, f]``. Returns the number of frames written."""
    from ..data.calibrate import calibrated_scan
    from ..io import write_bnd, write_wrl
    from ..labels import BU4DFE_FOLDERS

    folders = {label: folder for folder, label in BU4DFE_FOLDERS.items()}
    written = 0
    for expression, motion in sequences.items():
        frames = np.unique(np.r_[np.round(np.linspace(0, motion.num_frames - 1, max(2, sequence_frames))),
                                 motion.apex, motion.onset, motion.neutral].astype(int)) if sequence_frames \
            else np.arange(motion.num_frames)
        displacements = motion.displacements()
        for position, frame in enumerate(frames):
            scan = calibrated_scan(model, displacements[frame], np.random.default_rng([*rng_key, int(frame)]),
                                   calibration, nuisance, meta={"subject": name, "expression": expression,
                                                                "frame": int(frame)})
            write_wrl(folder / folders[expression] / f"{position:03d}.wrl", scan.face)
            write_bnd(folder / folders[expression] / f"{position:03d}.bnd", scan.face.landmarks[:83])
            written += 1
    return written


def _by_subject(motions: list) -> dict[str, dict]:
    by_subject: dict[str, dict] = {}
    for subject, expression, motion in motions:
        by_subject.setdefault(subject, {})[expression] = motion
    return by_subject


def write_benchmark(motions: list, out: Path, seed: int = 0, vertices: int = 6000, texture_size: int = 512,
                    sequence_frames: int = 16, folds: list | None = None, calibration=None) -> dict:
    """Write the benchmark data set (see the module docstring); returns what ``benchmark.json`` holds."""
    from ..data.calibrate import load_calibration
    from ..data.face_model import Nuisance

    calibration = load_calibration(calibration or "bu4dfe")
    by_subject = _by_subject(motions)
    nuisance = Nuisance()
    written: list[str] = []
    for number, (subject, sequences) in enumerate(sorted(by_subject.items())):
        model, race = _identity([seed, number], subject[0], vertices, texture_size)
        name = f"{subject[0]}{int(subject[1:]):04d}"
        written += _write_stills(model, race, name, sequences, out / "bu3dfe" / name, [seed, number], len(written),
                                 calibration, nuisance)
        _write_sequences(model, subject, sequences, out / "bu4dfe" / subject, [seed, number, 83], sequence_frames,
                         calibration, nuisance)
    info = {"subjects": sorted(by_subject), "bu3dfe_names": {s: f"{s[0]}{int(s[1:]):04d}" for s in by_subject},
            "folds": folds or [], "levels": {"3": "onset", "4": "apex"}, "seed": seed, "vertices": vertices,
            "texture_size": texture_size, "sequence_frames": sequence_frames, "scans": len(written)}
    (out / "benchmark.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def identity_name(subject: str, k: int) -> str:
    """The BU-3DFE-style name of the `k`-th generated identity moved by real `subject`'s motion: the subject's sex
    letter and its number times 100 plus k (F007, k=3 -> F0703), so the source subject can be read back."""
    from ..errors import ConfigError

    if not 0 <= k < 100 or not 0 < int(subject[1:]) < 100:
        raise ConfigError(f"identities: the subject's number and the identity index must be below 100 (a BU-3DFE name "
                          f"has 4 digits), got subject {subject!r}, identity {k}")
    return f"{subject[0]}{int(subject[1:]) * 100 + k:04d}"


def write_identities(motions: list, out: Path, identities_per_subject: int = 10, seed: int = 0,
                     vertices: int = 2000, texture_size: int = 128, folds: list | None = None,
                     nuisance: str | dict | None = "pretrain", calibration=None, sequence_frames: int | None = None
                     ) -> dict:
    """Pretraining data moved by real motion: `identities_per_subject` generated identities per real subject (the
    subject's sex; their own face shape, skin and race drawn from the generator; scanner nuisance `nuisance`, the
    pretraining preset by default), each showing exactly that subject's real motion as the benchmark set does
    (neutral, and each expression's onset and apex frames at intensities 3 and 4), in the BU-3DFE layout under
    ``OUT/identities/bu3dfe/<name>`` (`identity_name`). The identities differ from the benchmark set's (their own
    random streams), so pretraining on them teaches the motion on faces the benchmark never shows.

    For each fold of `folds` (``[(train subjects, test subjects), ...]``), ``OUT/identities/fold_<f>/bu3dfe`` holds
    links to the identities of that fold's training subjects only: a fold's pretraining never sees its test
    subjects' motion (train with ``--dataset bu3dfe:OUT/identities/fold_<f>/bu3dfe``). ``OUT/identities/
    identities.json`` maps every identity to its source subject. The sequences' own frames are not varied
    (every identity of a subject shows the same onset and apex frames): the variety is in the faces.

    With `sequence_frames` (not None; 0 = every frame) each identity also gets the subject's six real sequences in
    the BU-4DFE layout under ``OUT/identities/bu4dfe/<F|M>NNN/<Expression>/NNN.wrl`` (+ ``.bnd``; frames chosen
    as `write_benchmark` does), with per-fold views ``OUT/identities/fold_<f>/bu4dfe``: pretraining data for the
    temporal model. BU-4DFE names have 3 digits, so the sequence folders are numbered per sex in the order of the
    still identities (``sequence_names`` in ``identities.json`` maps each still name to its sequence folder); each
    frame draws its own scanner nuisance, as separate scans of a real sequence do.
    """
    from ..data.calibrate import load_calibration
    from ..data.subjects import as_nuisance
    from ..errors import ConfigError

    if not 1 <= identities_per_subject <= 100:
        raise ConfigError(f"--identities-per-subject must be 1-100 (a BU-3DFE name has 4 digits), got "
                          f"{identities_per_subject}")
    calibration = load_calibration(calibration or "bu4dfe")
    nuisance = as_nuisance(nuisance)
    root = out / "identities"
    by_subject = _by_subject(motions)
    sources: dict[str, str] = {}
    sequence_names: dict[str, str] = {}
    per_sex = Counter(subject[0] for subject in by_subject)  # sequence folders are numbered per sex
    if sequence_frames is not None:
        for sex, subjects in per_sex.items():
            count = subjects * identities_per_subject
            if count > 999:
                raise ConfigError(f"identities: {count} {sex} sequence identities do not fit BU-4DFE's 3-digit names "
                                  f"(at most 999 per sex); lower --identities-per-subject")
    written = frames = 0
    numbered: Counter = Counter()
    for number, (subject, sequences) in enumerate(sorted(by_subject.items())):
        for k in range(identities_per_subject):
            name = identity_name(subject, k)
            model, race = _identity([seed, number, 90, k], subject[0], vertices, texture_size)
            written += len(_write_stills(model, race, name, sequences, root / "bu3dfe" / name, [seed, number, 90, k],
                                         0, calibration, nuisance))
            sources[name] = subject
            if sequence_frames is not None:
                numbered[subject[0]] += 1
                sequence_name = f"{subject[0]}{numbered[subject[0]]:03d}"
                sequence_names[name] = sequence_name
                frames += _write_sequences(model, sequence_name, sequences, root / "bu4dfe" / sequence_name,
                                           [seed, number, 91, k], sequence_frames, calibration, nuisance)
    for fold, (train, _) in enumerate(folds or []):
        keep = set(train)
        for layout, names in (("bu3dfe", {name: name for name in sources}), ("bu4dfe", sequence_names)):
            if not names:
                continue
            view = root / f"fold_{fold}" / layout
            view.mkdir(parents=True, exist_ok=True)
            for name, folder in names.items():
                link = view / folder
                if sources[name] in keep and not link.is_symlink():
                    link.symlink_to(Path("..", "..", layout, folder), target_is_directory=True)
    info = {"sources": sources, "identities_per_subject": identities_per_subject, "seed": seed, "vertices": vertices,
            "texture_size": texture_size, "nuisance": dataclasses.asdict(nuisance),
            "folds": folds or [], "scans": written, "sequence_frames": sequence_frames,
            "sequence_names": sequence_names, "sequence_scans": frames}
    (root / "identities.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return info


def _filled(raw: np.ndarray) -> np.ndarray:
    """Raw frames with an unreadable frame (NaN) filled by linear interpolation over time, per coordinate."""
    missing = ~np.isfinite(raw)
    if missing.any():
        frames = np.arange(len(raw))
        flat = raw.reshape(len(raw), -1)
        for column in np.flatnonzero(missing.reshape(len(raw), -1).any(axis=0)):
            good = np.isfinite(flat[:, column])
            flat[:, column] = np.interp(frames, frames[good], flat[good, column])
    return raw


def _summary(scores: dict) -> dict:
    return {name: {"mean": float(np.mean(values)), "std": float(np.std(values)), "folds": [round(v, 4) for v in values]}
            for name, values in scores.items()}


def _outlier_z(text: str) -> float | None | str:
    if text.lower() in ("none", "default"):  # "default": the calibration's, resolved in `run`
        return None if text.lower() == "none" else "default"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--outlier-z takes a number or 'none', got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--outlier-z must be positive (or 'none'), got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """``bench.py real-motion``: see the module docstring."""
    parser = subparsers.add_parser("real-motion", help="the real-motion development benchmark: landmark baseline, "
                                   "generated -> real, calibration, benchmark data set")
    parser.add_argument("--bnd-root", type=Path, required=True, help="BU4DFE_BND_V1.1 (the 3D landmark release)")
    parser.add_argument("--subjects", nargs="*", help="restrict to these subjects (default: every subject found)")
    parser.add_argument("--out", type=Path, default=Path("real_motion"), help="output folder")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=["baseline", "generated"])
    parser.add_argument("--folds", type=int, default=10, help="subject-independent folds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generated-subjects", type=int, default=200, help="generated identities per fold")
    parser.add_argument("--components", type=int, default=5, help="principal directions per expression")
    parser.add_argument("--trees", type=int, default=FOREST["n_estimators"], help="trees of each random forest")
    parser.add_argument("--identity-subjects", type=int, default=100,
                        help="generator subjects the calibration's identity geometry is measured on (0: none)")
    parser.add_argument("--identity-components", type=int, default=None,
                        help="principal directions of the neutral faces whose covariance calibrated faces match "
                             "(0: per-point spread only; default: the calibration's default, 0)")
    parser.add_argument("--outlier-z", type=_outlier_z, default="default",
                        help="robust z-score above which a sequence's apex is left out of its expression's fit "
                             "(`apex_outliers`; 'none' keeps every sequence; default: the calibration's, 3.5)")
    parser.add_argument("--calibration-out", type=Path, help="where 'calibrate' saves the fitted calibration")
    parser.add_argument("--vertices", type=int, default=6000, help="'write': vertices per scan")
    parser.add_argument("--texture-size", type=int, default=512, help="'write': texture side in pixels")
    parser.add_argument("--sequence-frames", type=int, default=16, help="'write': frames per 4D sequence (0: all)")
    parser.add_argument("--identities-per-subject", type=int, default=10,
                        help="'identities': generated identities per real subject (their scans use --vertices and "
                             "--texture-size)")
    parser.add_argument("--identity-sequences", action="store_true",
                        help="'identities': also write each identity's BU-4DFE-layout sequences (--sequence-frames "
                             "frames each) under OUT/identities/bu4dfe, for pretraining the temporal model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from ..data import subject_kfold
    from ..data.bu4dfe import read_landmark_frames
    from ..data.calibrate import IDENTITY_COMPONENTS, OUTLIER_Z, MotionCalibration

    if args.identity_components is None:  # imported here, not at start-up: the module stays cheap to import
        args.identity_components = IDENTITY_COMPONENTS
    if args.outlier_z == "default":
        args.outlier_z = OUTLIER_Z
    start = time.perf_counter()
    dataset, motions = real_motions(args.bnd_root, args.subjects)
    subjects = sorted({subject for subject, _, _ in motions})
    folds = subject_kfold(subjects, args.folds, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "real_motion.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["settings"] = {"bnd_root": str(args.bnd_root), "subjects": subjects, "folds": folds, "seed": args.seed,
                           "forest": {**FOREST, "n_estimators": args.trees}, "levels": {"3": "onset", "4": "apex"},
                           "generated_subjects": args.generated_subjects, "components": args.components,
                           "identity_subjects": args.identity_subjects,
                           "identity_components": args.identity_components, "outlier_z": args.outlier_z,
                           "repaired_points": sum(len(r) for r in dataset["repairs"]),
                           "sequences_not_starting_neutral": int(sum(not s for s in dataset["starts_neutral"]))}
    if "baseline" in args.steps or "generated" in args.steps:
        frames = {row["path"]: _filled(read_landmark_frames(row["frames"])) for row in dataset
                  if row["subject"] in subjects}
        samples = real_samples(motions, frames)
    if "baseline" in args.steps:
        results["baseline"] = _summary(baseline(samples, folds, args.seed, args.trees))
    if "generated" in args.steps:
        scores = generated_to_real(motions, samples, folds, args.generated_subjects, args.seed, args.components,
                                   args.trees, args.identity_subjects, args.identity_components, args.outlier_z)
        results["generated"] = _summary(scores)
    if "calibrate" in args.steps:
        calibration = MotionCalibration.fit(motions, args.components, source=(
            f"BU-4DFE 3D landmark release ({args.bnd_root.name}), {len(subjects)} subjects, {len(motions)} sequences"),
            identity_subjects=args.identity_subjects, identity_components=args.identity_components,
            outlier_z=args.outlier_z)
        saved = calibration.save(args.calibration_out or args.out / "bu4dfe_motion.json")
        results["calibration"] = str(saved)
    if "write" in args.steps:
        results["written"] = write_benchmark(motions, args.out, args.seed, args.vertices, args.texture_size,
                                             args.sequence_frames, folds)
    if "identities" in args.steps:
        info = write_identities(motions, args.out, args.identities_per_subject, args.seed, args.vertices,
                                args.texture_size, folds,
                                sequence_frames=args.sequence_frames if args.identity_sequences else None)
        results["identities"] = {key: info[key] for key in ("identities_per_subject", "vertices", "texture_size",
                                                             "scans", "sequence_frames", "sequence_scans")}
    results["seconds"] = round(time.perf_counter() - start, 1)
    results_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for section in ("baseline", "generated"):
        for name, value in results.get(section, {}).items():
            print(f"{section:10s} {name:32s} {100 * value['mean']:5.1f} ± {100 * value['std']:4.1f} %")
    print(f"results: {results_path} ({results['seconds']} s)")
