"""Bosphorus index: one row per ``.bnt`` scan, read from the official layout (also what `synthetic.generate` writes).

Layout: ``<root>/bs000/bs000_E_HAPPY_0.bnt`` with ``.png`` texture and ``.lm3`` landmarks beside it. Name parts:
subject, category (E emotion, N neutral, LFAU / UFAU / CAU action units, YR / PR / CR rotations, O occlusions, IGN),
code (e.g. HAPPY, N, 12, R10) and a sample number.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ..labels import BOSPHORUS_CODES
from .bu3dfe import finish_index, label_of, subject_folders

SUBJECT_PATTERN = re.compile(r"bs\d{3}")
SCAN_PATTERN = re.compile(r"(?P<subject>bs\d{3})_(?P<category>[A-Z]+)_(?P<code>[A-Za-z0-9]+)_(?P<sample>\d+)\.bnt",
                          re.IGNORECASE)
CATEGORIES = ("E", "N", "LFAU", "UFAU", "CAU", "YR", "PR", "CR", "O", "IGN")
COLUMNS = ["subject", "expression", "label", "intensity", "path", "category", "code", "sample", "texture_path",
           "landmarks_path"]


def parse_bosphorus_name(name: str) -> dict | str:
    """Fields of a Bosphorus scan file name, or the reason it does not parse."""
    match = SCAN_PATTERN.fullmatch(name)
    if not match:
        return "name is not bsNNN_CATEGORY_CODE_N.bnt (e.g. bs000_E_HAPPY_0.bnt)"
    category, code = match["category"].upper(), match["code"].upper()
    if category not in CATEGORIES:
        return f"unknown category {category!r} (known: {', '.join(CATEGORIES)})"
    if category == "E" and code not in BOSPHORUS_CODES:
        return f"unknown emotion {code!r} (known: {', '.join(BOSPHORUS_CODES)})"
    expression = BOSPHORUS_CODES[code] if category == "E" else "neutral" if category == "N" else ""
    return {"subject": match["subject"].lower(), "category": category, "code": code,
            "sample": int(match["sample"]), "expression": expression}


def load_bosphorus(root: str | os.PathLike, categories: Sequence[str] = ("E", "N"), strict: bool = False):
    """Index a Bosphorus root into a `datasets.Dataset`, one row per scan of the chosen categories.

    Columns: subject, expression (class name; "neutral" for N; "" for AU, pose and occlusion scans), label (index
    in `BASIC_EXPRESSIONS`, -1 otherwise), intensity (Bosphorus has no levels: 0 for neutral, -1 otherwise), path
    (the .bnt), category, code, sample, texture_path and landmarks_path (sibling .png / .lm3, "" when absent).

    Args:
        root: the folder holding bs000/ ... (or a generated root holding ``bosphorus/``).
        categories: which name categories to index (default: the emotions and neutral).
        strict: raise on any ``.bnt`` whose name does not parse instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"`` per unparseable .bnt; see `load_bu3dfe`).

    Raises:
        DatasetLayoutError: as `facet_vlm.data.load_bu3dfe`.
    """
    wanted = {category.upper() for category in categories}
    rows, bad_files = [], []
    for folder in subject_folders(root, SUBJECT_PATTERN, "bosphorus", "bs000"):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.suffix.lower() != ".bnt":
                continue
            fields = parse_bosphorus_name(path.name)
            if isinstance(fields, str):
                bad_files.append(f"{path}: {fields}")
                continue
            if fields["subject"] != folder.name.lower():
                bad_files.append(f"{path}: subject {fields['subject']} in folder {folder.name}")
                continue
            if fields["category"] not in wanted:
                continue
            texture, landmarks = path.with_suffix(".png"), path.with_suffix(".lm3")
            rows.append({**fields, "label": label_of(fields["expression"]),
                         "intensity": 0 if fields["category"] == "N" else -1, "path": str(path),
                         "texture_path": str(texture) if texture.is_file() else "",
                         "landmarks_path": str(landmarks) if landmarks.is_file() else ""})
    return finish_index(rows, COLUMNS, bad_files, root, strict, "Bosphorus")
