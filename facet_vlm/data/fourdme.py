"""4DME index: one row per micro- or macro-expression clip, with onset / apex / offset and the emotion label.

4DME's public description gives 4D (per-frame 3D mesh) clips of micro- and macro-expressions, annotated with onset,
apex and offset frames and emotion classes (``LABEL_SETS["4dme"]``) in a label sheet. It does not fix the paths
or the sheet's column names, so the layout below is **assumed, not verified against the real data set**; the
frame pattern, the clip folder template, the sheet and its column names are arguments::

    <root>/S01/S01_micro_01/0000.obj, 0001.obj, ...   per-frame meshes of one clip (any `read_face` format)
    <root>/labels.csv  (or .xlsx)                       one row per clip: Subject, Clip, Onset, Apex, Offset,
                                                        Emotion, Type (micro / macro)

Onset / apex / offset in the sheet are frame numbers (the digits of the frame file names); the index turns them
into positions in the clip's ``frames``. A generated set (`generate_sequences`) holds this layout under ``4dme/``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from ..errors import DatasetLayoutError, UnsupportedFormatError
from ..labels import LABEL_SETS
from .bu3dfe import finish_index
from .sequences import collect_frames, frame_number

FRAME_PATTERN = r"\d+\.(obj|wrl|vrml|ply|off|stl|glb|gltf|bnt)"
#: Sheet column of each field (assumed names; pass `columns` to match the sheet at hand).
DEFAULT_COLUMNS = {"subject": "Subject", "clip": "Clip", "onset": "Onset", "apex": "Apex", "offset": "Offset",
                   "emotion": "Emotion", "kind": "Type"}
KINDS = ("micro", "macro")
COLUMNS = ["subject", "clip", "kind", "expression", "label", "path", "frames", "num_frames", "onset", "apex",
           "offset", "onset_frame", "apex_frame", "offset_frame"]


def read_label_sheet(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a label sheet (CSV, or XLSX through openpyxl when it is installed) as ``{header: text}``.

    Raises:
        UnsupportedFormatError: another extension, or an .xlsx without openpyxl installed.
        DatasetLayoutError: an empty sheet.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            table = [row for row in csv.reader(handle)]
    elif suffix in (".xlsx", ".xlsm"):
        try:
            import openpyxl
        except ImportError:
            raise UnsupportedFormatError('reading an .xlsx label sheet needs openpyxl (pip install "facet-vlm[xlsx]"), '
                                         "or save the sheet as .csv and pass that", path) from None
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        table = [["" if cell is None else str(cell) for cell in row] for row in book.worksheets[0].iter_rows(
            values_only=True)]
        book.close()
    else:
        raise UnsupportedFormatError(f"label sheet must be .csv or .xlsx, got {suffix or '(no extension)'!r}", path)
    table = [row for row in table if any(str(cell).strip() for cell in row)]
    if not table:
        raise DatasetLayoutError("label sheet is empty", path)
    header = [str(cell).strip() for cell in table[0]]
    return [dict(zip(header, (str(cell).strip() for cell in row))) for row in table[1:]]


def _frame_field(value: str) -> int | None:
    """A frame number from the sheet; None for an empty or non-numeric cell (e.g. "/" for "not annotated")."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _find_sheet(root: Path) -> Path:
    sheets = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".xlsx", ".xlsm"))
    if len(sheets) != 1:
        raise DatasetLayoutError(f"expected one label sheet (.csv / .xlsx) in the root, found {len(sheets)}: "
                                 f"{[p.name for p in sheets]}; pass label_sheet=", root)
    return sheets[0]


