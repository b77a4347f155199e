"""BU-4DFE index: one row per expression sequence (the frame paths in order), from the official layout.

Layout: ``<root>/F001/Happy/000.wrl, 001.wrl, ...`` with a texture image per frame (``000.bmp`` or ``.jpg``);
subject ``F``/``M`` + 3 digits, sequence folders Angry Disgust Fear Happy Sad Surprise.
"""

from __future__ import annotations

import os
import re

from ..labels import BU4DFE_FOLDERS
from .bu3dfe import finish_index, label_of, subject_folders

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
        strict: raise on unknown sequence folders, unparseable frame names or empty sequences.

    Returns:
        The dataset with ``dataset.bad_files`` (``"path: reason"``; see `load_bu3dfe`).

    Raises:
        DatasetLayoutError: as `facet_vlm.data.load_bu3dfe`.
    """
    rows, bad_files = [], []
    folder_names = {name.lower(): name for name in BU4DFE_FOLDERS}
    for folder in subject_folders(root, SUBJECT_PATTERN, "bu4dfe", "F001"):
        for sequence in sorted(path for path in folder.iterdir() if path.is_dir()):
            name = folder_names.get(sequence.name.lower())
            if name is None:
                bad_files.append(f"{sequence}: unknown sequence folder (known: {', '.join(BU4DFE_FOLDERS)})")
                continue
            frames = []
            for path in sequence.iterdir():
                if path.is_file() and path.suffix.lower() == ".wrl":
                    if FRAME_PATTERN.fullmatch(path.name):
                        frames.append(path)
                    else:
                        bad_files.append(f"{path}: frame name is not a frame number such as 000.wrl")
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
