"""BP4D-Spontaneous index: one row per (subject, task) sequence, from the database root laid out as the official
user guide ("BP-4DSFE UserGuide.pdf") describes it.

The guide (p. 2-5): "BP4D-Spontaneous contains 3D dynamic spontaneous facial expression data of 41 subjects. Each
subject went through 8 tasks." Its directories, as this reader takes them from the database root::

    Sequences(2D+3D)/F001/T1/0000.obj, 0000.mtl, 0000.jpg, 0001.obj ...
        "Each subject folder contains 8 tasks. Each task contains Wavefront .obj formatted 3D model sequence. Each
        frame associates with 3 files. For example, frame 0000 associates with 0000.jpg, 0000.mtl, and 0000.obj"
    3DFeatures/F001/T1/0000.tbnd ...
        "arranged in the same directory pattern as the model data is. [...] Each frame is tracked with 83 feature
        points on 3D surface." The first line is the pose (`facet_vlm.io.read_tbnd`). "Five hundred and forty-four
        frames do not contain 3D tracking information (.tbnd). Their location is reported in 3DFeatures\\Loss.txt."
    AUCoding/AU_OCC/F001_T1.csv
        "The occurrence file is named as [Gender][Index]_T[TaskID].csv" with "a header row with action unit labels
        and a header column with frame numbers"; "The occurrence codes themselves are either 0 for absent, 1 for
        present, or 9 for missing data (unknown)."
    AUCoding/AU_INT/.../F001_T1_AU12.csv
        "the intensity file is named as [Gender][Index]_T[TaskID]_[AUID].csv"; "The first column lists the frame
        numbers and the second column lists the intensity codes. There is no header row in these files." Codes "0
        for absent, 1 for present at the A level, [...] 5 for present at the E level, or 9 for missing data". The
        guide does not say whether AU_INT has sub-folders; every file under it whose name fits is read.

Frame numbers (p. 5, "Notice about the Index"): "The frame index of model data starts from 0, while frame index of
all AU coding and preview videos starts from 1. For example, for a coded model frame N, its corresponding AU coding
frame index is N+1". So model frame ``0000.obj`` takes the AU row of frame 1 (`AU_FRAME_OFFSET`).

The real AU_OCC files (41 subjects x 8 tasks) have the header ``0,1,2,...,99`` (the frame column, then AU 1 to 99)
and code 34 of those AUs; a task's coded frames are a run of about 90-770 frames (the guide: "approximately 500
frames (20 seconds)"). 2DFeatures (MATLAB ``.mat``) and PreviewVideos are not read.

A generated set (`facet_vlm.data.synthetic_sequences.generate_sequences`) holds this layout under ``bp4d/``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ..errors import DatasetLayoutError, FacetVLMError
from ..labels import LABEL_SETS
from .bu3dfe import finish_index, subject_folders
from .sequences import collect_frames, frame_number

SUBJECT_PATTERN = re.compile(r"[FM]\d{3}")
#: Task folder -> the emotion it elicits (the guide's Table 1: T1 happiness or amusement, T2 sadness, T3 surprise or
#: startle, T4 embarrassment, T5 fear or nervous, T6 physical pain, T7 anger or upset, T8 disgust), named as in
#: ``bp4d_tasks``.
BP4D_TASKS = dict(zip(("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"), LABEL_SETS["bp4d_tasks"]))
SEQUENCES_FOLDER = "Sequences(2D+3D)"
FEATURES_FOLDER = "3DFeatures"
AU_OCC_FOLDER = Path("AUCoding") / "AU_OCC"
AU_INT_FOLDER = Path("AUCoding") / "AU_INT"
#: Model frames: the guide's Wavefront .obj (any format `facet_vlm.io.read_face` reads with `frame_pattern`).
FRAME_PATTERN = r"\d+\.obj"
#: AU coding frame = model frame + 1 (the guide, p. 5).
AU_FRAME_OFFSET = 1
#: The guide's code for "missing data (unknown)" in AU_OCC and AU_INT files.
AU_UNKNOWN_CODE = 9
#: What the index holds for a frame whose AU is not coded: the guide's 9, or no row for the frame.
AU_MISSING = -1
AU_OCC_FILE = re.compile(r"(?P<subject>[FM]\d{3})_(?P<task>T\d)\.csv", re.IGNORECASE)
AU_INT_FILE = re.compile(r"(?P<subject>[FM]\d{3})_(?P<task>T\d)_AU(?P<au>\d{1,2})\.csv", re.IGNORECASE)
_AU_NAME = re.compile(r"(?:AU)?\s*(\d{1,2})", re.IGNORECASE)
BASE_COLUMNS = ["subject", "task", "expression", "label", "path", "sex", "frames", "num_frames", "onset", "apex",
                "offset", "au_path"]


def au_column(au: int) -> str:
    """Index column of an action unit's occurrence codes: ``au01``, ``au12``."""
    return f"au{au:02d}"