def load_4dme(root: str | os.PathLike, label_sheet: str | os.PathLike | None = None, kind: str = "all",
              frame_pattern: str = FRAME_PATTERN, columns: dict[str, str] | None = None,
              clip_folder: str = "{subject}/{clip}", emotion_map: dict[str, str] | None = None,
              strict: bool = False):
    """Index a 4DME root (layout assumed: see the module docstring) into a `datasets.Dataset`, one row per clip.

    Columns: subject, clip, kind ("micro" / "macro"), expression (a class of ``LABEL_SETS["4dme"]``), label (its
    index), path (the clip folder), frames (numeric order), num_frames, onset / apex / offset (positions in
    ``frames``, -1 when the sheet leaves the field empty or non-numeric) and onset_frame / apex_frame /
    offset_frame (the sheet's frame numbers, -1 likewise).

    Args:
        root: the data-set root (or a generated root holding ``4dme/``).
        label_sheet: the sheet; default the single .csv / .xlsx in the root.
        kind: "micro", "macro" or "all" clips.
        frame_pattern: regular expression a frame file name must match in full (case-insensitive).
        columns: sheet header of each field, over `DEFAULT_COLUMNS`; map "kind" to None when the sheet has no
            such column (every clip is then "micro").
        clip_folder: the clip folder relative to the root, formatted with the sheet's ``subject`` and ``clip``.
        emotion_map: sheet emotion (case-insensitive) -> class name of ``LABEL_SETS["4dme"]``; the class names
            themselves are always accepted.
        strict: raise on anything reported instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files``: sheet rows with a missing field, an unknown emotion or kind, a clip
        with no frames, a frame number that is not among the clip's frames; clip folders the sheet does not name;
        files in clip folders that are not frames.

    Raises:
        DatasetLayoutError: no sheet, a sheet without a required column, nothing indexed, or (strict) anything
            reported. UnsupportedFormatError: see `read_label_sheet`.
    """
    if kind not in KINDS + ("all",):
        raise DatasetLayoutError(f"kind must be 'micro', 'macro' or 'all', got {kind!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError("data-set root does not exist or is not a folder", root)
    if label_sheet is None and (root / "4dme").is_dir() and not any(
            p.suffix.lower() in (".csv", ".xlsx", ".xlsm") for p in root.iterdir() if p.is_file()):
        root = root / "4dme"
    sheet = Path(label_sheet) if label_sheet is not None else _find_sheet(root)
    names = {**DEFAULT_COLUMNS, **(columns or {})}
    table = read_label_sheet(sheet)
    required = [field for field, header in names.items() if header is not None]
    missing = [names[field] for field in required if not table or names[field] not in table[0]]
    if missing:
        raise DatasetLayoutError(f"label sheet lacks the columns {missing or list(names.values())} (it has "
                                 f"{list(table[0]) if table else []}); pass columns=", sheet)
    classes = LABEL_SETS["4dme"]
    emotions = {name.lower(): name for name in classes}
    emotions.update({key.lower(): value for key, value in (emotion_map or {}).items()})
    pattern = re.compile(frame_pattern, re.IGNORECASE)
    rows, bad_files, named = [], [], set()
    for line, record in enumerate(table, start=2):
        where = f"{sheet} line {line}"
        values = {field: record.get(names[field], "") if names[field] else "" for field in names}
        if not values["subject"] or not values["clip"]:
            bad_files.append(f"{where}: subject or clip is empty")
            continue
        folder = root / clip_folder.format(subject=values["subject"], clip=values["clip"])
        if folder in named:
            bad_files.append(f"{where}: clip {values['clip']} is named twice; the first row is kept")
            continue
        named.add(folder)
        clip_kind = "micro" if names["kind"] is None else next(
            (k for k in KINDS if values["kind"].lower().startswith(k)), None)
        if clip_kind is None:
            bad_files.append(f"{where}: type {values['kind']!r} is neither micro nor macro")
            continue
        expression = emotions.get(values["emotion"].lower())
        if expression is None:
            bad_files.append(f"{where}: unknown emotion {values['emotion']!r} (known: {', '.join(classes)}; "
                             "pass emotion_map=)")
            continue
        frames = collect_frames(folder, pattern, bad_files) if folder.is_dir() else []
        if not frames:
            bad_files.append(f"{where}: clip {values['clip']} has no frames (looked in {folder})")
            continue
        numbers = [frame_number(frame) for frame in frames]
        row = {"subject": values["subject"], "clip": values["clip"], "kind": clip_kind, "expression": expression,
               "label": classes.index(expression), "path": str(folder), "frames": frames,
               "num_frames": len(frames)}
        problem = None
        for field in ("onset", "apex", "offset"):
            number = _frame_field(values[field])
            if number is not None and number not in numbers:
                problem = f"{field} frame {number} is not among the clip's frames ({numbers[0]}..{numbers[-1]})"
            row[f"{field}_frame"] = -1 if number is None else number
            row[field] = -1 if number is None or number not in numbers else numbers.index(number)
        if problem is None and not _in_order(row):
            problem = (f"onset {row['onset_frame']}, apex {row['apex_frame']}, offset {row['offset_frame']} are "
                       "not in order")
        if problem:
            bad_files.append(f"{where}: {problem}")
            continue
        if kind in ("all", clip_kind):
            rows.append(row)
    depth = len(Path(clip_folder).parts)
    for folder in sorted(p for p in root.glob("/".join(["*"] * depth)) if p.is_dir()):
        if folder not in named:
            bad_files.append(f"{folder}: clip folder not named in the label sheet {sheet.name}")
    return finish_index(rows, COLUMNS, bad_files, root, strict, "4DME")


def _in_order(row: dict) -> bool:
    marks = [row[field] for field in ("onset", "apex", "offset") if row[field] >= 0]
    return marks == sorted(marks)


def leave_one_subject_out_folds(dataset) -> list:
    """4DME's protocol: leave-one-subject-out; one ``(train Dataset, test Dataset)`` pair per subject, in sorted
    subject order. Pool the predictions of all folds before computing UF1 and UAR (the micro-expression
    convention: the metrics are computed once over every test clip, not averaged over folds)."""
    from .folds import leave_one_subject_out

    subjects = list(dataset["subject"])
    out = []
    for train, test in leave_one_subject_out(subjects):
        out.append((dataset.select([i for i, s in enumerate(subjects) if s in train]),
                    dataset.select([i for i, s in enumerate(subjects) if s in test])))
    return out
