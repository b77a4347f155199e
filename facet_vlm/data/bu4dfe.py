"""BU-4DFE index: one row per expression sequence, from the mesh release, the 3D landmark release, or both.

Layouts (subject ``F``/``M`` + 3 digits; sequence folders Angry Disgust Fear Happy Sad Surprise):

- the mesh release: ``<root>/F001/Happy/000.wrl, 001.wrl, ...`` with a texture image per frame (``000.bmp`` or
  ``.jpg``);
- the 3D landmark release: ``BU4DFE_BND_V1.1/F001/Happy/000.bnd, 001.bnd, ...``, one file per frame with 83 rows
  ``index x y z`` (millimetres); the sequences run neutral -> apex -> neutral over 69-220 frames (development
  subjects). ``F001/Surprise`` also holds ``000.landmark`` ... in the same format beside its ``.bnd`` files (other
  vertex numbers in the first column; the points lie 1.8 mm apart on average, at most 19 mm) and a MATLAB
  ``F001_Surprise.mat`` (a ``ShapeModel`` struct: eigenvectors, eigenvalues and mean of the sequence's shapes),
  neither of which is read (``landmark_suffix`` picks the files used; the others are listed in ``bad_files``).

Landmark sequences are cleaned and put into a canonical frame by `facet_vlm.geometry.motion` (glitches repaired and
listed, head motion removed on stable points, the sliding contour's depth fixed); the neutral frame of each sequence
is chosen among the subject's sequences (`choose_neutral_frames`: about 7 % of the development subjects' sequences do
not start at a neutral face), and the onset, apex and offset follow from the landmarks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError, FormatError
from ..geometry.motion import LandmarkMotion, MotionOptions, canonical_motion, subject_motions
from ..io.landmarks import LANDMARK_FRAME_SUFFIXES, read_bnd
from ..labels import BU4DFE_FOLDERS
from .bu3dfe import finish_index, folder_entries, label_of, subject_folders

SUBJECT_PATTERN = re.compile(r"[FM]\d{3}")
TEXTURE_SUFFIXES = (".bmp", ".jpg", ".png")
COLUMNS = ["subject", "expression", "label", "intensity", "path", "sex", "frames", "textures", "num_frames"]
#: Columns the landmark sequences add (see `load_bu4dfe`).
MOTION_COLUMNS = ["neutral", "onset", "apex", "offset", "starts_neutral", "interocular", "repairs"]
LANDMARK_COLUMNS = ["subject", "expression", "label", "intensity", "path", "sex", "frames", "num_frames",
                    *MOTION_COLUMNS]


def _sequence_folders(folder: Path, bad_files: list[str]) -> list[tuple[str, Path]]:
    """(official name, folder) of the expression sequences of one subject folder, reporting the rest."""
    folder_names = {name.lower(): name for name in BU4DFE_FOLDERS}
    sequences = [path for path in folder_entries(folder, bad_files) if path.is_dir()]
    if not sequences:
        bad_files.append(f"{folder}: subject folder holds no sequence folder ({', '.join(BU4DFE_FOLDERS)})")
    sequences.sort(key=lambda path: (path.name not in BU4DFE_FOLDERS, path.name))  # official spelling first
    indexed: dict[str, Path] = {}
    for sequence in sequences:
        name = folder_names.get(sequence.name.lower())
        if name is None:
            bad_files.append(f"{sequence}: unknown sequence folder (known: {', '.join(BU4DFE_FOLDERS)})")
            continue
        if name in indexed:
            bad_files.append(f"{sequence}: a second {name} sequence of {folder.name} (the first is "
                             f"{indexed[name].name}/, which is indexed)")
            continue
        indexed[name] = sequence
    return list(indexed.items())


def _numbered(paths: list[Path], suffix: str, bad_files: list[str]) -> list[Path]:
    """Files with `suffix` named by a frame number, in frame order; badly named or repeated numbers reported."""
    numbers: dict[int, Path] = {}
    for path in paths:
        if not re.fullmatch(r"\d+", path.stem):
            bad_files.append(f"{path}: frame name is not a frame number such as 000{suffix}")
        elif int(path.stem) in numbers:
            bad_files.append(f"{path}: frame {int(path.stem)} is also {numbers[int(path.stem)].name}; only "
                             f"{numbers[int(path.stem)].name} is used")
        else:
            numbers[int(path.stem)] = path
    return [numbers[number] for number in sorted(numbers)]


def _landmark_frames(sequence: Path, suffix: str, bad_files: list[str]) -> list[Path]:
    """The landmark frames of one sequence folder; other landmark files and other files are reported (one line per
    kind), hidden files (``.DS_Store``) skipped."""
    entries = [path for path in folder_entries(sequence, bad_files) if not path.name.startswith(".")]
    frames = [path for path in entries if path.is_file() and path.suffix.lower() == suffix]
    others: dict[str, list[Path]] = {}
    for path in entries:
        if path not in frames and path.suffix.lower() != ".wrl" and path.suffix.lower() not in TEXTURE_SUFFIXES:
            others.setdefault(path.suffix.lower() or "(no suffix)", []).append(path)
    for kind, paths in others.items():
        what = (f"landmark frames not used (landmark_suffix={suffix!r})" if kind in LANDMARK_FRAME_SUFFIXES
                else "not a landmark frame; not read")
        bad_files.append(f"{sequence}: {len(paths)} {kind} file(s) ({paths[0].name}, ...): {what}")
    return _numbered(frames, suffix, bad_files)


def read_landmark_frames(frames: list[str | Path], bad_files: list[str] | None = None) -> np.ndarray:
    """(T, 83, 3) landmarks of one sequence's frame files as read; an unreadable frame becomes NaN and is reported in
    `bad_files` (`canonical_motion` then interpolates it from its neighbours)."""
    return _read_frames([Path(frame) for frame in frames], [] if bad_files is None else bad_files)


def _read_frames(frames: list[Path], bad_files: list[str]) -> np.ndarray:
    """(T, 83, 3) landmarks; an unreadable frame becomes NaN (repaired by interpolation) and is reported."""
    out = np.full((len(frames), 83, 3), np.nan)
    for index, path in enumerate(frames):
        try:
            out[index] = read_bnd(path)[0]
        except FormatError as error:
            bad_files.append(f"{path}: unreadable ({error.reason}); frame {index} interpolated from its neighbours")
    return out


def _motion_fields(motion: LandmarkMotion) -> dict:
    return {"neutral": motion.neutral, "onset": motion.onset, "apex": motion.apex, "offset": motion.offset,
            "starts_neutral": motion.neutral == 0, "interocular": float(motion.interocular),
            "repairs": [str(repair) for repair in motion.repairs]}


def _subject_motions(sequences: list[tuple[dict, list[Path]]], options: MotionOptions,
                     bad_files: list[str]) -> list[LandmarkMotion | None]:
    """Motion of each (row, landmark frames) of one subject; a sequence that cannot be used is reported (None)."""
    usable = []
    for position, (row, frames) in enumerate(sequences):
        raw = _read_frames(frames, bad_files)
        if np.isnan(raw).all():
            bad_files.append(f"{row['path']}: no readable landmark frame; the sequence has no landmarks")
        else:
            usable.append((position, raw, row["path"]))
    out: list[LandmarkMotion | None] = [None] * len(sequences)
    try:
        motions = subject_motions([raw for _, raw, _ in usable], [path for _, _, path in usable], options)
    except FormatError:  # one sequence spoils the subject's neutral face: take each sequence alone
        motions = []
        for _, raw, path in usable:
            try:
                motions.append(canonical_motion(raw, 0, options, path))
            except FormatError as error:
                bad_files.append(f"{path}: landmarks unusable ({error.reason})")
                motions.append(None)
    for (position, _, _), motion in zip(usable, motions):
        out[position] = motion
    return out


def load_bu4dfe(root: str | os.PathLike, landmarks_root: str | os.PathLike | None = None, strict: bool = False,
                landmark_suffix: str = ".bnd", motion_options: MotionOptions | None = None):
    """Index BU-4DFE into a `datasets.Dataset`, one row per sequence (see the module docstring for the layouts).

    - ``load_bu4dfe(MESH_ROOT)``: the mesh release. Columns: subject, expression, label (index in
      `BASIC_EXPRESSIONS`), intensity (-1: a sequence spans neutral to apex), path (the sequence folder), sex,
      frames (the .wrl paths sorted by frame number), textures (the texture of each frame, "" when absent) and
      num_frames.
    - ``load_bu4dfe(BND_ROOT)``: the 3D landmark release alone (a root whose sequences hold landmark files and no
      .wrl). Columns: subject, expression, label, intensity, path, sex, frames (the landmark files), num_frames and
      the motion columns: neutral, onset, apex, offset (frame indices, offset -1 when the expression does not fall
      back), starts_neutral, interocular (mm, of the neutral frame) and repairs (every repaired point, as text).
      ``dataset.motions`` holds each row's `LandmarkMotion` (like ``bad_files``, not carried through `datasets`
      transforms; `landmark_motion` rebuilds one from a row).
    - ``load_bu4dfe(MESH_ROOT, landmarks_root=BND_ROOT)``: the mesh release with each sequence's landmark frames
      (column landmark_frames), the motion columns, and landmark_transforms (per frame the 12 numbers of the rigid
      map from the raw frame into the canonical frame, row-major 3 x 4, so that mesh frames align the same way).
      A mesh sequence without a landmark sequence of the same number of frames is reported and gets empty landmark
      columns (-1 indices).

    Args:
        root: the folder holding F001/ ... (or a generated root holding ``bu4dfe/``).
        landmarks_root: the landmark release's root, for the third form.
        strict: raise on any problem `bad_files` would list instead of reporting it.
        landmark_suffix: ".bnd" (every sequence has them) or ".landmark".
        motion_options: how the landmark sequences are cleaned (`facet_vlm.geometry.motion.MotionOptions`).

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"``; see `load_bu3dfe`): unknown sequence folders,
        unparseable frame names, empty sequences and subject folders, broken symbolic links, a frame number given
        twice in one sequence (``0.wrl`` and ``000.wrl``: the first in sorted order is used), a second folder of
        the same expression (``Happy/`` and ``HAPPY/``: the official spelling, else the first in name order, is
        indexed), unreadable landmark frames (interpolated from their neighbours), landmark files of the other
        suffix and other files beside landmark frames (hidden files such as ``.DS_Store`` are skipped).

    Raises:
        ConfigError: an unknown `landmark_suffix`.
        DatasetLayoutError: as `facet_vlm.data.load_bu3dfe`.
    """
    if landmark_suffix not in LANDMARK_FRAME_SUFFIXES:
        raise ConfigError(f"landmark_suffix must be one of {LANDMARK_FRAME_SUFFIXES}, got {landmark_suffix!r}")
    options = motion_options or MotionOptions()
    bad_files: list[str] = []
    meshes = _mesh_rows(root, bad_files)
    if landmarks_root is None and meshes:
        return finish_index(meshes, COLUMNS, bad_files, root, strict, "BU-4DFE")
    if landmarks_root is None:
        bad_files.clear()
        rows = _landmark_rows(root, landmark_suffix, options, bad_files)
        dataset = finish_index(rows, LANDMARK_COLUMNS, bad_files, root, strict, "BU-4DFE landmark")
        dataset.motions = [row["motion"] for row in rows]
        return dataset
    landmark_bad: list[str] = []
    by_key = {(row["subject"], row["expression"]): row
              for row in _landmark_rows(landmarks_root, landmark_suffix, options, landmark_bad, transforms=True)}
    bad_files += landmark_bad
    for row in meshes:
        found = by_key.get((row["subject"], row["expression"]))
        if found is not None and found["num_frames"] != row["num_frames"]:
            bad_files.append(f"{row['path']}: {row['num_frames']} mesh frames but {found['num_frames']} landmark "
                             f"frames in {found['path']}; no landmarks attached")
            found = None
        elif found is None:
            bad_files.append(f"{row['path']}: no landmark sequence under {landmarks_root}; no landmarks attached")
        row["landmark_frames"] = found["frames"] if found else []
        row["landmark_transforms"] = found["transforms"] if found else []
        for column in MOTION_COLUMNS:
            empty = {"starts_neutral": False, "interocular": 0.0, "repairs": []}.get(column, -1)
            row[column] = found[column] if found else empty
    return finish_index(meshes, COLUMNS + ["landmark_frames", "landmark_transforms", *MOTION_COLUMNS], bad_files,
                        root, strict, "BU-4DFE")


def _mesh_rows(root: str | os.PathLike, bad_files: list[str]) -> list[dict]:
    rows = []
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu4dfe", "F001", bad_files):
        for name, sequence in _sequence_folders(folder, bad_files):
            wrl = [path for path in folder_entries(sequence, bad_files)
                   if path.is_file() and path.suffix.lower() == ".wrl"]
            frames = _numbered(wrl, ".wrl", bad_files)
            if not frames:
                bad_files.append(f"{sequence}: sequence folder holds no frames (000.wrl, 001.wrl, ...)")
                continue
            textures = []
            for frame in frames:
                found = [frame.with_suffix(ext) for ext in TEXTURE_SUFFIXES if frame.with_suffix(ext).is_file()]
                textures.append(str(found[0]) if found else "")
            expression = BU4DFE_FOLDERS[name]
            rows.append({"subject": folder.name.upper(), "expression": expression, "label": label_of(expression),
                         "intensity": -1, "path": str(sequence), "sex": folder.name[0].upper(),
                         "frames": [str(frame) for frame in frames], "textures": textures,
                         "num_frames": len(frames)})
    return rows


def _landmark_rows(root: str | os.PathLike, suffix: str, options: MotionOptions, bad_files: list[str],
                   transforms: bool = False) -> list[dict]:
    rows = []
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu4dfe", "F001", bad_files):
        sequences = []
        for name, sequence in _sequence_folders(folder, bad_files):
            frames = _landmark_frames(sequence, suffix, bad_files)
            if not frames:
                bad_files.append(f"{sequence}: sequence folder holds no landmark frames (000{suffix}, ...)")
                continue
            expression = BU4DFE_FOLDERS[name]
            row = {"subject": folder.name.upper(), "expression": expression, "label": label_of(expression),
                   "intensity": -1, "path": str(sequence), "sex": folder.name[0].upper(),
                   "frames": [str(frame) for frame in frames], "num_frames": len(frames)}
            sequences.append((row, frames))
        for (row, _), motion in zip(sequences, _subject_motions(sequences, options, bad_files)):
            if motion is None:
                continue
            row.update(_motion_fields(motion), motion=motion)
            if transforms:
                row["transforms"] = motion.transforms.reshape(len(motion.transforms), 12).tolist()
            rows.append(row)
    return rows


def landmark_motion(row: dict, options: MotionOptions | None = None) -> LandmarkMotion:
    """The cleaned, canonical `LandmarkMotion` of one row of `load_bu4dfe` (landmark release, or mesh release with
    ``landmarks_root``), with the row's neutral frame. Unreadable frames are interpolated, as when indexing."""
    frames = row.get("landmark_frames") or row["frames"]
    if not frames or not str(frames[0]).lower().endswith(LANDMARK_FRAME_SUFFIXES):
        raise ConfigError(f"{row.get('path')}: the row has no landmark frames")
    raw = _read_frames([Path(frame) for frame in frames], [])
    return canonical_motion(raw, int(row["neutral"]), options, str(Path(frames[0]).parent))
