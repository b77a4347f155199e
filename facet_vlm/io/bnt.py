"""Bosphorus ``.bnt`` range grids: reader (grid -> triangle mesh) and writer.

Layout (little endian): uint16 rows, uint16 cols, float64 zmin, uint16 name length + that many bytes (the 2D
image's file name), uint32 value count + that many float64 values, which form a (count / 5, 5) matrix stored
column by column (Fortran order) with columns x, y, z, u, v. Point ``k`` lies on grid row ``k // cols``, column
``k % cols``. A point with any of x, y, z equal to zmin is background. u, v are image coordinates normalised to
[0, 1]; this module takes them to have their origin at the top-left of the image (image convention) and turns
them into `Face.uv` (origin bottom-left) as (u, 1 - v) -- pass ``uv_origin="bottom-left"`` to keep v as stored.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ConfigError, FormatError
from ..face import Face
from ._common import (
    MissingTexturePolicy,
    TexturePathPolicy,
    check_float32,
    check_policy,
    check_surface,
    check_texture_paths,
    load_texture_image,
)

UvOrigin = Literal["top-left", "bottom-left"]


def _unpack(data: bytes, offset: int, fmt: str, what: str, path: str | os.PathLike) -> tuple:
    size = struct.calcsize(fmt)
    if offset + size > len(data):
        raise FormatError(
            f"truncated: the file ends at byte {len(data)} while reading the {what} (needs {offset + size} bytes)",
            path,
        )
    return struct.unpack_from(fmt, data, offset)


def _parse(path: str | os.PathLike) -> tuple[np.ndarray, float, str, dict]:
    """(grid values float64 (rows, cols, 5), zmin, image name, notes) of a .bnt file."""
    data = Path(path).read_bytes()
    if not data:
        raise FormatError("file is empty", path)
    rows, cols, zmin, name_length = _unpack(data, 0, "<HHdH", "header", path)
    if not np.isfinite(zmin):
        raise FormatError(f"the header's zmin (the background marker) is {zmin}, not a finite number", path)
    image_bytes = _unpack(data, 14, f"<{name_length}s", "image file name", path)[0]
    offset = 14 + name_length
    (count,) = _unpack(data, offset, "<I", "data length", path)
    offset += 4
    if count % 5:
        raise FormatError(f"the data length {count} is not a multiple of 5 (x y z u v per point)", path)
    if count != rows * cols * 5:
        raise FormatError(
            f"the header announces a {rows}x{cols} grid ({rows * cols * 5} values) but a data length of {count}",
            path,
        )
    available = (len(data) - offset) // 8
    if available < count:
        raise FormatError(
            f"truncated: the header announces {count} float64 values but the file holds only {available}", path
        )
    values = np.frombuffer(data, dtype="<f8", count=count, offset=offset).reshape(5, rows * cols).T
    notes = {}
    trailing = len(data) - offset - 8 * count
    if trailing:
        notes["trailing_bytes"] = trailing
    return values.reshape(rows, cols, 5), float(zmin), image_bytes.decode("latin-1").strip("\x00 "), notes


def grid_mesh(xyz_grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate a (rows, cols, 3) point grid with NaN for missing points.

    Every 2x2 cell whose four points are valid gives two triangles (split along the same diagonal everywhere).
    The winding is chosen so that the summed normal points towards +z, the camera, whichever way the rows run.
    Returns (vertices (N, 3) of the valid points in row-major grid order, faces (M, 3), flat grid index of each
    vertex).
    """
    valid = np.isfinite(xyz_grid).all(axis=2)
    grid_index = np.flatnonzero(valid)
    vertex_of = np.full(valid.shape, -1, dtype=np.int64)
    vertex_of[valid] = np.arange(len(grid_index))
    top_left, top_right = vertex_of[:-1, :-1], vertex_of[:-1, 1:]
    bottom_left, bottom_right = vertex_of[1:, :-1], vertex_of[1:, 1:]
    full = (top_left >= 0) & (top_right >= 0) & (bottom_left >= 0) & (bottom_right >= 0)
    corners = [corner[full] for corner in (top_left, top_right, bottom_left, bottom_right)]
    faces = np.concatenate(
        [np.stack([corners[0], corners[2], corners[1]], 1), np.stack([corners[1], corners[2], corners[3]], 1)]
    )
    vertices = xyz_grid.reshape(-1, 3)[grid_index]
    if len(faces):
        a, b, c = (vertices[faces[:, k]].astype(np.float64) for k in range(3))
        if np.cross(b - a, c - a)[:, 2].sum() < 0:
            faces = faces[:, ::-1]
    return vertices, faces, grid_index


def read_bnt_grid(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, str]:
    """The raw grids of a .bnt file: (xyz float64 (rows, cols, 3) with NaN for background, uv float64
    (rows, cols, 2) as stored, image file name from the header)."""
    values, zmin, image_name, _ = _parse(path)
    xyz, uv = values[..., :3].copy(), values[..., 3:].copy()
    background = (xyz == zmin).any(axis=2)
    xyz[background] = np.nan
    uv[background] = np.nan
    bad = ~background & ~np.isfinite(values).all(axis=2)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise FormatError(
            f"point at grid row {row}, column {col} has non-finite values ({values[row, col].tolist()}); "
            f"{int(bad.sum())} such points",
            path,
        )
    return xyz, uv, image_name


