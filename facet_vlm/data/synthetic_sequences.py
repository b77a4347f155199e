"""Synthetic 4D sequences in the BP4D-Spontaneous and 4DME layouts, so that `load_bp4d` and `load_4dme` run end to
end without the licensed data (the BU-4DFE layout is written by `facet_vlm.data.synthetic.generate`).

Built from the still generator's public pieces (`subject_model`, `subject_identity`, the face model's AU
activations and pose)::

    bp4d/Sequences(2D+3D)/F001/T1/0000.obj, .mtl, .jpg     8 tasks per subject; neutral -> onset -> apex -> offset
                                                           (partly relaxed), `facet_vlm.io.write_obj`
    bp4d/3DFeatures/F001/T1/0000.tbnd                      the frame's 83 landmarks after the pose line
    bp4d/AUCoding/AU_OCC/F001_T1.csv                       header 0,1,...,99 (frame, AU 1-99), one row per AU
                                                           frame: 1 where the AU's activation is >= 0.25, 0 below,
                                                           9 for AUs the face model lacks; AU frame = model frame + 1,
                                                           and the last model frame is left uncoded (no row)
    bp4d/AUCoding/AU_INT/F001_T1_AU06.csv, ..._AU12.csv    frame,code rows (no header): 0 below 0.25, else 1-5
    4dme/S01/S01_micro_01/0137.wrl ...                     short, low-intensity micro clips and stronger macro
                                                           clips; frame numbers start at a random offset so that
                                                           numbers and positions differ
    4dme/labels.csv                                        Subject, Clip, Onset, Apex, Offset, Emotion, Type

The BP4D layout is the one its user guide describes (`facet_vlm.data.bp4d`); the 4DME layout is the one
`facet_vlm.data.fourdme` assumes, not verified against the real data set. The AU sets of the non-basic classes
are this stand-in's choice, not from the data sets: BP4D embarrassment = AU12 + AU15 + AU23 (a controlled smile),
pain = AU4 + AU6 + AU7 + AU9 (the brow, orbit and nose AUs of pain-intensity scales that the face model has); 4DME
positive = AU6 + AU12, negative = AU4 + AU9 + AU15, surprise = AU1 + AU2 + AU26, repression = AU15 + AU23, others =
AU4 + AU7.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..labels import LABEL_SETS
from .face_model import ACTION_UNITS, Nuisance, expression_activations, jitter_activations, pose_matrix
from .subjects import SyntheticSettings, subject_model

SEQUENCE_FORMATS = ("bp4d", "4dme")
_CLASS_AUS = {"embarrassment": (12, 15, 23), "pain": (4, 6, 7, 9), "positive": (6, 12), "negative": (4, 9, 15),
              "repression": (15, 23), "others": (4, 7)}
#: Apex activation of 4DME clips: micro-expressions are faint, macro-expressions full.
MICRO_AMOUNT = (0.2, 0.35)
MACRO_AMOUNT = (0.8, 1.0)
AU_THRESHOLD = 0.25
#: AUs written to AU_INT: those of the user guide's five intensity-coded AUs (6, 10, 12, 14, 17) the face model has.
INTENSITY_AUS = (6, 12)
#: AU_OCC columns: AU 1 to 99, as in the real files' header.
OCCURRENCE_COLUMNS = tuple(range(1, 100))


@dataclass
class SyntheticSequences:
    """What `generate_sequences` wrote: the root of each layout and, per sequence, its true onset / apex / offset
    (positions in the sequence's frames), so that samplers and apex finders can be checked against the truth."""

    roots: dict[str, Path]
    sequences: list[dict] = field(default_factory=list)


def _activations(name: str, amount: float) -> dict[int, float]:
    if name in _CLASS_AUS:
        return {au: float(amount) for au in _CLASS_AUS[name]}
    return expression_activations(name, amount)


def _profile(num_frames: int, onset: int, apex: int, offset: int, rest: float = 0.2) -> np.ndarray:
    """Expression amount per frame: 0 up to onset, a smooth rise to 1 at the apex, a fall to `rest` at the offset."""
    t = np.arange(num_frames, dtype=np.float64)
    rise = np.clip((t - onset) / max(apex - onset, 1), 0.0, 1.0)
    fall = np.clip((t - apex) / max(offset - apex, 1), 0.0, 1.0)
    smooth = lambda x: x * x * (3.0 - 2.0 * x)  # noqa: E731
    return np.where(t <= apex, smooth(rise), 1.0 - (1.0 - rest) * smooth(fall))


def _write_clip(folder: Path, model, expression: str, amount: float, profile: np.ndarray, numbers: Sequence[int],
                rng: np.random.Generator, nuisance: Nuisance, meta: dict,
                features: Path | None = None) -> list[dict[int, float]]:
    """Write one clip (frame i -> ``<numbers[i]:04d>``: ``.wrl`` + ``.bmp``, or with `features` the BP4D form
    ``.obj`` + ``.mtl`` + ``.jpg`` and a ``.tbnd`` in `features`); return each frame's AU activations."""
    from ..io import write_obj, write_tbnd, write_wrl

    apex = jitter_activations(_activations(expression, amount), rng, nuisance)
    asymmetry = float(rng.uniform(-nuisance.asymmetry, nuisance.asymmetry))
    limits = np.array([*nuisance.pose_deg, *[nuisance.translate_mm] * 3])
    start, end = (rng.uniform(-1.0, 1.0, 6) * limits for _ in range(2))
    centre = (0.0, model.params.eye_y - 10.0, -80.0)
    frames = []
    for i, (number, weight) in enumerate(zip(numbers, profile)):
        t = i / max(len(profile) - 1, 1)
        yaw, pitch, roll, *translation = start + (end - start) * t
        pose = pose_matrix(*np.radians([yaw, pitch, roll]), translation, centre)
        acts = {au: value * float(weight) for au, value in apex.items()}
        face = model.scan(acts, rng, nuisance, pose=pose, asymmetry=asymmetry, meta={**meta, "frame": number}).face
        if features is None:
            write_wrl(folder / f"{number:04d}.wrl", face)
        else:
            write_obj(folder / f"{number:04d}.obj", face)
            write_tbnd(features / f"{number:04d}.tbnd", face.landmarks[:83], (pitch, yaw, roll))
        frames.append(acts)
    return frames


def intensity_code(activation: float) -> int:
    """AU_INT code of an activation: 0 below `AU_THRESHOLD`, else 1-5 (the guide's levels A-E) in steps of 0.2."""
    return 0 if activation < AU_THRESHOLD else int(np.clip(np.ceil(activation * 5.0), 1, 5))


def _write_au_files(root: Path, subject: str, task: str, acts: list[dict[int, float]]) -> None:
    """AU_OCC and AU_INT files of one task; AU frame = model frame + 1; the last model frame is not coded."""
    occurrence = root / "AUCoding" / "AU_OCC"
    intensity = root / "AUCoding" / "AU_INT"
    occurrence.mkdir(parents=True, exist_ok=True)
    intensity.mkdir(parents=True, exist_ok=True)
    coded = acts[:-1]
    with open(occurrence / f"{subject}_{task}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([0, *OCCURRENCE_COLUMNS])
        for number, frame in enumerate(coded):
            writer.writerow([number + 1, *(int(frame.get(au, 0.0) >= AU_THRESHOLD) if au in ACTION_UNITS else 9
                                           for au in OCCURRENCE_COLUMNS)])
    for au in INTENSITY_AUS:
        with open(intensity / f"{subject}_{task}_AU{au:02d}.csv", "w", newline="") as handle:
            csv.writer(handle).writerows([number + 1, intensity_code(frame.get(au, 0.0))]
                                         for number, frame in enumerate(coded))


def _annotation(rng: np.random.Generator, num_frames: int) -> tuple[int, int, int]:
    onset = int(rng.integers(0, max(1, num_frames // 4) + 1))
    offset = int(rng.integers(max(onset + 2, num_frames - 1 - num_frames // 4), num_frames))
    apex = int(rng.integers(onset + 1, offset))
    return onset, apex, offset


def _write_bp4d(root: Path, index: int, settings: SyntheticSettings, num_frames: int, out: list) -> None:
    identity, model = subject_model(index, settings)
    subject = identity.bu4dfe
    for task_number, expression in enumerate(LABEL_SETS["bp4d_tasks"], start=1):
        task = f"T{task_number}"
        rng = np.random.default_rng([settings.seed, index, 40, task_number])
        onset, apex, offset = _annotation(rng, num_frames)
        folder = root / "Sequences(2D+3D)" / subject / task
        acts = _write_clip(folder, model, expression, 1.0, _profile(num_frames, onset, apex, offset),
                           range(num_frames), rng, settings.nuisance,
                           {"subject": subject, "expression": expression, "format": "bp4d"},
                           features=root / "3DFeatures" / subject / task)
        _write_au_files(root, subject, task, acts)
        out.append({"format": "bp4d", "subject": subject, "sequence": task, "expression": expression,
                    "path": str(folder), "onset": onset, "apex": apex, "offset": offset, "activations": acts})


def _write_4dme(root: Path, index: int, settings: SyntheticSettings, clips: int, micro_frames: int,
                macro_frames: int, out: list, sheet: list) -> None:
    _, model = subject_model(index, settings)
    subject = f"S{index + 1:02d}"
    classes = LABEL_SETS["4dme"]
    for clip_index in range(clips):
        rng = np.random.default_rng([settings.seed, index, 50, clip_index])
        kind = "micro" if clip_index % 2 == 0 else "macro"
        emotion = classes[(index + clip_index) % len(classes)]
        num_frames = micro_frames if kind == "micro" else macro_frames
        amount = float(rng.uniform(*(MICRO_AMOUNT if kind == "micro" else MACRO_AMOUNT)))
        onset, apex, offset = _annotation(rng, num_frames)
        first = int(rng.integers(1, 500))
        numbers = [first + i for i in range(num_frames)]
        clip = f"{subject}_{kind}_{clip_index + 1:02d}"
        folder = root / subject / clip
        _write_clip(folder, model, emotion, amount, _profile(num_frames, onset, apex, offset, rest=0.0), numbers,
                    rng, settings.nuisance, {"subject": subject, "expression": emotion, "format": "4dme"})
        sheet.append([subject, clip, numbers[onset], numbers[apex], numbers[offset], emotion, kind])
        out.append({"format": "4dme", "subject": subject, "sequence": clip, "expression": emotion, "kind": kind,
                    "path": str(folder), "onset": onset, "apex": apex, "offset": offset, "amount": amount})


def generate_sequences(root: str | os.PathLike, subjects: int = 4, seed: int = 0,
                       formats: Sequence[str] = SEQUENCE_FORMATS, frames: int = 12, clips: int = 4,
                       micro_frames: int = 8, macro_frames: int = 12, vertices: int = 6000, texture_size: int = 512,
                       nuisance: Nuisance | None = None) -> SyntheticSequences:
    """Write synthetic sequences in the BP4D-Spontaneous and/or 4DME layouts (see the module docstring).

    Args:
        root: output folder; ``root/bp4d`` and ``root/4dme`` are what `load_bp4d` / `load_4dme` take (``root``
            works too).
        subjects: people; subject i has the face of the still generator's subject i with the same `seed`.
        seed: seeds everything.
        formats: any of "bp4d" (8 task sequences of `frames` frames per subject) and "4dme" (`clips` clips per
            subject, alternating micro (`micro_frames`) and macro (`macro_frames`), emotions cycling through the
            label set).
        vertices, texture_size, nuisance: as `facet_vlm.data.generate`.

    Returns:
        `SyntheticSequences` with the roots and the true onset / apex / offset of every sequence.
    """
    unknown = [fmt for fmt in formats if fmt not in SEQUENCE_FORMATS]
    if unknown or not formats:
        raise ConfigError(f"formats must be a non-empty subset of {SEQUENCE_FORMATS}, got {tuple(formats)}")
    if subjects < 1 or clips < 1:
        raise ConfigError(f"subjects ({subjects}) and clips ({clips}) must be at least 1")
    if min(frames, micro_frames, macro_frames) < 4:
        raise ConfigError("frames, micro_frames and macro_frames must be at least 4 (onset < apex < offset)")
    settings = SyntheticSettings(seed=seed, vertices=vertices, texture_size=texture_size,
                                 nuisance=nuisance or Nuisance())
    root = Path(root)
    result = SyntheticSequences(roots={fmt: root / fmt for fmt in formats})
    sheet: list[list] = []
    for index in range(subjects):
        if "bp4d" in formats:
            _write_bp4d(root / "bp4d", index, settings, frames, result.sequences)
        if "4dme" in formats:
            _write_4dme(root / "4dme", index, settings, clips, micro_frames, macro_frames, result.sequences, sheet)
    if "4dme" in formats:
        with open(root / "4dme" / "labels.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Subject", "Clip", "Onset", "Apex", "Offset", "Emotion", "Type"])
            writer.writerows(sheet)
    return result
