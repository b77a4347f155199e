"""BU-3DFE index: one row per static scan, read from the official layout (also what `synthetic.generate` writes).

Layout: ``<root>/F0001/F0001_HA04WH_F3D.wrl`` with ``.bmp`` texture and ``.bnd`` landmarks beside it; subject
``F``/``M`` + 4 digits, expression code AN DI FE HA SA SU (intensity 01..04) or NE00, two-letter ethnicity code.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from ..errors import DatasetLayoutError
from ..labels import BASIC_EXPRESSIONS, BU3DFE_CODES

SUBJECT_PATTERN = re.compile(r"[FM]\d{4}")
SCAN_PATTERN = re.compile(r"(?P<subject>[FM]\d{4})_(?P<code>[A-Z]{2})(?P<intensity>\d{2})(?P<race>[A-Z]{2})_"
                          r"(?P<kind>F3D|RAW)\.wrl", re.IGNORECASE)


def label_of(expression: str) -> int:
    """Index of `expression` in the basic-six order, -1 for neutral (and anything outside the six)."""
    return BASIC_EXPRESSIONS.index(expression) if expression in BASIC_EXPRESSIONS else -1


def subject_folders(root: str | os.PathLike, pattern: re.Pattern, generated_name: str, example: str) -> list[Path]:
    """Subject folders under `root` matching `pattern`; also accepts the parent of a generated set (``root/<name>``).

    Raises:
        DatasetLayoutError: when `root` is missing or holds no subject folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError("data-set root does not exist or is not a folder", root)
    for candidate in (root, root / generated_name):
        if candidate.is_dir():
            folders = sorted(path for path in candidate.iterdir() if path.is_dir() and pattern.fullmatch(path.name))
            if folders:
                return folders
    raise DatasetLayoutError(
        f"no subject folders such as {example}/ found (nor under {generated_name}/); point to the data-set root",
        root)


def finish_index(rows: list[dict], columns: list[str], bad_files: list[str], root: str | os.PathLike,
                 strict: bool, what: str):
    """Build the `datasets.Dataset`, attach ``bad_files`` and warn about them (or raise when `strict`)."""
    import datasets

    if bad_files and strict:
        listed = "; ".join(bad_files[:5]) + (f"; ... ({len(bad_files)} in all)" if len(bad_files) > 5 else "")
        raise DatasetLayoutError(f"{len(bad_files)} files do not follow the {what} layout: {listed}", root)
    if not rows:
        raise DatasetLayoutError(f"no {what} scans found" + (f" ({len(bad_files)} unparseable files)"
                                                             if bad_files else ""), root)
    if bad_files:
        warnings.warn(f"{root}: {len(bad_files)} files do not follow the {what} layout and were not indexed, "
                      f"e.g. {bad_files[0]}; see dataset.bad_files", stacklevel=3)
    dataset = datasets.Dataset.from_dict({column: [row[column] for row in rows] for column in columns})
    dataset.bad_files = bad_files
    return dataset


COLUMNS = ["subject", "expression", "label", "intensity", "path", "sex", "race", "texture_path", "landmarks_path"]


def parse_bu3dfe_name(name: str) -> dict | str:
    """Fields of a BU-3DFE scan file name, or the reason it does not parse."""
    match = SCAN_PATTERN.fullmatch(name)
    if not match:
        return "name is not SUBJECT_XXNNRR_F3D.wrl (e.g. F0001_HA04WH_F3D.wrl)"
    code, intensity = match["code"].upper(), int(match["intensity"])
    if code not in BU3DFE_CODES:
        return f"unknown expression code {code!r} (known: {', '.join(BU3DFE_CODES)})"
    if (code == "NE") != (intensity == 0) or intensity > 4:
        return f"intensity {intensity:02d} is invalid for {code} (NE00, or 01..04 for expressions)"
    return {"subject": match["subject"].upper(), "expression": BU3DFE_CODES[code], "intensity": intensity,
            "race": match["race"].upper(), "kind": match["kind"].upper()}


def load_bu3dfe(root: str | os.PathLike, kind: str = "F3D", strict: bool = False):
    """Index a BU-3DFE root into a `datasets.Dataset`, one row per scan, sorted by subject then file name.

    Columns: subject, expression (class name, "neutral" for NE00), label (index in `BASIC_EXPRESSIONS`, -1 for
    neutral), intensity (0 neutral, 1..4), path (the .wrl), sex, race, texture_path and landmarks_path (the
    sibling .bmp / .bnd, "" when absent).

    Args:
        root: the folder holding F0001/ ... M0044/ (or a generated root holding ``bu3dfe/``).
        kind: "F3D" (cropped face meshes, the usual input) or "RAW".
        strict: raise on any ``.wrl`` whose name does not parse instead of reporting it.

    Returns:
        The dataset; ``dataset.bad_files`` lists ``"path: reason"`` for every .wrl that was not indexed because its
        name does not parse or does not match its folder (a warning says how many). The attribute is not carried
        through `datasets` transforms.

    Raises:
        DatasetLayoutError: when the root or its subject folders are missing, nothing parses, or (strict) a name
            does not parse.
    """
    kind = kind.upper()
    rows, bad_files = [], []
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu3dfe", "F0001"):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix.lower() != ".wrl":
                continue
            fields = parse_bu3dfe_name(path.name)
            if isinstance(fields, str):
                bad_files.append(f"{path}: {fields}")
                continue
            if fields["subject"] != folder.name.upper():
                bad_files.append(f"{path}: subject {fields['subject']} in folder {folder.name}")
                continue
            if fields["kind"] != kind:
                continue
            texture, landmarks = path.with_suffix(".bmp"), path.with_suffix(".bnd")
            rows.append({**fields, "label": label_of(fields["expression"]), "path": str(path),
                         "sex": fields["subject"][0], "texture_path": str(texture) if texture.is_file() else "",
                         "landmarks_path": str(landmarks) if landmarks.is_file() else ""})
    return finish_index(rows, COLUMNS, bad_files, root, strict, "BU-3DFE")