def read_bnt(
    path: str | os.PathLike,
    *,
    load_texture: bool = True,
    missing_texture: MissingTexturePolicy = "raise",
    uv_origin: UvOrigin = "top-left",
    texture_paths: TexturePathPolicy = "basename",
) -> Face:
    """Read a Bosphorus .bnt scan into a `Face` (see `grid_mesh` for the triangulation).

    The texture is the image named in the header, next to the file, or else ``<stem>.png`` (or another
    ``<stem>`` image). `uv_origin` says where the stored (u, v) have their origin (module docstring).
    ``meta["grid_shape"]`` is (rows, cols). Landmarks are not read here (see `facet_vlm.io.read_face`).
    `texture_paths` says what to do with a header image name that is absolute or leaves the scan's folder
    ("basename": look for its file name there, with a warning; "refuse": `FormatError`), as in `read_wrl`.
    """
    check_policy(missing_texture)
    check_texture_paths(texture_paths)
    if uv_origin not in ("top-left", "bottom-left"):
        raise ConfigError(f"uv_origin must be 'top-left' or 'bottom-left', got {uv_origin!r}")
    xyz, uv_grid, image_name = read_bnt_grid(path)
    vertices, faces, grid_index = grid_mesh(xyz)
    if len(vertices) == 0:
        raise FormatError("every grid point is background (equal to zmin): the scan is empty", path)
    if len(faces) == 0:
        raise FormatError("no 2x2 block of neighbouring valid grid points: cannot build a surface", path)
    check_float32(vertices, "grid point", path)
    check_surface(vertices, faces, path)
    uv = uv_grid.reshape(-1, 2)[grid_index]
    check_float32(uv, "texture coordinate", path)
    if uv_origin == "top-left":
        uv = np.column_stack([uv[:, 0], 1.0 - uv[:, 1]])
    texture, texture_path = None, None
    if load_texture:
        texture, texture_path = load_texture_image(
            path, [image_name] if image_name else [], missing_texture, True, texture_paths
        )
    meta = {
        "path": str(path),
        "format": "bnt",
        "grid_shape": tuple(int(n) for n in xyz.shape[:2]),
        "image_name": image_name,
        "texture_path": None if texture_path is None else str(texture_path),
    }
    return Face(vertices=vertices, faces=faces, uv=uv, texture=texture, meta=meta)


def write_bnt(
    path: str | os.PathLike,
    xyz_grid: np.ndarray,
    uv_grid: np.ndarray | None = None,
    image_name: str = "",
    uv_origin: UvOrigin = "top-left",
) -> Path:
    """Write a range grid as a Bosphorus .bnt file; return the path.

    Args:
        xyz_grid: (rows, cols, 3) points, row 0 at the top of the face, column 0 at the image's left;
            NaN (in any coordinate) marks background.
        uv_grid: (rows, cols, 2) texture coordinates in the `Face.uv` convention (origin bottom-left); by default
            the centre of each grid cell, i.e. the texture image is taken to be the grid's own camera view.
        image_name: the 2D image file name put in the header (the reader looks for it next to the .bnt).
        uv_origin: the origin the stored (u, v) get; keep "top-left" (Bosphorus) unless you know otherwise.

    zmin is written as one less than the smallest valid coordinate, and background points get x = y = z = zmin.
    """
    path = Path(path)
    xyz = np.asarray(xyz_grid, dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise FormatError(f"cannot write: xyz_grid must have shape (rows, cols, 3), got {xyz.shape}", path)
    rows, cols = xyz.shape[:2]
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise FormatError(f"cannot write: a {rows}x{cols} grid does not fit the uint16 header fields", path)
    if np.isinf(xyz).any():
        raise FormatError("cannot write: xyz_grid holds infinite values (use NaN for background)", path)
    if uv_grid is None:
        u, v = np.meshgrid((np.arange(cols) + 0.5) / cols, 1.0 - (np.arange(rows) + 0.5) / rows)
        uv = np.stack([u, v], axis=2)
    else:
        uv = np.asarray(uv_grid, dtype=np.float64)
        if uv.shape != (rows, cols, 2):
            raise FormatError(f"cannot write: uv_grid must have shape {(rows, cols, 2)}, got {uv.shape}", path)
    background = ~np.isfinite(xyz).all(axis=2)
    if not np.isfinite(uv[~background]).all():
        raise FormatError("cannot write: uv_grid holds NaN or infinite values at points that are not background", path)
    if uv_origin == "top-left":
        uv = np.stack([uv[..., 0], 1.0 - uv[..., 1]], axis=2)
    name = image_name.encode("latin-1")
    zmin = float(np.floor(xyz[~background].min()) - 1.0) if (~background).any() else -1.0e9
    values = np.concatenate([xyz, uv], axis=2).reshape(-1, 5)
    values[background.reshape(-1), :3] = zmin
    values[background.reshape(-1), 3:] = 0.0
    header = struct.pack(f"<HHdH{len(name)}sI", rows, cols, zmin, len(name), name, values.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + values.T.astype("<f8").tobytes())
    return path
