"""Helpers shared by the readers: text decoding, finite checks, and finding and loading texture images."""

from __future__ import annotations

import os
import re
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

#: How a reader treats a texture name that is absolute or climbs out of the scan's folder (``/abs/x.png``,
#: ``../../x.png``, ``C:\\scans\\x.bmp``): "basename" looks for its bare file name in the scan's folder, with a
#: warning; "refuse" raises `FormatError`. Either way no image outside the scan's folder is ever read.
TexturePathPolicy = Literal["basename", "refuse"]

#: Image extensions tried, in this order, when looking for a texture named after the mesh (``<stem>.bmp`` ...).
TEXTURE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


def check_policy(missing_texture: str) -> None:
    """Raise `ConfigError` unless `missing_texture` is one of "raise", "warn", "ignore"."""
    if missing_texture not in ("raise", "warn", "ignore"):
        raise ConfigError(f"missing_texture must be 'raise', 'warn' or 'ignore', got {missing_texture!r}")


def check_texture_paths(texture_paths: str) -> None:
    """Raise `ConfigError` unless `texture_paths` is one of "basename", "refuse"."""
    if texture_paths not in ("basename", "refuse"):
        raise ConfigError(f"texture_paths must be 'basename' or 'refuse', got {texture_paths!r}")


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


def check_float32(values: np.ndarray | None, what: str, path: str | os.PathLike) -> None:
    """`check_finite` for values that a `Face` stores as float32: also refuses finite values that overflow the cast
    (above about 3.4e38), which would become infinities."""
    if values is None or len(values) == 0:
        return
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    check_finite(values, what, path)
    too_big = np.abs(values) > np.finfo(np.float32).max
    if too_big.any():
        row = int(np.flatnonzero(too_big.any(axis=1))[0])
        raise FormatError(
            f"{what} {row} ({' '.join(str(v) for v in values[row].tolist())}) exceeds the float32 range "
            f"(|value| <= {np.finfo(np.float32).max:.4g})",
            path,
        )


def check_surface(vertices: np.ndarray, faces: np.ndarray, path: str | os.PathLike) -> None:
    """Raise `FormatError` when no triangle has a non-zero area in float32 (every vertex at one point, or all on
    one line): such a mesh renders as empty views, which a model would still classify."""
    points = np.asarray(vertices, dtype=np.float32).astype(np.float64)
    a, b, c = (points[faces[:, k]] for k in range(3))
    doubled_area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not (doubled_area > 0).any():
        extent = points.max(axis=0) - points.min(axis=0) if len(points) else np.zeros(3)
        raise FormatError(
            f"every one of the {len(faces)} triangles has zero area (extent of the vertices: "
            f"{' x '.join(f'{value:.3g}' for value in extent.tolist())}); there is no surface to render",
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


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _relative_inside(name: str) -> str | None:
    """`name` (slashes or backslashes) as a relative path that stays inside a folder, or None when it is absolute,
    has a drive letter or URL scheme, or has a ``..`` part."""
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _SCHEME.match(unified):
        return None
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def find_texture(
    mesh_path: str | os.PathLike,
    named: Sequence[str],
    sibling_fallback: bool = True,
    texture_paths: TexturePathPolicy = "basename",
) -> Path | None:
    """Find the texture image of a mesh file, inside the mesh's folder only.

    Tries each name in `named`: a relative name as given (relative to the mesh's folder), then its bare file name
    there. An absolute name, a URL, or one with a ``..`` part is never opened: with ``texture_paths="basename"``
    only its bare file name is looked for in the mesh's folder (a warning says so; scans copied between machines
    keep absolute or Windows paths), with "refuse" it raises `FormatError`. Then, with `sibling_fallback`, the
    images named after the mesh (``F0001_HA04WH_F3D.wrl`` -> ``F0001_HA04WH_F3D.bmp``, ``.png``, ...). File
    names match case-insensitively, as data sets copied from Windows often differ in case. Symbolic links inside
    the folder are followed (data-set copies are often link farms).
    """
    check_texture_paths(texture_paths)
    mesh_path = Path(mesh_path)
    folder = mesh_path.parent
    for name in named:
        name = name.strip()
        if not name:
            continue
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        relative = _relative_inside(name)
        if relative is None:
            if texture_paths == "refuse":
                raise FormatError(
                    f"texture name {name!r} is absolute or leaves the scan's folder; refused (pass "
                    "texture_paths='basename' to look for its file name in the scan's folder instead)",
                    mesh_path,
                )
            warnings.warn(
                f"{mesh_path}: texture name {name!r} is absolute or leaves the scan's folder; looking for "
                f"{base!r} in the scan's folder only",
                stacklevel=4,
            )
            candidates = (base,) if base not in ("", ".", "..") else ()
        else:
            candidates = (relative, base)
        for candidate in candidates:
            found = _case_insensitive((folder / candidate).parent, Path(candidate).name)
            if found is not None:
                return found
    if sibling_fallback:
        for extension in TEXTURE_EXTENSIONS:
            found = _case_insensitive(folder, mesh_path.stem + extension)
            if found is not None:
                return found
    return None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB, row 0 at the top; `MissingTextureError` when it cannot be read,
    `FormatError` when its header claims more pixels than PIL's ``Image.MAX_IMAGE_PIXELS`` allows twice over."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError as error:
        raise FormatError(f"texture image refused as a decompression bomb ({error})", path) from None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise MissingTextureError(f"texture image cannot be read ({error})", path) from None


def load_texture_image(
    mesh_path: str | os.PathLike,
    named: Sequence[str],
    missing_texture: MissingTexturePolicy,
    sibling_fallback: bool = True,
    texture_paths: TexturePathPolicy = "basename",
) -> tuple[np.ndarray | None, Path | None]:
    """Find and read the texture of a mesh (see `find_texture`); apply `missing_texture` when there is none.

    Returns (texture or None, image path or None). A mesh that names no texture and has no sibling image gets
    (None, None) without complaint: it never promised one.
    """
    found = find_texture(mesh_path, named, sibling_fallback, texture_paths)
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
    apply_missing_texture(missing_texture, message, mesh_path, stacklevel=4)
    return None, None


def apply_missing_texture(policy: MissingTexturePolicy, message: str, path: str | os.PathLike,
                          stacklevel: int = 3) -> None:
    """The ``missing_texture`` policy for a texture that is not there: raise `MissingTextureError` ("raise"),
    warn ("warn", `stacklevel` counted from this function) or say nothing ("ignore")."""
    if policy == "raise":
        raise MissingTextureError(message, path)
    if policy == "warn":
        warnings.warn(f"{path}: {message}", stacklevel=stacklevel)
