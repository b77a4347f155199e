"""BU-3DFE index: one row per static scan, read from the official layout (also what `synthetic.generate` writes).

Layout: ``<root>/F0001/F0001_HA04WH_F3D.wrl`` with ``.bmp`` texture and ``.bnd`` landmarks beside it; subject
``F``/``M`` + 4 digits, expression code AN DI FE HA SA SU (intensity 01..04) or NE00, two-letter ethnicity code.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from ..errors import ConfigError, DatasetLayoutError
from ..labels import BASIC_EXPRESSIONS, BU3DFE_CODES

SUBJECT_PATTERN = re.compile(r"[FM]\d{4}")
SCAN_PATTERN = re.compile(r"(?P<subject>[FM]\d{4})_(?P<code>[A-Z]{2})(?P<intensity>\d{2})(?P<race>[A-Z]{2})_"
                          r"(?P<kind>F3D|RAW)\.wrl", re.IGNORECASE)


def label_of(expression: str) -> int:
    """Index of `expression` in the basic-six order, -1 for neutral (and anything outside the six)."""
    return BASIC_EXPRESSIONS.index(expression) if expression in BASIC_EXPRESSIONS else -1


KINDS = ("F3D", "RAW")


def is_broken_link(path: Path) -> bool:
    """Whether `path` is a symbolic link whose target does not exist (or loops)."""
    return path.is_symlink() and not path.exists()


def folder_entries(folder: Path, bad_files: list[str]) -> list[Path]:
    """The sorted entries of `folder`; broken symbolic links among them are reported in `bad_files` and left out."""
    entries = []
    for path in sorted(folder.iterdir()):
        if is_broken_link(path):
            bad_files.append(f"{path}: broken symbolic link (its target does not exist)")
        else:
            entries.append(path)
    return entries


def subject_folders(root: str | os.PathLike, pattern: re.Pattern, generated_name: str, example: str,
                    bad_files: list[str] | None = None) -> list[Path]:
    """Subject folders under `root` matching `pattern`; also accepts the parent of a generated set (``root/<name>``).
    Broken symbolic links among them are appended to `bad_files`.

    Raises:
        DatasetLayoutError: when `root` is missing or holds no subject folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError("data-set root does not exist or is not a folder", root)
    for candidate in (root, root / generated_name):
        if candidate.is_dir():
            matching = sorted(path for path in candidate.iterdir() if pattern.fullmatch(path.name))
            folders = [path for path in matching if path.is_dir()]
            if folders:
                if bad_files is not None:
                    bad_files.extend(f"{path}: broken symbolic link (its target does not exist)"
                                     for path in matching if is_broken_link(path))
                return folders
    raise DatasetLayoutError(
        f"no subject folders such as {example}/ found (nor under {generated_name}/); point to the data-set root",
        root)


def finish_index(rows: list[dict], columns: list[str], bad_files: list[str], root: str | os.PathLike,
                 strict: bool, what: str, filtered_out: str = ""):
    """Build the `datasets.Dataset`, attach ``bad_files`` and warn about them (or raise when `strict`).
    `filtered_out` says what the caller's filters (kind, categories) left out, for the error when nothing is left."""
    import datasets

    if bad_files and strict:
        listed = "; ".join(bad_files[:5]) + (f"; ... ({len(bad_files)} in all)" if len(bad_files) > 5 else "")
        raise DatasetLayoutError(f"{len(bad_files)} files or folders do not follow the {what} layout or repeat a "
                                 f"scan: {listed}", root)
    if not rows:
        details = [text for text in (filtered_out, f"{len(bad_files)} files or folders reported, e.g. "
                                     f"{bad_files[0]}" if bad_files else "") if text]
        raise DatasetLayoutError(f"no {what} scans found" + (f" ({'; '.join(details)})" if details else ""), root)
    if bad_files:
        warnings.warn(f"{root}: {len(bad_files)} files or folders do not follow the {what} layout or repeat a scan "
                      f"and were not indexed, e.g. {bad_files[0]}; see dataset.bad_files", stacklevel=3)
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
        kind: "F3D" (cropped face meshes, the usual input) or "RAW" (any case).
        strict: raise on any problem `bad_files` would list instead of reporting it.

    Returns:
        The dataset; ``dataset.bad_files`` lists ``"path: reason"`` for every .wrl that was not indexed because its
        name does not parse or does not match its folder, or because it repeats a scan already indexed (the same
        subject, expression, intensity and kind under another name: a case variant, another race code), and for
        subject folders without a .wrl and broken symbolic links (a warning says how many). Of repeated scans
        the one spelt as the official names (upper-case stem, ``.wrl``) is indexed, else the first in name
        order. The attribute is not carried through `datasets` transforms.

    Raises:
        ConfigError: an unknown `kind`.
        DatasetLayoutError: when the root or its subject folders are missing, nothing parses, or (strict) anything
            is reported.
    """
    if not isinstance(kind, str) or kind.upper() not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    kind = kind.upper()
    rows, bad_files, seen, other_kind = [], [], {}, 0
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu3dfe", "F0001", bad_files):
        scans = [path for path in folder_entries(folder, bad_files)
                 if path.is_file() and path.suffix.lower() == ".wrl"]
        if not scans:
            bad_files.append(f"{folder}: subject folder holds no .wrl scan")
        scans.sort(key=lambda path: (path.name != path.stem.upper() + ".wrl", path.name))  # official spelling first
        for path in scans:
            fields = parse_bu3dfe_name(path.name)
            if isinstance(fields, str):
                bad_files.append(f"{path}: {fields}")
                continue
            if fields["subject"] != folder.name.upper():
                bad_files.append(f"{path}: subject {fields['subject']} in folder {folder.name}")
                continue
            key = (fields["subject"], fields["expression"], fields["intensity"], fields["kind"])
            if key in seen:
                bad_files.append(f"{path}: repeats the scan {seen[key].name} (same subject, expression, intensity "
                                 f"and kind); only {seen[key].name} is indexed")
                continue
            seen[key] = path
            if fields["kind"] != kind:
                other_kind += 1
                continue
            texture, landmarks = path.with_suffix(".bmp"), path.with_suffix(".bnd")
            rows.append({**fields, "label": label_of(fields["expression"]), "path": str(path),
                         "sex": fields["subject"][0], "texture_path": str(texture) if texture.is_file() else "",
                         "landmarks_path": str(landmarks) if landmarks.is_file() else ""})
    filtered_out = f"{other_kind} scans of the other kind than {kind}" if other_kind else ""
    return finish_index(rows, COLUMNS, bad_files, root, strict, "BU-3DFE", filtered_out)
