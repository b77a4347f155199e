"""BP4D-Spontaneous index: one row per (subject, task) sequence of per-frame 3D meshes, with AU occurrence codes.

The data set's public description fixes the subjects (``F001``.. women, ``M001``.. men), the eight tasks T1..T8
and the emotion each task elicits (`BP4D_TASKS`). It does not fix every path, so the layout below is **assumed,
not verified against the real data set**; the frame pattern, the AU folder and the AU file names are arguments::

    <root>/F001/T1/0000.obj, 0001.obj, ...    per-frame meshes, any format `facet_vlm.io.read_face` reads
                                              (a texture / .mtl / landmark file with a frame's stem belongs to it)
    <root>/AUCoding/F001_T1.csv               optional AU occurrence codes of that sequence: a header row, one
                                              frame-number column and one column per AU ("1", "12", "AU12", ...)

A generated set (`facet_vlm.data.synthetic_sequences.generate_sequences`) holds this layout under ``bp4d/``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ..errors import FacetVLMError
from ..labels import LABEL_SETS
from .bu3dfe import finish_index, subject_folders
from .sequences import collect_frames, frame_number

SUBJECT_PATTERN = re.compile(r"[FM]\d{3}")
#: Task folder -> the emotion it elicits (T1 happiness/amusement, T2 sadness, T3 surprise/startle, T4
#: embarrassment, T5 fear/nervousness, T6 physical pain, T7 anger/upset, T8 disgust), named as in ``bp4d_tasks``.
BP4D_TASKS = dict(zip(("T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"), LABEL_SETS["bp4d_tasks"]))
#: Default frame file names (assumed): digits, any extension `read_face` reads.
FRAME_PATTERN = r"\d+\.(obj|wrl|vrml|ply|off|stl|glb|gltf|bnt)"
AU_FILE_PATTERN = r"(?P<subject>[FM]\d{3})_(?P<task>T\d)\.csv"
_AU_NAME = re.compile(r"(?:AU)?\s*(\d{1,2})", re.IGNORECASE)
BASE_COLUMNS = ["subject", "task", "expression", "label", "path", "sex", "frames", "num_frames", "onset", "apex",
                "offset", "au_path"]


def au_column(au: int) -> str:
    """Index column name of an action unit: ``au01``, ``au12``."""
    return f"au{au:02d}"


def read_au_occurrence(path: str | os.PathLike, frame_column: str | None = None) -> dict[int, dict[int, int]]:
    """AU codes of one sequence: ``{frame number: {au: code}}`` from a CSV with a header row.

    Args:
        path: the CSV file.
        frame_column: header of the frame-number column; None takes the first column.

    Codes are kept as written (integers; the meaning of each value, e.g. 0/1 or a code for "not coded", is the data
    set's). AU columns are headers that read as an AU number (``1``, ``01``, ``AU1``, ``AU 12``); other columns
    are ignored.

    Raises:
        DatasetLayoutError: an empty file, a missing frame column, no AU column, or a non-integer cell (the message
            names the line).
    """
    from ..errors import DatasetLayoutError

    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DatasetLayoutError("AU file is empty", path)
    header = [cell.strip() for cell in rows[0]]
    frame_at = 0 if frame_column is None else (header.index(frame_column) if frame_column in header else -1)
    if frame_at < 0:
        raise DatasetLayoutError(f"no frame column {frame_column!r} (columns: {header})", path)
    aus = {i: int(m.group(1)) for i, name in enumerate(header) if i != frame_at and (m := _AU_NAME.fullmatch(name))}
    if not aus:
        raise DatasetLayoutError(f"no AU column (headers such as 1, 12 or AU12) among {header}", path)
    codes: dict[int, dict[int, int]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            codes[int(float(row[frame_at]))] = {au: int(float(row[i])) for i, au in aus.items()}
        except (ValueError, IndexError):
            raise DatasetLayoutError(f"line {line}: frame number and AU codes must be numbers, got {row}",
                                     path) from None
    return codes


def _au_files(root: Path, au_folder: str | os.PathLike | None, pattern: re.Pattern,
              bad_files: list[str]) -> dict[tuple[str, str], Path]:
    if au_folder is None:
        return {}
    folder = Path(au_folder) if Path(au_folder).is_absolute() else root / au_folder
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name) if path.is_file() else None
        if match is None:
            bad_files.append(f"{path}: not an AU file (names must match {pattern.pattern!r})")
        else:
            found[(match["subject"].upper(), match["task"].upper())] = path
    return found


def load_bp4d(root: str | os.PathLike, frame_pattern: str = FRAME_PATTERN, au_folder: str | os.PathLike | None =
              "AUCoding", au_file_pattern: str = AU_FILE_PATTERN, au_frame_column: str | None = None,
              strict: bool = False):
    """Index a BP4D-Spontaneous root (layout assumed: see the module docstring) into a `datasets.Dataset`.

    Columns: subject, task (T1..T8), expression (the task's emotion), label (index in ``LABEL_SETS["bp4d_tasks"]``),
    path (the task folder), sex, frames (frame paths in numeric order), num_frames, onset / apex / offset (-1: the
    data set annotates no apex per task), au_path ("" without an AU file) and one column per AU found in any AU file
    (``au01``, ``au02``, ...: the code of every frame, -1 where the file has no row for the frame or no such AU).

    Args:
        root: the folder holding F001/ ... (or a generated root holding ``bp4d/``).
        frame_pattern: regular expression a frame file name must match in full (case-insensitive).
        au_folder: folder of the AU files, relative to the subjects' folder or absolute; None ignores AU codes.
        au_file_pattern: AU file names, with named groups ``subject`` and ``task``.
        au_frame_column: header of the frame-number column of the AU files (None: the first column).
        strict: raise on any file that does not fit instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"``): unknown task folders, files that are not
        frames, task folders without frames, AU files that do not parse or name no indexed sequence.

    Raises:
        DatasetLayoutError: no subject folder, nothing indexed, or (strict) any bad file.
    """
    pattern = re.compile(frame_pattern, re.IGNORECASE)
    rows, bad_files = [], []
    subjects = subject_folders(root, SUBJECT_PATTERN, "bp4d", "F001")
    base = subjects[0].parent
    au_files = _au_files(base, au_folder, re.compile(au_file_pattern, re.IGNORECASE), bad_files)
    tasks = {name.upper(): name for name in BP4D_TASKS}
    for folder in subjects:
        for task_folder in sorted(folder.iterdir()):
            task = tasks.get(task_folder.name.upper())
            if not task_folder.is_dir() or task is None:
                bad_files.append(f"{task_folder}: not a task folder (known: {', '.join(BP4D_TASKS)})")
                continue
            frames = collect_frames(task_folder, pattern, bad_files)
            if not frames:
                bad_files.append(f"{task_folder}: task folder holds no frames matching {frame_pattern!r}")
                continue
            expression = BP4D_TASKS[task]
            subject = folder.name.upper()
            rows.append({"subject": subject, "task": task, "expression": expression,
                         "label": LABEL_SETS["bp4d_tasks"].index(expression), "path": str(task_folder),
                         "sex": subject[0], "frames": frames, "num_frames": len(frames), "onset": -1, "apex": -1,
                         "offset": -1, "au_path": "", "codes": {}})
    by_key = {(row["subject"], row["task"]): row for row in rows}
    for key, path in au_files.items():
        row = by_key.get(key)
        if row is None:
            bad_files.append(f"{path}: AU file of {key[0]} {key[1]}, which has no indexed sequence")
            continue
        try:
            row["codes"] = read_au_occurrence(path, au_frame_column)
        except (FacetVLMError, OSError, UnicodeDecodeError, csv.Error) as error:  # reported: one bad file must
            bad_files.append(f"{path}: {getattr(error, 'reason', error)}")  # not hide the others
            continue
        row["au_path"] = str(path)
    aus = sorted({au for row in rows for codes in row["codes"].values() for au in codes})
    for row in rows:
        numbers = [frame_number(frame) for frame in row["frames"]]
        codes = row.pop("codes")
        for au in aus:
            row[au_column(au)] = [codes.get(number, {}).get(au, -1) for number in numbers]
    return finish_index(rows, BASE_COLUMNS + [au_column(au) for au in aus], bad_files, root, strict,
                        "BP4D-Spontaneous")


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
