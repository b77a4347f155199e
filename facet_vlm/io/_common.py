"""Helpers shared by the readers: text decoding, finite checks, and finding and loading texture images."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ConfigError, FormatError, MissingTextureError

#: What a reader does when a mesh names a texture image that cannot be found: raise `MissingTextureError`
#: ("raise"), warn and read the mesh without its texture ("warn"), or do the latter silently ("ignore").
MissingTexturePolicy = Literal["raise", "warn", "ignore"]

#: Image extensions tried, in this order, when looking for a texture named after the mesh (``<stem>.bmp`` ...).
TEXTURE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def check_policy(missing_texture: str) -> None:
    """Raise `ConfigError` unless `missing_texture` is one of "raise", "warn", "ignore"."""
    if missing_texture not in ("raise", "warn", "ignore"):
        raise ConfigError(f"missing_texture must be 'raise', 'warn' or 'ignore', got {missing_texture!r}")


def read_text(path: str | os.PathLike) -> str:
    """The file's contents as text; `FormatError` when it is empty or not UTF-8 (a leading BOM is dropped)."""
    data = Path(path).read_bytes()
    if not data.strip():
        raise FormatError("file is empty", path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise FormatError(
            f"not UTF-8 text: byte 0x{data[error.start]:02x} at offset {error.start} (line {line}); "
            "re-save the file as UTF-8",
            path,
        ) from None
    return text.removeprefix("\ufeff")


def check_finite(values: np.ndarray, what: str, path: str | os.PathLike) -> None:
    """Raise `FormatError` naming the first row of `values` (2-D) that holds a NaN or an infinity."""
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FormatError(
            f"{what} {row} is not finite ({' '.join(str(v) for v in values[row].tolist())}); "
            f"{int(bad.sum())} of {len(values)} have NaN or infinite values",
            path,
        )


def _case_insensitive(folder: Path, name: str) -> Path | None:
    exact = folder / name
    if exact.is_file():
        return exact
    if not folder.is_dir():
        return None
    lowered = name.lower()
    for entry in folder.iterdir():
        if entry.name.lower() == lowered and entry.is_file():
            return entry
    return None


def find_texture(mesh_path: str | os.PathLike, named: Sequence[str], sibling_fallback: bool = True) -> Path | None:
    """Find the texture image of a mesh file.

    Tries each name in `named` (as given, relative to the mesh's folder, then its bare file name there, since
    scans copied between machines keep absolute or Windows paths), then, with `sibling_fallback`, the images
    named after the mesh (``F0001_HA04WH_F3D.wrl`` -> ``F0001_HA04WH_F3D.bmp``, ``.png``, ...). File names match
    case-insensitively, as data sets copied from Windows often differ in case.
    """
    mesh_path = Path(mesh_path)
    folder = mesh_path.parent
    for name in named:
        name = name.strip()
        if not name:
            continue
        candidate = Path(name)
        if candidate.is_absolute() and candidate.is_file():
            return candidate
        for relative in (name.replace("\\", "/"), name.replace("\\", "/").rsplit("/", 1)[-1]):
            found = _case_insensitive((folder / relative).parent, Path(relative).name)
            if found is not None:
                return found
    if sibling_fallback:
        for extension in TEXTURE_EXTENSIONS:
            found = _case_insensitive(folder, mesh_path.stem + extension)
            if found is not None:
                return found
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB, row 0 at the top; `MissingTextureError` when it cannot be read."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise MissingTextureError(f"texture image cannot be read ({error})", path) from None


def load_texture_image(
    mesh_path: str | os.PathLike,
    named: Sequence[str],
    missing_texture: MissingTexturePolicy,
    sibling_fallback: bool = True,
) -> tuple[np.ndarray | None, Path | None]:
    """Find and read the texture of a mesh (see `find_texture`); apply `missing_texture` when there is none.

    Returns (texture or None, image path or None). A mesh that names no texture and has no sibling image gets
    (None, None) without complaint: it never promised one.
    """
    found = find_texture(mesh_path, named, sibling_fallback)
    if found is not None:
        try:
            return read_image(found), found
        except MissingTextureError:
            if missing_texture == "raise":
                raise
            if missing_texture == "warn":
                warnings.warn(f"{found}: texture image cannot be read; reading the mesh without it", stacklevel=3)
            return None, None
    names = [name for name in named if name.strip()]
    if not names:
        return None, None
    tried = ", ".join(repr(name) for name in names)
    if sibling_fallback:
        tried += f", or {Path(mesh_path).stem}{{{','.join(TEXTURE_EXTENSIONS)}}}"
    message = (
        f"texture {names[0]!r} not found next to the file (looked for {tried}); put the image there, or pass "
        "missing_texture='ignore' (or load_texture=False) to read the mesh without it"
    )
    if missing_texture == "raise":
        raise MissingTextureError(message, mesh_path)
    if missing_texture == "warn":
        warnings.warn(f"{mesh_path}: {message}", stacklevel=3)
    return None, None
