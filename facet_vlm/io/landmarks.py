"""Landmark files: BU-3DFE ``.bnd`` (83 points), the BU-4DFE landmark release (``.bnd`` and ``.landmark`` per frame),
BP4D-Spontaneous ``.tbnd`` (83 tracked points with a pose line) and Bosphorus ``.lm3`` (named 3D points)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ._common import check_float32, read_text

#: Bosphorus landmark names (lower case, single spaces) -> the project's standard names. Bosphorus "left" and
#: "right" are taken to be the subject's, like the standard names. Names not listed keep their Bosphorus spelling.
BOSPHORUS_TO_STANDARD = {
    "outer left eyebrow": "left_brow_outer",
    "inner left eyebrow": "left_brow_inner",
    "inner right eyebrow": "right_brow_inner",
    "outer right eyebrow": "right_brow_outer",
    "outer left eye corner": "left_eye_outer",
    "inner left eye corner": "left_eye_inner",
    "inner right eye corner": "right_eye_inner",
    "outer right eye corner": "right_eye_outer",
    "nose tip": "nose_tip",
    "left mouth corner": "mouth_left",
    "right mouth corner": "mouth_right",
    "upper lip outer middle": "upper_lip",
    "lower lip outer middle": "lower_lip",
    "chin middle": "chin",
}
_STANDARD_TO_BOSPHORUS = {standard: name.capitalize() for name, standard in BOSPHORUS_TO_STANDARD.items()}
#: Landmarks in a BU-3DFE .bnd file (its 83 feature points).
BND_COUNT = 83
#: Per-frame landmark files of the BU-4DFE 3D landmark release (``BU4DFE_BND_V1.1/F001/Happy/000.bnd``; the
#: ``F001/Surprise`` folder also holds ``000.landmark`` ...). Both hold 83 rows ``index x y z``, like BU-3DFE's .bnd.
LANDMARK_FRAME_SUFFIXES = (".bnd", ".landmark")
_LM3_COUNT = re.compile(r"^(\d+)\s+landmarks?\s*:?$", re.IGNORECASE)


def bnd_names(count: int) -> list[str]:
    """The names of BU-3DFE .bnd points: ``bnd_00``, ``bnd_01``, ... (their order is the file's)."""
    return [f"bnd_{index:02d}" for index in range(count)]


def _floats(tokens: Sequence[str], path: str | os.PathLike, line: int) -> list[float]:
    try:
        return [float(token) for token in tokens]
    except ValueError:
        raise FormatError(f"line {line}: non-numeric value in {' '.join(tokens)!r}", path) from None


def read_bnd(path: str | os.PathLike, expected_count: int | None = BND_COUNT) -> tuple[np.ndarray, list[str]]:
    """Read a BU-3DFE .bnd file: one ``index x y z`` line per landmark (blank lines are skipped).

    The first column is the landmark's vertex number in the scan and is not used. Returns (float32 (L, 3)
    positions, names ``bnd_00`` ...). A file with other than `expected_count` landmarks (83, BU-3DFE's) raises
    `FormatError`, as the names (and any code indexing them) rely on the order; pass None to read any count.
    """
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        if len(tokens) != 4:
            raise FormatError(
                f"line {number}: expected 4 columns (index x y z), found {len(tokens)} in {line.strip()!r}", path
            )
        rows.append(_floats(tokens[1:], path, number))
    if not rows:
        raise FormatError("no landmark lines found", path)
    if expected_count is not None and len(rows) != expected_count:
        raise FormatError(
            f"{len(rows)} landmarks, expected {expected_count} (pass expected_count=None to read any number)", path
        )
    landmarks = np.asarray(rows, dtype=np.float64)
    check_float32(landmarks, "landmark", path)
    return landmarks.astype(np.float32), bnd_names(len(landmarks))


def read_landmark_sequence(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Read the per-frame landmark files of one sequence (``.bnd`` or ``.landmark``, 83 rows ``index x y z``) into a
    float64 (T, 83, 3) array, in the order given.

    Raises:
        FormatError: the first file that is empty, malformed, non-finite or not 83 rows (it names the file).
    """
    if not paths:
        raise FormatError("a landmark sequence needs at least one frame file")
    return np.stack([read_bnd(path)[0] for path in paths]).astype(np.float64)


def read_tbnd(path: str | os.PathLike, expected_count: int | None = BND_COUNT) -> tuple[np.ndarray, np.ndarray]:
    """Read a BP4D-Spontaneous ``.tbnd`` file: (pose, landmarks).

    The BP4D user guide: "Each frame is tracked with 83 feature points on 3D surface. [...] All the coordinates are
    recorded in the TBND file following the index order. Besides, the first line in the TBND file reports the pose
    information of the model in degrees. The three values are the angle of pitch, yaw and roll in range of [-180,
    180]." and "A few frames are partially un-trackable, indicated by (0,0,0) as certain vertices coordinates." It
    also says: "The 3D coordinate is defined in left-handed Cartesian coordinate system."

    The guide does not say whether a point's row starts with an index, so a row may hold ``x y z`` or
    ``index x y z`` (the first column then dropped, as in a .bnd). Values may be separated by spaces or commas.

    Returns:
        pose: float64 (3,) pitch, yaw, roll in degrees; landmarks: float64 (83, 3), NaN where the file writes
        (0, 0, 0) (an untracked point).

    Raises:
        FormatError: an empty file, a pose line that is not 3 numbers, a row of another width, a pose outside
            [-180, 180], or (with `expected_count`) another number of points.
    """
    lines = [(number, line.replace(",", " ").split()) for number, line in enumerate(read_text(path).splitlines(), 1)]
    lines = [(number, tokens) for number, tokens in lines if tokens]
    number, first = lines[0]
    if len(first) != 3:
        raise FormatError(f"line {number}: the first line must be the pose (pitch yaw roll in degrees), found "
                          f"{len(first)} values", path)
    pose = np.asarray(_floats(first, path, number), dtype=np.float64)
    if not np.all(np.abs(pose) <= 180.0):
        raise FormatError(f"line {number}: pose angles must lie in [-180, 180] degrees, got {pose.tolist()}", path)
    rows = []
    for number, tokens in lines[1:]:
        if len(tokens) not in (3, 4):
            raise FormatError(f"line {number}: expected 3 (x y z) or 4 (index x y z) values, found {len(tokens)}",
                              path)
        rows.append(_floats(tokens[-3:], path, number))
    if not rows:
        raise FormatError("no landmark rows after the pose line", path)
    if expected_count is not None and len(rows) != expected_count:
        raise FormatError(f"{len(rows)} landmarks, expected {expected_count}", path)
    landmarks = np.asarray(rows, dtype=np.float64)
    check_float32(landmarks, "landmark", path)
    landmarks[np.all(landmarks == 0.0, axis=1)] = np.nan
    return pose, landmarks


def write_tbnd(path: str | os.PathLike, landmarks: np.ndarray, pose: Sequence[float] = (0.0, 0.0, 0.0)) -> Path:
    """Write a BP4D-style ``.tbnd`` file: the pose line (pitch yaw roll, degrees), then one ``x y z`` row per point
    (NaN points are written as ``0 0 0``, the guide's mark of an untracked point); return the path."""
    path = Path(path)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 2 or landmarks.shape[1] != 3:
        raise FormatError(f"cannot write: landmarks must have shape (L, 3), got {landmarks.shape}", path)
    pose = [float(angle) for angle in pose]
    if len(pose) != 3 or not all(abs(angle) <= 180.0 for angle in pose):
        raise FormatError(f"cannot write: pose must be 3 angles in [-180, 180] degrees, got {pose}", path)
    rows = np.where(np.isfinite(landmarks).all(axis=1, keepdims=True), landmarks, 0.0)
    lines = [" ".join(f"{angle:.6g}" for angle in pose)]
    lines += [f"{x:.9g} {y:.9g} {z:.9g}" for x, y, z in rows.tolist()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_bnd(path: str | os.PathLike, landmarks: np.ndarray, vertex_indices: Sequence[int] | None = None) -> Path:
    """Write landmarks as a BU-3DFE .bnd file (``index x y z`` per line); return the path.

    `vertex_indices` fills the first column (BU-3DFE puts the nearest scan vertex there); by default the row
    number. Coordinates get 9 significant digits, which gives float32 values back exactly.
    """
    path = Path(path)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.ndim != 2 or landmarks.shape[1] != 3:
        raise FormatError(f"cannot write: landmarks must have shape (L, 3), got {landmarks.shape}", path)
    indices = list(range(len(landmarks))) if vertex_indices is None else [int(i) for i in vertex_indices]
    if len(indices) != len(landmarks):
        raise FormatError(f"cannot write: {len(indices)} vertex indices for {len(landmarks)} landmarks", path)
    lines = [f"{index} {x:.9g} {y:.9g} {z:.9g}" for index, (x, y, z) in zip(indices, landmarks.astype(float).tolist())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def standard_landmark_name(bosphorus_name: str) -> str:
    """The project's standard name for a Bosphorus landmark name, or the name itself (stripped) if unknown."""
    key = " ".join(bosphorus_name.split()).lower()
    return BOSPHORUS_TO_STANDARD.get(key, " ".join(bosphorus_name.split()))


def read_lm3(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Read a Bosphorus .lm3 file: ``#`` comment lines, a count line (``22 landmarks:``), then per landmark a
    name line and an ``x y z`` line.

    Returns (float32 (L, 3) positions, names), known Bosphorus names mapped to the standard ones
    (``"Nose tip"`` -> ``"nose_tip"``, see `BOSPHORUS_TO_STANDARD`), others kept as written. Bosphorus scans
    carry different numbers of landmarks (occlusions hide some), so any positive count is read, but a count of
    0 and a name given twice raise `FormatError`.
    """
    lines = [
        (number, line.strip())
        for number, line in enumerate(read_text(path).splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise FormatError("no landmark count line (like '22 landmarks:') found", path)
    number, first = lines[0]
    count_match = _LM3_COUNT.match(first)
    if count_match is None:
        raise FormatError(f"line {number}: expected a count line like '22 landmarks:', found {first!r}", path)
    count = int(count_match.group(1))
    if count == 0:
        raise FormatError(f"line {number}: the file announces 0 landmarks", path)
    entries = lines[1:]
    if len(entries) != 2 * count:
        raise FormatError(
            f"the file announces {count} landmarks but holds {len(entries)} name/coordinate lines "
            f"(expected {2 * count}); is it truncated?",
            path,
        )
    names, rows = [], []
    for (name_line, name), (xyz_line, xyz) in zip(entries[0::2], entries[1::2]):
        if re.fullmatch(r"[-+\d.eE\s,]+", name):
            raise FormatError(f"line {name_line}: expected a landmark name, found numbers {name!r}", path)
        tokens = xyz.replace(",", " ").split()
        if len(tokens) != 3:
            raise FormatError(
                f"line {xyz_line}: expected 3 coordinates (x y z) for {name!r}, found {len(tokens)}", path
            )
        rows.append(_floats(tokens, path, xyz_line))
        names.append(standard_landmark_name(name))
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FormatError(f"landmark(s) {', '.join(map(repr, repeated))} given more than once", path)
    landmarks = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    check_float32(landmarks, "landmark", path)
    return landmarks.astype(np.float32), names


def write_lm3(path: str | os.PathLike, landmarks: np.ndarray, names: Sequence[str]) -> Path:
    """Write landmarks as a Bosphorus .lm3 file; return the path.

    Standard names are written with their Bosphorus spelling (``nose_tip`` -> ``Nose tip``), so that `read_lm3`
    gives the same names back; other names are written as given.
    """
    path = Path(path)
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.ndim != 2 or landmarks.shape[1] != 3:
        raise FormatError(f"cannot write: landmarks must have shape (L, 3), got {landmarks.shape}", path)
    if len(names) != len(landmarks):
        raise FormatError(f"cannot write: {len(names)} names for {len(landmarks)} landmarks", path)
    lines = ["# 3D landmark file (Bosphorus .lm3), written by facet-vlm", "#", f"{len(landmarks)} landmarks:"]
    for name, (x, y, z) in zip(names, landmarks.astype(float).tolist()):
        if not name.strip() or "\n" in name:
            raise FormatError(f"cannot write: landmark name {name!r} is empty or spans lines", path)
        lines += [_STANDARD_TO_BOSPHORUS.get(name, name), f"{x:.9g} {y:.9g} {z:.9g}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
