"""BU-4DFE index: one row per expression sequence (the frame paths in order), from the official layout.

Layout: ``<root>/F001/Happy/000.wrl, 001.wrl, ...`` with a texture image per frame (``000.bmp`` or ``.jpg``);
subject ``F``/``M`` + 3 digits, sequence folders Angry Disgust Fear Happy Sad Surprise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..labels import BU4DFE_FOLDERS
from .bu3dfe import finish_index, folder_entries, label_of, subject_folders

SUBJECT_PATTERN = re.compile(r"[FM]\d{3}")
FRAME_PATTERN = re.compile(r"\d+\.wrl", re.IGNORECASE)
TEXTURE_SUFFIXES = (".bmp", ".jpg", ".png")
COLUMNS = ["subject", "expression", "label", "intensity", "path", "sex", "frames", "textures", "num_frames"]


def load_bu4dfe(root: str | os.PathLike, strict: bool = False):
    """Index a BU-4DFE root into a `datasets.Dataset`, one row per sequence.

    Columns: subject, expression, label (index in `BASIC_EXPRESSIONS`), intensity (-1: a sequence spans neutral to
    apex), path (the sequence folder), sex, frames (the .wrl paths sorted by frame number), textures (the texture of
    each frame, "" when absent) and num_frames.

    Args:
        root: the folder holding F001/ ... (or a generated root holding ``bu4dfe/``).
        strict: raise on any problem `bad_files` would list instead of reporting it.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"``; see `load_bu3dfe`): unknown sequence folders,
        unparseable frame names, empty sequences and subject folders, broken symbolic links, a frame number given
        twice in one sequence (``0.wrl`` and ``000.wrl``: the first in sorted order is used) and a second folder of
        the same expression (``Happy/`` and ``HAPPY/``: the official spelling, else the first in name order, is
        indexed).

    Raises:
        DatasetLayoutError: as `facet_vlm.data.load_bu3dfe`.
    """
    rows, bad_files = [], []
    folder_names = {name.lower(): name for name in BU4DFE_FOLDERS}
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu4dfe", "F001", bad_files):
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
            frames, numbers = [], {}
            for path in folder_entries(sequence, bad_files):
                if path.is_file() and path.suffix.lower() == ".wrl":
                    if not FRAME_PATTERN.fullmatch(path.name):
                        bad_files.append(f"{path}: frame name is not a frame number such as 000.wrl")
                    elif int(path.stem) in numbers:
                        bad_files.append(f"{path}: frame {int(path.stem)} is also {numbers[int(path.stem)].name}; "
                                         f"only {numbers[int(path.stem)].name} is used")
                    else:
                        numbers[int(path.stem)] = path
                        frames.append(path)
            if not frames:
                bad_files.append(f"{sequence}: sequence folder holds no frames (000.wrl, 001.wrl, ...)")
                continue
            frames.sort(key=lambda path: int(path.stem))
            textures = []
            for frame in frames:
                found = [frame.with_suffix(ext) for ext in TEXTURE_SUFFIXES if frame.with_suffix(ext).is_file()]
                textures.append(str(found[0]) if found else "")
            expression = BU4DFE_FOLDERS[name]
            rows.append({"subject": folder.name.upper(), "expression": expression, "label": label_of(expression),
                         "intensity": -1, "path": str(sequence), "sex": folder.name[0].upper(),
                         "frames": [str(frame) for frame in frames], "textures": textures,
                         "num_frames": len(frames)})
    return finish_index(rows, COLUMNS, bad_files, root, strict, "BU-4DFE")
