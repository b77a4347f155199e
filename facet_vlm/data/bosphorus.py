"""Bosphorus index: one row per ``.bnt`` scan, read from the official layout (also what `synthetic.generate` writes).

Layout: ``<root>/bs000/bs000_E_HAPPY_0.bnt`` with ``.png`` texture and ``.lm3`` landmarks beside it. Name parts:
subject, category (E emotion, N neutral, LFAU / UFAU / CAU action units, YR / PR / CR rotations, O occlusions, IGN),
code (e.g. HAPPY, N, 12, R10) and a sample number.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from ..errors import ConfigError
from ..labels import BOSPHORUS_CODES
from .bu3dfe import finish_index, folder_entries, label_of, subject_folders

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


def load_bosphorus(root: str | os.PathLike, categories: str | Sequence[str] = ("E", "N"), strict: bool = False):
    """Index a Bosphorus root into a `datasets.Dataset`, one row per scan of the chosen categories.

    Columns: subject, expression (class name; "neutral" for N; "" for AU, pose and occlusion scans), label (index
    in `BASIC_EXPRESSIONS`, -1 otherwise), intensity (Bosphorus has no levels: 0 for neutral, -1 otherwise), path
    (the .bnt), category, code, sample, texture_path and landmarks_path (sibling .png / .lm3, "" when absent).

    Args:
        root: the folder holding bs000/ ... (or a generated root holding ``bosphorus/``).
        categories: which name categories to index (default: the emotions and neutral), any of `CATEGORIES` in
            any case; one category may be given as a string (``"LFAU"``).
        strict: raise on any problem `bad_files` would list instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"`` per unparseable .bnt, per scan that repeats one
        already indexed -- the same subject, category, code and sample number, e.g. ``_0`` and ``_00`` or a case
        variant --, per subject folder without a .bnt and per broken symbolic link; see `load_bu3dfe`).

    Raises:
        ConfigError: an unknown category.
        DatasetLayoutError: as `facet_vlm.data.load_bu3dfe`.
    """
    if isinstance(categories, str):
        categories = (categories,)
    wanted = {str(category).upper() for category in categories}
    unknown = sorted(wanted - set(CATEGORIES))
    if unknown or not wanted:
        raise ConfigError(f"unknown Bosphorus categor{'y' if len(unknown) == 1 else 'ies'} {unknown or categories!r}; "
                          f"choose among {', '.join(CATEGORIES)}")
    rows, bad_files, seen, other_category = [], [], {}, 0
    for folder in subject_folders(root, SUBJECT_PATTERN, "bosphorus", "bs000", bad_files):
        scans = [path for path in folder_entries(folder, bad_files)
                 if path.is_file() and path.suffix.lower() == ".bnt"]
        if not scans:
            bad_files.append(f"{folder}: subject folder holds no .bnt scan")
        for path in scans:
            fields = parse_bosphorus_name(path.name)
            if isinstance(fields, str):
                bad_files.append(f"{path}: {fields}")
                continue
            if fields["subject"] != folder.name.lower():
                bad_files.append(f"{path}: subject {fields['subject']} in folder {folder.name}")
                continue
            key = (fields["subject"], fields["category"], fields["code"], fields["sample"])
            if key in seen:
                bad_files.append(f"{path}: repeats the scan {seen[key].name} (same subject, category, code and "
                                 f"sample number); only {seen[key].name} is indexed")
                continue
            seen[key] = path
            if fields["category"] not in wanted:
                other_category += 1
                continue
            texture, landmarks = path.with_suffix(".png"), path.with_suffix(".lm3")
            rows.append({**fields, "label": label_of(fields["expression"]),
                         "intensity": 0 if fields["category"] == "N" else -1, "path": str(path),
                         "texture_path": str(texture) if texture.is_file() else "",
                         "landmarks_path": str(landmarks) if landmarks.is_file() else ""})
    filtered_out = (f"{other_category} scans of categories other than {', '.join(sorted(wanted))}"
                    if other_category else "")
    return finish_index(rows, COLUMNS, bad_files, root, strict, "Bosphorus", filtered_out)