def au_intensity_column(au: int) -> str:
    """Index column of an action unit's intensity codes: ``au12_int``."""
    return f"au{au:02d}_int"


def _read_csv(path: str | os.PathLike) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]


def read_au_occurrence(path: str | os.PathLike, frame_column: str | None = None) -> dict[int, dict[int, int]]:
    """AU occurrence codes of one AU_OCC file: ``{AU frame number: {au: code}}``, codes as written (0 absent,
    1 present, 9 unknown, per the guide).

    The guide: "The files also contain a header row with action unit labels and a header column with frame
    numbers. The proper way to parse these files is to drop the headers and then index for the video frame(s) and
    action unit(s) of interest." AU columns are headers that read as an AU number (``1``, ``01``, ``AU1``); the
    frame column is the first (or `frame_column`). AU frame numbers start at 1 (`AU_FRAME_OFFSET`).

    Raises:
        DatasetLayoutError: an empty file, a missing frame column, no AU column, a non-integer cell or a frame
            given twice (the message names the file and the line).
    """
    rows = _read_csv(path)
    if not rows:
        raise DatasetLayoutError("AU file is empty", path)
    header = [cell.strip() for cell in rows[0]]
    frame_at = 0 if frame_column is None else (header.index(frame_column) if frame_column in header else -1)
    if frame_at < 0:
        raise DatasetLayoutError(f"no frame column {frame_column!r} (columns: {header[:8]} ...)", path)
    aus = {i: int(m.group(1)) for i, name in enumerate(header) if i != frame_at and (m := _AU_NAME.fullmatch(name))}
    if not aus:
        raise DatasetLayoutError(f"no AU column (headers such as 1, 12 or AU12) among {header[:8]}", path)
    codes: dict[int, dict[int, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            frame = int(float(row[frame_at]))
            values = {au: int(float(row[i])) for i, au in aus.items()}
        except (ValueError, IndexError):
            raise DatasetLayoutError(f"line {line}: frame number and AU codes must be numbers, got {row[:8]} ...",
                                     path) from None
        if frame in codes:
            raise DatasetLayoutError(f"line {line}: frame {frame} is coded twice", path)
        codes[frame] = values
    return codes


def read_au_intensity(path: str | os.PathLike) -> dict[int, int]:
    """AU intensity codes of one AU_INT file: ``{AU frame number: code}`` (0 absent, 1-5 levels A-E, 9 unknown).

    The guide: "The first column lists the frame numbers and the second column lists the intensity codes. There is
    no header row in these files."

    Raises:
        DatasetLayoutError: an empty file, a row that is not two integers, a code outside 0-5 and 9, a frame given
            twice.
    """
    rows = _read_csv(path)
    if not rows:
        raise DatasetLayoutError("AU intensity file is empty", path)
    codes: dict[int, int] = {}
    for line, row in enumerate(rows, start=1):
        try:
            frame, code = int(float(row[0])), int(float(row[1]))
        except (ValueError, IndexError):
            raise DatasetLayoutError(f"line {line}: expected 'frame,code' (two numbers, no header), got {row}",
                                     path) from None
        if code not in (0, 1, 2, 3, 4, 5, AU_UNKNOWN_CODE):
            raise DatasetLayoutError(f"line {line}: intensity code {code} is not 0-5 or 9", path)
        if frame in codes:
            raise DatasetLayoutError(f"line {line}: frame {frame} is coded twice", path)
        codes[frame] = code
    return codes


def database_root(root: str | os.PathLike) -> Path:
    """The database root: `root` itself, or its ``bp4d/`` sub-folder (a generated set), holding the guide's
    ``Sequences(2D+3D)`` and ``AUCoding/AU_OCC`` folders.

    Raises:
        DatasetLayoutError: naming what is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError("data-set root does not exist or is not a folder", root)
    for candidate in (root, root / "bp4d"):
        if (candidate / SEQUENCES_FOLDER).is_dir() and (candidate / AU_OCC_FOLDER).is_dir():
            return candidate
    missing = [name for name in (SEQUENCES_FOLDER, str(AU_OCC_FOLDER)) if not (root / name).is_dir()]
    raise DatasetLayoutError(
        f"not a BP4D-Spontaneous database root: no {' and no '.join(missing)} folder. load_bp4d takes the folder "
        f"the user guide lays out: {SEQUENCES_FOLDER}/F001/T1/0000.obj, {FEATURES_FOLDER}/F001/T1/0000.tbnd, "
        f"{AU_OCC_FOLDER.as_posix()}/F001_T1.csv, {AU_INT_FOLDER.as_posix()}/.../F001_T1_AU12.csv", root)


def _part(base: Path, folder: Path | str, wanted: bool | None, what: str) -> Path | None:
    path = base / folder
    if wanted is False:
        return None
    if not path.is_dir():
        if wanted:
            raise DatasetLayoutError(f"no {Path(folder).as_posix()} folder ({what}); pass {what}=False to index "
                                     "without it", base)
        return None
    return path


def _occurrence_files(folder: Path, bad_files: list[str]) -> dict[tuple[str, str], Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        match = AU_OCC_FILE.fullmatch(path.name) if path.is_file() else None
        if match is None:
            if not path.name.startswith("."):
                bad_files.append(f"{path}: not an AU occurrence file (names such as F001_T1.csv)")
        else:
            found[(match["subject"].upper(), match["task"].upper())] = path
    return found


def _intensity_files(folder: Path, bad_files: list[str]) -> dict[tuple[str, str], dict[int, Path]]:
    found: dict[tuple[str, str], dict[int, Path]] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        match = AU_INT_FILE.fullmatch(path.name)
        if match is None:
            bad_files.append(f"{path}: not an AU intensity file (names such as F001_T1_AU12.csv)")
            continue
        key, au = (match["subject"].upper(), match["task"].upper()), int(match["au"])
        if au in found.setdefault(key, {}):
            bad_files.append(f"{path}: a second intensity file of {key[0]} {key[1]} AU{au} (the first, "
                             f"{found[key][au]}, is used)")
        else:
            found[key][au] = path
    return found


def _per_frame(codes: dict[int, int], numbers: list[int]) -> list[int]:
    out = []
    for number in numbers:
        code = codes.get(number + AU_FRAME_OFFSET, AU_UNKNOWN_CODE)
        out.append(AU_MISSING if code == AU_UNKNOWN_CODE else code)
    return out


def load_bp4d(root: str | os.PathLike, frame_pattern: str = FRAME_PATTERN, aus: list[int] | None = None,
              au_intensity: bool | None = None, landmarks: bool | None = None, strict: bool = False):
    """Index a BP4D-Spontaneous database root (the user guide's layout: see the module docstring) into a
    `datasets.Dataset`, one row per (subject, task) sequence.

    Columns: subject, task (T1..T8), expression (the task's emotion), label (index in ``LABEL_SETS["bp4d_tasks"]``),
    path (the task folder), sex, frames (model frame paths in frame-number order), num_frames, onset / apex / offset
    (-1: the data set annotates no apex per task), au_path (the AU_OCC file), one column per AU (``au01``, ...: per
    model frame N the AU_OCC code of AU frame N + 1, 0 or 1, `AU_MISSING` (-1) where the guide's 9 or no row),
    with AU_INT one column per AU coded there (``au12_int``: 0-5 per model frame, -1 where missing), and with
    3DFeatures landmark_frames (the ``.tbnd`` of each model frame, "" for a frame without one).

    Args:
        root: the database root (or a generated root holding ``bp4d/``).
        frame_pattern: regular expression a model frame's file name must match in full (case-insensitive); a file
            sharing a frame's stem (its ``.mtl`` and ``.jpg``) belongs to it.
        aus: the AUs to index; default every AU with a code other than 9 in at least one indexed AU_OCC file.
        au_intensity: read ``AUCoding/AU_INT`` (None: when the folder exists; True: it must exist).
        landmarks: read ``3DFeatures`` (None: when the folder exists; True: it must exist).
        strict: raise on any file that does not fit instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"``): unknown task folders, files that are not
        frames, task folders without frames, sequences without an AU_OCC file, AU files that do not parse or name
        no indexed sequence, model frames without a ``.tbnd`` (one line per sequence; the guide lists 544 such
        frames in ``3DFeatures/Loss.txt``), and ``.tbnd`` files of no model frame.

    Raises:
        DatasetLayoutError: `root` is not a database root (no ``Sequences(2D+3D)`` or no ``AUCoding/AU_OCC``: an
            index without AU labels is never returned), a requested part is missing, no subject folder, nothing
            indexed, no AU_OCC file parses, or (strict) any bad file.
    """
    base = database_root(root)
    pattern = re.compile(frame_pattern, re.IGNORECASE)
    intensity_folder = _part(base, AU_INT_FOLDER, au_intensity, "au_intensity")
    features_folder = _part(base, FEATURES_FOLDER, landmarks, "landmarks")
    bad_files: list[str] = []
    rows = _sequence_rows(base / SEQUENCES_FOLDER, pattern, frame_pattern, bad_files)
    occurrence = _occurrence_codes(base / AU_OCC_FOLDER, rows, bad_files)
    if rows and not occurrence:
        raise DatasetLayoutError(f"no AU occurrence file of an indexed sequence could be read (e.g. "
                                 f"{bad_files[-1] if bad_files else 'none found'}); refusing an index without AU "
                                 "labels", base / AU_OCC_FOLDER)
    if aus is None:
        aus = sorted({au for codes in occurrence.values() for frame in codes.values() for au, code in frame.items()
                      if code != AU_UNKNOWN_CODE})
    columns = BASE_COLUMNS + [au_column(au) for au in aus]
    for row in rows:
        numbers = [frame_number(frame) for frame in row["frames"]]
        codes = occurrence.get((row["subject"], row["task"]))
        if codes is None:
            bad_files.append(f"{row['path']}: no AU occurrence file {row['subject']}_{row['task']}.csv in "
                             f"{AU_OCC_FOLDER.as_posix()}; its AU columns are {AU_MISSING}")
            codes = {}
        for au in aus:
            row[au_column(au)] = _per_frame({frame: values.get(au, AU_UNKNOWN_CODE) for frame, values in
                                             codes.items()}, numbers)
    if intensity_folder is not None:
        columns += _add_intensities(intensity_folder, rows, bad_files)
    if features_folder is not None:
        _add_landmarks(features_folder, rows, bad_files)
        columns.append("landmark_frames")
    return finish_index(rows, columns, bad_files, root, strict, "BP4D-Spontaneous")


def _sequence_rows(folder: Path, pattern: re.Pattern, frame_pattern: str, bad_files: list[str]) -> list[dict]:
    rows = []
    tasks = {name.upper(): name for name in BP4D_TASKS}
    for subject_folder in subject_folders(folder, SUBJECT_PATTERN, "bp4d", "F001"):
        for task_folder in sorted(subject_folder.iterdir()):
            if task_folder.name.startswith("."):
                continue
            task = tasks.get(task_folder.name.upper())
            if not task_folder.is_dir() or task is None:
                bad_files.append(f"{task_folder}: not a task folder (known: {', '.join(BP4D_TASKS)})")
                continue
            frames = collect_frames(task_folder, pattern, bad_files)
            if not frames:
                bad_files.append(f"{task_folder}: task folder holds no frames matching {frame_pattern!r}")
                continue
            expression = BP4D_TASKS[task]
            subject = subject_folder.name.upper()
            rows.append({"subject": subject, "task": task, "expression": expression,
                         "label": LABEL_SETS["bp4d_tasks"].index(expression), "path": str(task_folder),
                         "sex": subject[0], "frames": frames, "num_frames": len(frames), "onset": -1, "apex": -1,
                         "offset": -1, "au_path": ""})
    return rows


def _occurrence_codes(folder: Path, rows: list[dict], bad_files: list[str]) -> dict[tuple[str, str], dict]:
    by_key = {(row["subject"], row["task"]): row for row in rows}
    out = {}
    for key, path in _occurrence_files(folder, bad_files).items():
        row = by_key.get(key)
        if row is None:
            bad_files.append(f"{path}: AU file of {key[0]} {key[1]}, which has no indexed sequence")
            continue
        try:
            out[key] = read_au_occurrence(path)
        except (FacetVLMError, OSError, UnicodeDecodeError, csv.Error) as error:  # reported: one bad file must
            bad_files.append(f"{path}: {getattr(error, 'reason', error)}")  # not hide the others
            continue
        row["au_path"] = str(path)
    return out


def _add_intensities(folder: Path, rows: list[dict], bad_files: list[str]) -> list[str]:
    files = _intensity_files(folder, bad_files)
    by_key = {(row["subject"], row["task"]): row for row in rows}
    codes: dict[tuple[str, str], dict[int, dict[int, int]]] = {}
    for key, per_au in files.items():
        if key not in by_key:
            bad_files.append(f"{next(iter(per_au.values()))}: AU intensity file(s) of {key[0]} {key[1]}, which has "
                             "no indexed sequence")
            continue
        for au, path in per_au.items():
            try:
                codes.setdefault(key, {})[au] = read_au_intensity(path)
            except (FacetVLMError, OSError, UnicodeDecodeError, csv.Error) as error:
                bad_files.append(f"{path}: {getattr(error, 'reason', error)}")
    aus = sorted({au for per_au in codes.values() for au in per_au})
    for row in rows:
        numbers = [frame_number(frame) for frame in row["frames"]]
        per_au = codes.get((row["subject"], row["task"]), {})
        missing = [f"AU{au:02d}" for au in aus if au not in per_au]
        if missing:
            bad_files.append(f"{row['path']}: no AU intensity file for {', '.join(missing)}; those columns are "
                             f"{AU_MISSING}")
        for au in aus:
            row[au_intensity_column(au)] = _per_frame(per_au.get(au, {}), numbers)
    return [au_intensity_column(au) for au in aus]


def _add_landmarks(folder: Path, rows: list[dict], bad_files: list[str]) -> None:
    for row in rows:
        track = folder / row["subject"] / row["task"]
        found = {}
        if track.is_dir():
            for path in sorted(track.iterdir()):
                if path.suffix.lower() == ".tbnd" and re.fullmatch(r"\d+", path.stem):
                    found[int(path.stem)] = path
                elif not path.name.startswith("."):
                    bad_files.append(f"{path}: not a .tbnd frame (names such as 0000.tbnd)")
        numbers = [frame_number(frame) for frame in row["frames"]]
        row["landmark_frames"] = [str(found.pop(number)) if number in found else "" for number in numbers]
        lost = row["landmark_frames"].count("")
        if lost:
            bad_files.append(f"{track}: {lost} of {len(numbers)} model frames have no .tbnd (the guide lists the "
                             f"frames without 3D tracking in {FEATURES_FOLDER}/Loss.txt)")
        for number, path in sorted(found.items()):
            bad_files.append(f"{path}: .tbnd of frame {number}, which has no model frame")


def cross_dataset_subset(dataset, train_labels: tuple[str, ...] | list[str]):
    """BP4D as a cross-dataset test set: the rows whose task emotion exists in the training label set, with
    ``label`` re-indexed into `train_labels` (e.g. ``LABEL_SETS["basic6"]`` for a model trained on BU-3DFE or
    BU-4DFE: T1 happiness, T2 sadness, T3 surprise, T5 fear, T7 anger, T8 disgust; T4 embarrassment and T6 pain
    have no counterpart and are left out).

    Returns:
        ``(subset, kept, dropped)``: the re-labelled rows, the sorted task emotions kept, and those left out.
    """
    train_labels = list(train_labels)
    expressions = list(dataset["expression"])
    keep = [i for i, expression in enumerate(expressions) if expression in train_labels]
    subset = dataset.select(keep)
    subset = subset.remove_columns("label").add_column("label", [train_labels.index(expressions[i]) for i in keep])
    kept = sorted({expressions[i] for i in keep})
    dropped = sorted(set(expressions) - set(kept))
    return subset, kept, dropped

